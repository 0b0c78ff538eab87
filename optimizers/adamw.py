"""AdamW (Loshchilov & Hutter 2019), ``torch.optim.AdamW`` used as is (beyond the study).

torch form: θ ← θ·(1 − lr·wd) (decoupled, scaled by the scheduled lr), then Adam with ε added to the
bias-corrected √v̂: θ ← θ − lr·m̂/(√v̂ + ε). This is *not* the study's TF Adam "epsilon hat" form (adam.py), and the
decay is on every parameter the optimizer holds (biases included), on top of the problem's own L2 on kernels (§0.3).

Defaults: torch's (lr 1e-3, β 0.9/0.999, ε 1e-8, wd 1e-2). Search space (beyond the study, in this order): lr, β1,
β2 with Adam's distributions (§2.2); ε and wd fixed.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers.base import (BETA1_SPACE, BETA2_SPACE, OPTIMIZERS, Hyper, OptimizerSpec, beta, learning_rate,
                             positive)


@OPTIMIZERS.register
class AdamW(OptimizerSpec):
    hyperparameters = {
        "learning_rate": learning_rate(),
        "beta1": beta(BETA1_SPACE),
        "beta2": beta(BETA2_SPACE),
        "epsilon": positive(),
        "weight_decay": Hyper(float, low=0.0),
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                                 eps=hp["epsilon"], weight_decay=hp["weight_decay"])
