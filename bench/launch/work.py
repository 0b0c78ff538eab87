"""A sweep's composed configs as work: env groups of cells and single runs, their phase-1 and phase-2 runs (with
the configs each run comes from), predicted costs, and the packing of runs into work units.

Packing: the runs of a phase, per env group and resource class, are grouped by ``bench.engine.assign`` (a cohort
of trials that share one data stream is one group; the fallback without a cohort engine is one group per run),
each group's cost is predicted (seconds per epoch measured from earlier records of the problem, else the documented
defaults of ``bench.tuning.plan``, × epochs, + per-run bookkeeping), a group that does not fit a task is split,
and the groups are packed first-fit-decreasing into tasks of a target duration: long enough to amortise a task's
start-up (imports, the study journal, the records index), short enough to fit the time limit with a margin and to
spread the work over ``max_running`` tasks.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.execute import RunEnv, env_from_config
from bench.launch import LaunchError
from bench.spec import RunSpec, SpecError, spec_from_config

TASK_STARTUP_S = 30.0  # a task's fixed cost: interpreter + torch/optuna imports, journal replay, records index
TIME_FILL = 0.5  # predicted work per task at most this share of its time limit (predictions are rough)
MIN_TASK_S = 120.0  # auto packing: at least this much predicted work per task (unless the sweep is smaller)
WAVES = 2  # auto packing: aim for this many tasks per running slot (load balance against mispredictions)


def env_key(env: RunEnv, cfg: Mapping[str, Any]) -> str:
    return json.dumps([env.results_dir, env.device, env.data_dir, env.engine, env.workers, repr(env.checkpoint),
                       env.deterministic, cfg.get("logger"), cfg.get("threads")], sort_keys=True, default=str)


@dataclass
class Run:
    """A run of a phase and the config indices (cells / single runs) it belongs to."""

    spec: RunSpec
    owners: set[int] = field(default_factory=set)
    phase: int = 1


class SweepModel:
    """The configs of one sweep, grouped by run environment; cells and single specs built once."""

    def __init__(self, cfgs: Sequence[Mapping[str, Any]]) -> None:
        from bench.tuning.batch import batchable
        from bench.tuning.cell import Cell
        from bench.tuning.settings import TuningError

        self.cfgs = list(cfgs)
        self.cells: dict[int, Cell] = {}
        self.singles: dict[int, RunSpec] = {}
        groups: dict[str, list[int]] = {}
        self.envs: list[RunEnv] = []
        for i, cfg in enumerate(self.cfgs):
            try:
                env = env_from_config(cfg)
                if cfg.get("budget"):
                    self.cells[i] = Cell.from_config(cfg)
                else:
                    self.singles[i] = spec_from_config(cfg)
            except (SpecError, TuningError, ValueError) as err:
                raise LaunchError(" ".join(str(err).split())) from None
            key = env_key(env, cfg)
            if key not in groups:
                groups[key] = []
                self.envs.append(env)
            groups[key].append(i)
        self.groups: list[list[int]] = list(groups.values())
        self.batchable = {i: batchable(c) for i, c in self.cells.items()}

    # ------------------------------------------------------------------------------------------------ identity
    def identities(self) -> list[str]:
        return sorted([f"cell:{c.cell_id}" for c in self.cells.values()]
                      + [f"run:{s.run_id}" for s in self.singles.values()])

    def sweep_id(self) -> str:
        from bench.launch.sweepdir import digest

        return digest(self.identities(), 12)

    @property
    def results_dirs(self) -> list[str]:
        return list(dict.fromkeys(env.results_dir for env in self.envs))

    # --------------------------------------------------------------------------------------------------- runs
    def sweep_run(self, group: int, indices: Iterable[int] | None = None) -> Any:
        """The ``SweepRun`` of a group (or of the configs ``indices`` of it: what a task rebuilds)."""
        from bench.tuning.batch import SweepRun

        members = self.groups[group] if indices is None else [i for i in indices if i in set(self.groups[group])]
        cells = [self.cells[i] for i in members if i in self.cells and self.batchable[i]]
        singles = [self.singles[i] for i in members if i in self.singles]
        return SweepRun(cells, self.envs[group], singles=singles)

    def phase1(self, group: int) -> dict[str, Run]:
        """run_id -> run of every phase-1 run of the group (one-shot seeds, trials, single runs), with owners."""
        from bench.tuning.batch import SweepRun

        out: dict[str, Run] = {}
        env = self.envs[group]
        for i in self.groups[group]:
            if i in self.singles:
                spec = self.singles[i]
                out.setdefault(spec.run_id, Run(spec)).owners.add(i)
                continue
            if not self.batchable[i]:
                continue
            for item in SweepRun([self.cells[i]], env).phase1():
                out.setdefault(item.spec.run_id, Run(item.spec)).owners.add(i)
        return out

    def unbatchable(self, group: int) -> list[int]:
        return [i for i in self.groups[group] if i in self.cells and not self.batchable[i]]

    def trial_run_ids(self, i: int) -> list[str]:
        cell = self.cells[i]
        return [cell.trial_spec(p).run_id for p in cell.stream(cell.budget.samples)] if cell.budget.tuned else []

    def phase2(self, group: int, sweep: Any, finished: Callable[[str], bool]) -> tuple[dict[str, Run], list[int]]:
        """The winners' re-runs of the group's tuned cells whose trial runs are all recorded and whose trials are all
        final in the study (``sweep``: the group's SweepRun, sharing its studies and records index); and the cells
        whose trial runs are recorded but whose trials are not all final yet (to repair)."""
        from bench.tuning.cell import select

        out: dict[str, Run] = {}
        unfinished = []
        for i in self.groups[group]:
            cell = self.cells.get(i)
            if cell is None or not self.batchable[i] or not cell.budget.tuned:
                continue
            if not all(finished(r) for r in self.trial_run_ids(i)):
                continue
            _, results, finals = sweep.trial_results(cell)
            if finals != cell.budget.samples:
                unfinished.append(i)
                continue
            winner = select(results, cell)
            if winner is None:
                continue
            for spec in cell.rerun_specs(winner.tuned):
                out.setdefault(spec.run_id, Run(spec, phase=2)).owners.add(i)
        return out, unfinished


# ------------------------------------------------------------------------------------------------------ costs
class Costs:
    """Predicted seconds per run: measured seconds per epoch of the problem (records), else the defaults."""

    def __init__(self, problems: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> None:
        from bench.tuning.plan import RUN_OVERHEAD_S, epoch_seconds

        self.epoch_s = epoch_seconds(rows, set(problems))
        self.overhead = RUN_OVERHEAD_S

    def run_s(self, spec: RunSpec) -> float:
        from bench.tuning.plan import FALLBACK_EPOCH_S

        per_epoch = self.epoch_s.get(spec.problem, (FALLBACK_EPOCH_S, ""))[0]
        return per_epoch * max(int(spec.num_epochs), 1) + self.overhead

    def cell_s(self, cell: Any) -> float:
        n = cell.budget.samples + len(cell.tuning.rerun_seeds) if cell.budget.tuned else len(cell.tuning.seeds)
        spec = cell.oneshot_specs()[0]
        return n * self.run_s(spec)


def group_cost(specs: Sequence[RunSpec], costs: Costs, device: str) -> float:
    """A group's predicted seconds: the cohort engine's estimate when it has one, else the sum over its runs."""
    from bench.engine import cohort_module

    singles = [costs.run_s(s) for s in specs]
    if len(specs) > 1:
        module = cohort_module()
        estimate = getattr(module, "estimate_seconds", None) if module is not None else None
        if estimate is not None:
            try:
                return float(estimate(list(specs), device, singles))
            except Exception:  # noqa: BLE001 - an estimate never stops a submission
                pass
    return float(sum(singles))


@dataclass
class Atom:
    run_ids: list[str]
    cost: float


def capacity_s(total_s: float, slots: int, time_min: int | None, task_minutes: float | None) -> float:
    """Target predicted seconds of work per task."""
    usable = math.inf if time_min is None else max(time_min * 60 * TIME_FILL - TASK_STARTUP_S, 1.0)
    if task_minutes is not None:
        return max(min(task_minutes * 60, usable), 1e-6)
    spread = total_s / max(slots * WAVES, 1)
    return max(min(max(spread, MIN_TASK_S), usable), 1e-6)


def atoms_of(specs: Sequence[RunSpec], env: RunEnv, device: str, costs: Costs, capacity: float) -> list[Atom]:
    """Engine groups as atoms (a cohort stays whole where it fits a task; split into near-equal parts otherwise)."""
    from bench.engine import assign

    out = []
    for group in assign(list(specs), env.engine, device, workers=env.workers):
        cost = group_cost(group.specs, costs, device)
        parts = max(1, math.ceil(cost / capacity)) if len(group.specs) > 1 else 1
        size = math.ceil(len(group.specs) / parts)
        for k in range(0, len(group.specs), size):
            chunk = group.specs[k:k + size]
            out.append(Atom([s.run_id for s in chunk], cost * len(chunk) / len(group.specs)))
    return out


def pack(atoms: Sequence[Atom], capacity: float, max_runs: int | None) -> list[list[Atom]]:
    """First-fit decreasing into bins of ``capacity`` predicted seconds (and at most ``max_runs`` runs)."""
    bins: list[tuple[float, int, list[Atom]]] = []
    for atom in sorted(atoms, key=lambda a: (-a.cost, a.run_ids[0])):
        n = len(atom.run_ids)
        for k, (load, count, members) in enumerate(bins):
            if load + atom.cost <= capacity and (max_runs is None or count + n <= max_runs):
                bins[k] = (load + atom.cost, count + n, members + [atom])
                break
        else:
            if max_runs is not None and n > max_runs:  # a cohort larger than the cap: split it
                for j in range(0, n, max_runs):
                    part = atom.run_ids[j:j + max_runs]
                    bins.append((atom.cost * len(part) / n, len(part), [Atom(part, atom.cost * len(part) / n)]))
                continue
            bins.append((atom.cost, n, [atom]))
    return [members for _, _, members in sorted(bins, key=lambda b: -b[0])]
