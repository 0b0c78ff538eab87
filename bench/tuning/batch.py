"""Many cells at once, in two phases, so that trials that share a data stream can train together (cohorts).

A sweep's runs fall into two phases. Phase 1 holds everything known up front: every one-shot seed, and every tuning
trial of the study's sampler (sample i of a study is known before anything trains, §2.1). Phase 2 holds the winners'
re-runs, known once a study's trials are recorded. Each phase goes through ``execute_many`` as one batch, so the
engine may train e.g. all seed-42 runs of the P1 row — 64 one-shot runs and 4,800 trials of 64 studies — as one
cohort, and the records of a cohort are written as one pack.

Trials keep the protocol of ``bench.tuning.study``: Optuna is the source of truth for them. Before phase 1 every
study is created once, its stale trials (dead owners) are failed, and the samples nobody holds are claimed as
RUNNING trials in one batch (``bench.tuning.trials``); after training they are finished in one batch. Samples held
by live workers elsewhere are waited for (and taken over if those go stale). A sample whose run failed is retried
once per invocation. The launcher decides where the phases run: all in this process (``inline``), or as array
tasks with a dependent finalising job on a cluster (``bench.launch``) — ``SweepRun`` exposes the steps.

Study samplers other than the study's own (TPE, QMC, random) and pruning need trials one at a time (each new trial
depends on the finished ones, or on per-epoch reports): those cells take the per-cell path of ``runner``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench import records
from bench.execute import Outcome, RunEnv, execute_many
from bench.spec import RunSpec
from bench.tuning import trials as batch_ops
from bench.tuning.cell import Cell, CellOutcome, RunView, TrialResult, curve_values, curves_needed, run_view, select
from bench.tuning.study import (
    FINAL,
    by_sample,
    distributions,
    final_trial,
    open_study,
    owner_alive,
    study_value,
    sweep_stale,
    view_epoch,
    worker_identity,
)

OnRun = Callable[[str, bool], None]  # (run_id, trained now)
POLL_S = 1.0


def batchable(cell: Cell) -> bool:
    """Whether the cell's trials can be decided up front and trained in one batch (the study's sampler, no pruner)."""
    return not cell.budget.tuned or (cell.tuning.sampler == "study" and cell.tuning.pruner == "none")


@dataclass(frozen=True)
class TrialRef:
    """A phase-1 spec that is a tuning trial: which study and which sample it is."""

    study: str  # the study's key in SweepRun.studies
    sample: int


@dataclass
class Item:
    """One run of a phase, with what the sweep knows of it (labels for loggers; the trial it is, if any)."""

    spec: RunSpec
    labels: dict[str, list[str]]
    trial: TrialRef | None = None


@dataclass
class StudyGroup:
    """The cells of one Optuna study in this sweep (budgets of one study share its sample stream)."""

    key: str
    cells: list[Cell]

    @property
    def lead(self) -> Cell:
        return max(self.cells, key=lambda c: c.budget.samples)

    @property
    def samples(self) -> int:
        return self.lead.budget.samples


class RecordIndex:
    """The runs table by run_id, read in bulk (one scan instead of a lookup per trial) and refreshed on demand."""

    def __init__(self, results_dir: str) -> None:
        self.results_dir = results_dir
        self._rows: dict[str, dict[str, Any]] | None = None

    def refresh(self) -> None:
        self._rows = None

    def rows(self) -> dict[str, dict[str, Any]]:
        if self._rows is None:
            table = records.read_runs(self.results_dir)
            self._rows = {r["run_id"]: r for r in table.to_dict("records")} if len(table) else {}
        return self._rows

    def add(self, outcomes: Iterable[Outcome]) -> None:
        rows = self.rows()
        for o in outcomes:
            if o.record is not None:
                rows[o.run_id] = o.record

    def finished(self, run_id: str) -> dict[str, Any] | None:
        rec = self.rows().get(run_id)
        return rec if rec is not None and rec["status"] in records.FINISHED else None

    def views(self, run_ids: Sequence[str], *, need_best: bool) -> dict[str, RunView]:
        """Views of the finished runs among ``run_ids``; curves are read once for all that need them."""
        recs = {r: rec for r in run_ids if (rec := self.finished(r)) is not None}
        wanted = [r for r, rec in recs.items() if curves_needed(rec, need_best)]
        curves = curve_values(records.read_curves(self.results_dir, wanted)) if wanted else {}
        return {r: run_view(self.results_dir, rec, need_best=need_best, curves=curves) for r, rec in recs.items()}


@dataclass
class SweepRun:
    """The cells (and single runs) of one sweep sharing one results_dir and run environment."""

    cells: list[Cell]
    env: RunEnv
    singles: list[RunSpec] = field(default_factory=list)
    studies: dict[str, StudyGroup] = field(init=False)

    def __post_init__(self) -> None:
        bad = [c.title for c in self.cells if not batchable(c)]
        if bad:
            raise ValueError(f"cells that need trials one at a time cannot be batched: {bad[0]}")
        self.studies = {}
        for cell in self.cells:
            if cell.budget.tuned:
                key = f"{cell.tuning.storage}::{cell.study_name}"
                self.studies.setdefault(key, StudyGroup(key, [])).cells.append(cell)
        self.index = RecordIndex(self.env.results_dir)
        self._open: dict[str, optuna.Study] = {}

    def study(self, key: str) -> optuna.Study:
        if key not in self._open:
            self._open[key] = open_study(self.studies[key].lead, create=True)
        return self._open[key]

    # ------------------------------------------------------------------------------------------------ phase 1
    def phase1(self) -> list[Item]:
        """Every run known up front: single runs, one-shot seeds, and every tuning trial (seed 42)."""
        items: dict[str, Item] = {}

        def add(spec: RunSpec, role: str, budget: str | None, trial: TrialRef | None = None) -> None:
            item = items.setdefault(spec.run_id, Item(spec, {"role": [], "budget": []}, trial))
            if role not in item.labels["role"]:
                item.labels["role"].append(role)
            if budget is not None and budget not in item.labels["budget"]:
                item.labels["budget"].append(budget)
            if trial is not None and item.trial is None:
                item.trial = trial

        for spec in self.singles:
            add(spec, "single", None)
        for cell in self.cells:
            if not cell.budget.tuned:
                for spec in cell.oneshot_specs():
                    add(spec, "seed", cell.label)
        for key, group in self.studies.items():
            lead = group.lead
            for i, params in enumerate(lead.stream(group.samples)):
                budgets = [c.label for c in group.cells if i < c.budget.samples]
                spec = lead.trial_spec(params)
                for b in budgets:
                    add(spec, "trial", b, TrialRef(key, i))
        return list(items.values())

    # ------------------------------------------------------------------------------------------------ running
    def run(self, items: Sequence[Item], *, on_run: OnRun | None = None, say: Callable[[str], None] | None = None,
            force: bool = False) -> dict[str, Outcome]:
        """Claim the items' trials nobody holds, train what is not recorded, finish the claimed trials.

        Returns the outcomes of the items trained or found recorded; trial items held by live workers elsewhere
        (or finished there) are left out — :meth:`wait_for_others` follows them.
        """
        by_study: dict[str, list[Item]] = {}
        plain: list[Item] = []
        for item in items:
            (by_study.setdefault(item.trial.study, []) if item.trial is not None else plain).append(item)
        claimed: dict[str, dict[int, FrozenTrial]] = {}
        runnable = list(plain)
        owner = worker_identity()
        for key, members in by_study.items():
            study = self.study(key)
            sweep_stale(study, self.studies[key].lead.tuning)
            groups = by_sample(study.get_trials(deepcopy=False))
            wanted: dict[int, tuple[dict[str, Any], str]] = {}
            stale_after = self.studies[key].lead.tuning.stale_after_s
            stream = self.studies[key].lead.stream(self.studies[key].samples)
            for item in members:
                group = groups.get(item.trial.sample, [])
                final = final_trial(group)
                if final is not None:
                    if final.state == TrialState.COMPLETE and self.index.finished(item.spec.run_id) is None:
                        runnable.append(item)  # its record went missing: re-run the spec (Optuna keeps the trial)
                    elif final.state == TrialState.COMPLETE:
                        runnable.append(item)  # recorded: execute_many reports it without training
                    continue
                if any(t.state == TrialState.RUNNING and owner_alive(t, stale_after) for t in group):
                    continue  # a live worker elsewhere holds it
                wanted[item.trial.sample] = (stream[item.trial.sample], item.spec.run_id)
            mine = batch_ops.claim(study, wanted, distributions(self.studies[key].lead.search_space), owner)
            claimed[key] = mine
            runnable += [m for m in members if m.trial.sample in mine]
        labels = {item.spec.run_id: item.labels for item in runnable}
        heartbeat_s = min((g.lead.tuning.heartbeat_s for g in self.studies.values()), default=30.0)
        with batch_ops.Heartbeat([(self.study(k), t.values()) for k, t in claimed.items()], heartbeat_s):
            try:
                outcomes = execute_many([i.spec for i in runnable], self.env, force=force, say=say, labels=labels,
                                        on_run=(lambda o: on_run(o.run_id, not o.skipped)) if on_run else None)
            except BaseException:
                self._release(claimed)  # a crash of this process: let the next invocation redo them at once
                raise
        self.index.add(outcomes.values())
        self._finish(claimed, outcomes)
        return outcomes

    def _release(self, claimed: Mapping[str, Mapping[int, FrozenTrial]]) -> None:
        for key, mine in claimed.items():
            try:
                batch_ops.write(self.study(key), [op for t in mine.values() for op in (
                    batch_ops.Attr(t._trial_id, "stale", True), batch_ops.State(t._trial_id, TrialState.FAIL))])
            except Exception:  # noqa: BLE001 - going down anyway; stale detection covers it
                pass

    def _finish(self, claimed: Mapping[str, Mapping[int, FrozenTrial]], outcomes: Mapping[str, Outcome]) -> None:
        for key, mine in claimed.items():
            if not mine:
                continue
            cell = self.studies[key].lead
            run_ids = [t.user_attrs["run_id"] for t in mine.values()]
            views = self.index.views(run_ids, need_best=True)
            ops: list[batch_ops.Op] = []
            for trial in mine.values():
                run_id = trial.user_attrs["run_id"]
                outcome = outcomes.get(run_id)
                rec = outcome.record if outcome is not None else None
                tid = trial._trial_id
                if rec is None or rec["status"] not in records.FINISHED:
                    error = (rec or {}).get("error") or "not trained"
                    ops += [batch_ops.Attr(tid, "status", "failed"),
                            batch_ops.Attr(tid, "result", {"error": error.splitlines()[:1]}),
                            batch_ops.State(tid, TrialState.FAIL)]
                    continue
                view = views[run_id]
                ops += [batch_ops.Attr(tid, "status", rec["status"]),
                        batch_ops.Attr(tid, "valid", view.valid_final), batch_ops.Attr(tid, "test", view.test_final),
                        batch_ops.Attr(tid, "result", {"valid_best": view.valid_best,
                                                       "valid_initial": view.valid_initial,
                                                       "test_initial": view.test_initial,
                                                       "best_valid_epoch": view_epoch(rec),
                                                       "wall_time_s": rec.get("wall_time_s")}),
                        batch_ops.State(tid, TrialState.COMPLETE, study_value(view, cell))]
            batch_ops.write(self.study(key), ops)

    def held_elsewhere(self, items: Sequence[Item]) -> list[Item]:
        """Trial items whose sample has no final trial yet (held by a live worker elsewhere, or released)."""
        out = []
        for key in {i.trial.study for i in items if i.trial is not None}:
            groups = by_sample(self.study(key).get_trials(deepcopy=False))
            out += [i for i in items if i.trial is not None and i.trial.study == key
                    and final_trial(groups.get(i.trial.sample, [])) is None]
        return out

    def wait_for_others(self, items: Sequence[Item], *, on_run: OnRun | None = None,
                        say: Callable[[str], None] | None = None, rounds: int = 10) -> None:
        """Follow trials held elsewhere until they are final; take over the ones whose owner went stale."""
        for _ in range(rounds):
            waiting = self.held_elsewhere(items)
            if not waiting:
                return
            live = []
            for key in {i.trial.study for i in waiting}:
                study = self.study(key)
                sweep_stale(study, self.studies[key].lead.tuning)
                groups = by_sample(study.get_trials(deepcopy=False))
                stale_after = self.studies[key].lead.tuning.stale_after_s
                live += [i for i in waiting if i.trial.study == key and any(
                    t.state == TrialState.RUNNING and owner_alive(t, stale_after)
                    for t in groups.get(i.trial.sample, []))]
            orphans = [i for i in waiting if i not in live]
            if orphans:
                self.run(orphans, on_run=on_run, say=say)  # failed or released elsewhere: do them here
                continue
            time.sleep(POLL_S)
            self.index.refresh()
        # after the rounds, whatever is still held elsewhere leaves its cells partial

    # ------------------------------------------------------------------------------------------------ phase 2
    def trial_results(self, cell: Cell) -> tuple[list[str], list[TrialResult], int]:
        """The cell's trial run_ids (sample order), the finished ones, and how many samples have a final trial."""
        key = f"{cell.tuning.storage}::{cell.study_name}"
        groups = by_sample(self.study(key).get_trials(deepcopy=False))
        stream = cell.stream(cell.budget.samples)
        run_ids = [cell.trial_spec(p).run_id for p in stream]
        finals = {s: t for s in range(cell.budget.samples) if (t := final_trial(groups.get(s, []))) is not None}
        views = self.index.views(run_ids, need_best=cell.tuning.selection == "best")
        results = [TrialResult(s, stream[s], views[run_ids[s]]) for s, t in finals.items()
                   if t.state == TrialState.COMPLETE and run_ids[s] in views]
        return run_ids, results, len(finals)

    def phase2(self) -> list[Item]:
        """The winners' re-runs of every tuned cell whose trials are all recorded."""
        items: dict[str, Item] = {}
        for cell in self.cells:
            if not cell.budget.tuned:
                continue
            _, results, finals = self.trial_results(cell)
            winner = select(results, cell) if finals == cell.budget.samples else None
            if winner is None:
                continue
            for spec in cell.rerun_specs(winner.tuned):
                item = items.setdefault(spec.run_id, Item(spec, {"role": ["seed"], "budget": []}))
                if cell.label not in item.labels["budget"]:
                    item.labels["budget"].append(cell.label)
        return list(items.values())

    def outcomes(self) -> list[CellOutcome]:
        """Every cell's outcome from the records and the studies (complete, or partial with what is missing)."""
        out = []
        for cell in self.cells:
            if not cell.budget.tuned:
                specs = cell.oneshot_specs()
                views = self.index.views([s.run_id for s in specs], need_best=False)
                seeds = [views[s.run_id] for s in specs if s.run_id in views]
                out.append(CellOutcome(cell, None, [], seeds, len(seeds) == len(specs)))
                continue
            run_ids, results, finals = self.trial_results(cell)
            winner = select(results, cell) if results else None
            seeds: list[RunView] = []
            reruns_ok = False
            if winner is not None:
                reruns = [s.run_id for s in cell.rerun_specs(winner.tuned)]
                views = self.index.views(reruns, need_best=False)
                seeds = sorted([winner.view, *(views[r] for r in reruns if r in views)],
                               key=lambda v: cell.tuning.seeds.index(v.seed))
                reruns_ok = all(r in views for r in reruns)
            complete = finals == cell.budget.samples and len(results) == finals and winner is not None and reruns_ok
            out.append(CellOutcome(cell, winner, run_ids, seeds, complete))
        return out


def run_sweep(sweep: SweepRun, *, on_run: OnRun | None = None, say: Callable[[str], None] | None = None,
              on_cell: Callable[[CellOutcome], None] | None = None) -> list[CellOutcome]:
    """Both phases in this process (the inline launcher): phase 1, trials elsewhere, phase 2, the cells table."""
    from bench.tuning.cell import write_cell

    first = sweep.phase1()
    sweep.run(first, on_run=on_run, say=say)
    sweep.wait_for_others(first, on_run=on_run, say=say)
    sweep.run(sweep.phase2(), on_run=on_run, say=say)
    outcomes = sweep.outcomes()
    for outcome in outcomes:
        write_cell(sweep.env.results_dir, outcome.row())
        if on_cell is not None:
            on_cell(outcome)
    return outcomes
