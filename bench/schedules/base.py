"""A schedule maps training progress to a factor on the base learning rate.

The study's schedules are epoch-wise and piecewise constant with f_0 = 1 always (DeepOBS ``make_lr_schedule``
sets the epoch-0 rate to the base rate, whatever the law says, §3). ``granularity=step`` evaluates the same law at
fractional epochs (t = epoch + step/steps_per_epoch) instead, with no f_0 quirk.
"""
from __future__ import annotations

from typing import Any, ClassVar

from bench.registry import Registry


class Schedule:
    name: ClassVar[str]

    def __init__(self, num_epochs: int, steps_per_epoch: int, granularity: str = "epoch", **params: Any) -> None:
        if granularity not in ("epoch", "step"):
            raise ValueError(f"invalid schedule.granularity={granularity!r}: must be one of epoch, step")
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps_per_epoch
        self.granularity = granularity
        self.configure(**params)

    def configure(self, **params: Any) -> None:
        """Take the law's own parameters (from the YAML); reject unknown ones."""
        if params:
            raise ValueError(f"schedule {self.name} takes no parameter {sorted(params)[0]!r}")

    def law(self, t: float) -> float:
        """The factor at (possibly fractional) epoch t."""
        raise NotImplementedError

    def factor(self, epoch: int, step: int = 0) -> float:
        """Factor for step ``step`` of epoch ``epoch`` (0-based)."""
        if self.granularity == "epoch":
            return 1.0 if epoch == 0 else self.law(epoch)
        return self.law(epoch + step / self.steps_per_epoch)

    def epoch_factors(self) -> list[float]:
        """f_0 .. f_N as the study writes them (f_N is never used for training)."""
        return [self.factor(n) for n in range(self.num_epochs + 1)]

    def observe(self, epoch: int, valid_metric: float, higher_is_better: bool) -> None:
        """Called after evaluating epoch ``epoch``; only reactive laws (plateau) use it."""


SCHEDULES: Registry[Schedule] = Registry("schedule", "bench.schedules")
