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

import math
from typing import Any, Callable, Iterable, Mapping

import torch

from optimizers.adam import Adam, TFAdam
from optimizers.base import OPTIMIZERS, OptimizerSpec


class TFNadam(TFAdam):
    """TF Adam's constructor and moment updates; the step uses the Nesterov numerator β1·m + (1−β1)·g."""

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            ms, vs = [s["m"] for s in states], [s["v"] for s in states]
            b1, b2 = group["beta1"], group["beta2"]
            t = states[0]["step"] + 1
            for s in states:
                s["step"] = t
            torch._foreach_lerp_(ms, grads, 1.0 - b1)
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1.0 - b2)
            numer = torch._foreach_mul(grads, 1.0 - b1)
            torch._foreach_add_(numer, ms, alpha=b1)
            lr_t = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["epsilon"])
            torch._foreach_addcdiv_(params, numer, denom, value=-lr_t)
        return loss


@OPTIMIZERS.register
class Nadam(OptimizerSpec):
    study_name = "NadamOptimizer"
    hyperparameters = dict(Adam.hyperparameters)  # lr, β1, β2 drawn as Adam's (§2.2); ε fixed

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["semantics"] == "torch":
            return torch.optim.NAdam(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                                     eps=hp["epsilon"])
        return TFNadam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"])
