"""``launcher=slurm``: a sweep as SLURM job arrays through submitit, fire-and-forget.

``valley -m … launcher=slurm`` composes the sweep, packs its missing runs into work units (``bench.launch.work``),
submits them as job arrays and returns: nothing waits on the jobs. What happens next is dispatched by the cluster:

* **arrays**: one per resource class (the problem's ``resources:`` under the ``launcher.*`` overrides), chunked to
  at most ``MaxArraySize`` tasks (read from ``scontrol show config``), each with the throttle ``%max_running``, and
  *chained* — every array of the sweep depends (``afterany``) on the one submitted before it while that one is
  still queued or running — so that at most ``max_running`` tasks of the sweep run at any moment, across all its
  arrays and rounds (re-submissions and retries join the end of the chain).
* **a finalising job** per round (``afterany`` on the round's arrays, 1 CPU): it submits phase 2 — the winners'
  re-runs of the cells whose trials are now all recorded — as a new round (with its own finalising job), and writes
  the cells table once nothing is left to dispatch. The tuning protocol therefore runs unattended.
* **tasks** (``bench.launch.task``) rebuild the ``SweepRun`` of their unit from the persisted configs and run it;
  progress is what the run loop persists (mid-run checkpoints, records, Optuna trials), so a task restarted from
  its original arguments — after ``scontrol requeue``, preemption, USR2 before the time limit (submitit's checkpoint
  → requeue, up to ``max_requeues`` time-outs), a node failure — continues where it was.

Jobs are named ``valley-<sweep>-r<round>``; a job id is only trusted with its name (after a cluster's state is
wiped, ids restart at 1), and submitit's folder is ``sweeps/<id>/slurm/<cluster>/r<round>/``, so no two jobs that
share an id ever share a folder. hydra-submitit-launcher is not used: it blocks until every job ends, reports failed
runs as completed and cannot pack runs into tasks.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.launch import LaunchError
from bench.launch.settings import SlurmSettings, finalize_resources, resources_for, slurm_settings
from bench.launch.sweepdir import SweepDir, Unit, UnitState, now

QUERY_TIMEOUT_S = 20.0
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "DEADLINE", "BOOT_FAIL", "PREEMPTED",
                 "REVOKED", "SPECIAL_EXIT"}
LOST_STATES = {"NODE_FAIL"}


class ClusterUnavailable(RuntimeError):
    """squeue/scontrol did not answer: nothing can be decided about what is queued."""


def _run(cmd: list[str], timeout: float = QUERY_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ClusterUnavailable(f"{cmd[0]} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise ClusterUnavailable(f"{cmd[0]} did not answer in {timeout:.0f} s") from None


@lru_cache(maxsize=1)
def cluster_config() -> dict[str, str]:
    out = _run(["scontrol", "show", "config"])
    if out.returncode != 0:
        raise ClusterUnavailable(f"scontrol show config failed: {(out.stderr or out.stdout).strip().splitlines()[:1]}")
    conf = {}
    for line in out.stdout.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            conf[key.strip()] = value.strip()
    return conf


def max_array_size() -> int:
    raw = cluster_config().get("MaxArraySize", "1001")
    try:
        return max(int(raw.split()[0]), 1)
    except ValueError:
        return 1001


def cluster_name() -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in cluster_config().get("ClusterName", "slurm"))


def partitions() -> set[str]:
    out = _run(["sinfo", "-h", "-o", "%R"])
    if out.returncode != 0:
        raise ClusterUnavailable(f"sinfo failed: {out.stderr.strip()[:200]}")
    return {line.strip().rstrip("*") for line in out.stdout.splitlines() if line.strip()}


def job_name(sweep_id: str, number: int) -> str:
    return f"valley-{sweep_id}-r{number:04d}"


def squeue(names: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """job id (``123_4`` per array task) -> (name, state, reason) of the live jobs with these names."""
    if not names:
        return {}
    out = _run(["squeue", "-h", "-r", "--name", ",".join(sorted(set(names))), "-o", "%i|%j|%T|%r"])
    if out.returncode != 0:
        raise ClusterUnavailable(f"squeue failed: {(out.stderr or out.stdout).strip()[:200]}")
    jobs = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4:
            jobs[parts[0]] = (parts[1], parts[2], parts[3])
    return jobs


def sacct(job_ids: Sequence[str]) -> dict[str, dict[str, str]] | None:
    """One ``sacct`` call for the ended jobs: job id -> {name, state, exit}; None when accounting does not answer."""
    if not job_ids:
        return {}
    roots = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = _run(["sacct", "-X", "-n", "-P", "-j", ",".join(roots), "-o", "JobID,JobName,State,ExitCode,NodeList"])
    except ClusterUnavailable:
        return None
    if out.returncode != 0:
        return None
    info = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4:
            rec = {"name": parts[1], "state": parts[2].split()[0] if parts[2] else "", "exit": parts[3],
                   "node": parts[4] if len(parts) > 4 else ""}
            for jid in expand_ids(parts[0]):
                info[jid] = rec
    return info


def expand_ids(text: str) -> list[str]:
    """``123``, ``123_4``, or an array's tasks that never started, ``123_[0-2,5%2]`` -> 123_0, 123_1, 123_2, 123_5."""
    import re

    m = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", text)
    if m is None:
        return [text]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{k}" for k in range(int(lo), int(hi or lo) + 1)]
    return out


