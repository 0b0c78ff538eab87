"""Run specs: find their records (skip), or train them and write the records. The unit every sweep is made of.

``execute`` does one spec with the single-run loop; ``execute_many`` does a batch: it drops what is recorded, lets
the engine (``bench.engine``) group the rest — cohorts of trials that share one data stream train as one program,
everything else one run at a time — spreads the groups over ``workers`` processes, and writes each group's records
at once (``records.write_runs``: one packed file per cohort). Both keep the same guarantees: a finished run is
visible exactly once, a kill leaves nothing partial, a run that raises is recorded as ``failed`` (retried by the
next invocation), a missing data set propagates (a broken machine, not a failed run), and a mid-run checkpoint is
removed once its run's record is written.
"""
from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import records
from bench.checkpoint import CheckpointPolicy, CheckpointStore
from bench.observers import Labels, ObserverFactory, SafeObservers, StopRun
from bench.spec import RunSpec
from bench.train import EpochObserver, RunResult, train
from problems.datasets.errors import DataError


@dataclass
class Outcome:
    run_id: str
    record: dict[str, Any] | None  # None: stopped on purpose (pruned) and not recorded
    skipped: bool  # the record existed and nothing was trained
    path: Path
    stopped_at: int | None = None  # the epoch a StopRun came at


@dataclass(frozen=True)
class RunEnv:
    """Where and how runs happen: never part of a run's identity (the spec is)."""

    results_dir: str
    device: str = "auto"
    data_dir: str | None = None
    engine: str = "single"  # single | cohort | cohort_fast | auto (bench.engine)
    workers: int = 1  # processes training at once
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    deterministic: bool = False
    observers: ObserverFactory | None = None  # per-run observers (loggers, parameter savers); must pickle

    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore.under(self.results_dir, self.checkpoint)

    def observers_for(self, spec: RunSpec, labels: Labels | None = None) -> list[Any]:
        return list(self.observers(spec, labels or {})) if self.observers is not None else []


def env_from_config(cfg: Mapping[str, Any]) -> RunEnv:
    """The run environment of a composed config (device, data, engine, checkpoints, observers); raises a one-line
    ValueError for a bad value."""
    from bench.checkpoint import policy_from_config
    from bench.engine import ENGINES
    from bench.loggers import observer_factory
    from bench.observers import ComposedFactory

    engine = cfg.get("engine", "single")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    deterministic = cfg.get("deterministic", False)
    if not isinstance(deterministic, bool):
        raise ValueError(f"invalid deterministic={deterministic!r}: must be true or false")
    from bench.landscape.saver import saver_factory

    tuning = cfg.get("tuning") or {}
    factories = [observer_factory(cfg), saver_factory(cfg)]
    return RunEnv(results_dir=str(cfg.get("results_dir", "results")), device=str(cfg.get("device", "auto")),
                  data_dir=cfg.get("data_dir"), engine=engine, workers=int(tuning.get("workers", 1) or 1),
                  checkpoint=policy_from_config(cfg.get("checkpoint")), deterministic=deterministic,
                  observers=ComposedFactory(factories) if any(factories) else None)


def failed_result(spec: RunSpec, started: datetime, err: BaseException) -> RunResult:
    return RunResult(spec=spec, status="failed", started_at=started, finished_at=datetime.now(timezone.utc),
                     error=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=20)}")


def execute(spec: RunSpec, results_dir: str | Path, *, device: str = "auto", data_dir: str | Path | None = None,
            force: bool = False, on_epoch: EpochObserver | None = None, observers: Iterable[Any] = (),
            checkpoints: CheckpointStore | None = None, deterministic: bool = False) -> Outcome:
    """Train ``spec`` unless a finished record of it exists; write curves then the runs row, atomically.

    A run that raises is recorded as ``failed`` (with the error) so a sweep can carry on and report it; failed runs
    are retried by the next invocation. A missing or corrupt data set is not a failed run but a broken environment:
    it propagates and nothing is written. A :class:`StopRun` from ``on_epoch`` (a pruner) records nothing.
    """
    path = Path(results_dir) / "runs" / f"{spec.run_id}.parquet"
    if not force:
        existing = records.find_run(results_dir, spec.run_id)
        if existing is not None and existing["status"] in records.FINISHED:
            return Outcome(spec.run_id, existing, True, path)
    observers = list(observers)
    started = datetime.now(timezone.utc)
    try:
        result = train(spec, device=device, data_dir=data_dir, on_epoch=on_epoch, observers=observers,
                       checkpoints=checkpoints, deterministic=deterministic)
    except StopRun as stop:
        if checkpoints is not None:
            checkpoints.remove(spec.run_id)
        return Outcome(spec.run_id, None, False, path, stopped_at=getattr(stop, "epoch", None))
    except (KeyboardInterrupt, SystemExit, DataError):
        raise
    except Exception as err:  # noqa: BLE001 - recorded, then the caller decides
        result = failed_result(spec, started, err)
    return _finish(results_dir, [(result, observers)], checkpoints)[0]


