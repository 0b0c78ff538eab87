"""NAdam, the study's ``NadamOptimizer`` (``tf.contrib.opt.NadamOptimizer``, after Dozat 2016).

TF's class is Adam whose ApplyAdam kernel runs with ``use_nesterov=True``: the same moments and bias-corrected step
size as TF Adam, with a Nesterov look-ahead numerator and *no* momentum-decay schedule::

    m ← β1·m + (1−β1)·g;   v ← β2·v + (1−β2)·g²;   lr_t = lr·sqrt(1−β2^t)/(1−β1^t)
    θ ← θ − lr_t·(β1·m + (1−β1)·g)/(sqrt(v) + ε)

torch.optim.NAdam implements Dozat's full algorithm instead: a warming-up momentum schedule
``μ_t = β1·(1 − 0.5·0.96^(t·momentum_decay))``, products of μ's as bias correction and ε added to the corrected
``sqrt(v̂)``; setting ``momentum_decay=0`` still leaves μ_t = β1/2. So TF's rule needs our own class
(``semantics=torch`` selects torch.optim.NAdam with its default momentum_decay 4e-3). ε defaults to 1e-7 (study).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers.adam import Adam, TFAdam, TFAdamCohort
from optimizers.base import OPTIMIZERS, OptimizerSpec


class TFNadam(TFAdam):
    """TF Adam's constructor and moment updates; the step uses the Nesterov numerator β1·m + (1−β1)·g."""

    def numerator(self, ms: list[torch.Tensor], grads: list[torch.Tensor], beta1: float) -> list[torch.Tensor]:
        numer = torch._foreach_mul(grads, 1.0 - beta1)
        torch._foreach_add_(numer, ms, alpha=beta1)
        return numer


class TFNadamCohort(TFAdamCohort):
    """Batched :class:`TFNadam`: numerator g·(1−β1), then ``add_(m, alpha=β1)`` = ``addcmul_(m, β1 column)``."""

    def numerator(self, i: int, m: torch.Tensor, g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        numer = g * self.constant("1-b1", 1.0 - self.trial["beta1"], p)
        return numer.addcmul_(m, self.constant("b1", self.trial["beta1"], p))


@OPTIMIZERS.register
class Nadam(OptimizerSpec):
    study_name = "NadamOptimizer"
    hyperparameters = dict(Adam.hyperparameters)  # lr, β1, β2 drawn as Adam's (§2.2); ε fixed
    cohort_rule = TFNadamCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["semantics"] == "torch":
            return torch.optim.NAdam(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                                     eps=hp["epsilon"])
        return TFNadam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"])
