"""The cohort's run loop: ``bench.train._train`` for M trials at once, per trial exactly as a single run.

Per trial: N+1 evaluations (one device→host transfer per epoch for the whole cohort), its own schedule object
(plateau observes that trial's validation metric), the optimizer's epoch hook (momentum warm-up), epoch or step
factors on its own base rate, divergence (the trial leaves the cohort with status ``diverged`` and its curves so
far), steps and gradient evaluations, observers (``on_start``, ``on_epoch`` with that trial's flat parameters,
``on_checkpoint``; a :class:`StopRun` takes just that trial out, unrecorded), and mid-run checkpoints of the whole
cohort (every trial's curves and schedule, the stacked model and optimizer state, the data stream, every RNG) from
which a re-run continues bit-identically. Records are the dispatcher's business (``bench.engine.run_group``).

A trial's ``wall_time_s`` is its share of the cohort's time: each stretch of the program's time is divided among the
trials training during it, so summed over a cell's trials it is the device time the cell cost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bench import checkpoint as ckpt
from bench.engine.cohort.program import Program, row_order
from bench.observers import EpochInfo, RunStart, SafeObservers, StopRun
from bench.schedules import SCHEDULES
from bench.schedules.base import Schedule
from bench.spec import RunSpec
from bench.train import SPLITS, RunResult
from optimizers import OPTIMIZERS, OptimizerSpec


@dataclass
class Trial:
    spec: RunSpec
    run_id: str
    watchers: SafeObservers
    schedule: Schedule
    opt_cls: type[OptimizerSpec]
    result: RunResult
    factors: Sequence[Any] | None = None  # the law's factors when they depend on nothing but the epoch (and step)
    outcome: RunResult | StopRun | None = None  # set when the trial has left the cohort
    share: float = 0.0  # seconds of the cohort's time attributed to this trial before ``joined`` (a resume)
    joined: float = 0.0  # Clock.total when the trial (re)joined

    def __post_init__(self) -> None:
        self.base_lr = float(self.spec.hyperparameters["learning_rate"])  # the param groups' lr at build time
        self.per_step = self.schedule.granularity == "step"
        self.observes = type(self.schedule).observe is not Schedule.observe  # a reactive law (plateau)
        self.first_epoch = 0  # the first epoch of ``rows`` (curves before it are in result.curves)
        self.rows: list[list[float]] = []  # evaluated values per epoch, made into curve rows when needed

    def factor(self, epoch: int) -> float:
        """The factor of training epoch ``epoch`` (epoch granularity) or of its first step (step granularity)."""
        if self.factors is not None:
            f = self.factors[epoch]
            return f[0] if self.per_step else f
        return self.schedule.factor(epoch, 0) if self.per_step else self.schedule.factor(epoch)

    def step_factor(self, epoch: int, step: int) -> float:
        if self.factors is not None:
            return self.factors[epoch][step]
        return self.schedule.factor(epoch, step)

    def flush(self, has_accuracy: bool) -> None:
        """Turn the evaluated rows into curve rows ``(epoch, split, metric, value)``, the single loop's order."""
        if not self.rows:
            return
        layout = _LAYOUT[has_accuracy]
        self.result.curves += [(e, split, metric, v[j]) for e, v in enumerate(self.rows, self.first_epoch)
                               for split, metric, j in layout]
        self.first_epoch += len(self.rows)
        self.rows = []


_LAYOUT = {True: [(s, m, 2 * i + k) for i, s in enumerate(SPLITS) for k, m in enumerate(("loss", "accuracy"))],
           False: [(s, "loss", i) for i, s in enumerate(SPLITS)]}


class Clock:
    """Divides the cohort's elapsed time among the trials active in each stretch: ``total`` is the running sum of
    per-trial shares, so a trial's share is ``total`` at its end minus ``total`` at its start (``Trial.joined``)."""

    def __init__(self) -> None:
        self.mark = time.perf_counter()
        self.total = 0.0

    def charge(self, trials: Sequence[Trial]) -> None:
        now = time.perf_counter()
        if trials:
            self.total += (now - self.mark) / len(trials)
        self.mark = now

    def share(self, t: Trial) -> float:
        return t.share + self.total - t.joined


def _factor_table(spec: RunSpec, schedule: Schedule, num_epochs: int, steps_per_epoch: int,
                  cache: dict[Any, Any]) -> Sequence[Any] | None:
    """The factors of a law that only depends on the epoch (and step), computed once per distinct law."""
    if type(schedule).observe is not Schedule.observe:
        return None  # reactive: each trial's own history
    key = (spec.schedule, tuple(sorted((k, repr(v)) for k, v in spec.schedule_settings.items())))
    if key not in cache:
        if schedule.granularity == "step":
            cache[key] = [[schedule.factor(e, i) for i in range(steps_per_epoch)] for e in range(num_epochs + 1)]
        else:
            cache[key] = [schedule.factor(e) for e in range(num_epochs + 1)]
    return cache[key]


