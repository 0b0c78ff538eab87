"""Adam (``tf.train.AdamOptimizer``, Kingma & Ba 2015) with TF's "epsilon hat" form.

TF applies ε to sqrt(v) *without* bias correction and folds both corrections into the step size:
``lr_t = lr·sqrt(1−β2^t)/(1−β1^t);  θ ← θ − lr_t·m/(sqrt(v) + ε)``. torch.optim.Adam adds ε to the *corrected*
sqrt(v̂), i.e. an effective ε that shrinks with t, so it cannot express this rule; hence our own class
(``semantics=torch`` selects torch.optim.Adam).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad, floats, tf_semantics_only, zeros_state
from optimizers._moments import MomentOptimizer, update_moments
from optimizers.base import OPTIMIZERS, OptimizerSpec, adam_family, semantics


class TFAdam(MomentOptimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, epsilon: float = 1e-8) -> None:
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon))

    def update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
               states: list[dict[str, Any]], t: int) -> None:
        ms, vs = [s["m"] for s in states], [s["v"] for s in states]
        b1, b2 = group["beta1"], group["beta2"]
        update_moments(ms, vs, grads, b1, b2)
        lr_t = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        denom = torch._foreach_sqrt(self.denominator_moments(states, vs))
        torch._foreach_add_(denom, group["epsilon"])
        torch._foreach_addcdiv_(params, self.numerator(ms, grads, b1), denom, value=-lr_t)

    def numerator(self, ms: list[torch.Tensor], grads: list[torch.Tensor], beta1: float) -> list[torch.Tensor]:
        """What multiplies the step (Adam: m; NAdam overrides)."""
        return ms

    def denominator_moments(self, states: list[dict[str, Any]], vs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The second moments under the square root (Adam: v; AMSGrad overrides)."""
        return vs


class TFAdamCohort(CohortRule):
    """Batched :class:`TFAdam` (and, through two hooks as there, NAdam and AMSGrad): per trial the same kernels —
    ``lerp`` of m, ``mul``/``addcmul`` of v (the factor 1−β2 folded into the first operand), ``sqrt``, ``add`` ε,
    ``addcdiv`` with −lr_t folded into the numerator; lr_t computed per trial in python as the single step does."""

    unsupported = staticmethod(tf_semantics_only)

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.trial = {"beta1": floats(hps, "beta1"), "beta2": floats(hps, "beta2"), "epsilon": floats(hps, "epsilon"),
                      "t": np.zeros(len(hps), dtype=np.int64)}
        self.state = {"m": zeros_state(params), "v": zeros_state(params)}

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        tr = self.trial
        tr["t"] = t = tr["t"] + 1
        ms, vs = self.state["m"], self.state["v"]
        self.adam_moments(params, grads)  # update_moments
        lr_t = lrs * np.sqrt(1.0 - self.pow("beta2", t)) / (1.0 - self.pow("beta1", t))
        neg_lr_t = self.columns(-lr_t, params)
        for i, (p, g, m, d) in enumerate(zip(params, grads, ms, self.denominator_moments(vs))):
            denom = torch.sqrt(d)
            denom.add_(self.constant("eps", tr["epsilon"], p))
            p.addcdiv_(self.numerator(i, m, g, p) * neg_lr_t[i], denom)

    def numerator(self, i: int, m: torch.Tensor, g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return m

    def denominator_moments(self, vs: list[torch.Tensor]) -> list[torch.Tensor]:
        return vs


@OPTIMIZERS.register
class Adam(OptimizerSpec):
    study_name = "AdamOptimizer"
    hyperparameters = {**adam_family(), "semantics": semantics()}
    cohort_rule = TFAdamCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["semantics"] == "torch":
            return torch.optim.Adam(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), eps=hp["epsilon"])
        return TFAdam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"])
