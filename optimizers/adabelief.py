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

import torch
from pytorch_optimizer import AdaBelief as _AdaBelief

from optimizers.base import OPTIMIZERS, OptimizerSpec, adam_family


@OPTIMIZERS.register
class AdaBelief(OptimizerSpec):
    study_name = "AdaBeliefOptimizer"  # the ICML version's 15th optimizer (§8); no folder in the published results
    hyperparameters = adam_family()

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return _AdaBelief(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]), weight_decay=0.0,
                          rectify=False, ams_bound=False, eps=hp["epsilon"])
