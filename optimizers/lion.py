"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): pytorch_optimizer's ``Lion`` as is
(beyond the study; torch has no Lion).

    c = β1·m + (1−β1)·g;   θ ← θ·(1 − lr·wd) − lr·sign(c);   m ← β2·m + (1−β2)·g

which is the paper's θ ← θ − lr·(sign(c) + wd·θ) (decoupled decay, scaled by the scheduled lr).

Defaults: the paper's (lr 1e-4, β1 0.9, β2 0.99, wd 0). Search space (beyond the study, in this order):
lr LU(1e-5, 1e-1) — the study's four decades shifted one decade down, because a sign update moves every
coordinate by lr (Chen et al. use a 3–10× smaller lr than AdamW's); β1, β2 with Adam's distributions (§2.2).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from pytorch_optimizer import Lion as LibraryLion

from optimizers.base import BETA1_SPACE, BETA2_SPACE, OPTIMIZERS, Hyper, LogUniform, OptimizerSpec, beta, learning_rate


@OPTIMIZERS.register
class Lion(OptimizerSpec):
    hyperparameters = {
        "learning_rate": learning_rate(LogUniform(-5.0, -1.0)),
        "beta1": beta(BETA1_SPACE),
        "beta2": beta(BETA2_SPACE),
        "weight_decay": Hyper(float, low=0.0),
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return LibraryLion(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                           weight_decay=hp["weight_decay"], weight_decouple=True, fixed_decay=False)
