"""SGD (``tf.train.GradientDescentOptimizer``): θ ← θ − lr·g. torch.optim.SGD computes exactly this."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers.base import OPTIMIZERS, OptimizerSpec, learning_rate


@OPTIMIZERS.register
class SGD(OptimizerSpec):
    study_name = "GradientDescentOptimizer"
    hyperparameters = {"learning_rate": learning_rate()}

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=hp["learning_rate"], momentum=0.0)
