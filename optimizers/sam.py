"""SAM, sharpness-aware minimisation (Foret et al. 2020, arXiv 2010.01412, §9), over SGD with heavy-ball momentum.

One step on a mini-batch, with g = ∇L(θ) and the *global* L2 norm over all parameters::

    ε̂ = ρ·g / ‖g‖                         (adaptive, ASAM: ε̂ = ρ·θ²⊙g / ‖|θ|⊙g‖)
    g_SAM = ∇L(θ + ε̂)                      (same mini-batch)
    θ ← base_step(θ, g_SAM)                 base: v ← μ·v + g_SAM; θ ← θ − lr·v  (TF momentum = torch SGD, dampening 0)

The maths is pytorch_optimizer's ``SAM`` (perturbation, ε̂ norm with +1e-12, exact restore of θ from a copy,
base optimizer on the shared param groups and state) — it is used as is. The subclass only adapts the calling
protocol: the library expects the caller to have computed g *before* ``step(closure)``, while the run loop hands
optimizers a closure only, so ``step`` first calls the closure at θ, then lets the library perturb, call the
closure at θ + ε̂ and take the base step. Two closure calls = two gradient evaluations per step (default
``grad_evals``). ``state_dict`` is the base optimizer's (momentum buffers), restored by the library's override.
The library takes the global norm in float32 whatever the parameters' dtype: no loss for float32 training, ~1e-7
relative on ε̂ for float64 parameters. No host sync: ρ/‖g‖ stays a device tensor.

Defaults: ρ = 0.05 and momentum 0.9 as Foret et al.; lr 1e-2 (the study's Momentum one-shot lr).
Search space (beyond the study, in this order): lr LU(1e-4, 1), momentum LU(1e-3, 1) as the study's Momentum,
ρ LU(1e-2, 1) (Foret et al.'s grid 0.01–0.5, extended to ASAM's larger radii).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from pytorch_optimizer import SAM as LibrarySAM

from optimizers._cohort import CohortRule, Regrad, flags, floats
from optimizers.base import MOMENTUM_SPACE, OPTIMIZERS, Hyper, LogUniform, OptimizerSpec, learning_rate, positive
from optimizers.momentum import MomentumCohort

PERTURB_EPS = 1e-12  # pytorch_optimizer SAM's default perturb_eps


class SAMCohort(CohortRule):
    """Batched :class:`ClosureSAM`: per trial the library's global gradient norm (per-tensor norms, squared, summed
    in float32; ASAM weights g by |θ|), ``scale = (1/‖g‖)·ρ`` (``ρ / tensor`` is ``reciprocal() * ρ`` in torch),
    θ += g·scale (ASAM: θ²·g·scale), the second gradient through ``regrad``, θ restored from its copy, then the
    base torch SGD step (:class:`~optimizers.momentum.MomentumCohort`) with that gradient."""

    passes = 2

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.trial = {"rho": floats(hps, "rho"), "adaptive": flags([hp["adaptive"] for hp in hps])}
        self.children = {"base": MomentumCohort(self.spec_cls, hps, params)}

    def on_epoch(self, epoch: int, num_epochs: int) -> None:
        self.children["base"].on_epoch(epoch, num_epochs)

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        if regrad is None:
            raise RuntimeError("SAM's batched step needs regrad (the gradient at θ + ε̂)")
        adaptive = self.trial["adaptive"]
        any_a = adaptive.any()
        weighted = grads
        if any_a:
            weighted = [torch.where(self.mask(adaptive, p), g * p.abs(), g) if not adaptive.all() else g * p.abs()
                        for p, g in zip(params, grads)]
        rows = [[w[r] for w in weighted] for r in range(self.size)]
        norms = torch._foreach_norm([t for row in rows for t in row])  # per tensor, as the library's foreach norm
        squared = torch.stack(norms).view(self.size, len(params)).float().square_()
        total = squared[:, 0].clone() if len(params) == 1 else torch.stack([row.sum() for row in squared])
        grad_norm = total.sqrt_().add_(PERTURB_EPS)
        scale = grad_norm.reciprocal() * self.column(self.trial["rho"], grad_norm)
        saved = [p.clone() for p in params]
        for p, g in zip(params, grads):
            s = scale.to(p).view(-1, *([1] * (p.ndim - 1)))
            e_w = g * s
            if any_a:
                e_w = torch.where(self.mask(adaptive, p), torch.pow(p, 2) * g * s, e_w)
            p.add_(e_w)
        second = regrad()
        for p, old in zip(params, saved):
            p.copy_(old)
        self.children["base"].step(params, second, lrs)


class ClosureSAM(LibrarySAM):
    """pytorch_optimizer's SAM driven by the closure alone (it computes the first gradient itself)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("SAM needs step(closure): it evaluates the gradient at θ and at θ + ε̂")
        with torch.enable_grad():
            loss = closure()
        super().step(closure)
        return loss


@OPTIMIZERS.register
class Sam(OptimizerSpec):
    needs_closure = True
    hyperparameters = {
        "learning_rate": learning_rate(),
        "momentum": Hyper(float, low=0.0, high=1.0, high_open=True, search=MOMENTUM_SPACE),
        "rho": positive(LogUniform(-2.0, 0.0)),
        "adaptive": Hyper(bool),
    }
    cohort_rule = SAMCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return ClosureSAM(params, torch.optim.SGD, rho=hp["rho"], adaptive=hp["adaptive"], lr=hp["learning_rate"],
                          momentum=hp["momentum"])
