"""Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled"): pytorch_optimizer's ``ScheduleFreeAdamW``
for the maths (beyond the study).

Three sequences: z (the base AdamW iterate), x (the weighted average of the z's, the point to *evaluate*) and
y = (1−β1)·z + β1·x (the point where gradients are *taken*). Per step, with g = ∇L(y)::

    v ← β2·v + (1−β2)·g²;   d = g / (√(v/(1−β2^t) + 1e-15) + ε) + wd·y
    z ← z − lr·d;           c = w_t / Σ_{i≤t} w_i,  w_t = t^r·lr_max^2 (r = 0: c = 1/t at constant lr)
    x ← (1−c)·x + c·z

The library keeps the parameters at y during training and offers ``train()`` (x → y) and ``eval()`` (y → x).
The run loop evaluates the model between epochs without knowing about such modes, so this plugin keeps the
parameters at **x between steps**, like the reference package's closure variant (``AdamWScheduleFreeClosure``):
``step(closure)`` switches to y, evaluates the gradient there, takes the library step and switches back to x.
Hence ``needs_closure`` (one closure call = one gradient evaluation per step) and no run-loop change; the cost is
two in-place lerps per step, and round-off of the x ↔ y round trip (a few ulp per step).
If the run loop ever calls ``optimizer.train()`` before each training epoch and ``optimizer.eval()`` before each
evaluation, those calls are harmless (each step starts with train() and ends with eval(); both are idempotent).
Models with batch norm (P7's WRN-16-4) would also need their running statistics recomputed at x before
evaluation; that is not done here.

[UNCONFIRMED] vs the paper's Algorithm 1: the library bias-corrects v in the denominator (with 1e-15 inside the
square root) and weights the average by lr_max² only; the first reference version folded √(1−β2^t) into the step
size and so into the weights w_t.

Defaults: the reference's (lr 2.5e-3, β1 0.9, β2 0.999, ε 1e-8, wd 0, no warm-up). Search space (beyond the study,
in this order): lr LU(1e-4, 1), β1, β2 with Adam's distributions (§2.2).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
from pytorch_optimizer import ScheduleFreeAdamW as LibraryScheduleFreeAdamW

from optimizers.base import (BETA1_SPACE, BETA2_SPACE, OPTIMIZERS, Hyper, OptimizerSpec, beta, learning_rate,
                             positive)


class ClosureScheduleFreeAdamW(LibraryScheduleFreeAdamW):
    """Parameters sit at x (the evaluation point) between steps; each step takes its gradient at y."""

    def __init__(self, params: Iterable[torch.nn.Parameter], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.eval()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("schedule-free AdamW needs step(closure): the gradient is taken at y, not at x")
        self.train()
        with torch.enable_grad():
            loss = closure()
        super().step()
        self.eval()
        return loss


@OPTIMIZERS.register
class ScheduleFreeAdamW(OptimizerSpec):
    needs_closure = True
    hyperparameters = {
        "learning_rate": learning_rate(),
        "beta1": Hyper(float, low=0.0, high=1.0, low_open=True, high_open=True, search=BETA1_SPACE),
        "beta2": beta(BETA2_SPACE),
        "epsilon": positive(),
        "weight_decay": Hyper(float, low=0.0),
        "warmup_steps": Hyper(int, low=0),
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return ClosureScheduleFreeAdamW(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                                        eps=hp["epsilon"], weight_decay=hp["weight_decay"],
                                        warmup_steps=hp["warmup_steps"])
