"""The sweep's live display: cells done, runs done, runs/s and ETA across the whole sweep.

Hydra's basic launcher runs the jobs of a multirun one after another in this process, so one module-level
:data:`TRACKER`, started by ``valley`` with the expanded sweep's plan, sees every cell. A job run any other way
(a single ``valley budget=…``, another launcher) starts its own tracker for its one cell. Runs are counted by
run_id: a run that was recorded before the sweep started, or that two cells share, counts once.

On a terminal the display is a live line on stderr; each finished cell prints one line (stdout, above the live line)
with the sweep's counts, so a log file shows the progress too.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from bench.tuning.cell import Cell, CellOutcome
from bench.tuning.plan import Plan, format_duration


@dataclass
class Tracker:
    cells_total: int
    runs_total: int
    done_before: set[str]
    show_live: bool = False
    started: float = field(default_factory=time.monotonic)
    cells_done: int = 0
    cells_partial: int = 0
    done_now: set[str] = field(default_factory=set)  # finished during this sweep (not recorded before)
    current: str = ""
    _live: Live | None = None
    # Re-runs not known yet (a tuned cell's winner), per cell id: once the cell is done its actual re-runs replace
    # them, so the total shrinks where budgets share a winner and therefore its re-runs.
    known: set[str] = field(default_factory=set)
    unknown_by_cell: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_plan(cls, plan: Plan, show_live: bool) -> Tracker:
        return cls(cells_total=len(plan.cells), runs_total=plan.total, done_before=set(plan.done),
                   show_live=show_live, known=set(plan.run_ids),
                   unknown_by_cell={c.cell.cell_id: c.unknown for c in plan.cells if c.unknown})

    # ---------------------------------------------------------------------------------------------- counting
    @property
    def runs_done(self) -> int:
        return len(self.done_before) + len(self.done_now)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return len(self.done_now) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float:
        rate, left = self.rate(), max(self.runs_total - self.runs_done, 0)
        return left / rate if rate > 0 else float("inf") if left else 0.0

    def status(self) -> str:
        return (f"cells {self.cells_done}/{self.cells_total} · runs {self.runs_done}/{self.runs_total} · "
                f"{self.rate():.2f} runs/s · ETA {format_duration(self.eta_s())}")

    # ----------------------------------------------------------------------------------------------- events
    def start(self) -> None:
        if self.show_live and self._live is None:
            self._live = Live(Text(self.status()), console=Console(stderr=True), refresh_per_second=4,
                              transient=True, redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def cell_started(self, cell: Cell) -> None:
        self.current = cell.title
        self._refresh()

    def run_done(self, run_id: str, trained: bool = True) -> None:
        if run_id not in self.done_before:
            self.done_now.add(run_id)
        self._refresh()

    def cell_done(self, outcome: CellOutcome) -> None:
        if self.unknown_by_cell.pop(outcome.cell.cell_id, 0):
            self.known.update(v.run_id for v in outcome.seeds)
            self.runs_total = len(self.known) + sum(self.unknown_by_cell.values())
        self.cells_done += 1
        self.cells_partial += not outcome.complete
        line = f"[{self.cells_done}/{self.cells_total}] {describe(outcome)} · {self.status()}"
        print(line, flush=True)  # above the live line when stdout is the same terminal (Live redirects it)
        self._refresh()

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        text = (f"sweep: {self.cells_done} cells ({self.cells_partial} partial), {self.runs_done}/{self.runs_total} "
                f"runs recorded ({len(self.done_now)} new) in {format_duration(elapsed)}, {self.rate():.2f} runs/s")
        return text

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(Text(f"{self.status()} · {self.current}"))


def describe(outcome: CellOutcome) -> str:
    """One line: the cell, its winner and its reported number."""
    row = outcome.row()
    cell = outcome.cell
    parts = [cell.title]
    if cell.budget.tuned and outcome.winner is not None:
        parts.append(f"winner sample {outcome.winner.sample} ({_hp(outcome.winner.tuned)})")
    if row["test_mean"] is not None:
        diverged = f", {row['n_diverged']} diverged" if row["n_diverged"] else ""
        parts.append(f"test {row['metric']} {row['test_mean']:.6g} ± {row['test_std']:.3g} "
                     f"({row['n_seeds']} seeds{diverged})")
    if outcome.pruned:
        parts.append(f"pruned {outcome.pruned} trials, saved {outcome.saved_epochs} epochs (beyond the study)")
    if not outcome.complete:
        parts.append("PARTIAL (failed runs are retried by the next invocation)")
    return " · ".join(parts)


def _hp(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in values.items())


TRACKER: Tracker | None = None


def start_sweep(plan: Plan, show_live: bool) -> Tracker:
    global TRACKER
    stop_sweep()
    TRACKER = Tracker.from_plan(plan, show_live and sys.stderr.isatty())
    TRACKER.start()
    return TRACKER


def stop_sweep() -> Tracker | None:
    global TRACKER
    tracker, TRACKER = TRACKER, None
    if tracker is not None:
        tracker.stop()
    return tracker
