"""AMSGrad, the study's custom TF class ``AMSGrad`` (Reddi et al. 2018), in the TF Adam "epsilon hat" form.

What reproduces the published quadratic_deep runs (§2.2 notes): Adam's moments and bias-corrected step size, with the
running maximum of the second moment in the denominator::

    m ← β1·m + (1−β1)·g;   v ← β2·v + (1−β2)·g²;   v̂ ← max(v̂, v)          (m₀ = v₀ = v̂₀ = 0)
    lr_t = lr·sqrt(1−β2^t)/(1−β1^t);   θ ← θ − lr_t·m/(sqrt(v̂) + ε)

torch.optim.Adam(amsgrad=True) keeps the same maximum but adds ε to the bias-corrected ``sqrt(v̂)/sqrt(1−β2^t)``
(an ε that is effectively larger by 1/sqrt(1−β2^t) in early steps), so it is a different rule: our own class,
``semantics=torch`` selects torch's. The one-shot default lr is 1e-2 (not Adam's 1e-3), as in the study.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers._cohort import zeros_state
from optimizers.adam import Adam, TFAdam, TFAdamCohort
from optimizers.base import OPTIMIZERS, OptimizerSpec


class TFAMSGrad(TFAdam):
    """TF Adam's constructor and moment updates; the step divides by the running maximum of v."""

    def init_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {**super().init_state(p, group), "v_max": torch.zeros_like(p)}

    def denominator_moments(self, states: list[dict[str, Any]], vs: list[torch.Tensor]) -> list[torch.Tensor]:
        v_maxs = [s["v_max"] for s in states]
        torch._foreach_maximum_(v_maxs, vs)
        return v_maxs


class TFAMSGradCohort(TFAdamCohort):
    """Batched :class:`TFAMSGrad`: the running maximum (``maximum_``) of v in the denominator."""

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        super().configure(hps, params)
        self.state["v_max"] = zeros_state(params)

    def denominator_moments(self, vs: list[torch.Tensor]) -> list[torch.Tensor]:
        for v_max, v in zip(self.state["v_max"], vs):
            torch.maximum(v_max, v, out=v_max)
        return self.state["v_max"]


@OPTIMIZERS.register
class AMSGrad(OptimizerSpec):
    study_name = "AMSGrad"
    hyperparameters = dict(Adam.hyperparameters)  # lr, β1, β2 drawn as Adam's (§2.2); ε fixed
    cohort_rule = TFAMSGradCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["semantics"] == "torch":
            return torch.optim.Adam(params, lr=hp["learning_rate"], betas=(hp["beta1"], hp["beta2"]),
                                    eps=hp["epsilon"], amsgrad=True)
        return TFAMSGrad(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"])
