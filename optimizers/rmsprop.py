"""RMSProp, the study's ``RMSPropOptimizer`` (``tf.train.RMSPropOptimizer``, Tieleman & Hinton 2012).

TF's ApplyRMSProp / ApplyCenteredRMSProp kernels (the study: momentum 0, centered False, ε 1e-10)::

    ms  ← ms + (g² − ms)·(1−ρ)                  ms₀ = 1 (TF 1.x's ones_initializer slot)
    mg  ← mg + (g − mg)·(1−ρ)                   centered only, mg₀ = 0
    mom ← μ·mom + lr·g / sqrt(ms [− mg²] + ε)   mom₀ = 0
    θ   ← θ − mom

torch.optim.RMSprop differs in three places: its mean square starts at 0 (so early steps are ~1/sqrt(1−ρ) times
larger than TF's, whose ms₀ = 1 damps them), ε is added *outside* the square root, and with momentum the lr
multiplies the buffer instead of being folded into it. None of this is configurable, hence our own class
(``semantics=torch`` selects torch.optim.RMSprop with ``alpha = decay``).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad, flags, floats, tf_semantics_only, zeros_state
from optimizers._moments import MomentOptimizer
from optimizers.base import (MOMENTUM_SPACE, OPTIMIZERS, Hyper, OptimizerSpec, beta, learning_rate, positive,
                             semantics)


class TFRMSProp(MomentOptimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, decay: float = 0.9,
                 momentum: float = 0.0, epsilon: float = 1e-10, centered: bool = False) -> None:
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, epsilon=epsilon, centered=centered))

    def init_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, torch.Tensor]:
        state = {"ms": torch.ones_like(p)}  # TF 1.x: ones_initializer
        if group["centered"]:
            state["mg"] = torch.zeros_like(p)
        if group["momentum"] != 0.0:
            state["mom"] = torch.zeros_like(p)
        return state

    def update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
               states: list[dict[str, Any]], t: int) -> None:
        weight = 1.0 - group["decay"]
        torch._foreach_lerp_([s["ms"] for s in states], torch._foreach_mul(grads, grads), weight)
        if group["centered"]:
            mgs = [s["mg"] for s in states]
            torch._foreach_lerp_(mgs, grads, weight)
            denom = torch._foreach_addcmul([s["ms"] for s in states], mgs, mgs, value=-1.0)
            torch._foreach_add_(denom, group["epsilon"])
        else:
            denom = torch._foreach_add([s["ms"] for s in states], group["epsilon"])
        torch._foreach_sqrt_(denom)
        if group["momentum"] == 0.0:  # mom = 0·mom + x = x exactly, so the buffer is not needed
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        else:
            moms = [s["mom"] for s in states]
            torch._foreach_mul_(moms, group["momentum"])
            torch._foreach_addcdiv_(moms, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, moms)


class TFRMSPropCohort(CohortRule):
    """Batched :class:`TFRMSProp` (ms₀ = 1, ε inside the root); ``centered`` and a non-zero momentum per trial (both
    forms computed where the cohort mixes them, each trial's selected)."""

    unsupported = staticmethod(tf_semantics_only)

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.trial = {"decay": floats(hps, "decay"), "momentum": floats(hps, "momentum"), "eps": floats(hps, "epsilon"),
                      "centered": flags([hp["centered"] for hp in hps])}
        self.state = {"ms": [torch.ones_like(p) for p in params]}  # TF 1.x: ones_initializer
        if self.trial["centered"].any():
            self.state["mg"] = zeros_state(params)
        if (self.trial["momentum"] != 0.0).any():
            self.state["mom"] = zeros_state(params)

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        tr = self.trial
        centered, moving = tr["centered"], tr["momentum"] != 0.0
        any_c, all_c, any_m, all_m = centered.any(), centered.all(), moving.any(), moving.all()
        neg_lr = self.columns(-lrs, params)
        pos_lr = self.columns(lrs, params) if any_m else neg_lr
        for i, (p, g, ms) in enumerate(zip(params, grads, self.state["ms"])):
            weight = self.constant("1-decay", 1.0 - tr["decay"], p)
            eps = self.constant("eps", tr["eps"], p)
            ms.lerp_(g * g, weight)
            if any_c:
                mg = self.state["mg"][i]
                mg.lerp_(g, weight)
                denom_c = torch.addcmul(ms, mg, mg, value=-1.0)
                denom_c.add_(eps)
            if not all_c:
                denom = ms + eps
                if any_c:
                    denom = torch.where(self.mask(centered, p), denom_c, denom)
            else:
                denom = denom_c
            denom.sqrt_()
            if not any_m:
                p.addcdiv_(g * neg_lr[i], denom)
                continue
            mom = self.state["mom"][i]
            mom_new = mom.mul(self.constant("momentum", tr["momentum"], p))
            mom_new.addcdiv_(g * pos_lr[i], denom)
            if all_m:
                mom.copy_(mom_new)
                p.sub_(mom)
            else:
                mask = self.mask(moving, p)
                mom.copy_(torch.where(mask, mom_new, mom))
                p.copy_(torch.where(mask, p - mom, p.addcdiv(g * neg_lr[i], denom)))


@OPTIMIZERS.register
class RMSProp(OptimizerSpec):
    study_name = "RMSPropOptimizer"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "decay": beta(MOMENTUM_SPACE),
        "momentum": beta(),
        "epsilon": positive(),
        "centered": Hyper(bool),
        "semantics": semantics(),
    }
    cohort_rule = TFRMSPropCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["semantics"] == "torch":
            return torch.optim.RMSprop(params, lr=hp["learning_rate"], alpha=hp["decay"], eps=hp["epsilon"],
                                       momentum=hp["momentum"], centered=hp["centered"])
        return TFRMSProp(params, lr=hp["learning_rate"], decay=hp["decay"], momentum=hp["momentum"],
                         epsilon=hp["epsilon"], centered=hp["centered"])
