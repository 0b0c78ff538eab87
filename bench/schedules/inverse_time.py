"""Inverse-time (hyperbolic) decay (lecture, §9): f(t) = 1/(1 + decay_rate·t).

TF's ``inverse_time_decay`` with one epoch as the decay step; torch has no such scheduler (LambdaLR would need a
lambda, which cannot be named in a config or hashed into a run spec).
Default decay_rate 0.1 (not from the study): f_10 = 1/2, f_100 = 1/11.
"""
from __future__ import annotations

from bench.schedules.base import SCHEDULES, Param, Schedule
from optimizers.base import Hyper


@SCHEDULES.register
class InverseTime(Schedule):
    parameters = {"decay_rate": Param(0.1, Hyper(float, low=0.0))}
    decay_rate: float

    def law(self, t: float) -> float:
        return 1.0 / (1.0 + self.decay_rate * t)
