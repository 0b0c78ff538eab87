"""Bookkeeping shared by the TF-style adaptive optimizers written here (Adam, AMSGrad, NAdam, RAdam, AdaBound,
ND-Adam, RMSProp): closure handling, the parameters that have gradients, lazily created state, and one step count
per group. A subclass writes only ``update`` — its update rule is all that differs between them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor


class MomentOptimizer(torch.optim.Optimizer):
    """Base of our multi-tensor (``torch._foreach_*``) optimizers; the state is plain tensors plus a python step
    count, so ``state_dict``/``load_state_dict`` round-trip it exactly."""

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """The per-parameter state created before its first update (default: Adam's m and v at zero)."""
        return {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}

    def update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
               t: int) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, **self.init_state(p, group))
            states = [self.state[p] for p in params]
            t = states[0]["step"] + 1
            for s in states:
                s["step"] = t
            self.update(group, params, [p.grad for p in params], states, t)
        return loss


def update_moments(ms: list[Tensor], vs: list[Tensor], grads: list[Tensor], beta1: float, beta2: float) -> None:
    """Adam's moments in place: m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g²."""
    torch._foreach_lerp_(ms, grads, 1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
