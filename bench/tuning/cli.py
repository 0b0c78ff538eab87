"""The tuning side of ``valley``: one Hydra job with ``budget=…`` is one cell; dry runs print the plan.

``bench.cli`` stays the entry point (argument checks, Hydra); this module turns composed configs into cells, runs
them with the sweep's tracker, writes the cells table, and prints dry-run plans.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.spec import SpecError, spec_from_config
from bench.tuning import progress
from bench.tuning.cell import Cell, write_cell
from bench.tuning.plan import Plan, plan_cells
from bench.tuning.runner import Where, run_cell
from bench.tuning.settings import TuningError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def fail(message: str, code: int = 2) -> None:
    from bench.cli import fail as cli_fail

    cli_fail(message, code)


# ------------------------------------------------------------------------------------------------ the job
def where_of(cfg: Mapping[str, Any], cell: Cell) -> Where:
    return Where(results_dir=str(cfg.get("results_dir", "results")), device=str(cfg.get("device", "auto")),
                 data_dir=cfg.get("data_dir"), workers=cell.tuning.workers, engine=str(cfg.get("engine", "single")))


def cell_of(cfg: Mapping[str, Any]) -> Cell:
    try:
        return Cell.from_config(cfg)
    except (SpecError, TuningError) as err:
        fail(str(err))
        raise  # unreachable: fail exits


def run_cell_job(cfg: dict[str, Any]) -> None:
    """One Hydra job with a budget: do the cell (or print its plan), write its row, report to the tracker."""
    cell = cell_of(cfg)
    if cfg.get("dry_run"):
        print_plan(plan_of_configs([cfg]))
        return
    if cfg.get("force"):
        fail("force=true re-runs single runs only; a cell always reuses its study and the recorded runs")
    tracker = progress.TRACKER
    own = tracker is None
    if own:
        plan = plan_cells([cell], cfg.get("results_dir", "results"))
        tracker = progress.start_sweep(plan, show_live=bool(cfg.get("progress", True)))
    try:
        tracker.cell_started(cell)
        where = where_of(cfg, cell)
        outcome = run_cell(cell, where, on_run=tracker.run_done)
        write_cell(where.results_dir, outcome.row())
        tracker.cell_done(outcome)
    finally:
        if own:
            progress.stop_sweep()
            if tracker.cells_partial:
                sys.exit(1)


# ------------------------------------------------------------------------------------------------ dry runs
def plan_of_configs(cfgs: list[dict[str, Any]]) -> Plan:
    """The plan of a sweep's composed jobs (grouped by results_dir); jobs without a budget are single runs."""
    from bench import records
    from bench.tuning.plan import CellPlan, epoch_seconds

    merged = Plan([])
    for results_dir in dict.fromkeys(str(c.get("results_dir", "results")) for c in cfgs):
        group = [c for c in cfgs if str(c.get("results_dir", "results")) == results_dir]
        plan = plan_cells([cell_of(c) for c in group if c.get("budget")], results_dir)
        singles = []
        for cfg in (c for c in group if not c.get("budget")):
            try:
                singles.append(spec_from_config(cfg))
            except SpecError as err:
                fail(str(err))
        if singles:
            runs = records.read_runs(results_dir)
            done = set(runs.loc[runs["status"].isin(records.FINISHED), "run_id"]) if len(runs) else set()
            plan.cells += [CellPlan(_SingleRun(s), [s.run_id]) for s in singles]
            plan.done |= {s.run_id for s in singles if s.run_id in done}
            plan.epoch_s.update(epoch_seconds(runs.to_dict("records"), {s.problem for s in singles}))
        merged.cells += plan.cells
        merged.done |= plan.done
        merged.epoch_s.update(plan.epoch_s)
    return merged


class _SingleRun:
    """A single run shown in a plan: quacks like the parts of a Cell the plan reads."""

    def __init__(self, spec: Any) -> None:
        from bench.tuning.settings import Budget

        self.problem, self.problem_settings = spec.problem, spec.problem_settings
        self.budget = Budget("single", 0)
        self.title = f"{spec.problem} · {spec.optimizer} · {spec.schedule} · seed {spec.seed}"


def print_plan(plan: Plan, max_rows: int = 40) -> None:
    out = Console(file=sys.stdout, soft_wrap=True, width=max(Console(file=sys.stdout).width, 120))
    by_cell = len(plan.cells) <= max_rows
    table = Table(title="dry run: nothing is trained" + ("" if by_cell else " (cells grouped by problem and budget)"))
    for col, justify in (("cell" if by_cell else "problem · budget", "left"), ("cells", "right"),
                         ("runs", "right"), ("done", "right"), ("to do", "right")):
        table.add_column(col, justify=justify)
    groups: dict[str, list[Any]] = {}
    for c in plan.cells:
        key = c.cell.title if by_cell else f"{c.cell.problem} · {getattr(c.cell, 'label', c.cell.budget.name)}"
        groups.setdefault(key, []).append(c)
    for key, members in groups.items():  # runs shared between cells of a group count once
        ids = {r for c in members for r in c.run_ids}
        unknown = sum(c.unknown for c in members)
        done = len(ids & plan.done)
        runs = f"{len(ids) + unknown}" + (f" ({unknown} not known yet)" if unknown else "")
        table.add_row(key, str(len(members)), runs, str(done), str(len(ids) - done + unknown))
    out.print(table)
    for line in plan.lines():
        out.print(line, markup=False, highlight=False)
