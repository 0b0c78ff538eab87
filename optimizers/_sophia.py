"""Sophia (Liu et al. 2023, arXiv 2305.14342): the update shared by Sophia-G and Sophia-H (§9).

Paper Algorithm 3, with the official code's parameterisation (github.com/Liuhong99/Sophia, ``sophia.py``)::

    m ← β1·m + (1−β1)·g                                    every step
    h ← β2·h + (1−β2)·ĥ      at steps t = 1, k+1, 2k+1, …   (Algorithm 3: "if t mod k = 1"); h₀ = 0
    θ ← θ − lr·wd·θ                                        decoupled weight decay
    θ ← θ − lr·clip(m / max(ρ·h, ε), 1)                    element-wise clip to [−1, 1]

ĥ is the estimator's diagonal-Hessian estimate (Gauss–Newton–Bartlett ``B·ĝ⊙ĝ`` in ``sophiag.py``, Hutchinson
``u⊙(∇²L·u)`` in ``sophiah.py``). The official code writes the last line as
``θ −= lr·sign(m)·min(|m| / (ρ·bs·h_raw + 1e-15), 1)`` with ``h_raw`` the EMA of un-scaled ``ĝ⊙ĝ``, i.e. the
same update with ``h = bs·h_raw`` (our ĥ already carries the factor B) and ε added instead of taken as a floor.

Why our own class rather than pytorch_optimizer's ``SophiaH``:
* it computes ``lr·clip(m / max(h, ε), ±p)``: no ρ, a clip bound p instead of 1, ε as a floor on h instead of on
  ρ·h; the paper's update is recovered only by rescaling lr, weight decay and ε by ρ, so its hyperparameters
  would not be the paper's (β1 .965, β2 .99, ρ .04, k 10);
* its probes are Gaussian by default (the paper uses Rademacher) and it has no Sophia-G at all.
Why the max form (the paper's) instead of the official additive ``ρh + ε``: for h ≥ 0 they differ by ε only,
but a Hutchinson estimate can be negative, and then the additive form flips the step's sign (the update climbs);
with the floor the step falls back to lr·sign(m), which is what Algorithm 3 prescribes.
Why the refresh at t mod k = 1 (the official training script refreshes after the k-th step instead): the
official schedule runs the first k−1 steps with h = 0, i.e. pure sign-momentum steps of size lr.

No host syncs: the step counter is a Python int, clipping is ``_foreach_clamp``, the refresh decision is made on
that int. All parameter groups share one Hessian estimate per refresh (one extra gradient evaluation), so the
refresh period k is the first group's.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor

from optimizers.base import BETA1_SPACE, BETA2_SPACE, Hyper, LogUniform, beta, learning_rate, positive

Closure = Callable[..., Tensor]

RHO_SPACE = LogUniform(-3.0, 0.0)  # LU(1e-3, 1): beyond the study; covers the official 0.01–0.05 range widely


class Sophia(torch.optim.Optimizer):
    """The clipped, Hessian-preconditioned update; subclasses provide :meth:`hessian_estimate`."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, beta1: float = 0.965,
                 beta2: float = 0.99, rho: float = 0.04, k: int = 10, weight_decay: float = 0.0,
                 epsilon: float = 1e-15) -> None:
        if k < 1:
            raise ValueError(f"invalid k={k}: the Hessian refresh period must be >= 1")
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, rho=rho, k=k, weight_decay=weight_decay,
                                      epsilon=epsilon))

    def hessian_estimate(self, params: list[Tensor], grads: list[Tensor], closure: Closure | None) -> list[Tensor]:
        """One estimate ĥ of the Hessian diagonal per parameter (same shapes), at the current θ and batch."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        params = [p for _, ps in groups for p in ps]
        if not params:
            return loss
        for p in params:
            if not self.state[p]:
                self.state[p].update(step=0, exp_avg=torch.zeros_like(p), hessian=torch.zeros_like(p))
        # Hold the gradients before an estimator's closure replaces p.grad (Sophia-G's sampled backward).
        grads = [p.grad for p in params]
        t = self.state[params[0]]["step"] + 1
        refresh = (t - 1) % self.param_groups[0]["k"] == 0
        h_hat = self.hessian_estimate(params, grads, closure) if refresh else None
        start = 0
        for group, ps in groups:
            if not ps:
                continue
            end = start + len(ps)
            states = [self.state[p] for p in ps]
            ms, hs = [s["exp_avg"] for s in states], [s["hessian"] for s in states]
            torch._foreach_lerp_(ms, grads[start:end], 1.0 - group["beta1"])
            if h_hat is not None:
                torch._foreach_lerp_(hs, h_hat[start:end], 1.0 - group["beta2"])
            lr = group["lr"]
            if group["weight_decay"] != 0.0:
                torch._foreach_mul_(ps, 1.0 - lr * group["weight_decay"])
            denom = torch._foreach_mul(hs, group["rho"])
            torch._foreach_clamp_min_(denom, group["epsilon"])
            ratio = torch._foreach_div(ms, denom)
            torch._foreach_clamp_min_(ratio, -1.0)
            torch._foreach_clamp_max_(ratio, 1.0)
            torch._foreach_add_(ps, ratio, alpha=-lr)
            for s in states:
                s["step"] = t
            start = end
        return loss


def refreshes(steps: int, k: int) -> int:
    """Hessian refreshes in ``steps`` steps: at t = 1, k+1, 2k+1, … → ⌈steps / k⌉."""
    return (steps + k - 1) // k


SOPHIA_HYPERPARAMETERS: dict[str, Hyper] = {
    # Tuned (beyond the study, in this order): lr as the study's LU(1e-4, 1); β's with Adam's spaces; ρ LU(1e-3, 1).
    "learning_rate": learning_rate(),
    "beta1": beta(BETA1_SPACE),
    "beta2": beta(BETA2_SPACE),
    "rho": positive(RHO_SPACE),
    "k": Hyper(int, low=1),
    "weight_decay": Hyper(float, low=0.0),
    "epsilon": positive(),
}


def sophia_kwargs(hp: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of :class:`Sophia` from the published-name hyperparameters."""
    return dict(lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], rho=hp["rho"], k=hp["k"],
                weight_decay=hp["weight_decay"], epsilon=hp["epsilon"])