# --------------------------------------------------------------------------------------------------- the backend
class SlurmBackend:
    name = "slurm"

    def slots(self, settings: Mapping[str, Any]) -> int:
        return int(settings.get("max_running", 64))

    def resources(self, cfg: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
        return resources_for(cfg, _settings(settings)).as_dict()

    def jobs(self, sweep: SweepDir) -> dict[str, tuple[str, str, dict[str, Any], int]]:
        """unit id -> (job id, job name, the jobs entry, round) of every unit dispatched to SLURM."""
        out = {}
        for rnd in sweep.rounds():
            if rnd.get("backend") != "slurm":
                continue
            name = job_name(sweep.id, rnd["round"])
            for entry in rnd.get("jobs", []):
                for k, uid in enumerate(entry.get("units", [])):
                    jid = f"{entry['job_id']}_{k}" if entry.get("array") else str(entry["job_id"])
                    out[uid] = (jid, name, entry, rnd["round"])
        return out

    def unit_states(self, sweep: SweepDir, *, accounting: bool = True) -> dict[str, UnitState]:
        jobs = self.jobs(sweep)
        markers = sweep.markers()
        live = squeue(sorted({name for _, name, _, _ in jobs.values()}))
        states: dict[str, UnitState] = {}
        ended = []
        for uid, (jid, name, entry, _) in jobs.items():
            marker = markers.get(uid) or {}
            log = marker.get("log") or _log_path(entry, jid)
            hit = live.get(jid)
            if hit is not None and hit[0] == name:
                state = "running" if hit[1] in ("RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING") else "pending"
                states[uid] = UnitState(state, jid, f"{hit[1]} ({hit[2]})" if hit[2] not in ("None", "") else hit[1],
                                        log=log)
                continue
            if marker.get("state") == "done":
                states[uid] = UnitState("done", jid, "COMPLETED", log=log)
                continue
            ended.append(uid)
        acct = sacct([jobs[u][0] for u in ended]) if ended and accounting else None
        for uid in ended:
            jid, name, entry, _ = jobs[uid]
            marker = markers.get(uid) or {}
            log = marker.get("log") or _log_path(entry, jid)
            error = marker.get("error")
            rec = (acct or {}).get(jid)
            if rec is not None and rec["name"] != name:
                rec = None  # the id belongs to another job (a cluster whose state was wiped)
            if rec is not None:
                st = rec["state"]
                if st in FAILED_STATES:
                    states[uid] = UnitState("failed", jid, f"{st} exit {rec['exit']}", error or _reason(st, log), log)
                elif st in LOST_STATES:
                    states[uid] = UnitState("lost", jid, f"{st} on {rec['node']}", error, log)
                elif st == "COMPLETED":
                    # exited 0 without a done marker: a refusal exits 2, so this is a task that vanished
                    states[uid] = UnitState("lost", jid, "COMPLETED without a result", error, log)
                else:
                    states[uid] = UnitState("lost", jid, f"{st} (not in squeue)", error, log)
                continue
            # no accounting (or the job is unknown to it): the task's own marker is what is left
            mstate = marker.get("state")
            if mstate in ("failed", "stopped", "requeued", "cancelled"):
                states[uid] = UnitState("failed", jid, f"{mstate} (accounting: {'off' if acct is None else 'no record'})",
                                        error or marker.get("reason"), log)
            else:
                states[uid] = UnitState("lost", jid, f"no trace (accounting: {'off' if acct is None else 'no record'})",
                                        error, log)
        return states

    def dispatch(self, sweep: SweepDir, number: int, rnd: Mapping[str, Any], units: Sequence[Unit], final: Unit,
                 states: Mapping[str, UnitState]) -> list[dict[str, Any]]:
        import submitit

        from bench.launch import code as code_mod
        from bench.launch.task import Task

        settings = _settings(rnd["settings"])
        folder = sweep.root / "slurm" / cluster_name() / f"r{number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        python = settings.python or sys.executable
        env = code_mod.task_environment(rnd["code"], sweep.root)
        exports = [f"export PYTHONPATH={_q(env['PYTHONPATH'])}${{PYTHONPATH:+:$PYTHONPATH}}",
                   f"export VALLEY_GIT_COMMIT={_q(env['VALLEY_GIT_COMMIT'])}"]
        # tasks start in the code's root: ``python -m`` puts the working directory first on sys.path, before
        # PYTHONPATH, so a task started in a checkout would import the checkout instead of the snapshot
        root = str(code_mod.code_root(rnd["code"], sweep.root))
        limit = min(max_array_size(), settings.max_array_size or 10**9)
        name = job_name(sweep.id, number)
        after = self._chain_tail(sweep, states)
        out: list[dict[str, Any]] = []
        classes: dict[str, list[Unit]] = {}
        for unit in units:
            classes.setdefault(unit.resources, []).append(unit)
        for key, members in classes.items():
            res = rnd["resources"][key]
            members = sorted(members, key=lambda u: -u.predicted_s)  # long tasks first: shorter tails
            for start in range(0, len(members), limit):
                chunk = members[start:start + limit]
                params = _params(res, settings, name, exports, after, root)
                executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=settings.max_requeues,
                                                  python=python)
                executor.update_parameters(**params)
                with executor.batch():
                    jobs = [executor.submit(Task(str(sweep.root), number, u.id)) for u in chunk]
                array_id = str(jobs[0].job_id).split("_")[0]
                entry = {"job_id": array_id, "array": len(chunk) > 1, "kind": "array" if len(chunk) > 1 else "job",
                         "units": [u.id for u in chunk], "resources": key, "after": after, "folder": str(folder),
                         "submitted_at": now()}
                sweep.add_jobs(number, entry)
                out.append(entry)
                after = array_id
        fin_res = finalize_resources(settings).as_dict()
        deps = [e["job_id"] for e in out]
        params = _params(fin_res, settings, name, exports, None, root)
        if deps:
            params["dependency"] = "afterany:" + ":".join(deps)
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=settings.max_requeues, python=python)
        executor.update_parameters(**params)
        job = executor.submit(Task(str(sweep.root), number, final.id))
        entry = {"job_id": str(job.job_id), "array": False, "kind": "finalize", "units": [final.id],
                 "resources": "finalize", "after": ":".join(deps), "folder": str(folder), "submitted_at": now()}
        sweep.add_jobs(number, entry)
        out.append(entry)
        return out

    def _chain_tail(self, sweep: SweepDir, states: Mapping[str, UnitState]) -> str | None:
        """The sweep's last array (or task job) still queued or running: the next array waits for it."""
        jobs = self.jobs(sweep)
        tail = None
        for uid, (jid, _, entry, rnd) in jobs.items():
            st = states.get(uid)
            if entry.get("kind") == "finalize" or st is None or st.state not in ("pending", "running"):
                continue
            key = (rnd, entry.get("submitted_at", 0))
            if tail is None or key > tail[0]:
                tail = (key, str(entry["job_id"]))
        return tail[1] if tail else None

    def cancel(self, sweep: SweepDir) -> list[str]:
        jobs = self.jobs(sweep)
        live = squeue(sorted({name for _, name, _, _ in jobs.values()}))
        names = {name for _, name, _, _ in jobs.values()}
        roots = sorted({j.split("_")[0] for j, (name, _, _) in live.items() if name in names})
        if roots:
            out = _run(["scancel", *roots])
            if out.returncode != 0:
                raise ClusterUnavailable(f"scancel failed: {out.stderr.strip()[:200]}")
        return roots


