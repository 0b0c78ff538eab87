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

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad, floats, zeros_state
from optimizers.base import MOMENTUM_SPACE, OPTIMIZERS, OptimizerSpec, beta, learning_rate, positive


class AdadeltaCohort(CohortRule):
    """Batched ``torch.optim.Adadelta``: its single-tensor lines per trial, 1−ρ folded into ``addcmul_``'s first
    operand and −lr into ``addcmul_`` in place of ``add_(alpha)``."""

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.trial = {"rho": floats(hps, "rho"), "eps": floats(hps, "epsilon")}
        self.state = {"square_avg": zeros_state(params), "acc_delta": zeros_state(params)}

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        rho = self.trial["rho"]
        for p, g, sq, acc, neg in zip(params, grads, self.state["square_avg"], self.state["acc_delta"],
                                      self.columns(-lrs, params)):
            r, w, eps = (self.constant(n, v, p) for n, v in (("rho", rho), ("1-rho", 1 - rho),
                                                              ("eps", self.trial["eps"])))
            sq.mul_(r).addcmul_(g * w, g)
            std = sq.add(eps).sqrt_()
            delta = acc.add(eps).sqrt_()
            delta.div_(std).mul_(g)
            acc.mul_(r).addcmul_(delta * w, delta)
            p.addcmul_(delta, neg)


@OPTIMIZERS.register
class Adadelta(OptimizerSpec):
    study_name = "AdadeltaOptimizer"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "rho": beta(MOMENTUM_SPACE),
        "epsilon": positive(),
    }
    cohort_rule = AdadeltaCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.Adadelta(params, lr=hp["learning_rate"], rho=hp["rho"], eps=hp["epsilon"])
