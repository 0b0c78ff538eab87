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

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad, flags, floats, zeros_state
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


class AdaBoundCohort(CohortRule):
    """Batched :class:`AdaBound` (either semantics): per trial its bounds (final_lr, γ, t; torch semantics rescale
    final_lr by lr/base_lr) as clamp columns, the step size η built with the single step's kernels in its order."""

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.amsbound = bool(getattr(self.spec_cls, "amsbound", False))
        self.trial = {name: floats(hps, name)
                      for name in ("beta1", "beta2", "epsilon", "final_lr", "gamma", "learning_rate")}
        self.trial["scale_final_lr"] = flags([hp["semantics"] == "torch" for hp in hps])
        self.trial["t"] = np.zeros(len(hps), dtype=np.int64)
        self.state = {"m": zeros_state(params), "v": zeros_state(params)}
        if self.amsbound:
            self.state["v_hat"] = zeros_state(params)

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        tr = self.trial
        tr["t"] = t = tr["t"] + 1
        ms, vs = self.state["m"], self.state["v"]
        self.adam_moments(params, grads)  # update_moments
        if self.amsbound:
            for v_hat, v in zip(self.state["v_hat"], vs):
                torch.maximum(v_hat, v, out=v_hat)
            vs = self.state["v_hat"]
        lr_t = lrs * np.sqrt(1.0 - self.pow("beta2", t)) / (1.0 - self.pow("beta1", t))
        base = tr["learning_rate"]
        with np.errstate(invalid="ignore", divide="ignore"):
            finals = np.where(tr["scale_final_lr"] & (base != 0.0), tr["final_lr"] * lrs / base, tr["final_lr"])
        gamma = tr["gamma"]
        lows = finals * (1.0 - 1.0 / (gamma * t + 1.0))  # bounds(), per trial
        highs = finals * (1.0 + 1.0 / (gamma * t))
        cols_lr, cols_low, cols_high = (self.columns(x, params) for x in (lr_t, lows, highs))
        for i, (p, m, v) in enumerate(zip(params, ms, vs)):
            eta = torch.sqrt(v)  # η = lr_t / (sqrt(v) + ε)
            eta.add_(self.constant("eps", tr["epsilon"], p))
            eta.reciprocal_()
            eta.mul_(cols_lr[i])
            eta.clamp_min_(cols_low[i])
            eta.clamp_max_(cols_high[i])
            eta.mul_(m)
            p.sub_(eta)


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
    cohort_rule = AdaBoundCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return AdaBound(params, lr=hp["learning_rate"], final_lr=hp["final_lr"], beta1=hp["beta1"],
                        beta2=hp["beta2"], gamma=hp["gamma"], epsilon=hp["epsilon"], amsbound=cls.amsbound,
                        scale_final_lr=hp["semantics"] == "torch")
