"""L-BFGS (§9) with ``torch.optim.LBFGS`` semantics, used as is (two-loop recursion, history of (s, y) pairs,
initial Hessian scale sᵀy/yᵀy, curvature pairs skipped when yᵀs ≤ 1e-10, first step scaled by min(1, 1/‖g‖₁),
optional strong-Wolfe line search). Its tolerance checks read tensor values on the host; that is inherent to the
algorithm (the line search and the stopping rules branch on loss values).

Stochastic use: the run loop calls ``step(closure)`` once per mini-batch and the closure re-evaluates *that*
mini-batch, so every iteration and line-search trial inside one step sees the same batch, and the curvature pair
formed at the start of the next step mixes two batches (the gradient difference includes batch noise).

Default ``max_iter = 1`` (torch's is 20): one quasi-Newton step per mini-batch, so with ``line_search_fn=none``
L-BFGS spends one gradient evaluation per batch like every other optimizer in the benchmark, and an epoch means
the same data budget. Several iterations on one batch would fit that batch (up to 20 gradient evaluations on the
same 128 examples) rather than the training loss, and make its epochs 20× as expensive.
Default ``max_eval = 25`` (torch derives ``max_iter·5//4``, which is 1 for max_iter = 1 and would leave the
strong-Wolfe search ``max_eval − 1 = 0`` trials, i.e. no search): the line search then gets up to 24 extra
evaluations per step, torch's own ``_strong_wolfe`` default of 25 counting the first. ``history_size = 10``.
Gradient evaluations = closure calls (default ``grad_evals``), line-search trials included.

Search space (beyond the study): lr LU(1e-4, 1) as the study's.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers.base import OPTIMIZERS, Hyper, HyperparameterError, OptimizerSpec, learning_rate, positive


@OPTIMIZERS.register
class Lbfgs(OptimizerSpec):
    needs_closure = True
    cohort_note = "L-BFGS's line search makes a trial-dependent number of gradient evaluations per step"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "max_iter": Hyper(int, low=1),
        "max_eval": Hyper(int, low=1),
        "history_size": Hyper(int, low=1),
        "line_search_fn": Hyper(str, choices=("none", "strong_wolfe")),
        "tolerance_grad": positive(),
        "tolerance_change": positive(),
    }

    @classmethod
    def check_combination(cls, hp: Mapping[str, Any]) -> None:
        if hp["max_eval"] < hp["max_iter"]:
            raise HyperparameterError(f"invalid max_eval={hp['max_eval']}: must be >= max_iter={hp['max_iter']} "
                                      "(one evaluation per iteration)")

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(
            params, lr=hp["learning_rate"], max_iter=hp["max_iter"], max_eval=hp["max_eval"],
            tolerance_grad=hp["tolerance_grad"], tolerance_change=hp["tolerance_change"],
            history_size=hp["history_size"],
            line_search_fn=None if hp["line_search_fn"] == "none" else hp["line_search_fn"],
        )
