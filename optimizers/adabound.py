"""AdaBound (Luo et al. 2019), the study's ``AdaBoundOptimizer`` (TF port, ``amsbound=False``).

The update rule, the tf/torch semantics (whether ``final_lr`` follows the learning-rate schedule) and why we do not
use pytorch_optimizer.AdaBound are documented in :mod:`optimizers._adabound`.
"""
from __future__ import annotations

from optimizers._adabound import AdaBoundSpec
from optimizers.base import OPTIMIZERS


@OPTIMIZERS.register
class AdaBound(AdaBoundSpec):
    study_name = "AdaBoundOptimizer"
    amsbound = False
