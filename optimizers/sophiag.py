"""Sophia-G (Liu et al. 2023, §9): Sophia with the Gauss–Newton–Bartlett (GNB) Hessian-diagonal estimate.

Every k steps the run loop's ``closure(sampled=True)`` backpropagates the loss on targets drawn from the model's
own predictive distribution (``Problem.sampled_loss``). That loss is a batch *mean* over B terms, so its gradient
ĝ is 1/B times a sum of B independent per-example gradients and ``E[ĝ⊙ĝ] ≈ GN-diagonal / B``; the paper's
estimator (Algorithm 2) is therefore ``ĥ = B·ĝ⊙ĝ``, which is what the official code's ``ρ·bs·h`` computes.

B (the official code's ``step(bs=...)`` argument) is not a hyperparameter: ``prepare`` takes it from the problem's
``sampled_loss_terms()`` (the batch size for per-example losses, batch × sequence length for per-token ones).

Cost: one gradient evaluation per step plus one per refresh, both counted as closure calls (the default
``grad_evals``). No library implements Sophia-G (pytorch_optimizer has only Sophia-H); see ``_sophia.py`` for the
shared update and why it is our own.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from optimizers._sophia import SOPHIA_HYPERPARAMETERS, Closure, Sophia, sophia_kwargs
from optimizers.base import OPTIMIZERS, OptimizerSpec


class SophiaGOptimizer(Sophia):
    def __init__(self, params: Iterable[torch.nn.Parameter], batch_size: int | None = None, **kwargs: Any) -> None:
        self.batch_size = batch_size  # set by SophiaG.prepare from the problem
        super().__init__(params, **kwargs)

    def hessian_estimate(self, params: list[Tensor], grads: list[Tensor], closure: Closure | None) -> list[Tensor]:
        """``B·ĝ⊙ĝ`` with ĝ the gradient of the sampled-target loss at the current θ on the current batch."""
        if closure is None:
            raise RuntimeError("Sophia-G needs step(closure) with closure(sampled=True) (the sampled-target loss)")
        if self.batch_size is None:
            raise RuntimeError("Sophia-G needs the number of loss terms per batch: call SophiaG.prepare(optimizer, problem)")
        with torch.enable_grad():
            closure(sampled=True)
        sampled = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        h_hat = torch._foreach_mul(sampled, sampled)
        torch._foreach_mul_(h_hat, float(self.batch_size))
        return h_hat


@OPTIMIZERS.register
class SophiaG(OptimizerSpec):
    needs_closure = True
    cohort_note = "Sophia-G's Hessian estimates draw labels from the global RNG at trial-dependent steps"
    hyperparameters = SOPHIA_HYPERPARAMETERS

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return SophiaGOptimizer(params, **sophia_kwargs(hp))

    @classmethod
    def prepare(cls, optimizer: torch.optim.Optimizer, problem: Any) -> None:
        optimizer.batch_size = int(problem.sampled_loss_terms())