def run_cohort(specs: Sequence[RunSpec], build: Callable[[list[RunSpec]], Program], *, engine: str, device: str,
               observers: Mapping[str, SafeObservers], checkpoints: ckpt.CheckpointStore | None,
               deterministic: bool, key: str, identity: str, run_ids: Sequence[str]) -> list[RunResult | StopRun]:
    clock = Clock()
    started = datetime.now(timezone.utc)
    order = row_order(specs, run_ids)
    program = build([specs[i] for i in order])
    num_epochs = specs[0].num_epochs
    steps_per_epoch = program.problem.steps_per_epoch()
    trials: list[Trial] = []
    tables: dict[Any, Any] = {}
    num_parameters = program.num_parameters()
    for i in order:
        spec = specs[i]
        schedule = SCHEDULES.get(spec.schedule)(num_epochs, steps_per_epoch, **spec.schedule_settings)
        result = RunResult(spec=spec, status="completed", num_parameters=num_parameters, device=device,
                           started_at=started, has_accuracy=program.has_accuracy, engine=engine,
                           deterministic=deterministic)
        run_id = run_ids[i]
        trials.append(Trial(spec, run_id, observers.get(run_id) or SafeObservers(), schedule,
                            OPTIMIZERS.get(spec.optimizer), result,
                            _factor_table(spec, schedule, num_epochs, steps_per_epoch, tables)))
    clock.charge(trials)  # setup: shared by all trials
    start_epoch, resumes = 0, 0
    saved = checkpoints.load(key, identity) if checkpoints is not None else None
    if saved is not None:
        start_epoch, resumes = _restore(saved, trials, program)
    active = [t for t in trials if t.outcome is None]
    for t in active:
        t.joined = 0.0  # clock.share(t): the restored share plus everything this process charged since it began

    try:
        _loop(program, trials, active, start_epoch, resumes, num_epochs, steps_per_epoch, clock, checkpoints, key,
              identity, device, engine)
    except BaseException as err:  # noqa: BLE001 - the trials' observers learn that the program went down
        for t in trials:
            if t.outcome is None:
                t.watchers.on_stop(type(err).__name__)
        raise
    by_id = {t.run_id: t.outcome for t in trials}
    return [by_id[r] for r in run_ids]  # type: ignore[misc]


def _loop(program: Program, trials: list[Trial], active: list[Trial], start_epoch: int, resumes: int,
          num_epochs: int, steps_per_epoch: int, clock: Clock, checkpoints: ckpt.CheckpointStore | None, key: str,
          identity: str, device: str, engine: str) -> None:
    started_now: list[Trial] = []
    for t in active:
        t.result.resumes = resumes
        t.first_epoch = start_epoch
        try:
            t.watchers.on_start(RunStart(spec=t.spec, start_epoch=start_epoch, num_parameters=t.result.num_parameters,
                                         device=device, engine=engine, resumes=resumes,
                                         curves=list(t.result.curves)))
            started_now.append(t)
        except StopRun as stop:
            _stop(t, stop, program.has_accuracy)
    active = _keep(program, active, started_now)
    has_accuracy = program.has_accuracy
    losses = [j for split, metric, j in _LAYOUT[has_accuracy] if metric == "loss"]
    valid_col = 3 if has_accuracy else 1  # the valid metric: accuracy where the problem has one, else loss
    last_saved_epoch, last_saved_at = start_epoch, time.monotonic()
    for epoch in range(start_epoch, num_epochs + 1):
        if not active:
            return
        table = program.evaluate().cpu().numpy()  # the epoch's one device→host transfer, all trials
        values = table.tolist()
        finite = np.isfinite(table[:, losses]).all(axis=1).tolist()
        clock.charge(active)
        staying: list[Trial] = []
        final = epoch == num_epochs
        for row, t in enumerate(active):
            v = values[row]
            t.rows.append(v)
            diverged = not finite[row]
            last = diverged or final
            if not last and t.observes:
                t.schedule.observe(epoch, v[valid_col], has_accuracy)
            if t.watchers:
                factor = None if last else t.factor(epoch)
                try:
                    t.watchers.on_epoch(epoch, _metrics(v, has_accuracy), EpochInfo(
                        lr_factor=factor, steps=t.result.steps, flat_params=lambda r=row: program.flat_params(r)))
                except StopRun as stop:
                    _stop(t, stop, has_accuracy)
                    continue
            if diverged:
                t.result.status = "diverged"
            if last:
                _finish(t, has_accuracy, clock)
                continue
            staying.append(t)
        active = _keep(program, active, staying)
        if not active:
            return
        program.on_epoch(epoch, num_epochs)
        base = np.array([t.base_lr for t in active], dtype=np.float64)
        if not any(t.per_step for t in active):
            fixed = base * np.array([t.factor(epoch) for t in active], dtype=np.float64)  # lr · f, as set_factor

            def lrs_at(i: int) -> np.ndarray:
                return fixed
        else:
            def lrs_at(i: int, active: list[Trial] = active) -> np.ndarray:
                return base * np.array([t.step_factor(epoch, i) if t.per_step else t.factor(epoch) for t in active],
                                       dtype=np.float64)

        program.train_epoch(epoch, lrs_at)
        for t in active:
            t.result.steps += steps_per_epoch
        clock.charge(active)
        if checkpoints is not None and checkpoints.policy.due(epoch + 1 - last_saved_epoch,
                                                              time.monotonic() - last_saved_at):
            _save(checkpoints, key, identity, epoch + 1, program, trials, active, resumes, clock)
            last_saved_epoch, last_saved_at = epoch + 1, time.monotonic()
            staying = []
            for t in active:
                try:
                    t.watchers.on_checkpoint(epoch + 1)
                    staying.append(t)
                except StopRun as stop:
                    _stop(t, stop, has_accuracy)
            if len(staying) != len(active):
                active = _keep(program, active, staying)
                _save(checkpoints, key, identity, epoch + 1, program, trials, active, resumes, clock)


