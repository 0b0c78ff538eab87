"""AMSBound (Luo et al. 2019), the study's ``AMSBoundOptimizer``: AdaBound with ``v̂ = max(v̂, v)`` in the step size.

Same search space and sampling order as AdaBound (the study's AMSBound folders hold the AdaBound sample stream, §2.2);
update rule and semantics in :mod:`optimizers._adabound`.
"""
from __future__ import annotations

from optimizers._adabound import AdaBoundSpec
from optimizers.base import OPTIMIZERS


@OPTIMIZERS.register
class AMSBound(AdaBoundSpec):
    study_name = "AMSBoundOptimizer"
    amsbound = True
