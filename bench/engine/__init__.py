"""How runs train: one at a time (the ``single`` engine, ``bench.train``), or as cohorts — trials that share one
data stream stacked along a leading trial dimension and trained as one program (``bench.engine.cohort``).

``engine=`` chooses: ``single`` (every run alone), ``cohort`` (cohorts wherever the cohort engine supports the
spec, the rest alone, each with one line saying why), ``cohort_fast`` (P1's closed-form maths, reordered and
therefore a different run identity: ``RunSpec.arithmetic=reordered``), and ``auto`` (cohorts where they apply and
pay: a group of one trains alone). A cohort key holds everything that changes what the shared stream draws
(problem and settings, seed, data order, device, ...); runs with equal keys may differ in optimizer, schedule and
hyperparameters. Whatever trains them, every run gets its own records under its own run_id.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import TYPE_CHECKING, Any

from bench.observers import Labels, SafeObservers, StopRun
from bench.spec import RunSpec

# The cohort engine module (bench/engine/cohort.py or a package) provides:
#   unsupported(spec, engine, device) -> str | None   why ``spec`` cannot train in a cohort under ``engine``
#                                                       (cohort | cohort_fast | auto; auto may also decline where
#                                                       a cohort would not pay), None when it can
#   cohort_key(spec, device) -> Hashable              equal keys = one shared data stream
#   max_cohort(spec, device) -> int                   most trials per program (memory)
#   checkpoint_key(specs) -> str                      the cohort's checkpoint file key (removed after records)
#   train_cohort(specs, *, engine, device, data_dir, observers, checkpoints, deterministic)
#       -> list[RunResult | StopRun]                   one per spec, in order; observers: run_id -> SafeObservers

if TYPE_CHECKING:
    from bench.execute import Outcome, RunEnv

ENGINES = ("single", "cohort", "cohort_fast", "auto")


class EngineError(ValueError):
    """A spec no engine of the chosen kind can train; the message is one line."""


@dataclass
class Group:
    engine: str  # single | cohort | cohort_fast
    specs: list[RunSpec]


def cohort_module() -> ModuleType | None:
    """The cohort engine, if this checkout has one."""
    if importlib.util.find_spec("bench.engine.cohort") is None:
        return None
    return importlib.import_module("bench.engine.cohort")


def assign(specs: Sequence[RunSpec], engine: str, device: str, *, say: Callable[[str], None] | None = None,
           workers: int = 1) -> list[Group]:
    """Split ``specs`` into groups that train together; unsupported specs become single runs (noted once each)."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    reordered = [s for s in specs if s.arithmetic != "exact"]
    module = cohort_module() if engine != "single" or reordered else None
    if engine == "single" and not reordered:
        return [Group("single", [s]) for s in specs]
    if module is None:
        if reordered:
            raise EngineError("specs with arithmetic=reordered need engine=cohort_fast, which this checkout lacks")
        if say is not None:
            say(f"engine={engine}: no cohort engine in this checkout; every run trains alone")
        return [Group("single", [s]) for s in specs]
    groups: list[Group] = []
    buckets: dict[Any, list[RunSpec]] = {}
    reasons: dict[str, int] = {}
    for spec in specs:
        asked = "cohort_fast" if spec.arithmetic != "exact" else ("cohort" if engine == "cohort_fast" else engine)
        spec_kind = "cohort_fast" if asked == "cohort_fast" else "cohort"
        why = module.unsupported(spec, asked, device)
        if why is not None:
            if spec.arithmetic != "exact":
                raise EngineError(f"{spec.problem}/{spec.optimizer}: arithmetic=reordered is not available: {why}")
            reasons[why] = reasons.get(why, 0) + 1
            groups.append(Group("single", [spec]))
            continue
        buckets.setdefault((spec_kind, module.cohort_key(spec, device)), []).append(spec)
    for why, count in reasons.items():
        if say is not None:
            say(f"{count} run{'s' if count != 1 else ''} train alone: {why}")
    for (spec_kind, _), members in buckets.items():
        if engine == "auto" and len(members) == 1:
            groups.append(Group("single", members))
            continue
        limit = max(1, int(module.max_cohort(members[0], device)))
        chunks = max(workers, -(-len(members) // limit)) if workers > 1 else -(-len(members) // limit)
        size = -(-len(members) // chunks)
        groups += [Group(spec_kind, members[i:i + size]) for i in range(0, len(members), size)]
    return groups


def run_group(group: Group, env: RunEnv, strict_observers: Callable[[RunSpec], Iterable[Any]] | None = None,
              labels: Mapping[str, Labels] | None = None) -> list[Outcome]:
    """Train one group and write its records; returns an outcome per spec (``record`` None: stopped on purpose)."""
    from bench.execute import _finish, execute, failed_result

    checkpoints = env.checkpoints()
    if group.engine == "single":
        spec = group.specs[0]
        strict = list(strict_observers(spec)) if strict_observers is not None else []
        return [execute(spec, env.results_dir, device=env.device, data_dir=env.data_dir, force=True,
                        on_epoch=_first(strict), observers=env.observers_for(spec, (labels or {}).get(spec.run_id)), checkpoints=checkpoints,
                        deterministic=env.deterministic)]
    module = cohort_module()
    assert module is not None
    observers = {s.run_id: env.observers_for(s, (labels or {}).get(s.run_id)) for s in group.specs}
    strict = {s.run_id: list(strict_observers(s)) if strict_observers is not None else [] for s in group.specs}
    watchers = {s.run_id: SafeObservers(observers[s.run_id], strict=strict[s.run_id]) for s in group.specs}
    started = datetime.now(timezone.utc)
    try:
        results = module.train_cohort(group.specs, engine=group.engine, device=env.device, data_dir=env.data_dir,
                                      observers=watchers, checkpoints=checkpoints, deterministic=env.deterministic)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - the whole program failed: every member is recorded as failed
        results = [failed_result(s, started, err) for s in group.specs]
    done, outcomes = [], []
    from bench.execute import Outcome
    from pathlib import Path

    for spec, result in zip(group.specs, results):
        if isinstance(result, StopRun):
            outcomes.append(Outcome(spec.run_id, None, False, Path(env.results_dir) / "runs" / f"{spec.run_id}.parquet",
                                    stopped_at=result.epoch))
        else:
            done.append((result, observers[spec.run_id]))
    finished = _finish(env.results_dir, done, checkpoints)
    checkpoints.remove(module.checkpoint_key(group.specs))  # only now: the records hold what it held
    return finished + outcomes


def _first(observers: list[Any]) -> Any:
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]

    def chained(epoch: int, metrics: dict) -> None:
        for o in observers:
            o(epoch, metrics)
    return chained
