"""AdaGrad, the study's ``AdagradOptimizer`` (``tf.train.AdagradOptimizer``, Duchi et al. 2011).

TF's rule has no ε: ``acc ← acc + g²;  θ ← θ − lr·g/sqrt(acc)`` with ``acc₀ = initial_accumulator_value`` (0.1;
TF requires it to be positive, which keeps the division finite). torch.optim.Adagrad computes
``θ ← θ − lr/(1 + (t−1)·lr_decay) · g/(sqrt(acc) + eps)`` with the same accumulator start: with ``lr_decay = 0`` and
``eps = 0`` (both allowed by torch) this *is* TF's rule, up to TF multiplying by rsqrt where torch divides by sqrt
(rounding only). So the TF semantics use torch's class with ``eps = 0``; ``semantics=torch`` restores torch's ε of
1e-10 outside the square root (and then allows ``initial_accumulator_value = 0``, torch's own default).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad, floats
from optimizers.base import OPTIMIZERS, Hyper, HyperparameterError, OptimizerSpec, learning_rate, semantics

TORCH_EPS = 1e-10  # torch.optim.Adagrad's default eps


class AdagradCohort(CohortRule):
    """Batched ``torch.optim.Adagrad`` (lr_decay 0) as :meth:`Adagrad.build` configures it: per trial acc₀ and ε
    (0 for TF semantics), ``addcmul_(g, g, value=1)``, ``sqrt().add_(ε)``, ``addcdiv_`` with −clr folded in."""

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.trial = {"initial": floats(hps, "initial_accumulator_value"),
                      "eps": np.array([0.0 if hp["semantics"] == "tf" else TORCH_EPS for hp in hps]),
                      "step": np.zeros(len(hps), dtype=np.float64)}
        self.state = {"sum": [self.column(self.trial["initial"], p).expand_as(p).clone() for p in params]}

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        tr = self.trial
        tr["step"] = tr["step"] + 1.0  # torch's float32 step tensor, read with .item()
        clr = lrs / (1 + (tr["step"] - 1) * 0.0)  # lr_decay = 0
        for p, g, acc, neg in zip(params, grads, self.state["sum"], self.columns(-clr, params)):
            acc.addcmul_(g, g, value=1)
            std = acc.sqrt().add_(self.constant("eps", tr["eps"], p))
            p.addcdiv_(g * neg, std)


@OPTIMIZERS.register
class Adagrad(OptimizerSpec):
    study_name = "AdagradOptimizer"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "initial_accumulator_value": Hyper(float, low=0.0),
        "semantics": semantics(),
    }
    cohort_rule = AdagradCohort

    @classmethod
    def check_combination(cls, hp: Mapping[str, Any]) -> None:
        if hp["semantics"] == "tf" and hp["initial_accumulator_value"] <= 0.0:
            raise HyperparameterError(
                f"invalid initial_accumulator_value={hp['initial_accumulator_value']!r}: must be > 0 with "
                "semantics=tf (TF's AdaGrad has no epsilon)")

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        eps = 0.0 if hp["semantics"] == "tf" else TORCH_EPS
        return torch.optim.Adagrad(params, lr=hp["learning_rate"], lr_decay=0.0, weight_decay=0.0,
                                   initial_accumulator_value=hp["initial_accumulator_value"], eps=eps)
