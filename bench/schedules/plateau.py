"""Reduce-on-plateau (lecture, §9): × gamma when the validation metric has stopped improving.

The decision rule is torch.optim.lr_scheduler.ReduceLROnPlateau's, with its defaults: an epoch improves on the best
value so far when ``metric < best·(1 − threshold)`` (``rel``) or ``metric < best − threshold`` (``abs``), mirrored
for ``higher_is_better``; after more than ``patience`` consecutive epochs without improvement the factor is
multiplied by gamma (floored at ``min_factor``), the bad-epoch count restarts and ``cooldown`` epochs follow in which
bad epochs are not counted. We keep our own copy of the rule instead of driving torch's scheduler because torch's
works on absolute learning rates of one optimizer (so ``min_lr``/``eps`` are absolute, and its state lives in
the scheduler object): here the rule yields a factor on the base rate like every other law, so the run loop treats
all schedules alike; torch's absolute ``eps`` guard against negligible updates has no factor-space counterpart and
is left out. The direction (``mode`` in torch) comes from the problem via ``observe(higher_is_better)``: accuracy
for classifiers, loss otherwise.

Order in the run loop (§0.1): evaluate after epoch n → ``observe(n, valid metric)`` → ``factor(n)`` sets the rate
of training epoch n. Epoch 0's observation only sets the best value (nothing has failed to improve yet), so f_0 = 1
as in every study schedule. Because the factor depends on the history, ``law(t)`` is the factor decided after
observing epoch ⌊t⌋, and for epochs not yet observed the current factor (what it stays at if nothing changes).
Defaults gamma 0.1, patience 10, threshold 1e-4 (rel), cooldown 0, min_factor 0 are torch's.
"""
from __future__ import annotations

import math
from typing import Any

from bench.schedules.base import SCHEDULES, Param, Schedule
from optimizers.base import Hyper


@SCHEDULES.register
class Plateau(Schedule):
    parameters = {
        "gamma": Param(0.1, Hyper(float, low=0.0, high=1.0, low_open=True, high_open=True)),
        "patience": Param(10, Hyper(int, low=0)),
        "threshold": Param(1e-4, Hyper(float, low=0.0)),
        "threshold_mode": Param("rel", Hyper(str, choices=("rel", "abs"))),
        "cooldown": Param(0, Hyper(int, low=0)),
        "min_factor": Param(0.0, Hyper(float, low=0.0, high=1.0)),
    }
    gamma: float
    patience: int
    threshold: float
    threshold_mode: str
    cooldown: int
    min_factor: float

    def __init__(self, num_epochs: int, steps_per_epoch: int, granularity: str = "epoch", **params: Any) -> None:
        super().__init__(num_epochs, steps_per_epoch, granularity, **params)
        self.levels: list[float] = []  # levels[n]: the factor decided after observing epoch n
        self.level = 1.0
        self.best = math.inf  # ∓inf by direction, set at the first observation (torch's init)
        self.higher_is_better: bool | None = None
        self.bad_epochs = 0
        self.cooldown_left = 0

    def improves(self, metric: float) -> bool:
        """torch's ``is_better`` (NaN never improves)."""
        sign = 1.0 if self.higher_is_better else -1.0
        if self.threshold_mode == "rel":
            bound = self.best * (1.0 + sign * self.threshold)
        else:
            bound = self.best + sign * self.threshold
        return metric > bound if self.higher_is_better else metric < bound

    def observe(self, epoch: int, valid_metric: float, higher_is_better: bool) -> None:
        if epoch != len(self.levels):
            raise ValueError(f"plateau schedule observed epoch {epoch} after {len(self.levels) - 1}: "
                             "epochs must be observed in order 0, 1, 2, …")
        if self.higher_is_better is not None and higher_is_better != self.higher_is_better:
            raise ValueError("plateau schedule: higher_is_better changed during the run")
        if self.higher_is_better is None:
            self.higher_is_better = higher_is_better
            self.best = -math.inf if higher_is_better else math.inf
        if self.improves(valid_metric):
            self.best = valid_metric
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.level = max(self.level * self.gamma, self.min_factor)
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0
        self.levels.append(self.level)

    def law(self, t: float) -> float:
        n = math.floor(t)
        return self.levels[n] if n < len(self.levels) else self.level
