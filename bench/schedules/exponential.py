"""Exponential decay (lecture, §9): f(t) = gamma^t.

The closed form of torch.optim.lr_scheduler.ExponentialLR (which is recursive, lr_t = gamma·lr_{t−1}); ours is a
pure function of the epoch, so it composes with the study's f_0 = 1 and extends to fractional epochs
(``granularity=step``: continuous decay, TF's ``exponential_decay`` with ``staircase=False``).
Default gamma 0.95 (not from the study): f_100 ≈ 0.006, a typical range of decay over a 100-epoch problem.
"""
from __future__ import annotations

from bench.schedules.base import SCHEDULES, Param, Schedule
from optimizers.base import Hyper


@SCHEDULES.register
class Exponential(Schedule):
    parameters = {"gamma": Param(0.95, Hyper(float, low=0.0, high=1.0, low_open=True))}
    gamma: float

    def law(self, t: float) -> float:
        return self.gamma ** t