def _settings(d: Mapping[str, Any]) -> SlurmSettings:
    return slurm_settings({**dict(d), "name": "slurm"} if "name" not in d else dict(d))


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _params(res: Mapping[str, Any], s: SlurmSettings, name: str, exports: list[str], after: str | None,
            root: str) -> dict[str, Any]:
    time_min = int(res["time"])
    params: dict[str, Any] = {"job_name": name, "time": time_min, "cpus_per_task": int(res["cpus"]),
                              "array_parallelism": s.max_running,
                              "signal_delay_s": int(min(s.signal_delay_s, max(time_min * 60 - 15, time_min * 30))),
                              "setup": list(res.get("setup") or []) + exports, "stderr_to_stdout": False}
    if int(res["gpus"]) > 0:
        params["gpus_per_node"] = int(res["gpus"])
    if res.get("mem_gb"):
        gb = float(res["mem_gb"])
        params["mem"] = f"{int(gb)}G" if gb == int(gb) else f"{int(gb * 1024)}M"
    for key in ("partition", "account", "qos", "constraint"):
        if res.get(key):
            params[key] = res[key]
    extra: dict[str, Any] = {"chdir": root, **{k: (v if v != "" else True) for k, v in (res.get("sbatch") or [])}}
    if s.hold:
        extra["hold"] = True
    if extra:
        params["additional_parameters"] = extra
    if after:
        params["dependency"] = f"afterany:{after}"
    return params


