"""Sophia-H (Liu et al. 2023, §9): Sophia with Hutchinson's Hessian-diagonal estimate ``ĥ = u ⊙ (∇²L·u)``.

u has i.i.d. Rademacher entries (±1), so ``E[u_i (Hu)_i] = Σ_j H_ij E[u_i u_j] = H_ii``: unbiased, and exact when
H is diagonal. ∇²L·u is a Hessian-vector product, the gradient of ``gᵀu`` with respect to θ, which needs the
gradient's graph: the spec sets ``create_graph = True`` so the run loop backpropagates with it on every step
(the refresh happens only every k-th step, but the loop cannot know which). No closure is needed.

Cost: one gradient evaluation per step plus one per Hessian-vector product (every k steps), counted in
``grad_evals``. See ``_sophia.py`` for the shared update and why it is our own (pytorch_optimizer's SophiaH uses a
different parameterisation and Gaussian probes).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from optimizers._sophia import SOPHIA_HYPERPARAMETERS, Closure, Sophia, refreshes, sophia_kwargs
from optimizers.base import OPTIMIZERS, OptimizerSpec


def hutchinson_diagonal(params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
    """One Rademacher draw of ``u ⊙ (∇²L·u)`` per parameter; gradients must carry their graph (create_graph).

    Parameters whose gradient has no graph (the loss is at most linear in them) get a zero estimate.
    """
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:
        raise RuntimeError("Sophia-H needs gradients with a graph: backward(create_graph=True)")
    probes = [torch.randint_like(params[i], 0, 2).mul_(2.0).sub_(1.0) for i in live]
    with torch.enable_grad():
        hvps = torch.autograd.grad([grads[i] for i in live], [params[i] for i in live], grad_outputs=probes,
                                   allow_unused=True)
    out = [torch.zeros_like(p) for p in params]
    for i, u, hv in zip(live, probes, hvps):
        if hv is not None:
            out[i] = u * hv
    return out


class SophiaHOptimizer(Sophia):
    def hessian_estimate(self, params: list[Tensor], grads: list[Tensor], closure: Closure | None) -> list[Tensor]:
        return hutchinson_diagonal(params, grads)


@OPTIMIZERS.register
class SophiaH(OptimizerSpec):
    create_graph = True
    cohort_note = "Sophia-H's Hessian estimates draw from the global RNG at trial-dependent steps and need double backward"
    hyperparameters = SOPHIA_HYPERPARAMETERS

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return SophiaHOptimizer(params, **sophia_kwargs(hp))

    @classmethod
    def grad_evals(cls, hp: Mapping[str, Any], steps: int, closure_calls: int) -> float:
        """One gradient per step plus one Hessian-vector product (≈ one gradient) per refresh."""
        return float(steps + refreshes(steps, hp["k"]))
