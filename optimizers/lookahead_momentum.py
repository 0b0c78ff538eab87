"""Lookahead around heavy-ball momentum, the study's ``LookaheadOptimizerMBGDMomentum`` (Zhang et al. 2019).

Inner optimizer: TF ``MomentumOptimizer`` (``v ← ρv + g; θ ← θ − lr·v``, no Nesterov), which is exactly
torch.optim.SGD with ``momentum=ρ, dampening=0`` (its first step sets v = g = ρ·0 + g). TF's MomentumOptimizer keeps
no state in ``_finish``, so the TF wrapper's skipped ``_finish`` changes nothing here; only the ``sync`` rule
matters: ``replace`` (default, the study's jinmel/lookahead-tensorflow wrapper: calls 0, k, 2k, … synchronise
instead of stepping) or ``after`` (the paper's: sync after every k-th inner step), see :mod:`optimizers._lookahead`.
Sampling order (§2.2): lr, momentum, k, α; ``sync`` is fixed (no search distribution).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers._lookahead import LookaheadCohort, alpha_hyper, k_hyper, sync_hyper, wrap
from optimizers.base import MOMENTUM_SPACE, OPTIMIZERS, OptimizerSpec, beta, learning_rate
from optimizers.momentum import MomentumCohort


class LookaheadMomentumCohort(LookaheadCohort):
    inner_rule = MomentumCohort  # torch SGD(momentum=ρ), no warm-up: the inner optimizer's own rule


@OPTIMIZERS.register
class LookaheadMomentum(OptimizerSpec):
    study_name = "LookaheadOptimizerMBGDMomentum"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "momentum": beta(MOMENTUM_SPACE),
        "k": k_hyper(),
        "alpha": alpha_hyper(),
        "sync": sync_hyper(),
    }
    cohort_rule = LookaheadMomentumCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        inner = torch.optim.SGD(params, lr=hp["learning_rate"], momentum=hp["momentum"], dampening=0.0,
                                nesterov=False)
        return wrap(inner, hp)
