"""RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond") as the study's
``RAdamOptimizer``: the TF/Keras port (CyberZHG keras-radam style, ε = 1e-7).

With ρ∞ = 2/(1−β2) − 1 and ρ_t = ρ∞ − 2tβ2^t/(1−β2^t) (t = 1, 2, ...)::

    m ← β1 m + (1−β1) g;   v ← β2 v + (1−β2) g²;   m̂ = m/(1−β1^t)
    ρ_t > 5:  r_t = sqrt((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t));   θ ← θ − lr·r_t·m̂ / (sqrt(v/(1−β2^t)) + ε)
    else:     θ ← θ − lr·m̂                       (un-adapted, bias-corrected momentum step)

Why our own class: ``torch.optim.RAdam`` uses the same threshold (ρ_t > 5) and the same un-rectified step, but puts
ε on the *uncorrected* root, ``sqrt(1−β2^t)/(sqrt(v) + ε)``, i.e. an effective ε of ``ε·sqrt(1−β2^t)`` relative to
the port's ``1/(sqrt(v/(1−β2^t)) + ε)``; the two differ while 1−β2^t is far from 1 (the first thousands of steps
for β2 = .999). ``semantics=torch`` selects torch.optim.RAdam. (Ports differ on ``ρ_t > 5`` vs ``ρ_t >= 5``; ρ_t is
not exactly 5 for any β2 the study draws (for β2 = .999: ρ_5 ≈ 4.996, ρ_6 ≈ 5.994), so both select the same steps.)

ρ_t depends only on the python step count and β2, so choosing the branch needs no host sync.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad, flags, floats, tf_semantics_only, zeros_state
from optimizers.adam import Adam
from optimizers._moments import MomentOptimizer, update_moments
from optimizers.base import (OPTIMIZERS, OptimizerSpec)

RHO_THRESHOLD = 5.0


def rectification(beta2: float, t: int) -> float | None:
    """r_t for step t (1-based), or None when ρ_t ≤ 5 (variance not tractable: un-adapted step)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    b2t = beta2**t
    rho_t = rho_inf - 2.0 * t * b2t / (1.0 - b2t)
    if not rho_t > RHO_THRESHOLD:
        return None
    return math.sqrt((rho_t - 4.0) / (rho_inf - 4.0) * (rho_t - 2.0) / (rho_inf - 2.0) * rho_inf / rho_t)


class TFRAdam(MomentOptimizer):
    """The Keras-port RAdam update (see module docstring); state: python step count t, m, v per parameter."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, epsilon: float = 1e-7) -> None:
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon))

    def update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
               states: list[dict[str, Any]], t: int) -> None:
        ms, vs = [s["m"] for s in states], [s["v"] for s in states]
        b1, b2, lr = group["beta1"], group["beta2"], group["lr"]
        update_moments(ms, vs, grads, b1, b2)
        bc1 = 1.0 - b1**t
        r_t = rectification(b2, t)
        if r_t is None:
            torch._foreach_add_(params, ms, alpha=-lr / bc1)
            return
        denom = torch._foreach_div(vs, 1.0 - b2**t)  # sqrt(v/(1−β2^t)) + ε, in the port's order
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["epsilon"])
        torch._foreach_addcdiv_(params, ms, denom, value=-lr * r_t / bc1)


class TFRAdamCohort(CohortRule):
    """Batched :class:`TFRAdam`; each trial takes its own branch (ρ_t > 5 depends on its β2): both updates are
    computed where the cohort holds both kinds and each trial's is selected. ``frozen`` trials (Lookahead-RAdam as
    the study ran it, :class:`~optimizers.lookahead_radam.UnfinishedTFRAdam`) use t = 1 in the rule."""

    unsupported = staticmethod(tf_semantics_only)

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.trial = {"beta1": floats(hps, "beta1"), "beta2": floats(hps, "beta2"), "epsilon": floats(hps, "epsilon"),
                      "t": np.zeros(len(hps), dtype=np.int64),
                      "frozen": flags([hp.get("inner_step_count", "advancing") == "frozen" for hp in hps])}
        self.state = {"m": zeros_state(params), "v": zeros_state(params)}

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        tr = self.trial
        tr["t"] = tr["t"] + 1
        ts = np.where(tr["frozen"], 1, tr["t"])
        b2 = tr["beta2"]
        ms, vs = self.state["m"], self.state["v"]
        self.adam_moments(params, grads)  # update_moments
        bc1 = 1.0 - self.pow("beta1", ts)
        b2t = self.pow("beta2", ts)
        with np.errstate(invalid="ignore", divide="ignore"):  # rectification(), per trial, in its operation order
            rho_inf = 2.0 / (1.0 - b2) - 1.0
            rho_t = rho_inf - 2.0 * ts * b2t / (1.0 - b2t)
            rect = rho_t > RHO_THRESHOLD
            r_t = np.sqrt((rho_t - 4.0) / (rho_inf - 4.0) * (rho_t - 2.0) / (rho_inf - 2.0) * rho_inf / rho_t)
        any_rect, all_rect = rect.any(), rect.all()
        plain = self.columns(np.where(rect, 0.0, -lrs / bc1), params) if not all_rect else None
        if any_rect:
            rates = self.columns(np.where(rect, -lrs * r_t / bc1, 0.0), params)
            bc2 = self.columns(np.where(rect, 1.0 - b2t, 1.0), params)
        for i, (p, m, v) in enumerate(zip(params, ms, vs)):
            if not any_rect:
                p.addcmul_(m, plain[i])
                continue
            denom = v / bc2[i]  # sqrt(v/(1−β2^t)) + ε, in the port's order
            denom.sqrt_()
            denom.add_(self.constant("eps", tr["epsilon"], p))
            if all_rect:
                p.addcdiv_(m * rates[i], denom)
            else:
                p.copy_(torch.where(self.mask(rect, p), p.addcdiv(m * rates[i], denom), p.addcmul(m, plain[i])))


def build_radam(params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """TFRAdam, or torch.optim.RAdam for ``semantics=torch`` (shared with lookahead_radam)."""
    if hp["semantics"] == "torch":
        return torch.optim.RAdam(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                                 eps=hp["epsilon"])
    return TFRAdam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"])


@OPTIMIZERS.register
class RAdam(OptimizerSpec):
    study_name = "RAdamOptimizer"
    hyperparameters = dict(Adam.hyperparameters)  # lr, β1, β2 drawn as Adam's (§2.2); ε fixed
    cohort_rule = TFRAdamCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return build_radam(params, hp)
