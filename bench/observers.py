"""What the run loop tells the world while a run trains: the observer hook of loggers, savers and progress displays.

An observer sees a run's life at its boundaries only — start (fresh or resumed from a checkpoint), each evaluated
epoch, each checkpoint, the end (after the record is written), or an interruption — never the training step, so it
cannot slow the step or make it sync with the host. The run loop shields the run from its observers: an observer
that raises is reported once on stderr and dropped (``SafeObservers``); only :class:`StopRun` (a pruner, a
deliberate stop) passes through. Engines call the same hooks per run, so a cohort's trials are observed like
single runs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from torch import Tensor

from bench.spec import RunSpec

Metrics = dict[str, dict[str, float]]


class StopRun(BaseException):
    """Raised by an observer to stop its run on purpose (e.g. a pruned tuning trial); nothing is recorded.

    A BaseException so that the record-on-failure path (``except Exception``) does not record it as failed.
    ``epoch`` is the evaluated epoch it was raised at (if the raiser knows it).
    """

    def __init__(self, epoch: int | None = None) -> None:
        super().__init__(epoch)
        self.epoch = epoch


@dataclass
class RunStart:
    spec: RunSpec
    start_epoch: int  # the first epoch this process evaluates (0, or where a checkpoint left off)
    num_parameters: int
    device: str
    engine: str = "single"
    resumes: int = 0
    curves: list[tuple[int, str, str, float]] = field(default_factory=list)  # restored from the checkpoint


@dataclass
class EpochInfo:
    """What an observer may read at an evaluated epoch besides the metrics."""

    lr_factor: float | None  # the schedule's factor for training epoch ``epoch`` (None after the last epoch)
    steps: int  # training steps done so far
    flat_params: Callable[[], Tensor]  # the run's parameters as one flat vector (a copy, on the run's device)
    named_buffers: Callable[[], dict[str, Tensor]] | None = None  # floating-point buffers (BN statistics), copies


class RunObserver(Protocol):
    """Every method is optional; a plain callable ``f(epoch, metrics)`` is accepted too (see :func:`adapt`)."""

    def on_start(self, start: RunStart) -> None: ...

    def on_epoch(self, epoch: int, metrics: Metrics, info: EpochInfo) -> None: ...

    def on_checkpoint(self, epoch: int) -> None: ...

    def on_end(self, record: Mapping[str, Any]) -> None: ...

    def on_stop(self, reason: str) -> None: ...


class _Callable:
    """A bare ``f(epoch, metrics)`` (progress bars, pruners) as an observer."""

    def __init__(self, fn: Callable[[int, Metrics], None]) -> None:
        self.fn = fn

    def on_epoch(self, epoch: int, metrics: Metrics, info: EpochInfo) -> None:
        self.fn(epoch, metrics)


def adapt(observer: Any) -> Any:
    if any(hasattr(observer, m) for m in ("on_start", "on_epoch", "on_checkpoint", "on_end", "on_stop")):
        return observer
    if callable(observer):
        return _Callable(observer)
    raise TypeError(f"not a run observer: {observer!r}")


class SafeObservers:
    """Fan-out to a run's observers; one that raises is dropped with a one-line warning and the run goes on.

    ``strict`` observers (pruners, progress bars: part of the harness) propagate :class:`StopRun` and errors.
    """

    def __init__(self, observers: Iterable[Any] = (), strict: Iterable[Any] = ()) -> None:
        self._soft = [adapt(o) for o in observers if o is not None]
        self._strict = [adapt(o) for o in strict if o is not None]

    def __bool__(self) -> bool:
        return bool(self._soft or self._strict)

    def _call(self, method: str, *args: Any) -> None:
        for obs in self._strict:
            fn = getattr(obs, method, None)
            if fn is not None:
                fn(*args)
        for obs in list(self._soft):
            fn = getattr(obs, method, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except StopRun:
                raise
            except Exception as err:  # noqa: BLE001 - an observer never fails a run
                self._soft.remove(obs)
                print(f"valley: warning: {type(obs).__name__} failed in {method} ({type(err).__name__}: "
                      f"{' '.join(str(err).split())[:200]}); the run continues without it", file=sys.stderr)

    def on_start(self, start: RunStart) -> None:
        self._call("on_start", start)

    def on_epoch(self, epoch: int, metrics: Metrics, info: EpochInfo) -> None:
        self._call("on_epoch", epoch, metrics, info)

    def on_checkpoint(self, epoch: int) -> None:
        self._call("on_checkpoint", epoch)

    def on_end(self, record: Mapping[str, Any]) -> None:
        self._call("on_end", record)

    def on_stop(self, reason: str) -> None:
        for obs in [*self._strict, *self._soft]:  # best effort: the run is already going down
            fn = getattr(obs, "on_stop", None)
            if fn is not None:
                try:
                    fn(reason)
                except Exception:  # noqa: BLE001
                    pass


Labels = Mapping[str, list[str]]
"""What a sweep knows of a run that the run itself does not (a run does not know it belongs to a study):
``{"role": ["trial" | "seed" | "single"], "budget": ["small", "medium", ...], "cell": [...]}``; empty when alone."""

ObserverFactory = Callable[[RunSpec, Labels], Iterable[Any]]
"""Makes a run's observers (a logger per run, a parameter saver, ...) from its spec and its sweep labels; engines
call it once per run. It must pickle (tuning workers are separate processes)."""


class ComposedFactory:
    """Several observer factories as one (a logger and a parameter saver); picklable when its parts are."""

    def __init__(self, factories: Iterable[ObserverFactory]) -> None:
        self.factories = [f for f in factories if f is not None]

    def __call__(self, spec: RunSpec, labels: Labels) -> list[Any]:
        return [o for f in self.factories for o in f(spec, labels)]
