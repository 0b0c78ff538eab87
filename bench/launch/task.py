"""One work unit, run where the cluster (or the local supervisor) put it: ``Task`` (submitit's callable) and
``python -m bench.launch.task run|finalize <sweep dir> <round> <unit>`` (local slots).

A task first checks that it runs its submission's code (``bench.launch.code``: one line and exit code 2 if not),
then rebuilds the ``SweepRun`` of its unit from the persisted configs — only the cells its runs come from — and
runs the unit's items through ``SweepRun.run`` (Optuna claims, ``execute_many`` with mid-run checkpoints, records,
trial tells). A finalising unit runs phase 2's submission and writes the cells table (``bench.launch.submit``).

Every way a task can end leaves its marker (``tasks/<unit>.json``) saying so: ``done`` (with counts), ``failed``
(the error line), ``stopped`` (SIGTERM: ``scancel``, preemption, the time limit, ``scontrol requeue``; turned into
``SystemExit`` so that observers such as W&B flush, and claimed trials are released at once), ``requeued`` (USR2:
submitit's checkpoint → requeue). Progress is never in the task itself: a restarted task — from its original
arguments, as SLURM restarts it — skips recorded runs and resumes interrupted ones from their checkpoints.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.launch.sweepdir import SweepDir, Unit, host_identity

TAG_ENV = "VALLEY_WORKER_TAG"  # recorded with every trial this process claims (bench.tuning.study.worker_identity)


class Stop:
    """What ended the task, for its marker."""

    requeue_asked = False
    signal: str | None = None


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    if os.environ.get("SLURM_JOB_ID"):
        return os.environ["SLURM_JOB_ID"]
    return f"local:{os.getpid()}"


def _log_path() -> str | None:
    if os.environ.get("SUBMITIT_FOLDER"):
        try:
            import submitit

            return str(submitit.JobEnvironment().paths.stderr)
        except Exception:  # noqa: BLE001
            return None
    return os.environ.get("VALLEY_TASK_LOG")


def _on_sigterm(signum: int, frame: Any) -> None:
    if Stop.signal is not None:
        return  # already going down: a second SIGTERM must not interrupt the clean-up
    Stop.signal = signal.Signals(signum).name
    raise SystemExit(128 + signum)


LINGER_S = 300.0


def _linger() -> None:
    """After a SIGTERM under SLURM, wait to be killed: the job's fate is SLURM's to decide. A job that exits by
    itself during a preemption's GraceTime ends FAILED instead of being requeued; after SIGTERM, SLURM follows with
    SIGKILL (KillWait after scancel, the time limit or scontrol requeue; GraceTime after a preemption) and then
    requeues, cancels or times the job out as it intended. Bounded, for a SIGTERM that nobody follows up."""
    end = time.monotonic() + LINGER_S
    while time.monotonic() < end:
        time.sleep(1.0)


def _threads(cfg: Mapping[str, Any]) -> None:
    import torch

    threads = cfg.get("threads")
    if threads is None:
        threads = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("VALLEY_SLOT_THREADS")
    if threads:
        torch.set_num_threads(max(int(threads), 1))


def run_unit(sweep_root: str, number: int, unit_id: str) -> dict[str, Any]:
    """Run one unit; returns its done marker. Raises on failure (after writing the failed marker)."""
    from bench.launch import code as code_mod

    sweep = SweepDir(sweep_root)
    rnd = sweep.round(number)
    unit = next(Unit.from_dict(u) for u in rnd["units"] if u["id"] == unit_id)
    job = _job_id()
    started = time.time()
    info = {"job": job, **host_identity(), "round": number, "log": _log_path(), "started_at": started,
            "kind": unit.kind}
    try:
        code_mod.verify(rnd["code"])
    except code_mod.CodeChanged as err:
        sweep.set_marker(unit_id, "failed", **info, error=str(err), finished_at=time.time())
        print(f"valley: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    os.environ[TAG_ENV] = f"{sweep.id}:{unit_id}"
    if rnd["code"].get("git_commit") is not None:
        os.environ.setdefault("VALLEY_GIT_COMMIT", rnd["code"]["git_commit"])
    sweep.add_start(unit_id, {"job": job, "at": started, "host": info["host"], "pid": info["pid"]})
    sweep.set_marker(unit_id, "running", **info, error=None, reason=None)
    try:
        if unit.kind == "finalize":
            result = _finalize(sweep, rnd)
        elif unit.kind == "cell":
            result = _cell(sweep, rnd, unit)
        else:
            result = _runs(sweep, rnd, unit)
    except SystemExit as stop:
        if Stop.requeue_asked:
            sweep.set_marker(unit_id, "requeued", **info, reason="USR2: checkpointed and requeued by submitit",
                             finished_at=time.time())
        else:
            reason = f"{Stop.signal or 'SystemExit'} (scancel, preemption, time limit or scontrol requeue)"
            sweep.set_marker(unit_id, "stopped", **info, reason=reason, error=reason, finished_at=time.time())
            if Stop.signal == "SIGTERM" and os.environ.get("SLURM_JOB_ID"):
                _linger()
        raise stop
    except BaseException as err:
        line = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        if type(err).__name__ == "UncompletedJobError":
            line = f"timed out more than launcher.max_requeues times ({line})"
        sweep.set_marker(unit_id, "failed", **info, error=line, finished_at=time.time(),
                         traceback=traceback.format_exc(limit=30)[-4000:])
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return sweep.set_marker(unit_id, "done", **info, **result, error=None, finished_at=time.time())


def _cfgs(sweep: SweepDir, rnd: Mapping[str, Any]) -> list[dict[str, Any]]:
    return sweep.configs(rnd["configs"])


def _runs(sweep: SweepDir, rnd: Mapping[str, Any], unit: Unit) -> dict[str, Any]:
    from bench.execute import env_from_config
    from bench.spec import spec_from_config
    from bench.tuning.batch import SweepRun, batchable
    from bench.tuning.cell import Cell

    cfgs = _cfgs(sweep, rnd)
    first = cfgs[unit.cells[0]]
    _threads(first)
    env = env_from_config(first)
    cells, singles = [], []
    for i in unit.cells:
        if cfgs[i].get("budget"):
            cell = Cell.from_config(cfgs[i])
            if batchable(cell):
                cells.append(cell)
        else:
            singles.append(spec_from_config(cfgs[i]))
    sweep_run = SweepRun(cells, env, singles=singles)
    items = sweep_run.phase1() if unit.phase == 1 else sweep_run.phase2()
    wanted = set(unit.run_ids)
    mine = [it for it in items if it.spec.run_id in wanted]
    release_dead_trials(sweep_run, mine, sweep.id)
    say = lambda line: print(f"valley: {line}", file=sys.stderr, flush=True)  # noqa: E731
    sweep_run.run(mine, say=say)
    sweep_run.wait_for_others(mine, say=say)
    sweep_run.index.refresh()
    finished = sum(sweep_run.index.finished(it.spec.run_id) is not None for it in mine)
    failed = sum((sweep_run.index.rows().get(it.spec.run_id) or {}).get("status") == "failed" for it in mine)
    return {"runs": len(unit.run_ids), "finished": finished, "failed_runs": failed,
            "gone": len(wanted) - len(mine)}


def _cell(sweep: SweepDir, rnd: Mapping[str, Any], unit: Unit) -> dict[str, Any]:
    from bench.tuning.cell import Cell, write_cell
    from bench.tuning.cli import where_of
    from bench.tuning.runner import run_cell

    cfg = _cfgs(sweep, rnd)[unit.cells[0]]
    _threads(cfg)
    cell = Cell.from_config(cfg)
    outcome = run_cell(cell, where_of(cfg, cell))
    write_cell(str(cfg.get("results_dir", "results")), outcome.row())
    return {"runs": len(outcome.seeds) + len(outcome.trial_run_ids), "complete": bool(outcome.complete)}


def _finalize(sweep: SweepDir, rnd: Mapping[str, Any]) -> dict[str, Any]:
    from bench.launch.submit import reconcile, write_cells
    from bench.launch.work import SweepModel

    backend = backend_of(rnd["backend"])
    model = SweepModel(_cfgs(sweep, rnd))
    say = lambda line: print(f"valley: {line}", file=sys.stderr, flush=True)  # noqa: E731
    with sweep.lock():
        settings = {**rnd["settings"], "hold": False}  # phase 2 is released even if the submission was held
        summary = reconcile(sweep, model, rnd["configs"], backend, mode="finalize", settings=settings,
                            code=rnd["code"], say=say, origin=f"round {rnd['round']} finaliser")
        complete, total = write_cells(sweep, model)
    if not summary.empty:
        print(f"valley: round {summary.number}: {summary.runs} runs in {summary.tasks} tasks", file=sys.stderr)
    return {"next_round": summary.number, "dispatched": summary.runs, "cells_complete": complete,
            "cells": total, "repaired": summary.repaired}


def backend_of(name: str) -> Any:
    if name == "slurm":
        from bench.launch.slurm import SlurmBackend

        return SlurmBackend()
    from bench.launch.local_gpus import LocalBackend

    return LocalBackend()


def release_dead_trials(sweep_run: Any, items: list[Any], sweep_id: str) -> int:
    """Fail the RUNNING trials of these items that a task of this sweep claimed: this unit holds them now (the
    submission gave them to it because no queued or running unit had them), so their owner is gone — even on
    another machine, where its heartbeat would take ``stale_after_s`` to look stale."""
    from optuna.trial import TrialState

    from bench.tuning import trials as batch_ops
    from bench.tuning.study import by_sample

    released = 0
    for key in {it.trial.study for it in items if it.trial is not None}:
        study = sweep_run.study(key)
        samples = {it.trial.sample for it in items if it.trial is not None and it.trial.study == key}
        groups = by_sample(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        ops: list[Any] = []
        for s in samples:
            for t in groups.get(s, []):
                worker = t.user_attrs.get("worker") or {}
                tag = worker.get("tag") if isinstance(worker, Mapping) else None
                if isinstance(tag, str) and tag.startswith(f"{sweep_id}:"):
                    ops += [batch_ops.Attr(t._trial_id, "stale", True), batch_ops.State(t._trial_id, TrialState.FAIL)]
                    released += 1
        batch_ops.write(study, ops)
    return released


class Task:
    """submitit's callable for one unit: checkpointable, so that USR2 (the time limit coming, or a preemption with
    ``preempt_send_user_signal``) requeues it; the requeued task starts again from these same arguments."""

    def __init__(self, sweep_root: str, number: int, unit_id: str) -> None:
        self.sweep_root = sweep_root
        self.number = number
        self.unit_id = unit_id

    def __call__(self) -> dict[str, Any]:
        return run_unit(self.sweep_root, self.number, self.unit_id)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        Stop.requeue_asked = True
        Stop.signal = "USR2"  # the requeue's SIGTERM that follows must not interrupt the clean-up
        return submitit.helpers.DelayedSubmission(Task(self.sweep_root, self.number, self.unit_id))

    def __repr__(self) -> str:
        return f"Task({Path(self.sweep_root).name}, round {self.number}, {self.unit_id})"


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.launch.task run <sweep dir> <round> <unit>`` (what a local slot runs)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4 or args[0] != "run":
        print("usage: python -m bench.launch.task run <sweep dir> <round> <unit>", file=sys.stderr)
        raise SystemExit(2)
    try:
        run_unit(args[1], int(args[2]), args[3])
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 - the marker has it; one line here, the traceback in the log
        traceback.print_exc()
        print(f"valley: error: {type(err).__name__}: {' '.join(str(err).split())[:300]}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
