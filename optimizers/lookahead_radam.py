"""Lookahead around RAdam, the study's ``LookaheadOptimizerRAdam`` (Zhang et al. 2019 + Liu et al. 2020).

Sampling order (§2.2): lr, β1, β2, k, α; ε, ``semantics``, ``sync`` and ``inner_step_count`` are fixed (no search
distribution, so the study's sample stream is unchanged).

The wrapper and its ``sync`` rules (``replace`` = the study's TF wrapper, default; ``after`` = the paper's):
:mod:`optimizers._lookahead`.

``inner_step_count`` — what the inner RAdam's step count t does inside Lookahead:

* ``frozen`` (default, the study's code): the TF RAdam the study wrapped, CyberZHG/keras-radam
  ``keras_radam/training.py`` ``RAdamOptimizer`` (read in PyPI's keras-rectified-adam 0.17.0), keeps t (its ``step`` non-slot variable, initial value 1.0) and
  the powers β1^t, β2^t (``beta1_power``/``beta2_power``, initial values β1, β2) as variables that only its
  ``_finish`` advances. jinmel/lookahead-tensorflow's ``LookaheadOptimizer._apply_dense`` calls the inner
  ``_apply_dense`` and never its ``_finish``, so t = 1 for the whole run. At t = 1, ρ₁ = ρ∞ − 2β2/(1−β2) = 1 < 5
  for every β2, so every inner update takes the un-rectified branch ``var_t = m_corr_t``::

      m ← β1·m + (1−β1)·g;   v ← β2·v + (1−β2)·g²   (v is kept, never used);   θ ← θ − lr·m/(1−β1)

  i.e. heavy-ball momentum (EMA form) with ρ = β1 and step lr/(1−β1); ε plays no part. RAdam used alone is not
  affected (its ``_finish`` runs: :mod:`optimizers.radam`).
* ``advancing``: t = 1, 2, … over the inner updates, RAdam as its paper and :mod:`optimizers.radam` define it
  (today's rule before issue #15, with ``sync=after``; ``semantics=torch`` selects torch.optim.RAdam, whose own
  step count advances, so it needs ``advancing``).

Lookahead as its paper defines it: ``sync=after inner_step_count=advancing``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers._lookahead import LookaheadCohort, alpha_hyper, k_hyper, sync_hyper, wrap
from optimizers.base import (BETA1_SPACE, BETA2_SPACE, OPTIMIZERS, Hyper, HyperparameterError, OptimizerSpec, beta,
                             learning_rate, positive, semantics)
from optimizers._cohort import tf_semantics_only
from optimizers.radam import TFRAdam, TFRAdamCohort, build_radam


class UnfinishedTFRAdam(TFRAdam):
    """The Keras-port RAdam driven through ``_apply_dense`` only: every update uses t = 1 (see module docstring).

    ``state['step']`` still counts the updates applied (bookkeeping of :class:`MomentOptimizer`); the rule reads the
    TF step variable, which stays at 1.
    """

    def update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
               states: list[dict[str, Any]], t: int) -> None:
        super().update(group, params, grads, states, 1)


class LookaheadRAdamCohort(LookaheadCohort):
    """The inner rule is batched TFRAdam, ``frozen`` per trial (t = 1) or advancing with the trial's own inner steps."""

    inner_rule = TFRAdamCohort
    unsupported = staticmethod(tf_semantics_only)


@OPTIMIZERS.register
class LookaheadRAdam(OptimizerSpec):
    study_name = "LookaheadOptimizerRAdam"
    hyperparameters = {
        "learning_rate": learning_rate(),
        "beta1": beta(BETA1_SPACE),
        "beta2": beta(BETA2_SPACE),
        "k": k_hyper(),
        "alpha": alpha_hyper(),
        "epsilon": positive(),
        "semantics": semantics(),
        "sync": sync_hyper(),
        "inner_step_count": Hyper(str, choices=("frozen", "advancing")),
    }
    cohort_rule = LookaheadRAdamCohort

    @classmethod
    def check_combination(cls, hp: Mapping[str, Any]) -> None:
        if hp["semantics"] == "torch" and hp["inner_step_count"] == "frozen":
            raise HyperparameterError("invalid inner_step_count=frozen with semantics=torch: the frozen step count is "
                                      "the TF port's rule; torch.optim.RAdam needs inner_step_count=advancing")

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        if hp["inner_step_count"] == "frozen":
            inner = UnfinishedTFRAdam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"],
                                      epsilon=hp["epsilon"])
        else:
            inner = build_radam(params, hp)
        return wrap(inner, hp)
