"""``launcher=local_gpus``: a detached supervisor keeps a workstation's GPUs busy with the sweep's work units.

``valley -m … launcher=local_gpus launcher.gpus=[0,1] launcher.per_gpu=2`` packs the missing runs into units
exactly as for SLURM (``bench.launch.submit``), writes them as a round of the sweep and makes sure the sweep's
supervisor runs: a process in its own session (it survives the shell that started it) that keeps
``len(gpus) · per_gpu`` slots busy, each unit in its own process with its own ``CUDA_VISIBLE_DEVICES``
(``launcher.gpus=[]`` runs ``launcher.slots`` CPU slots instead, with ``CUDA_VISIBLE_DEVICES`` empty). A round's
finalising unit runs once every earlier unit has ended (the dependency a SLURM job would have): it dispatches
phase 2 as a new round, which the supervisor picks up, and writes the cells table. The supervisor exits when
nothing is left. ``valley-status`` follows it and ``valley-status --retry failed|lost`` adds a round (starting a
supervisor if none runs); ``valley-cancel`` stops it (its workers get SIGTERM and resume from their checkpoints
when retried). submitit's LocalExecutor is not used: it starts every job at once on the same GPUs.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.launch import LaunchError
from bench.launch.settings import local_settings
from bench.launch.sweepdir import SweepDir, Unit, UnitState, alive, now, proc_start, read_json, write_json

POLL_S = 0.5
TERMINAL = ("done", "failed", "stopped", "cancelled", "requeued")
STOP_GRACE_S = 30.0


class LocalBackend:
    name = "local"

    def slots(self, settings: Mapping[str, Any]) -> int:
        return slot_count(settings)

    def resources(self, cfg: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
        gpus = settings.get("gpus") or []
        return {"time": None, "gpus": 1 if gpus else 0, "cpus": 1, "local": True}

    def unit_states(self, sweep: SweepDir) -> dict[str, UnitState]:
        markers = sweep.markers()
        states = {}
        for rnd in sweep.rounds():
            if rnd.get("backend") != "local":
                continue
            for u in rnd.get("units", []):
                m = markers.get(u["id"])
                log = (m or {}).get("log") or str(sweep.root / "local" / "logs" / f"{u['id']}.log")
                if m is None:
                    states[u["id"]] = UnitState("pending", None, "queued" + ("" if supervisor_alive(sweep)
                                                                           else " (no supervisor running)"), log=log)
                    continue
                job = m.get("job")
                st = m.get("state")
                if st == "running":
                    states[u["id"]] = (UnitState("running", job, f"pid {m.get('pid')}", log=log) if alive(m)
                                       else UnitState("lost", job, "its process is gone", m.get("error"), log))
                elif st == "done":
                    states[u["id"]] = UnitState("done", job, "done", log=log)
                else:
                    states[u["id"]] = UnitState("failed", job, st or "?", m.get("error") or m.get("reason"), log)
        return states

    def dispatch(self, sweep: SweepDir, number: int, rnd: Mapping[str, Any], units: Sequence[Unit], final: Unit,
                 states: Mapping[str, UnitState]) -> list[dict[str, Any]]:
        entry = {"job_id": f"local-r{number:04d}", "array": False, "kind": "local",
                 "units": [u.id for u in units] + [final.id], "submitted_at": now()}
        sweep.add_jobs(number, entry)
        if os.environ.get("VALLEY_SUPERVISOR") != sweep.id:  # the supervisor's own finaliser: it picks it up
            ensure_supervisor(sweep, rnd)
        return [entry]

    def cancel(self, sweep: SweepDir) -> list[str]:
        info = read_json(sweep.root / "local" / "supervisor.json")
        stopped = []
        for rnd in sweep.rounds():
            if rnd.get("backend") != "local":
                continue
            for u in rnd.get("units", []):
                if sweep.marker(u["id"]) is None:
                    sweep.set_marker(u["id"], "cancelled", reason="valley-cancel before it started",
                                     error="cancelled (valley-cancel)")
        if info and alive(info):
            os.kill(int(info["pid"]), signal.SIGTERM)
            stopped.append(f"supervisor pid {info['pid']}")
        return stopped


def slot_count(settings: Mapping[str, Any]) -> int:
    gpus = settings.get("gpus") or []
    return len(gpus) * int(settings.get("per_gpu", 1)) if gpus else int(settings.get("slots", 1))


def supervisor_alive(sweep: SweepDir) -> bool:
    return alive(read_json(sweep.root / "local" / "supervisor.json"))


def ensure_supervisor(sweep: SweepDir, rnd: Mapping[str, Any]) -> int | None:
    """Start the sweep's supervisor unless one runs; returns the new pid (None: one was running)."""
    from bench.launch import code as code_mod

    if supervisor_alive(sweep):
        return None
    local = sweep.root / "local"
    local.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    task_env = code_mod.task_environment(rnd["code"], sweep.root)
    env["PYTHONPATH"] = task_env["PYTHONPATH"] + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["VALLEY_GIT_COMMIT"] = task_env["VALLEY_GIT_COMMIT"]
    env["VALLEY_SUPERVISOR"] = sweep.id
    python = rnd["settings"].get("python") or sys.executable
    log = open(local / "supervisor.log", "ab")
    try:
        proc = subprocess.Popen([python, "-m", "bench.launch.local_gpus", "supervise", str(sweep.root)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True, cwd=_code_root(sweep, rnd))
    finally:
        log.close()
    # wait until it holds the lock and wrote its pid file (or exited: another one won the race)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if supervisor_alive(sweep) or proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc.pid


def _code_root(sweep: SweepDir, rnd: Mapping[str, Any]) -> str:
    """A worker starts in its code's root: ``python -m`` puts the working directory first on sys.path."""
    from bench.launch import code as code_mod

    return str(code_mod.code_root(rnd["code"], sweep.root))


class Slot:
    def __init__(self, index: int, gpu: int | None, threads: int) -> None:
        self.index, self.gpu, self.threads = index, gpu, threads
        self.proc: subprocess.Popen | None = None
        self.unit: str | None = None

    def env(self, sweep: SweepDir, rnd: Mapping[str, Any], unit: str, log: Path) -> dict[str, str]:
        from bench.launch import code as code_mod

        env = {k: v for k, v in os.environ.items() if k != "VALLEY_SUPERVISOR"}
        task_env = code_mod.task_environment(rnd["code"], sweep.root)
        base = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([task_env["PYTHONPATH"], *base])
        env["VALLEY_GIT_COMMIT"] = task_env["VALLEY_GIT_COMMIT"]
        env["CUDA_VISIBLE_DEVICES"] = "" if self.gpu is None else str(self.gpu)
        env["VALLEY_SLOT_THREADS"] = str(self.threads)
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["VALLEY_TASK_LOG"] = str(log)
        env["VALLEY_SUPERVISOR"] = sweep.id  # its finaliser dispatches to this supervisor
        return env


def supervise(sweep_root: str) -> int:
    """The supervisor's loop (``python -m bench.launch.local_gpus supervise <sweep dir>``)."""
    sweep = SweepDir(sweep_root)
    local = sweep.root / "local"
    local.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(local / "supervisor.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another supervisor runs this sweep
    rounds = [r for r in sweep.rounds() if r.get("backend") == "local"]
    settings = rounds[-1]["settings"] if rounds else {}
    gpus = list(settings.get("gpus") or [])
    per = int(settings.get("per_gpu", 1))
    slots_n = slot_count(settings)
    threads = max(1, (os.cpu_count() or 1) // max(slots_n, 1))
    slots = ([Slot(k, g, threads) for k, g in enumerate(g for g in gpus for _ in range(per))] if gpus
             else [Slot(k, None, threads) for k in range(slots_n)])
    me = {"pid": os.getpid(), "pid_start": proc_start(os.getpid()), "host": socket.gethostname(),
          "started_at": now(), "slots": len(slots), "gpus": gpus}
    write_json(local / "supervisor.json", me)
    stopping = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log(f"supervisor {os.getpid()} of sweep {sweep.id}: {len(slots)} slots "
        + (f"on GPUs {gpus}" if gpus else "on the CPU"))
    try:
        while True:
            for slot in slots:
                _reap(sweep, slot)
            if stopping["flag"]:
                _stop_all(sweep, slots)
                break
            free = [s for s in slots if s.proc is None]
            running = {s.unit for s in slots if s.unit}
            todo = _runnable(sweep, running)
            for slot, (rnd, unit) in zip(free, todo):
                _start(sweep, slot, rnd, unit)
            if not any(s.proc for s in slots) and not todo:
                break
            time.sleep(POLL_S)
    finally:
        write_json(local / "supervisor.json", {**me, "exited_at": now(), "pid_start": None})
        os.close(lock_fd)
    log("supervisor: nothing left to run; exiting")
    return 0


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def _runnable(sweep: SweepDir, running: set[str]) -> list[tuple[dict[str, Any], Unit]]:
    markers = sweep.markers()
    out = []
    unfinished_rounds: set[int] = set()
    rounds = [r for r in sweep.rounds() if r.get("backend") == "local"]
    for rnd in rounds:
        for u in rnd.get("units", []):
            m = markers.get(u["id"])
            if u["kind"] != "finalize" and (u["id"] in running or m is None or (m.get("state") == "running"
                                                                               and alive(m))):
                unfinished_rounds.add(rnd["round"])
    for rnd in rounds:
        for u in rnd.get("units", []):
            if u["id"] in running or markers.get(u["id"]) is not None:
                continue
            if u["kind"] == "finalize":
                if any(n <= rnd["round"] for n in unfinished_rounds):
                    continue
            out.append((rnd, Unit.from_dict(u)))
    # work before bookkeeping: finalisers last, so a free slot never waits on one
    return sorted(out, key=lambda ru: (ru[1].kind == "finalize", ru[0]["round"]))


def _start(sweep: SweepDir, slot: Slot, rnd: Mapping[str, Any], unit: Unit) -> None:
    logs = sweep.root / "local" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{unit.id}.log"
    python = rnd["settings"].get("python") or sys.executable
    env = slot.env(sweep, rnd, unit.id, path)
    if unit.kind == "finalize":
        env["CUDA_VISIBLE_DEVICES"] = ""
    with open(path, "ab") as fh:
        slot.proc = subprocess.Popen([python, "-m", "bench.launch.task", "run", str(sweep.root), str(rnd["round"]),
                                      unit.id], stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                     env=env, close_fds=True, cwd=_code_root(sweep, rnd))
    slot.unit = unit.id
    where = f"GPU {slot.gpu}" if slot.gpu is not None else "CPU"
    log(f"slot {slot.index} ({where}): {unit.id} (pid {slot.proc.pid}, {len(unit.run_ids)} runs)")


def _reap(sweep: SweepDir, slot: Slot) -> None:
    if slot.proc is None or slot.proc.poll() is None:
        return
    code = slot.proc.returncode
    marker = sweep.marker(slot.unit) or {}
    if marker.get("state") in (None, "running"):  # died without saying why (SIGKILL, segfault, OOM killer)
        from bench.launch.slurm import last_error_line

        line = last_error_line(str(sweep.root / "local" / "logs" / f"{slot.unit}.log"))
        sweep.set_marker(slot.unit, "failed", error=f"exit code {code}" + (f": {line}" if line else ""),
                         finished_at=now())
    log(f"slot {slot.index}: {slot.unit} ended ({(sweep.marker(slot.unit) or {}).get('state')}, exit {code})")
    slot.proc, slot.unit = None, None


def _stop_all(sweep: SweepDir, slots: Sequence[Slot]) -> None:
    log("supervisor: stopping (SIGTERM): every running unit gets SIGTERM")
    for slot in slots:
        if slot.proc is not None and slot.proc.poll() is None:
            slot.proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < end and any(s.proc is not None and s.proc.poll() is None for s in slots):
        time.sleep(0.1)
    for slot in slots:
        if slot.proc is not None and slot.proc.poll() is None:
            slot.proc.kill()
            slot.proc.wait()
        _reap(sweep, slot)


# ------------------------------------------------------------------------------------------------------ the CLI
def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return 0


def launch(cfgs: list[dict[str, Any]], *, multirun: bool) -> int:
    from bench.launch.common import launcher_block, phases_line, prepare, print_sweep_head, say, status_hint
    from bench.launch.submit import reconcile, write_cells

    t0 = time.perf_counter()
    settings = local_settings(launcher_block(cfgs))
    count = visible_gpus()
    gpus = list(range(count)) if settings.gpus is None else list(settings.gpus)
    bad = [g for g in gpus if g >= count]
    if bad:
        raise LaunchError(f"launcher.gpus={gpus}: GPU {bad[0]} is not visible here ({count} CUDA devices); use "
                          "launcher.gpus=[] launcher.slots=N for CPU slots")
    resolved = {**settings.as_dict(), "gpus": gpus}
    prep = prepare(cfgs, backend="local", code_mode=settings.code, shared_fs=False)
    backend = LocalBackend()
    with prep.sweep.lock():
        summary = reconcile(prep.sweep, prep.model, prep.cfg_key, backend, mode="submit", settings=resolved,
                            code=prep.code, say=say, origin="valley")
        if summary.empty:
            cells_complete = write_cells(prep.sweep, prep.model)
    pending = [u for u, st in backend.unit_states(prep.sweep).items() if st.state == "pending"]
    if summary.empty and pending:
        rounds = [r for r in prep.sweep.rounds() if r.get("backend") == "local"]
        ensure_supervisor(prep.sweep, rounds[-1])
    slots = slot_count(resolved)
    where = f"GPUs {gpus} x {settings.per_gpu}" if gpus else f"{slots} CPU slot{'s' if slots != 1 else ''}"
    print_sweep_head(prep, summary, cells_complete if summary.empty else None)
    if not summary.empty:
        phases = phases_line(summary)
        print(f"queued round {summary.number}: {summary.runs} runs ({phases}) in "
              f"{summary.tasks} tasks on {where}; supervisor log {prep.sweep.root / 'local' / 'supervisor.log'}")
    print(f"returned in {time.perf_counter() - t0:.1f} s", flush=True)
    for line in status_hint(prep.sweep):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "supervise":
        print("usage: python -m bench.launch.local_gpus supervise <sweep dir>", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(supervise(args[1]))


if __name__ == "__main__":
    main()
