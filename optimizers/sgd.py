"""SGD (``tf.train.GradientDescentOptimizer``): θ ← θ − lr·g. torch.optim.SGD computes exactly this."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad
from optimizers.base import OPTIMIZERS, OptimizerSpec, learning_rate


class SGDCohort(CohortRule):
    """Batched torch SGD without momentum: ``θ.add_(g, alpha=−lr)`` per trial = ``θ.addcmul_(g, −lr column)``."""

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        for p, g, neg_lr in zip(params, grads, self.columns(-lrs, params)):
            p.addcmul_(g, neg_lr)


@OPTIMIZERS.register
class SGD(OptimizerSpec):
    study_name = "GradientDescentOptimizer"
    hyperparameters = {"learning_rate": learning_rate()}
    cohort_rule = SGDCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=hp["learning_rate"], momentum=0.0)
