"""Doing one cell: the one-shot seeds, or tune (trials of the shared study) → select → re-run the winner → row.

The coordinator (the Hydra job) creates the study once, fails stale trials, enqueues the budget's missing samples
and then trains them — itself (``workers=1``) or through the worker pool — and waits for samples that live workers
elsewhere are still training. Everything it trains goes through ``bench.execute`` (content-addressed records), so a
resumed or repeated cell only does what is missing, and two budgets of one study share every run they have in common.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from bench import records
from bench.execute import RunEnv, execute, execute_many
from bench.spec import RunSpec
from bench.tuning import pool
from bench.tuning.cell import Cell, CellOutcome, RunView, curve_values, curves_needed, run_view, select
from bench.tuning.study import (
    FINAL,
    WorkReport,
    by_sample,
    enqueue_missing,
    first_samples,
    open_study,
    owner_alive,
    sample_of,
    sweep_stale,
    trial_results,
    work,
)

OnRun = Callable[[str, bool], None]  # (run_id, trained now)
MAX_ROUNDS = 10


@dataclass(frozen=True)
class Where:
    """Where and how the runs of a cell happen (not part of any identity)."""

    results_dir: str
    device: str = "auto"
    data_dir: str | None = None
    workers: int = 1
    engine: str = "single"
    observers: Any = None  # the env's per-run observer factory (loggers), bench.observers.ObserverFactory

    def env(self) -> RunEnv:
        """The same place as ``bench.execute.RunEnv``, which the batched paths take."""
        return RunEnv(results_dir=self.results_dir, device=self.device, data_dir=self.data_dir, workers=self.workers,
                      engine=self.engine, observers=self.observers)


def run_cell(cell: Cell, where: Where, on_run: OnRun | None = None) -> CellOutcome:
    """Do one cell (nothing is written to the cells table here). Cells whose trials are known up front go through
    the two-phase batch path (``bench.tuning.batch``), the others trial by trial."""
    from bench.tuning.batch import SweepRun, batchable

    on_run = on_run or (lambda run_id, trained: None)
    if batchable(cell):
        sweep = SweepRun([cell], where.env())
        first = sweep.phase1()
        sweep.run(first, on_run=on_run)
        sweep.wait_for_others(first, on_run=on_run)
        sweep.run(sweep.phase2(), on_run=on_run)
        return sweep.outcomes()[0]
    if not cell.budget.tuned:
        views, complete = execute_specs(cell.oneshot_specs(), where, on_run, budget=cell.label)
        return CellOutcome(cell, None, [], views, complete)
    return _tuned(cell, where, on_run)


# ------------------------------------------------------------------------------------------------ plain runs
def execute_specs(specs: Sequence[RunSpec], where: Where, on_run: OnRun, role: str = "seed",
                  budget: str | None = None) -> tuple[list[RunView], bool]:
    """Execute each spec (skipping recorded ones); return the finished runs' views in order and whether all finished."""
    labels = {s.run_id: {"role": [role], "budget": [budget] if budget else []} for s in specs}
    got = execute_many(specs, where.env(), labels=labels, on_run=lambda o: on_run(o.run_id, not o.skipped))
    finished = [got[s.run_id].record for s in specs
                if got[s.run_id].record is not None and got[s.run_id].record["status"] in records.FINISHED]
    wanted = [rec["run_id"] for rec in finished if curves_needed(rec)]
    curves = curve_values(records.read_curves(where.results_dir, wanted)) if wanted else {}
    return [run_view(where.results_dir, rec, curves=curves) for rec in finished], len(finished) == len(specs)