def _log_path(entry: Mapping[str, Any], jid: str) -> str | None:
    folder = entry.get("folder")
    if not folder:
        return None
    return str(Path(folder) / f"{jid}_0_log.err")


def _reason(state: str, log: str | None) -> str | None:
    if state == "CANCELLED":
        return "cancelled (scancel / valley-cancel)"
    if state == "TIMEOUT":
        return "hit its time limit (launcher.time; requeues exhausted?)"
    if state == "OUT_OF_MEMORY":
        return "out of memory (launcher.mem_gb)"
    return last_error_line(log)


def last_error_line(log: str | None) -> str | None:
    if not log:
        return None
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if not line.startswith(("submitit", "srun:")) and ("Error" in line or "error" in line or "valley:" in line):
            return line[:300]
    return lines[-1][:300] if lines else None


# ------------------------------------------------------------------------------------------------------ the CLI
def check_cluster(settings: SlurmSettings, cfgs: Sequence[Mapping[str, Any]]) -> None:
    """Bad input before anything is written: sbatch on PATH, the cluster answers, partitions exist."""
    for tool in ("sbatch", "srun", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise LaunchError(f"{tool} is not on PATH: launcher=slurm needs a SLURM login node "
                              "(or use launcher=local_gpus / launcher=inline)")
    try:
        cluster_config()
        have = partitions()
    except ClusterUnavailable as err:
        raise LaunchError(f"the SLURM cluster does not answer: {err}") from None
    wanted = {resources_for(c, settings).partition for c in cfgs} | {finalize_resources(settings).partition}
    for part in sorted(p for p in wanted if p):
        if part not in have:
            raise LaunchError(f"partition {part!r} does not exist on cluster {cluster_name()}; valid: "
                              f"{', '.join(sorted(have))}")


def launch(cfgs: list[dict[str, Any]], *, multirun: bool) -> int:
    import time

    from bench.launch.common import launcher_block, phases_line, prepare, print_sweep_head, say, status_hint
    from bench.launch.submit import reconcile, write_cells

    t0 = time.perf_counter()
    settings = slurm_settings(launcher_block(cfgs))
    for cfg in cfgs:
        resources_for(cfg, settings)  # problem.resources.* validated before anything is written
    check_cluster(settings, cfgs)
    prep = prepare(cfgs, backend="slurm", code_mode=settings.code, shared_fs=True)
    backend = SlurmBackend()
    try:
        with prep.sweep.lock():
            summary = reconcile(prep.sweep, prep.model, prep.cfg_key, backend, mode="submit",
                                settings=settings.as_dict(), code=prep.code, say=say, origin="valley")
            if summary.empty:
                cells_complete = write_cells(prep.sweep, prep.model)
    except ClusterUnavailable as err:
        raise LaunchError(f"the SLURM cluster does not answer ({err}); nothing was submitted") from None
    took = time.perf_counter() - t0
    print_sweep_head(prep, summary, cells_complete if summary.empty else None)
    if not summary.empty:
        phases = phases_line(summary)
        arrays = [j for j in summary.jobs if j["kind"] != "finalize"]
        print(f"submitted round {summary.number}: {summary.runs} runs ({phases})"
              + (f" + {summary.cells} one-at-a-time cells" if summary.cells else "")
              + f" in {summary.tasks} tasks, {len(arrays)} array{'s' if len(arrays) != 1 else ''} "
              f"(job {', '.join(j['job_id'] for j in arrays)}) + a finalising job "
              f"({summary.jobs[-1]['job_id']}); at most {settings.max_running} running"
              + ("; held (scontrol release)" if settings.hold else ""))
        if summary.skipped_active or summary.recorded:
            print(f"skipped {summary.recorded} recorded and {summary.skipped_active} queued or running runs")
        if summary.repaired:
            print(f"finished {summary.repaired} recorded trials in their Optuna studies")
        print("the winners' re-runs (phase 2) and the cells table follow from the finalising job")
    print(f"returned in {took:.1f} s", flush=True)
    for line in status_hint(prep.sweep):
        print(line)
    return 0
