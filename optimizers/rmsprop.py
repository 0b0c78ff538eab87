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

from typing import Any, Callable, Iterable, Mapping

import torch

from optimizers.base import (MOMENTUM_SPACE, OPTIMIZERS, Hyper, OptimizerSpec, beta, learning_rate, positive,
                             semantics)


class TFRMSProp(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, decay: float = 0.9,
                 momentum: float = 0.0, epsilon: float = 1e-10, centered: bool = False) -> None:
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, epsilon=epsilon, centered=centered))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            centered, momentum = group["centered"], group["momentum"]
            for p in params:
                state = self.state[p]
                if not state:
                    state["ms"] = torch.ones_like(p)
                if centered and "mg" not in state:
                    state["mg"] = torch.zeros_like(p)
                if momentum != 0.0 and "mom" not in state:
                    state["mom"] = torch.zeros_like(p)
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            weight = 1.0 - group["decay"]
            torch._foreach_lerp_([s["ms"] for s in states], torch._foreach_mul(grads, grads), weight)
            if centered:
                mgs = [s["mg"] for s in states]
                torch._foreach_lerp_(mgs, grads, weight)
                denom = torch._foreach_addcmul([s["ms"] for s in states], mgs, mgs, value=-1.0)
                torch._foreach_add_(denom, group["epsilon"])
            else:
                denom = torch._foreach_add([s["ms"] for s in states], group["epsilon"])
            torch._foreach_sqrt_(denom)
            if momentum == 0.0:  # mom = 0·mom + x = x exactly, so the buffer is not needed
                torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
            else:
                moms = [s["mom"] for s in states]
                torch._foreach_mul_(moms, momentum)
                torch._foreach_addcdiv_(moms, grads, denom, value=group["lr"])
                torch._foreach_sub_(params, moms)
        return loss


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

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["semantics"] == "torch":
            return torch.optim.RMSprop(params, lr=hp["learning_rate"], alpha=hp["decay"], eps=hp["epsilon"],
                                       momentum=hp["momentum"], centered=hp["centered"])
        return TFRMSProp(params, lr=hp["learning_rate"], decay=hp["decay"], momentum=hp["momentum"],
                         epsilon=hp["epsilon"], centered=hp["centered"])
