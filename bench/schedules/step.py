"""Step decay (lecture, §9): f(t) = gamma^⌊t / step_size⌋, i.e. × gamma every ``step_size`` epochs.

The closed form of torch.optim.lr_scheduler.StepLR; ours is a pure function of the epoch (no scheduler state), so
it composes with the study's f_0 = 1 and, being piecewise constant per epoch, is the same law at step granularity.
Defaults (not from the study, which had no step decay): gamma 0.1 every 30 epochs, the classic ImageNet recipe.
"""
from __future__ import annotations

import math

from bench.schedules.base import SCHEDULES, Param, Schedule
from optimizers.base import Hyper


@SCHEDULES.register
class Step(Schedule):
    parameters = {
        "step_size": Param(30, Hyper(int, low=1)),
        "gamma": Param(0.1, Hyper(float, low=0.0, high=1.0, low_open=True)),
    }
    step_size: int
    gamma: float

    def law(self, t: float) -> float:
        return self.gamma ** math.floor(t / self.step_size)
