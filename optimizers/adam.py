"""Adam (``tf.train.AdamOptimizer``, Kingma & Ba 2015) with TF's "epsilon hat" form.

TF applies ε to sqrt(v) *without* bias correction and folds both corrections into the step size:
``lr_t = lr·sqrt(1−β2^t)/(1−β1^t);  θ ← θ − lr_t·m/(sqrt(v) + ε)``. torch.optim.Adam adds ε to the *corrected*
sqrt(v̂), i.e. an effective ε that shrinks with t, so it cannot express this rule; hence our own class
(``semantics=torch`` selects torch.optim.Adam).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch

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


@OPTIMIZERS.register
class Adam(OptimizerSpec):
    study_name = "AdamOptimizer"
    hyperparameters = {**adam_family(), "semantics": semantics()}

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["semantics"] == "torch":
            return torch.optim.Adam(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), eps=hp["epsilon"])
        return TFAdam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"])
