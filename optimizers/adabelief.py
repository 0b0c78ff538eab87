"""AdaBelief (Zhuang et al. 2020, arXiv 2010.07468): Adam with the EMA of the squared *prediction error* (g − m)
instead of g², the ICML version's 15th optimizer (§8: search space as Adam's, ε fixed at 1e-16).

Paper Algorithm 1, which we follow::

    m ← β1 m + (1−β1) g;   s ← β2 s + (1−β2)(g − m)² + ε          (m is the *new* m; ε stored inside s)
    θ ← θ − lr·(m/(1−β1^t)) / (sqrt(s/(1−β2^t)) + ε)

The official adabelief-pytorch (and adabelief-tf) compute exactly this: ``exp_avg_var.add_(eps)`` in place, then
``denom = sqrt(exp_avg_var)/sqrt(1−β2^t) + eps`` and step ``lr/(1−β1^t)`` — ε enters twice, inside the root via s and
outside it. Their package defaults additionally switch on decoupled weight decay (irrelevant at weight_decay 0)
and, from v0.2, RAdam-style rectification (``rectify=True``), which is not the paper's algorithm; we use neither.

Implementation: ``pytorch_optimizer.AdaBelief(rectify=False, weight_decay=0)`` computes exactly the rule above
(same in-place ε in s, same denominator), so it is used as is; torch.optim has no AdaBelief, and no PyTorch
implementation differs from the TF one here, hence no ``semantics`` switch.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch
from pytorch_optimizer import AdaBelief as _AdaBelief

from optimizers._cohort import CohortRule, Regrad, floats, zeros_state
from optimizers.base import OPTIMIZERS, OptimizerSpec, adam_family


class AdaBeliefCohort(CohortRule):
    """Batched pytorch_optimizer AdaBelief (rectify off, no weight decay: its foreach path, which it takes on every
    device): ``lerp`` m; s ← β2·s + (1−β2)·(g−m)² + ε; ``sqrt``, ``div`` √(1−β2^t), ``add`` ε; ``addcdiv``."""

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.trial = {"beta1": floats(hps, "beta1"), "beta2": floats(hps, "beta2"), "eps": floats(hps, "epsilon"),
                      "step": np.zeros(len(hps), dtype=np.int64)}
        self.state = {"exp_avg": zeros_state(params), "exp_avg_var": zeros_state(params)}

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        tr = self.trial
        tr["step"] = t = tr["step"] + 1
        b1, b2 = tr["beta1"], tr["beta2"]
        step_size = lrs / (1 - self.pow("beta1", t))  # lr / debias(β1, t)
        bc2_sq = np.sqrt(1 - self.pow("beta2", t))
        neg_step, bc2 = self.columns(-step_size, params), self.columns(bc2_sq, params)
        for i, (p, g, m, s) in enumerate(zip(params, grads, self.state["exp_avg"], self.state["exp_avg_var"])):
            eps = self.constant("eps", tr["eps"], p)
            m.lerp_(g, self.constant("1-b1", 1.0 - b1, p))
            residual = g - m
            s.mul_(self.constant("b2", b2, p))
            s.addcmul_(residual * self.constant("1-b2", 1.0 - b2, p), residual)
            s.add_(eps)
            denom = torch.sqrt(s)
            denom.div_(bc2[i])
            denom.add_(eps)
            p.addcdiv_(m * neg_step[i], denom)


@OPTIMIZERS.register
class AdaBelief(OptimizerSpec):
    study_name = "AdaBeliefOptimizer"  # the ICML version's 15th optimizer (§8); no folder in the published results
    hyperparameters = adam_family()
    cohort_rule = AdaBeliefCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return _AdaBelief(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), weight_decay=0.0,
                          rectify=False, ams_bound=False, eps=hp["epsilon"])