def _finish(results_dir: str | Path, done: Sequence[tuple[RunResult, list[Any]]],
            checkpoints: CheckpointStore | None) -> list[Outcome]:
    """Write the records of finished results (one pack for many), drop their checkpoints, tell their observers."""
    for result, observers in done:
        if result.status in records.FINISHED and result.params_file is None:
            result.params_file = _saved_params_file(observers)
    rows = [(r.record(), r.curves) for r, _ in done]
    records.write_runs(results_dir, rows)
    out = []
    for (result, observers), (record, _) in zip(done, rows):
        if checkpoints is not None:
            checkpoints.remove(result.spec.run_id)
        if observers:
            SafeObservers(observers).on_end(record)
        out.append(Outcome(result.spec.run_id, record, False,
                           Path(results_dir) / "runs" / f"{result.spec.run_id}.parquet"))
    return out


def _saved_params_file(observers: Sequence[Any]) -> str | None:
    """The parameter file a saver observer (``save_params``, ``bench.landscape.saver``) wrote for a finished run,
    relative to results_dir; asked before the record is written, so a record that names a file always has it."""
    for obs in observers:
        fn = getattr(obs, "saved_params_file", None)
        if fn is None:
            continue
        try:
            path = fn()
        except Exception as err:  # noqa: BLE001 - a saver never fails a run: the record just has no file
            print(f"valley: warning: {type(obs).__name__} could not write its file ({type(err).__name__}: "
                  f"{' '.join(str(err).split())[:200]}); the run is recorded without params_file", file=sys.stderr)
            continue
        if path:
            return path
    return None


OnRun = Callable[[Outcome], None]


def pending(specs: Iterable[RunSpec], results_dir: str | Path, force: bool = False
            ) -> tuple[list[RunSpec], dict[str, Outcome]]:
    """The specs still to train (unique by run_id, in order) and the outcomes of those already recorded."""
    todo: dict[str, RunSpec] = {}
    done: dict[str, Outcome] = {}
    specs = list(specs)
    known = {} if force else records.find_runs(results_dir, (s.run_id for s in specs))
    for spec in specs:
        if spec.run_id in todo or spec.run_id in done:
            continue
        existing = known.get(spec.run_id)
        if existing is not None and existing["status"] in records.FINISHED:
            done[spec.run_id] = Outcome(spec.run_id, existing, True,
                                        Path(results_dir) / "runs" / f"{spec.run_id}.parquet")
        else:
            todo[spec.run_id] = spec
    return list(todo.values()), done


def execute_many(specs: Sequence[RunSpec], env: RunEnv, *, force: bool = False, on_run: OnRun | None = None,
                 strict_observers: Callable[[RunSpec], Iterable[Any]] | None = None,
                 say: Callable[[str], None] | None = None, labels: Mapping[str, Labels] | None = None
                 ) -> dict[str, Outcome]:
    """Every spec's outcome by run_id: recorded ones skipped, the rest trained by the env's engine and workers.

    ``strict_observers`` gives a run harness observers whose :class:`StopRun` stops just that run (pruners);
    ``say`` receives one-line notes (why a spec cannot join a cohort); ``labels`` (run_id → sweep labels) reach
    the runs' observers (a logger's tags).
    """
    from bench.engine import assign, run_group

    todo, outcomes = pending(specs, env.results_dir, force)
    for outcome in outcomes.values():
        if on_run is not None:
            on_run(outcome)
    if not todo:
        return outcomes
    groups = assign(todo, env.engine, env.device, say=say, workers=env.workers)
    if env.workers <= 1 or len(groups) == 1 and len(groups[0].specs) == 1:
        for group in groups:
            for outcome in run_group(group, env, strict_observers, labels):
                outcomes[outcome.run_id] = outcome
                if on_run is not None:
                    on_run(outcome)
        return outcomes
    from concurrent.futures import FIRST_COMPLETED, wait

    from bench.tuning import pool

    executor = pool.get_pool(env.workers)
    futures = {executor.submit(run_group, group, env, strict_observers,
                                                    {s.run_id: labels[s.run_id] for s in group.specs if s.run_id in labels} if labels else None) for group in groups}
    while futures:
        finished, futures = wait(futures, return_when=FIRST_COMPLETED)
        for fut in finished:
            for outcome in fut.result():
                outcomes[outcome.run_id] = outcome
                if on_run is not None:
                    on_run(outcome)
    return outcomes


def with_engine(env: RunEnv, engine: str) -> RunEnv:
    return replace(env, engine=engine)
