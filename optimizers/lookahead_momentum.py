"""Lookahead around heavy-ball momentum, the study's ``LookaheadOptimizerMBGDMomentum`` (Zhang et al. 2019).

Inner optimizer: TF ``MomentumOptimizer`` (``v ← ρv + g; θ ← θ − lr·v``, no Nesterov), which is exactly
torch.optim.SGD with ``momentum=ρ, dampening=0`` (its first step sets v = g = ρ·0 + g); Lookahead maths and why
pytorch_optimizer.Lookahead is used: :mod:`optimizers._lookahead`. Sampling order (§2.2): lr, momentum, k, α.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers._lookahead import alpha_hyper, k_hyper, wrap
from optimizers.base import MOMENTUM_SPACE, OPTIMIZERS, OptimizerSpec, beta, learning_rate


@OPTIMIZERS.register
class LookaheadMomentum(OptimizerSpec):
    study_name = "LookaheadOptimizerMBGDMomentum"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "momentum": beta(MOMENTUM_SPACE),
        "k": k_hyper(),
        "alpha": alpha_hyper(),
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        inner = torch.optim.SGD(params, lr=hp["learning_rate"], momentum=hp["momentum"], dampening=0.0,
                                nesterov=False)
        return wrap(inner, hp)