def _metrics(row: list[float], has_accuracy: bool) -> dict[str, dict[str, float]]:
    if has_accuracy:
        return {s: {"loss": row[2 * i], "accuracy": row[2 * i + 1]} for i, s in enumerate(SPLITS)}
    return {s: {"loss": row[i]} for i, s in enumerate(SPLITS)}


def _keep(program: Program, active: list[Trial], staying: list[Trial]) -> list[Trial]:
    if len(staying) == len(active):
        return active
    kept = set(id(t) for t in staying)
    rows = [r for r, t in enumerate(active) if id(t) in kept]
    if rows:
        program.select(rows)
    return [active[r] for r in rows]


def _stop(t: Trial, stop: StopRun, has_accuracy: bool) -> None:
    t.flush(has_accuracy)  # (a stopped trial writes no record: its share of the time is not kept)
    t.outcome = stop
    t.watchers.on_stop("StopRun")


def _finish(t: Trial, has_accuracy: bool, clock: Clock) -> None:
    t.flush(has_accuracy)
    r = t.result
    closure_calls = r.steps * int(getattr(t.opt_cls.cohort_rule, "passes", 1)) if t.opt_cls.needs_closure else 0
    r.grad_evals = t.opt_cls.grad_evals(t.spec.hyperparameters, r.steps, closure_calls)
    t.share = clock.share(t)
    t.joined = clock.total
    r.wall_time_s = t.share
    r.finished_at = datetime.now(timezone.utc)
    t.outcome = r


def _save(store: ckpt.CheckpointStore, key: str, identity: str, next_epoch: int, program: Program,
          trials: list[Trial], active: list[Trial], resumes: int, clock: Clock) -> None:
    per_trial: dict[str, Any] = {}
    for t in trials:
        t.flush(program.has_accuracy)
        outcome: Any = None
        if isinstance(t.outcome, StopRun):
            outcome = ("stopped", t.outcome.epoch)
        elif t.outcome is not None:
            outcome = ("finished", t.outcome)
        per_trial[t.run_id] = {"curves": list(t.result.curves), "steps": t.result.steps,
                               "schedule": t.schedule.state_dict(),
                               "share": t.share if t.outcome is not None else clock.share(t),
                               "started_at": t.result.started_at, "resumes": t.result.resumes, "outcome": outcome}
    store.save(key, identity, {"next_epoch": next_epoch, "program": program.state_dict(), "rng": ckpt.rng_state(),
                               "active": [t.run_id for t in active], "resumes": resumes, "trials": per_trial})


def _restore(saved: dict[str, Any], trials: list[Trial], program: Program) -> tuple[int, int]:
    for t in trials:
        s = saved["trials"][t.run_id]
        t.result.curves = list(s["curves"])
        t.result.steps = s["steps"]
        t.result.started_at = s["started_at"]
        t.result.resumes = s["resumes"]
        t.share = s["share"]
        t.schedule.load_state_dict(s["schedule"])
        if s["outcome"] is not None:
            kind, value = s["outcome"]
            t.outcome = StopRun(value) if kind == "stopped" else value
    rows = {t.run_id: r for r, t in enumerate(trials)}
    program.select(sorted(rows[rid] for rid in saved["active"]))
    program.load_state_dict(saved["program"])
    ckpt.set_rng_state(saved["rng"])
    return saved["next_epoch"], saved["resumes"] + 1
