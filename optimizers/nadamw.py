"""NAdamW: ``torch.optim.NAdam(decoupled_weight_decay=True)`` used as is (beyond the study).

torch form (Dozat 2016 with the momentum-decay schedule): μ_t = β1·(1 − ½·0.96^(t·ψ)), ψ = ``momentum_decay``;
θ ← θ·(1 − lr·wd); m, v as Adam; with D = √(v/(1−β2^t)) + ε,
θ ← θ − lr·(1−μ_t)/(1−Π_{i≤t}μ_i)·g/D − lr·μ_{t+1}/(1−Π_{i≤t+1}μ_i)·m/D.
The μ_t schedule makes it differ from the study's NAdam (tf.contrib NadamOptimizer, no schedule, nadam.py).

Defaults: lr 1e-3 (the study's NAdam one-shot lr; torch's is 2e-3), β 0.9/0.999, ε 1e-8, wd 1e-2 (AdamW's), ψ 4e-3.
Search space (beyond the study, in this order): lr, β1, β2 with Adam's distributions (§2.2).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers.base import (BETA1_SPACE, BETA2_SPACE, OPTIMIZERS, Hyper, OptimizerSpec, beta, learning_rate,
                             positive)


@OPTIMIZERS.register
class NAdamW(OptimizerSpec):
    hyperparameters = {
        "learning_rate": learning_rate(),
        "beta1": beta(BETA1_SPACE),
        "beta2": beta(BETA2_SPACE),
        "epsilon": positive(),
        "weight_decay": Hyper(float, low=0.0),
        "momentum_decay": Hyper(float, low=0.0),
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.NAdam(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), eps=hp["epsilon"],
                                 weight_decay=hp["weight_decay"], momentum_decay=hp["momentum_decay"],
                                 decoupled_weight_decay=True)
