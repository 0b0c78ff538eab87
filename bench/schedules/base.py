"""A schedule maps training progress to a factor on the base learning rate.

The study's schedules are epoch-wise and piecewise constant with f_0 = 1 always (DeepOBS ``make_lr_schedule``
sets the epoch-0 rate to the base rate, whatever the law says, §3). ``granularity=step`` evaluates the same law at
fractional epochs (t = epoch + step/steps_per_epoch) instead, with no f_0 quirk.

A law's parameters are declared once in ``parameters`` (default and valid range); ``conf/schedule/<name>.yaml``
mirrors the defaults so that Hydra can override them (a test keeps the two equal). ``canonical_settings`` fills in
the defaults, so that a spec naming only the schedule and one spelling out its defaults are the same run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from bench.registry import Registry
from optimizers.base import Hyper

GRANULARITIES = ("epoch", "step")


@dataclass(frozen=True)
class Param:
    """One law parameter: its default (the study's value where the study fixed one) and its valid range."""

    default: Any
    range: Hyper


class Schedule:
    name: ClassVar[str]
    parameters: ClassVar[dict[str, Param]] = {}

    def __init__(self, num_epochs: int, steps_per_epoch: int, granularity: str = "epoch", **params: Any) -> None:
        self.granularity = _check_granularity(granularity)
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps_per_epoch
        self.configure(**params)

    @classmethod
    def law_parameters(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """The law's parameters, checked and coerced, defaults filled in, in declaration order.

        Raises a one-line ``ValueError`` naming the bad parameter and what is valid.
        """
        unknown = sorted(set(params) - set(cls.parameters))
        if unknown:
            valid = ", ".join(["granularity", *cls.parameters])
            raise ValueError(f"schedule {cls.name} takes no parameter {unknown[0]!r}; valid: {valid}")
        return {k: p.range.check(f"schedule.{k}", params.get(k, p.default)) for k, p in cls.parameters.items()}

    @classmethod
    def canonical_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``granularity`` and every law parameter: the form a run spec should store (``name`` is dropped)."""
        rest = {k: v for k, v in settings.items() if k not in ("name", "granularity")}
        return {"granularity": _check_granularity(settings.get("granularity", "epoch")),
                **cls.law_parameters(rest)}

    def configure(self, **params: Any) -> None:
        """Take the law's own parameters (from the YAML) as attributes; reject unknown ones."""
        for key, value in self.law_parameters(params).items():
            setattr(self, key, value)

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
        """Called after evaluating epoch ``epoch``, before ``factor(epoch)``; only reactive laws (plateau) use it."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a law has learnt while running (a plateau's history); saved with a mid-run checkpoint."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(self).items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        vars(self).update({k: (list(v) if isinstance(v, list) else v) for k, v in state.items()})


def _check_granularity(granularity: Any) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"invalid schedule.granularity={granularity!r}: must be one of {', '.join(GRANULARITIES)}")
    return granularity


SCHEDULES: Registry[Schedule] = Registry("schedule", "bench.schedules")
