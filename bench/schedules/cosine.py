"""The study's ``cosine``: f_n = 0.5·(1 + cos(π·n/N)), so f_N = 0 (never trained at) (§3).

Our own law rather than torch.optim.lr_scheduler.CosineAnnealingLR: torch's scheduler is recursive in the previous
LR and steps on its own counter, whereas the study's factors are a closed form of the epoch with f_0 = 1 forced by
``make_lr_schedule``; a closed form also gives the same law at fractional epochs for ``granularity=step``.
"""
from __future__ import annotations

import math

from bench.schedules.base import SCHEDULES, Schedule


@SCHEDULES.register
class Cosine(Schedule):
    def law(self, t: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * t / self.num_epochs))
