"""AdaBound / AMSBound (Luo et al. 2019, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate") as the
study's ``AdaBoundOptimizer(learning_rate, final_lr, beta1, beta2, gamma, epsilon, amsbound)`` (TF port).

Per step t (1-based), with Adam's moments and TF's folded bias correction::

    m ← β1 m + (1−β1) g;   v ← β2 v + (1−β2) g²;   (AMSBound: v̂ ← max(v̂, v), used instead of v)
    η = lr·sqrt(1−β2^t)/(1−β1^t) / (sqrt(v) + ε)                       per element
    θ ← θ − clip(η, final_lr·(1 − 1/(γt+1)), final_lr·(1 + 1/(γt)))·m

``tf`` semantics: the bounds use ``final_lr`` as given, whatever the learning-rate schedule does to ``lr`` (§2.2:
this reproduces the study's nearly schedule-insensitive AdaBound/AMSBound runs [INFERRED]; a plausible mechanism
is that the TF port's ``final_lr·lr_t/base_lr`` sees DeepOBS's one learning-rate variable in both places). ``torch`` semantics: the official
PyTorch AdaBound (Luolc) rescales ``final_lr`` by ``lr/base_lr``, so a schedule scales the bounds too.

Why our own class: torch.optim has no AdaBound, and ``pytorch_optimizer.AdaBound`` always rescales ``final_lr``
by ``lr/base_lr`` and adds 1e-15 inside the square root (``sqrt(v + 1e-15) + ε``), so it matches neither form.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Iterable, Mapping

import torch

from optimizers._moments import MomentOptimizer, update_moments
from optimizers.base import (BETA1_SPACE, BETA2_SPACE, Hyper, LogUniform, OptimizerSpec, beta, learning_rate,
                             positive, semantics)


def bounds(final_lr: float, gamma: float, t: int) -> tuple[float, float]:
    """The clipping interval of the per-element step size at step t (1-based)."""
    return final_lr * (1.0 - 1.0 / (gamma * t + 1.0)), final_lr * (1.0 + 1.0 / (gamma * t))


class AdaBound(MomentOptimizer):
    """AdaBound (``amsbound=False``) or AMSBound; ``scale_final_lr`` selects the torch semantics (see module doc).

    Each group remembers its construction-time rate as ``base_lr`` (a group key, so it survives state_dict).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, final_lr: float = 0.1,
                 beta1: float = 0.9, beta2: float = 0.999, gamma: float = 1e-3, epsilon: float = 1e-8,
                 amsbound: bool = False, scale_final_lr: bool = False) -> None:
        super().__init__(params, dict(lr=lr, final_lr=final_lr, beta1=beta1, beta2=beta2, gamma=gamma,
                                      epsilon=epsilon, amsbound=amsbound, scale_final_lr=scale_final_lr))
        for group in self.param_groups:
            group.setdefault("base_lr", group["lr"])

    def _final_lr(self, group: Mapping[str, Any]) -> float:
        if not group["scale_final_lr"] or group["base_lr"] == 0.0:
            return group["final_lr"]
        return group["final_lr"] * group["lr"] / group["base_lr"]

    def init_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, torch.Tensor]:
        state = super().init_state(p, group)
        if group["amsbound"]:
            state["v_hat"] = torch.zeros_like(p)
        return state

    def update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
               states: list[dict[str, Any]], t: int) -> None:
        ms, vs = [s["m"] for s in states], [s["v"] for s in states]
        b1, b2 = group["beta1"], group["beta2"]
        update_moments(ms, vs, grads, b1, b2)
        if group["amsbound"]:
            v_hats = [s["v_hat"] for s in states]
            torch._foreach_maximum_(v_hats, vs)
            vs = v_hats
        lr_t = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        eta = torch._foreach_sqrt(vs)  # η = lr_t / (sqrt(v) + ε)
        torch._foreach_add_(eta, group["epsilon"])
        torch._foreach_reciprocal_(eta)
        torch._foreach_mul_(eta, lr_t)
        low, high = bounds(self._final_lr(group), group["gamma"], t)
        torch._foreach_clamp_min_(eta, low)
        torch._foreach_clamp_max_(eta, high)
        torch._foreach_mul_(eta, ms)
        torch._foreach_sub_(params, eta)


class AdaBoundSpec(OptimizerSpec):
    """Shared plugin declaration of adabound and amsbound (same space, same sample stream: §2.2)."""

    amsbound: ClassVar[bool] = False
    hyperparameters = {
        "learning_rate": learning_rate(),
        "final_lr": Hyper(float, low=0.0, search=LogUniform(-3.0, -0.301)),
        "beta1": beta(BETA1_SPACE),
        "beta2": beta(BETA2_SPACE),
        "gamma": positive(LogUniform(-4.0, -1.0)),
        "epsilon": positive(),
        "semantics": semantics(),
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return AdaBound(params, lr=hp["learning_rate"], final_lr=hp["final_lr"], beta1=hp["beta1"],
                        beta2=hp["beta2"], gamma=hp["gamma"], epsilon=hp["epsilon"], amsbound=cls.amsbound,
                        scale_final_lr=hp["semantics"] == "torch")