# ------------------------------------------------------------------------------------------------ tuned cells
def _tuned(cell: Cell, where: Where, on_run: OnRun) -> CellOutcome:
    n = cell.budget.samples
    study = open_study(cell, create=True)
    for round_ in range(MAX_ROUNDS):
        sweep_stale(study, cell.tuning)
        enqueue_missing(study, cell, n, retry_failed_runs=round_ == 0)
        _work(cell, n, study, where, on_run)
        state = _budget_state(study, cell, n)
        if state == "waiting":
            continue
        if state == "running_elsewhere":
            _wait_for_others(study, cell, n, on_run)
            continue
        if state == "done":
            break
    samples, finals, results = trial_results(study, cell, n, where.results_dir)
    winner = select(results, cell)
    seed_views: list[RunView] = []
    reruns_ok = True
    if winner is not None:
        views, reruns_ok = execute_specs(cell.rerun_specs(winner.tuned), where, on_run, budget=cell.label)
        seed_views = sorted([winner.view, *views], key=lambda v: cell.tuning.seeds.index(v.seed))
    trial_ids = _trial_run_ids(cell, study, samples, finals)
    pruned = [t for t in finals.values() if t.state == TrialState.PRUNED]
    complete = (len(samples) == n and len(results) + len(pruned) == n and winner is not None and reruns_ok)
    return CellOutcome(cell, winner, [r or "" for r in trial_ids], seed_views, complete, pruned=len(pruned),
                       saved_epochs=sum(int(t.user_attrs.get("result", {}).get("saved_epochs", 0)) for t in pruned))


def _trial_run_ids(cell: Cell, study: optuna.Study, samples: list[int],
                   finals: dict[int, optuna.trial.FrozenTrial]) -> list[str | None]:
    """The run_id each sample's trial has, or will have (known up front for the study's sampler)."""
    stream = cell.stream(max(samples) + 1) if cell.tuning.sampler == "study" and samples else []
    groups = by_sample(study.get_trials(deepcopy=False))
    out: list[str | None] = []
    for s in samples:
        if s in finals and "run_id" in finals[s].user_attrs:
            out.append(finals[s].user_attrs["run_id"])
        elif stream:
            out.append(cell.trial_spec(stream[s]).run_id)
        else:
            out.append(next((t.user_attrs["run_id"] for t in groups.get(s, []) if "run_id" in t.user_attrs), None))
    return out


def _budget_state(study: optuna.Study, cell: Cell, n: int) -> str:
    """``done`` (nothing left to do here), ``waiting`` (trials to pop) or ``running_elsewhere``."""
    trials = study.get_trials(deepcopy=False)
    samples = first_samples(trials, cell, n)
    groups = by_sample(trials)
    if any(t.state == TrialState.WAITING for s in samples for t in groups.get(s, [])):
        return "waiting"
    if any(not any(t.state in FINAL or t.state == TrialState.RUNNING or t.user_attrs.get("status") == "failed"
                   for t in groups.get(s, [])) for s in samples):
        return "waiting"  # a sample with no owner (both duplicates stood back, or swept stale): enqueue it again
    running = [t for s in samples for t in groups.get(s, []) if t.state == TrialState.RUNNING]
    if running:
        return "running_elsewhere" if any(owner_alive(t, cell.tuning.stale_after_s) for t in running) else "waiting"
    if cell.tuning.sampler != "study" and len(samples) < n:
        return "waiting"
    return "done"


def _wait_for_others(study: optuna.Study, cell: Cell, n: int, on_run: OnRun) -> None:
    """Poll while workers of other processes or machines train this budget's samples (stale ones are swept)."""
    while _budget_state(study, cell, n) == "running_elsewhere":
        _report_finished(study, cell, n, on_run)
        time.sleep(1.0)
        sweep_stale(study, cell.tuning)
    _report_finished(study, cell, n, on_run)


def _report_finished(study: optuna.Study, cell: Cell, n: int, on_run: OnRun) -> None:
    for t in study.get_trials(deepcopy=False, states=FINAL):
        s = sample_of(t)
        if s is not None and "run_id" in t.user_attrs and t.state == TrialState.COMPLETE:
            on_run(t.user_attrs["run_id"], False)


def _work(cell: Cell, n: int, study: optuna.Study, where: Where, on_run: OnRun) -> WorkReport:
    """Train the waiting trials here (one worker) or in the pool (N), reporting finished runs as they come."""
    if where.workers == 1:
        return work(cell, n, where.results_dir, device=where.device, data_dir=where.data_dir, study=study,
                    on_run=on_run, observers=where.observers)
    report = WorkReport()
    try:
        executor = pool.get_pool(where.workers)
        futures = [executor.submit(work, cell, n, where.results_dir, device=where.device, data_dir=where.data_dir,
                                   observers=where.observers) for _ in range(where.workers)]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.5)
            _report_finished(study, cell, n, on_run)
        for fut in futures:
            report.merge(fut.result())
    except BrokenProcessPool:
        pool.shutdown()  # a worker died (OOM, kill): its trial is stale now and the next round redoes it
    return report
