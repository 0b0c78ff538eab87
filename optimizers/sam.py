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

import torch
from pytorch_optimizer import SAM as LibrarySAM

from optimizers.base import MOMENTUM_SPACE, OPTIMIZERS, Hyper, LogUniform, OptimizerSpec, learning_rate, positive


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

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return ClosureSAM(params, torch.optim.SGD, rho=hp["rho"], adaptive=hp["adaptive"], lr=hp["learning_rate"],
                          momentum=hp["momentum"])
