"""The study's ``cosine_wr``: SGDR cosine with warm restarts at epoch granularity (§3).

Cycles of length t0, t0·t_mult, t0·t_mult², … (study: 10, 20, 40, … so restarts at 10, 30, 70, 150, 310, …),
independent of N; within the cycle starting at s with length T, f = 0.5·(1 + cos(π·(t − s)/T)), so f = 1 at each
restart and the last cycle is truncated at N (f_100 = 0.69134 for N = 100). This is TF's
``cosine_decay_restarts(first_decay_steps=t0, t_mul=t_mult, m_mul=1, alpha=0)`` with epochs as steps.

Our own law rather than torch's CosineAnnealingWarmRestarts: that scheduler needs an integer T_mult and keeps its
position in mutable state advanced by ``step()``; here the factor is a pure function of the (possibly fractional)
epoch. Cycle starts are found by accumulating cycle lengths, which is exact for integer lengths, instead of TF's
closed form ``log(1 + t(t_mult−1)/t0)/log(t_mult)``, which can round a restart epoch into the previous cycle
(t0 = 1, t_mult = 3: log(243)/log(3) < 5 puts the restart at epoch 121 into cycle 4).
"""
from __future__ import annotations

import math

from bench.schedules.base import SCHEDULES, Param, Schedule
from optimizers.base import Hyper


@SCHEDULES.register
class CosineWR(Schedule):
    parameters = {
        "t0": Param(10.0, Hyper(float, low=0.0, low_open=True)),  # first cycle length in epochs
        "t_mult": Param(2.0, Hyper(float, low=1.0)),  # each cycle is t_mult times longer than the previous
    }
    t0: float
    t_mult: float

    def cycle(self, t: float) -> tuple[float, float]:
        """(t − start, length) of the cycle containing epoch t ≥ 0."""
        if self.t_mult == 1.0:
            return math.fmod(t, self.t0), self.t0  # fmod is exact: no rounding across a restart
        start, length = 0.0, self.t0
        while t >= start + length:
            start += length
            length *= self.t_mult
        return t - start, length

    def law(self, t: float) -> float:
        phase, length = self.cycle(t)
        return 0.5 * (1.0 + math.cos(math.pi * phase / length))
