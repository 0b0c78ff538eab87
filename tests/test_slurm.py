"""``launcher=slurm`` against a real SLURM cluster (``bash slurm/local_up.sh``: one node, 2 CPUs, MaxArraySize 5,
partitions ``debug`` and ``urgent`` with partition-priority preemption, accounting through slurmdbd). Nothing of
SLURM is mocked: jobs are submitted with sbatch (through submitit), signalled with scancel / scontrol / a
preempting job, followed with squeue / sacct.

Skipped when no cluster answers, unless ``VALLEY_REQUIRE_SLURM=1`` (``.ci/run`` sets it): then that is a failure.
The tests take one cluster-wide lock each (they would otherwise fight over the node's 2 CPUs and stop the
accounting daemon under each other), so they run one at a time whatever pytest-xdist does.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import records
from tests.test_launch_helpers import (
    reference,
    ROOT,
    checkpointed,
    env,
    job_of_run,
    report,
    same_results,
    status,
    sweep_dir,
    units_of,
    valley,
    wait_finished,
    wait_for,
)

LOCK = Path("/tmp/valley-slurm-tests.lock")
TUNED = ["-m", "optimizer=adam,sgd", "budget=small", "budget.samples=3", "problem.num_epochs=3",
         "tuning.seeds=[42,43,44]", "threads=1", "progress=false"]
LONG = ["-m", "optimizer=adam", "budget=oneshot", "tuning.seeds=[42,43]", "problem.num_epochs=400",
        "checkpoint.every_epochs=20", "threads=1", "progress=false"]


def _answers() -> str | None:
    """None when a cluster answers, else why not."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R %T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 15 s"
    if out.returncode != 0:
        return (out.stderr or out.stdout).strip().splitlines()[0] if (out.stderr or out.stdout).strip() else "sinfo failed"
    if not any(s in out.stdout for s in ("idle", "mixed", "alloc")):
        return f"no usable node: {out.stdout.strip()}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    why = _answers()
    if why is not None:
        message = f"no SLURM cluster answers ({why}); start one with: bash slurm/local_up.sh"
        if os.environ.get("VALLEY_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=15)
    return {k.strip(): v.strip() for k, _, v in (ln.partition("=") for ln in out.stdout.splitlines()) if v}


@pytest.fixture
def cluster(slurm_cluster: dict[str, str]):
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield slurm_cluster
    finally:
        os.close(fd)


tuned_reference = reference("tuned_inline", TUNED)
long_reference = reference("long_inline", LONG, "checkpoint.enabled=false")


def squeue_sweep(results: Path) -> list[str]:
    name = f"valley-{sweep_dir(results).name}"
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %j"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in out.stdout.splitlines() if name in line]


def slurm_submit(results: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    out = valley(*args, f"results_dir={results}", "launcher=slurm")
    return out, time.monotonic() - t0


# ------------------------------------------------------------------------------------------------ items 1, 3, 6
def test_submit_returns_at_once_and_the_tuning_protocol_runs_unattended(cluster: dict, tmp_path: Path,
                                                                        tuned_reference: Path) -> None:
    out, took = slurm_submit(tmp_path, *TUNED, "launcher.max_runs_per_task=3")
    assert out.returncode == 0, out.stderr
    assert took < 60, f"the submission took {took:.1f} s"
    assert "is on a node-local filesystem" in out.stderr  # tmp_path is under /tmp: a warning, not an error
    sweep = sweep_dir(tmp_path)
    assert f"sweep {sweep.name}: 2 cells" in out.stdout
    assert "submitted round 1: 6 runs (phase 1: 6) in 2 tasks, 1 array" in out.stdout, out.stdout
    assert f"follow: valley-status {sweep}" in out.stdout
    assert squeue_sweep(tmp_path), "fire-and-forget: the jobs are queued, nobody waits for them"
    rep = wait_finished(tmp_path, timeout=600)
    assert rep["rounds"] == 2, rep  # the finalising job dispatched the winners' re-runs itself
    assert rep["runs"]["done"] == 10 and rep["cells"] == {"complete": 2, "total": 2}
    assert rep["tasks"]["done"] == 6 and not rep["failed_tasks"]  # 2 + 2 tasks and 2 finalising jobs
    same_results(tmp_path, tuned_reference)
    # the same command again: nothing is missing, no job is sent
    again, _ = slurm_submit(tmp_path, *TUNED, "launcher.max_runs_per_task=3")
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
    assert report(sweep)["rounds"] == 2 and not squeue_sweep(tmp_path)
    print(f"slurm submission returned in {took:.1f} s (valley -m ... launcher=slurm, wall)")


def test_resubmission_sends_only_what_is_not_queued(cluster: dict, tmp_path: Path) -> None:
    args = [*TUNED, "launcher.max_runs_per_task=1", "launcher.hold=true"]
    first, _ = slurm_submit(tmp_path, *args)
    assert first.returncode == 0 and "in 6 tasks" in first.stdout and "held" in first.stdout, first.stdout
    queued = squeue_sweep(tmp_path)
    second, _ = slurm_submit(tmp_path, *args)
    assert "nothing to submit" in second.stdout and "6 queued or running" in second.stdout, second.stdout
    assert squeue_sweep(tmp_path) == queued
    cancel = subprocess.run([sys.executable, "-m", "bench.launch.cancel", str(sweep_dir(tmp_path))], cwd=ROOT,
                            env=env(), capture_output=True, text=True, timeout=60)
    assert cancel.returncode == 0 and "cancelled job" in cancel.stdout, cancel.stderr
    wait_for(lambda: not squeue_sweep(tmp_path), 60, "the cancelled jobs to leave the queue")
    rep = report(sweep_dir(tmp_path))
    assert rep["tasks"]["failed"] == 7 and rep["runs"]["failed"] == 6  # cancelled: failed, retry brings them back
    assert all("cancelled" in (f["error"] or "") for f in rep["failed_tasks"])


# ------------------------------------------------------------------------------------------------ item 2: chunking
def test_arrays_chunked_below_max_array_size_and_max_running_holds_across_them(cluster: dict, tmp_path: Path) -> None:
    limit = int(cluster.get("MaxArraySize", "1001"))
    if limit > 10:
        pytest.skip(f"MaxArraySize={limit}: the local cluster's is 5 (slurm/local_up.sh)")
    seeds = list(range(42, 42 + limit + 1))  # one run per task: one more than an array may hold
    args = ["-m", "optimizer=adam", "budget=oneshot", f"tuning.seeds=[{','.join(map(str, seeds))}]",
            "problem.num_epochs=3", "threads=1", "progress=false", "launcher.max_runs_per_task=1",
            "launcher.max_running=1"]
    out, _ = slurm_submit(tmp_path, *args)
    assert out.returncode == 0, out.stderr
    assert f"in {len(seeds)} tasks, 2 arrays" in out.stdout, out.stdout
    rep = wait_finished(tmp_path, timeout=600)
    assert rep["runs"]["done"] == len(seeds) and rep["cells"]["complete"] == 1
    counts = records.read_runs(tmp_path).run_id.value_counts()
    assert len(counts) == len(seeds) and counts.max() == 1  # every run exactly once
    sweep = sweep_dir(tmp_path)
    jobs = [json.loads(line) for line in (sweep / "rounds" / "0001.jobs.jsonl").read_text().splitlines()]
    arrays = [j for j in jobs if j["kind"] != "finalize"]
    assert [len(j["units"]) for j in arrays] == [limit, 1] and arrays[1]["after"] == arrays[0]["job_id"]
    spans = []
    for u in units_of(tmp_path):
        if u["kind"] == "runs":
            marker = json.loads((sweep / "tasks" / f"{u['id']}.json").read_text())
            spans.append((marker["started_at"], marker["finished_at"]))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "two tasks ran at once under max_running=1"


# ------------------------------------------------------------------------------------------------ items 4, 5
def _disturb(kind: str, results: Path) -> None:
    run = wait_for(lambda: checkpointed(results), 180, "a mid-run checkpoint", 0.2)[0]
    job = job_of_run(results, run)
    if kind == "usr2":
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    elif kind == "requeue":
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    elif kind == "preempt":  # a job of the higher-tier partition that needs every CPU of the node
        subprocess.run(["sbatch", "-p", "urgent", "-c", "2", "-o", "/dev/null", "-J", "valley-test-preemptor",
                        "--wrap", "sleep 2"], check=True, timeout=30, capture_output=True)
    elif kind == "scancel":
        subprocess.run(["scancel", job], check=True, timeout=30)


@pytest.mark.parametrize("kind", ["usr2", "requeue", "preempt", "scancel"])
def test_every_way_a_job_can_end_gives_the_undisturbed_records(cluster: dict, tmp_path: Path, long_reference: Path,
                                                               kind: str) -> None:
    out, _ = slurm_submit(tmp_path, *LONG, "launcher.max_runs_per_task=1")
    assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    _disturb(kind, tmp_path)
    rep = wait_finished(tmp_path, timeout=600)
    if kind == "scancel":
        assert rep["tasks"]["failed"] == 1 and rep["runs"]["failed"] == 1, rep
        assert "CANCELLED" in rep["failed_tasks"][0]["detail"] and rep["failed_tasks"][0]["log"]
        text = status(sweep_dir(tmp_path)).stdout
        assert "failed   r0001-p1-" in text and "log " in text and "--retry failed" in text, text
        blind = _without_accounting(tmp_path)  # the cancelled task is known from its own marker
        assert "done 1 · running 0 · pending 0 · failed 1 · lost 0" in blind, blind
        assert "accounting (sacct) did not answer" in blind and "cells    0/1 complete" in blind, blind
        retry = status(sweep_dir(tmp_path), "--retry", "failed")
        assert retry.returncode == 0 and "resubmitted 1 runs in 1 tasks" in retry.stdout, retry.stdout
        rep = wait_finished(tmp_path, timeout=600)
        assert rep["tasks"]["retried"] == 1
    else:
        assert rep["requeues"] >= 1, rep
    took = time.monotonic() - t0
    assert not rep["failed_tasks"] and rep["runs"]["done"] == 2 and rep["cells"]["complete"] == 1, rep
    same_results(tmp_path, long_reference, resumed=True)
    print(f"{kind}: disturbed sweep finished {took:.0f} s after the disturbance ({rep['requeues']} requeues)")


def test_time_outs_requeue_up_to_max_requeues_then_fail_and_retry(cluster: dict, tmp_path: Path,
                                                                   long_reference: Path) -> None:
    """Time-outs: the USR2 that SLURM sends ``signal_delay_s`` before the time limit. With ``launcher.time`` <= 10
    minutes submitit counts every USR2 as a time-out, so sending it by hand is the time-out path, deterministically
    (SLURM's own USR2 comes from a periodic check: up to ~30 s off, racy for a one-minute limit). The first is
    requeued, the second exceeds ``max_requeues=1``: the task fails saying so, and ``--retry failed`` finishes it."""
    out, _ = slurm_submit(tmp_path, *LONG, "launcher.max_runs_per_task=2", "launcher.time=5",
                          "launcher.max_requeues=1")
    assert out.returncode == 0, out.stderr
    (unit,) = [u for u in units_of(tmp_path) if u["kind"] == "runs"]
    starts = sweep_dir(tmp_path) / "tasks" / f"{unit['id']}.starts"
    for attempt in (1, 2):
        wait_for(lambda: starts.exists() and len(starts.read_text().splitlines()) == attempt and checkpointed(tmp_path),
                 300, f"attempt {attempt} to checkpoint", 0.2)
        subprocess.run(["scancel", "--signal=USR2", unit["job"]], check=True, timeout=30)
    rep = wait_finished(tmp_path, timeout=600)
    (failed,) = rep["failed_tasks"]
    assert failed["error"].startswith("timed out more than launcher.max_requeues times"), failed
    assert rep["requeues"] == 1
    log = Path(failed["log"]).read_text()
    assert log.count("this job is timed-out") == 2, log
    retry = status(sweep_dir(tmp_path), "--retry", "failed")
    assert retry.returncode == 0 and "resubmitted" in retry.stdout, retry.stdout
    rep = wait_finished(tmp_path, timeout=600)
    assert not rep["failed_tasks"] and rep["runs"]["done"] == 2 and rep["cells"]["complete"] == 1, rep
    same_results(tmp_path, long_reference, resumed=True)


def _without_accounting(results: Path) -> str:
    """``valley-status`` with slurmdbd stopped (sacct fails): it must answer, from the markers; slurmdbd restarts."""
    base = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/slurm-local"))
    pid = int((base / "run" / "slurmdbd.pid").read_text())
    os.kill(pid, 15)
    try:
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "slurmdbd to stop")
        t0 = time.monotonic()
        text = status(sweep_dir(results), timeout=90)
        took = time.monotonic() - t0
        assert text.returncode == 0, text.stderr
        assert took < 60, f"valley-status took {took:.0f} s without accounting"
        print(f"valley-status without accounting answered in {took:.1f} s")
        return text.stdout
    finally:
        up = subprocess.run(["bash", str(ROOT / "slurm" / "local_up.sh")], capture_output=True, text=True,
                            timeout=300)
        assert up.returncode == 0, up.stderr


# ------------------------------------------------------------------------------------------------ items 8, 10
def test_a_task_refuses_changed_code_and_bad_partitions_are_refused(cluster: dict, tmp_path: Path) -> None:
    bad = valley("-m", "problem.num_epochs=1", f"results_dir={tmp_path / 'bad'}", "launcher=slurm",
                 "launcher.partition=nope")
    assert bad.returncode == 2 and "valley: error: partition 'nope' does not exist on cluster" in bad.stderr
    assert not (tmp_path / "bad").exists()
    repo = tmp_path / "repo"
    for part in ("bench", "problems", "optimizers", "conf"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "bench.cli", "-m", "optimizer=adam", "budget=oneshot",
                          "tuning.seeds=[42]", "problem.num_epochs=3", "threads=1", f"results_dir={results}",
                          "launcher=slurm", "launcher.code=checkout", "launcher.hold=true"], cwd=repo,
                         env={**env(), "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (repo / "optimizers" / "adam.py").write_text((repo / "optimizers" / "adam.py").read_text() + "\n# edited\n")
    jobs = squeue_sweep(results)
    subprocess.run(["scontrol", "release", *sorted({j.split("_")[0] for j in jobs})], check=True, timeout=30)
    rep = wait_finished(results, timeout=300)
    assert rep["tasks"]["failed"] == 2 and not (results / "runs").exists(), rep  # the task and the finaliser
    errors = {f["error"] for f in rep["failed_tasks"]}
    assert len(errors) == 1 and errors.pop().startswith("code changed under this sweep: it was submitted with code")
    log = Path(rep["failed_tasks"][0]["log"]).read_text()
    assert "valley: error: code changed under this sweep" in log and "Traceback" not in log
