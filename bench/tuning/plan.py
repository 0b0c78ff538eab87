"""What a sweep will run: cells, runs (unique across cells), how many are recorded, and an estimated cost.

Runs are counted by run_id, so budgets that share trials (small ⊂ large) and winners shared between budgets count
once. With the study's sampler every tuning run is known up front; the 9 re-runs of a tuned cell are known once all
its samples are recorded (the winner is then decided), otherwise they are counted as "not known yet" (an upper
bound: two budgets may pick the same winner).

Cost = remaining runs × (seconds per epoch × epochs + bookkeeping). Seconds per epoch is the median of
``wall_time_s / max(epochs_completed, 1)`` over the recorded runs of the same problem; without records, the
documented defaults below are used.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records
from bench.tuning.cell import Cell, TrialResult, curve_values, curves_needed, run_view, select

# Seconds per epoch when a problem has no records yet (order of magnitude, for the dry-run estimate only):
# quadratic_deep measured here (CPU, 2 cores, Adam, 100 epochs: 0.17 s incl. the 101 evaluations); the others from
# the study's file timestamps (§6: cifar100_allcnnc 2.5–3 h / 350 epochs, tolstoi_char_rnn 4–6 h / 200 epochs on
# the study's GPUs) and, for the smaller networks, scaled by steps per epoch and model size from those two.
DEFAULT_EPOCH_S: dict[str, float] = {
    "quadratic_deep": 0.0017,
    "mnist_vae": 10.0,
    "fmnist_vae": 10.0,
    "fmnist_2c2d": 8.0,
    "cifar10_3c3d": 12.0,
    "cifar100_allcnnc": 28.0,
    "svhn_wrn164": 40.0,
    "tolstoi_char_rnn": 90.0,
}
FALLBACK_EPOCH_S = 10.0
RUN_OVERHEAD_S = 0.05  # spec, records (two fsynced Parquet files) and Optuna bookkeeping per run, measured on P1


@dataclass
class CellPlan:
    cell: Cell
    run_ids: list[str]  # the runs known now (one-shot seeds; tuning runs; the winner's re-runs once decided)
    unknown: int = 0  # runs not known yet
    winner: TrialResult | None = None


@dataclass
class Plan:
    cells: list[CellPlan]
    done: set[str] = field(default_factory=set)  # finished records among the known runs
    epoch_s: dict[str, tuple[float, str]] = field(default_factory=dict)  # problem -> (s/epoch, source)

    @property
    def run_ids(self) -> set[str]:
        return {r for c in self.cells for r in c.run_ids}

    @property
    def unknown(self) -> int:
        return sum(c.unknown for c in self.cells)

    @property
    def total(self) -> int:
        return len(self.run_ids) + self.unknown

    @property
    def todo(self) -> int:
        return self.total - len(self.done)

    def run_seconds(self, cell: Cell) -> float:
        epochs = max(int(cell.problem_settings["num_epochs"]), 1)
        return self.epoch_s.get(cell.problem, (FALLBACK_EPOCH_S, ""))[0] * epochs + RUN_OVERHEAD_S

    def cost_s(self) -> float:
        """Estimated seconds for what is not recorded yet (one worker)."""
        per_run: dict[str, float] = {}
        unknown = 0.0
        for c in self.cells:
            seconds = self.run_seconds(c.cell)
            per_run.update((r, seconds) for r in c.run_ids)
            unknown += seconds * c.unknown
        return sum(v for r, v in per_run.items() if r not in self.done) + unknown

    def lines(self) -> list[str]:
        singles = sum(not isinstance(c.cell, Cell) for c in self.cells)
        tuned = sum(c.cell.budget.tuned for c in self.cells)
        cells = len(self.cells) - singles
        known = len(self.run_ids)
        out = [f"{cells} cells ({cells - tuned} one-shot, {tuned} tuned)"
               + (f" + {singles} single runs" if singles else "") + "; "
               f"{self.total} runs ({known} known"
               + (f" + {self.unknown} re-runs/trials not known yet" if self.unknown else "")
               + f"): {len(self.done)} done, {self.todo} to do"]
        cost = self.cost_s()
        rates = ", ".join(f"{p} {s:.3g} s/epoch ({src})" for p, (s, src) in sorted(self.epoch_s.items()))
        out.append(f"estimated cost of what is left: {format_duration(cost)} on one worker ({rates})")
        return out


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h >= 100:
        return f"{h}h (≈{h / 24:,.0f} days)"
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def epoch_seconds(runs: Iterable[Mapping[str, Any]], problems: Iterable[str]) -> dict[str, tuple[float, str]]:
    by_problem: dict[str, list[float]] = {}
    for r in runs:
        wall, epochs = r.get("wall_time_s"), r.get("epochs_completed")
        if r.get("source") == "valley" and wall and wall > 0 and r.get("status") in records.FINISHED:
            by_problem.setdefault(r["problem"], []).append(float(wall) / max(int(epochs or 0), 1))
    out = {}
    for p in set(problems):
        if by_problem.get(p):
            out[p] = (statistics.median(by_problem[p]), f"median of {len(by_problem[p])} records")
        else:
            out[p] = (DEFAULT_EPOCH_S.get(p, FALLBACK_EPOCH_S), "default")
    return out


def plan_cells(cells: list[Cell], results_dir: str | Path) -> Plan:
    """The plan of these cells against the records under ``results_dir`` (reads Parquet only, trains nothing)."""
    table = records.read_runs(results_dir)
    runs = {r["run_id"]: r for r in table.to_dict("records")} if len(table) else {}
    finished = {k for k, r in runs.items() if r["status"] in records.FINISHED}
    streams: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    plans = []
    tuned_done: list[tuple[CellPlan, Cell, list[dict[str, Any]], list[str]]] = []
    for cell in cells:
        if not cell.budget.tuned:
            plans.append(CellPlan(cell, [s.run_id for s in cell.oneshot_specs()]))
            continue
        reruns = len(cell.tuning.rerun_seeds)
        n = cell.budget.samples
        if cell.tuning.sampler != "study":
            plans.append(CellPlan(cell, [], unknown=n + reruns))  # TPE/QMC/random: values come from the sampler
            continue
        key = (cell.optimizer, cell.tuning.sampler_seed, n)
        stream = streams.setdefault(key, cell.stream(n))
        trial_ids = [cell.trial_spec(p).run_id for p in stream]
        plan = CellPlan(cell, list(trial_ids))
        if all(r in finished for r in trial_ids):
            tuned_done.append((plan, cell, stream, trial_ids))
        else:
            plan.unknown = reruns
        plans.append(plan)
    # the curves the selection needs (diverged trials; every trial under selection=best), read at once
    wanted = {r for _, cell, _, ids in tuned_done for r in ids
              if curves_needed(runs[r], cell.tuning.selection == "best")}
    curves = curve_values(records.read_curves(results_dir, sorted(wanted))) if wanted else {}
    for plan, cell, stream, trial_ids in tuned_done:
        best = cell.tuning.selection == "best"
        results = [TrialResult(i, p, run_view(results_dir, runs[r], need_best=best, curves=curves))
                   for i, (p, r) in enumerate(zip(stream, trial_ids))]
        plan.winner = select(results, cell)
        plan.run_ids += [s.run_id for s in cell.rerun_specs(plan.winner.tuned)]
    result = Plan(plans, epoch_s=epoch_seconds(runs.values(), {c.problem for c in cells}))
    result.done = {r for r in result.run_ids if r in finished}
    return result
