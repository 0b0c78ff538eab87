"""Lookahead around RAdam, the study's ``LookaheadOptimizerRAdam`` (Zhang et al. 2019 + Liu et al. 2020).

Inner optimizer: the ``radam`` plugin's update (TF/Keras port, or torch.optim.RAdam for ``semantics=torch``, see
:mod:`optimizers.radam`); Lookahead maths: :mod:`optimizers._lookahead`. Sampling order (§2.2): lr, β1, β2, k, α.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from optimizers._lookahead import alpha_hyper, k_hyper, wrap
from optimizers.base import (BETA1_SPACE, BETA2_SPACE, OPTIMIZERS, OptimizerSpec, beta, learning_rate, positive,
                             semantics)
from optimizers.radam import build_radam


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
    }

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return wrap(build_radam(params, hp), hp)
