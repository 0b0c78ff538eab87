"""Submit what is missing: the one operation behind ``valley -m … launcher=slurm|local_gpus``, the finalising jobs
and ``valley-status --retry``.

Under the sweep's lock it reads what the sweep holds — its units (every round's), their states (the backend:
``squeue``/``sacct`` and the task markers, or the local supervisor), the records — and decides per run:

* recorded (completed or diverged): nothing to do;
* in a unit that is pending or running: nothing to do (never queued twice);
* otherwise it is *missing*; which missing runs a round takes depends on who asks: a submission takes all of them
  (a re-run of the same command is idempotent, and picks up failed and lost work), a finalising job only runs that
  were never in a unit (so a run that fails is not retried in a loop: it waits for ``--retry``), a retry the runs
  whose last unit failed (or was lost) and those never dispatched (a failed finaliser's phase 2).

Phase 1 (one-shot seeds, every tuning trial, single runs) is known up front. Phase 2 (each tuned cell's winner
re-runs) is known once every trial run of the cell is recorded and its trials are final in the Optuna study; a trial
whose run is recorded but whose trial is not final (a task killed between the two) is finished here, in-process,
without training. Cells whose trials must run one at a time (TPE/QMC/random samplers, pruners) are one unit each.

The missing runs are packed into units (``bench.launch.work``), written as round ``n`` and handed to the backend,
which dispatches them behind the sweep's still-running work (``max_running`` holds across all of the sweep's
arrays) and adds a finalising unit after them: it runs this same operation for phase 2 and writes the cells table.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bench.launch.sweepdir import ACTIVE, SweepDir, Unit, UnitState, as_dict, now

if TYPE_CHECKING:
    from bench.launch.work import SweepModel


class Backend(Protocol):
    name: str

    def slots(self, settings: Mapping[str, Any]) -> int: ...

    def resources(self, cfg: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]: ...

    def unit_states(self, sweep: SweepDir) -> dict[str, UnitState]: ...

    def dispatch(self, sweep: SweepDir, number: int, rnd: Mapping[str, Any], units: Sequence[Unit],
                 final: Unit, states: Mapping[str, UnitState]) -> list[dict[str, Any]]: ...


@dataclass
class RoundSummary:
    number: int | None = None
    runs: int = 0
    tasks: int = 0
    arrays: int = 0
    cells: int = 0  # one-at-a-time cells sent as their own unit
    repaired: int = 0
    by_phase: dict[int, int] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    skipped_active: int = 0
    recorded: int = 0

    @property
    def empty(self) -> bool:
        return self.number is None


Selector = Callable[[str, str | None], bool]  # (run_id or "cell:<index>", its last unit's state or None) -> take it


def selector(mode: str, states: Sequence[str] = ()) -> Selector:
    if mode == "submit":
        return lambda key, last: True
    if mode == "finalize":
        return lambda key, last: last is None
    if mode == "retry":  # and what was never dispatched: phase 2 of a finaliser that failed or was cancelled
        wanted = set(states)
        return lambda key, last: last in wanted or last is None
    raise ValueError(mode)


def latest_units(sweep: SweepDir) -> tuple[dict[str, str], dict[str, tuple[Unit, dict[str, Any]]]]:
    """run_id (or "cell:<cfg index>@<configs>") -> the id of the last unit that held it; and every unit."""
    units = sweep.units()
    last: dict[str, str] = {}
    for uid, (unit, rnd) in units.items():  # rounds in order, so later units win
        if unit.kind == "runs":
            for r in unit.run_ids:
                last[r] = uid
        elif unit.kind == "cell":
            last[f"cell:{rnd['configs']}:{unit.cells[0]}"] = uid
    return last, units


def reconcile(sweep: SweepDir, model: SweepModel, cfg_key: str, backend: Backend, *, mode: str,
              settings: Mapping[str, Any], code: Mapping[str, Any], retry_states: Sequence[str] = (),
              say: Callable[[str], None] | None = None, origin: str = "") -> RoundSummary:
    """Submit the missing runs of the sweep (see the module docstring); returns what went out."""
    from bench.launch.work import Costs, atoms_of, capacity_s, pack
    from bench.tuning.batch import RecordIndex
    from bench.tuning.cell import read_cells

    take = selector(mode, retry_states)
    states = backend.unit_states(sweep)
    last, units = latest_units(sweep)

    def last_state(key: str) -> str | None:
        uid = last.get(key)
        if uid is None:
            return None
        st = states.get(uid)
        return st.state if st is not None else "lost"

    summary = RoundSummary()
    indexes: dict[str, RecordIndex] = {}
    todo: list[tuple[int, int, str, list[Any]]] = []  # (group, phase, resource key, specs)
    cell_units: list[tuple[int, int]] = []  # (group, cfg index)
    for g, members in enumerate(model.groups):
        env = model.envs[g]
        index = indexes.setdefault(env.results_dir, RecordIndex(env.results_dir))
        index.refresh()

        def missing(key: str, recorded: bool) -> bool:
            if recorded:
                summary.recorded += 1
                return False
            st = last_state(key)
            if st in ACTIVE:
                summary.skipped_active += 1
                return False
            return take(key, st)

        phase1 = model.phase1(g)
        runs1 = [r for rid, r in phase1.items() if missing(rid, index.finished(rid) is not None)]
        # failed records: a retry of "failed" takes them whatever their unit's state was
        if mode == "retry" and "failed" in retry_states:
            taken = {r.spec.run_id for r in runs1}
            runs1 += [r for rid, r in phase1.items() if rid not in taken and last_state(rid) not in ACTIVE
                      and _failed_record(index, rid)]
        sweep_run = model.sweep_run(g)
        sweep_run.index = index
        phase2, unfinished = model.phase2(g, sweep_run, lambda r: index.finished(r) is not None)
        if unfinished:
            summary.repaired += _repair(model, g, unfinished, index, last_state, say)
            more, _ = model.phase2(g, sweep_run, lambda r: index.finished(r) is not None)
            phase2.update(more)
        runs2 = [r for rid, r in phase2.items() if missing(rid, index.finished(rid) is not None)]
        if mode == "retry" and "failed" in retry_states:
            taken = {r.spec.run_id for r in runs2}
            runs2 += [r for rid, r in phase2.items() if rid not in taken and last_state(rid) not in ACTIVE
                      and _failed_record(index, rid)]
        complete = set()
        todo_cells = model.unbatchable(g)
        if todo_cells:
            cells_table = read_cells(env.results_dir)
            complete = set(cells_table.loc[cells_table.status == "complete", "cell_id"]) if len(cells_table) else set()
        for i in todo_cells:
            key = f"cell:{cfg_key}:{i}"
            if model.cells[i].cell_id in complete:
                continue
            st = last_state(key)
            if st in ACTIVE or not take(key, st):
                continue
            cell_units.append((g, i))
        for phase, runs in ((1, runs1), (2, runs2)):
            by_class: dict[str, list[Any]] = {}
            for r in runs:
                res = backend.resources(model.cfgs[min(r.owners)], settings)
                by_class.setdefault(_res_key(res), []).append(r)
            for key, members_runs in by_class.items():
                todo.append((g, phase, key, members_runs))
    if not todo and not cell_units:
        return summary

    number = sweep.next_round()
    rnd = {"backend": backend.name, "created_at": now(), "configs": cfg_key, "code": dict(code),
           "settings": dict(settings), "groups": model.groups, "mode": mode, "origin": origin, "resources": {}}
    new_units: list[Unit] = []
    records_rows = [row for ix in indexes.values() for row in ix.rows().values()]
    costs = Costs({c.problem for c in model.cells.values()} | {s.problem for s in model.singles.values()},
                  records_rows)
    slots = backend.slots(settings)
    k = 0
    for g, phase, res_key, runs in todo:
        res = _res_from_key(res_key)
        rnd["resources"][res_key] = res
        env = model.envs[g]
        device = _device(res, model.cfgs[min(runs[0].owners)].get("device", "auto"))
        by_id = {r.spec.run_id: r for r in runs}
        total = sum(costs.run_s(r.spec) for r in runs)
        capacity = capacity_s(total, slots, res.get("time"), settings.get("task_minutes"))
        atoms = atoms_of([r.spec for r in runs], env, device, costs, capacity)
        for bin_ in pack(atoms, capacity, settings.get("max_runs_per_task")):
            run_ids = [rid for atom in bin_ for rid in atom.run_ids]
            owners = sorted({o for rid in run_ids for o in by_id[rid].owners})
            k += 1
            new_units.append(Unit(id=f"r{number:04d}-p{phase}-{k:05d}", kind="runs", phase=phase, group=g,
                                  cells=owners, run_ids=run_ids, resources=res_key,
                                  predicted_s=round(sum(a.cost for a in bin_), 3)))
            summary.by_phase[phase] = summary.by_phase.get(phase, 0) + len(run_ids)
    for g, i in cell_units:
        res = backend.resources(model.cfgs[i], settings)
        key = _res_key(res)
        rnd["resources"][key] = res
        k += 1
        new_units.append(Unit(id=f"r{number:04d}-c-{k:05d}", kind="cell", phase=0, group=g, cells=[i],
                              resources=key, predicted_s=round(costs.cell_s(model.cells[i]), 3)))
        summary.cells += 1
    final = Unit(id=f"r{number:04d}-final", kind="finalize", phase=0, group=-1, cells=[], resources="finalize")
    rnd["units"] = [as_dict(u) for u in new_units + [final]]
    sweep.write_round(number, rnd)
    summary.number = number
    summary.runs = sum(len(u.run_ids) for u in new_units)
    summary.tasks = len(new_units)
    try:
        summary.jobs = backend.dispatch(sweep, number, sweep.round(number), new_units, final, states)
    except Exception as err:
        from bench.launch import LaunchError

        sent = sweep.round(number)["jobs"]
        if not sent:  # nothing reached the cluster: the round never happened
            for suffix in (".json", ".jobs.jsonl"):
                (sweep.root / "rounds" / f"{number:04d}{suffix}").unlink(missing_ok=True)
        text = " ".join(str(err).split())
        raise LaunchError(f"submission failed{' after ' + str(len(sent)) + ' jobs' if sent else ''}: "
                          f"{text[:300]}") from None
    summary.arrays = sum(1 for j in summary.jobs if j.get("kind") == "array")
    return summary


def _failed_record(index: Any, run_id: str) -> bool:
    rec = index.rows().get(run_id)
    return rec is not None and rec["status"] == "failed"


def _res_key(res: Mapping[str, Any]) -> str:
    import json

    return json.dumps(dict(res), sort_keys=True)


def _res_from_key(key: str) -> dict[str, Any]:
    import json

    return json.loads(key)


def _device(res: Mapping[str, Any], cfg_device: str) -> str:
    if cfg_device == "auto":
        return "cuda" if int(res.get("gpus") or 0) > 0 else "cpu"
    return cfg_device


def _repair(model: SweepModel, g: int, cells: Sequence[int], index: Any, last_state: Callable[[str], str | None],
            say: Callable[[str], None] | None) -> int:
    """Finish the trials of recorded trial runs whose Optuna trial is not final (nothing is trained)."""
    sweep_run = model.sweep_run(g, cells)
    sweep_run.index = index
    items = [it for it in sweep_run.phase1() if it.trial is not None and index.finished(it.spec.run_id) is not None
             and last_state(it.spec.run_id) not in ACTIVE]
    if not items:
        return 0
    sweep_run.run(items, say=say)
    return len(items)


def write_cells(sweep: SweepDir, model: SweepModel) -> tuple[int, int]:
    """Write every batchable cell's row (complete or partial) from the records and the studies; returns
    (complete, total). Serialised per sweep by the caller's lock, so a later writer always sees newer records."""
    from bench.tuning.cell import write_cell

    complete = total = 0
    for g in range(len(model.groups)):
        sweep_run = model.sweep_run(g)
        if not sweep_run.cells:
            continue
        for outcome in sweep_run.outcomes():
            write_cell(sweep_run.env.results_dir, outcome.row())
            total += 1
            complete += bool(outcome.complete)
    return complete, total


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


__all__ = ["ACTIVE", "Backend", "RoundSummary", "UnitState", "reconcile", "write_cells"]
