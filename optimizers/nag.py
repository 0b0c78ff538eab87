"""Nesterov momentum, the study's ``NAGOptimizer`` (= ``tf.train.MomentumOptimizer(use_nesterov=True)``).

TF's ApplyMomentum kernel with use_nesterov: ``v ← ρ·v + g;  θ ← θ − lr·(g + ρ·v)`` (the new v), accumulator
initialised to zeros. torch.optim.SGD(nesterov=True, dampening=0) computes the same: first step ``v = g``, then
``v ← ρ·v + g`` and ``θ ← θ − lr·(g + ρ·v)``; so torch's class is used. Warm-up option and validation are those of
:mod:`optimizers.momentum` (the coefficient ρ of both terms follows the warm-up).
"""
from __future__ import annotations

from optimizers.base import OPTIMIZERS
from optimizers.momentum import Momentum


@OPTIMIZERS.register
class NAG(Momentum):
    study_name = "NAGOptimizer"
    nesterov = True
