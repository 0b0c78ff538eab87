"""AdaDelta, the study's ``AdadeltaOptimizer`` (``tf.train.AdadeltaOptimizer``, Zeiler 2012).

TF's ApplyAdadelta kernel, accumulators initialised to zeros::

    acc   ← ρ·acc + (1−ρ)·g²
    u     ← sqrt(acc_u + ε) / sqrt(acc + ε) · g
    acc_u ← ρ·acc_u + (1−ρ)·u²
    θ     ← θ − lr·u

torch.optim.Adadelta computes exactly these four lines (ε inside both square roots, lr multiplying the update), so
it is used as is; only the defaults differ: TF's lr is 1e-3 (the study's one-shot value, which is why one-shot
AdaDelta barely moves on P1) where torch's is 1.0, and ε 1e-8 vs torch's 1e-6 — the YAML carries TF's values.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers.base import MOMENTUM_SPACE, OPTIMIZERS, OptimizerSpec, beta, learning_rate, positive


@OPTIMIZERS.register
class Adadelta(OptimizerSpec):
    study_name = "AdadeltaOptimizer"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "rho": beta(MOMENTUM_SPACE),
        "epsilon": positive(),
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.Adadelta(params, lr=hp["learning_rate"], rho=hp["rho"], eps=hp["epsilon"])
