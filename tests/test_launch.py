"""Launchers without a cluster: settings and packing, bad input (one line, exit code 2, nothing submitted), an inline
sweep killed mid-run and resumed from its checkpoint, the local supervisor on CPU slots (fire-and-forget, survives
its shell, lost work retried), and the code-version guard (a snapshot isolates a sweep from its checkout; a task
that would run changed code refuses with one line)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import records
from bench.launch import LaunchError
from bench.launch.settings import local_settings, problem_resources, slurm_settings
from bench.launch.sweepdir import alive, read_json
from bench.launch.work import Atom, capacity_s, pack
from tests.test_launch_helpers import (
    reference,
    ROOT,
    checkpointed,
    env,
    report,
    same_results,
    status,
    sweep_dir,
    units_of,
    valley,
    wait_finished,
    wait_for,
)

TUNED = ["-m", "optimizer=adam,sgd", "budget=small", "budget.samples=3", "problem.num_epochs=3",
         "tuning.seeds=[42,43,44]", "threads=1", "progress=false"]
LONG = ["-m", "optimizer=adam", "budget=oneshot", "tuning.seeds=[42,43]", "problem.num_epochs=400",
        "checkpoint.every_epochs=20", "threads=1", "progress=false"]
CPU_SLOTS = ["launcher=local_gpus", "launcher.gpus=[]"]


tuned_reference = reference("tuned_inline", TUNED)
long_reference = reference("long_inline", LONG, "checkpoint.enabled=false")


# ------------------------------------------------------------------------------------------------ settings, packing
def test_launcher_settings_are_checked() -> None:
    assert slurm_settings({"name": "slurm", "time": 90}).time == 90
    for block, message in [
        ({"time": 1.5}, "invalid launcher.time=1.5: must be an integer number of minutes"),
        ({"time": "1:00:00"}, "invalid launcher.time='1:00:00': must be an integer number of minutes"),
        ({"max_running": 0}, "invalid launcher.max_running=0: must be an integer >= 1"),
        ({"partitions": "gpu"}, "unknown setting 'launcher.partitions' for launcher slurm; valid: partition"),
        ({"code": "git"}, "invalid launcher.code='git': must be one of snapshot, checkout"),
        ({"setup": [1]}, "invalid launcher.setup=[1]: must be a list of shell lines"),
        ({"sbatch": "x"}, "invalid launcher.sbatch='x': must be a mapping of sbatch flags"),
    ]:
        with pytest.raises(LaunchError) as err:
            slurm_settings({"name": "slurm", **block})
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert local_settings({"gpus": [0, 1], "per_gpu": 2}).gpus == (0, 1)
    with pytest.raises(LaunchError, match="must be a list of distinct GPU indices"):
        local_settings({"gpus": [0, 0]})
    assert problem_resources({"problem": {"resources": {"gpus": 1, "time": 600}}})["time"] == 600
    with pytest.raises(LaunchError, match="invalid problem.resources.time=2.5"):
        problem_resources({"problem": {"resources": {"time": 2.5}}})


def test_every_problem_has_resources() -> None:
    import yaml

    for path in sorted((ROOT / "conf" / "problem").glob("*.yaml")):
        res = problem_resources({"problem": yaml.safe_load(path.read_text())})
        assert set(res) == {"gpus", "cpus", "mem_gb", "time"}, path.name
        assert (res["gpus"] == 0) == (path.stem == "quadratic_deep"), path.name  # P1 needs no GPU


def test_packing_fills_tasks_and_splits_only_what_does_not_fit() -> None:
    # auto: the work is spread over max_running x 2 tasks, but never below two minutes each, nor above half the limit
    assert capacity_s(total_s=10.0, slots=64, time_min=60, task_minutes=None) == 120.0
    assert capacity_s(total_s=1e6, slots=4, time_min=60, task_minutes=None) == 60 * 60 * 0.5 - 30
    assert capacity_s(total_s=1e6, slots=4, time_min=None, task_minutes=None) == 1e6 / 8
    assert capacity_s(total_s=1e6, slots=4, time_min=60, task_minutes=5) == 300.0
    tiny = [Atom([f"r{i}"], 0.2) for i in range(2816)]  # the P1 row: tiny runs share tasks
    bins = pack(tiny, capacity=120.0, max_runs=None)
    assert len(bins) == 5 and sum(len(b) for b in bins) == 2816
    assert sorted(r for b in bins for a in b for r in a.run_ids) == sorted(f"r{i}" for i in range(2816))
    # a cohort stays whole when it fits; max_runs splits it
    cohort = Atom([f"c{i}" for i in range(10)], 50.0)
    bins = pack([cohort, Atom(["x"], 80.0)], capacity=100.0, max_runs=None)
    assert [[a.run_ids for a in b] for b in bins] == [[["x"]], [cohort.run_ids]]
    bins = pack([cohort], capacity=100.0, max_runs=4)
    assert [len(b[0].run_ids) for b in bins] == [4, 4, 2]


# ------------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, path, message", [
    (["launcher=nope"], None, "unknown launcher 'nope'; valid: inline, local_gpus, slurm"),
    (["launcher=slurm", "launcher.partitons=gpu"], None, "unknown setting 'partitons' for launcher slurm; valid: "),
    (["launcher=slurm", "launcher.time=1.5"], None, "invalid launcher.time=1.5: must be an integer number of minutes"),
    (["launcher=slurm", "launcher.time=90min"], None, "invalid launcher.time='90min': must be an integer number"),
    (["launcher=slurm"], "/nonexistent", "sbatch is not on PATH: launcher=slurm needs a SLURM login node"),
    ([*CPU_SLOTS, "budget=small", "tuning.storage=postgresql://valley@127.0.0.1:9/x"], None,
     "tuning storage postgresql://valley@127.0.0.1:9/x is not reachable: OperationalError"),
    (["launcher=local_gpus", "launcher.gpus=[7]"], None, "launcher.gpus=[7]: GPU 7 is not visible here"),
    ([*CPU_SLOTS, "force=true"], None, "force=true re-runs recorded runs in this process only"),
])
def test_bad_input_is_one_line_and_submits_nothing(tmp_path: Path, args: list[str], path: str | None,
                                                   message: str) -> None:
    out = valley("-m", "problem.num_epochs=1", f"results_dir={tmp_path}", *args,
                 extra_env={"PATH": path} if path else None)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("valley: error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------ inline + SIGKILL
def test_inline_sweep_killed_mid_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """``launcher=inline`` (the default) resumes a SIGKILLed sweep mid-run: the resumed record says so and its curves
    equal an undisturbed run's."""
    args = ["-m", "optimizer=adam", "budget=oneshot", "tuning.seeds=[42]", "problem.num_epochs=300",
            "checkpoint.every_epochs=1", "threads=1", "progress=false"]
    killed, undisturbed = tmp_path / "killed", tmp_path / "undisturbed"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args, f"results_dir={killed}"], cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: checkpointed(killed) or proc.poll() is not None, 120, "the first checkpoint", 0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (killed / "runs").exists() or not list((killed / "runs").glob("*.parquet"))
    assert checkpointed(killed)
    again = valley(*args, f"results_dir={killed}")
    assert again.returncode == 0, again.stderr
    ref = valley(*args, f"results_dir={undisturbed}", "checkpoint.enabled=false")
    assert ref.returncode == 0, ref.stderr
    rec = records.read_runs(killed)
    assert len(rec) == 1 and rec.resumes[0] >= 1 and rec.status[0] == "completed"
    same_results(killed, undisturbed)


# ------------------------------------------------------------------------------------------------ local CPU slots
def test_local_slots_run_a_tuned_sweep_unattended(tmp_path: Path, tuned_reference: Path) -> None:
    t0 = time.monotonic()
    out = valley(*TUNED, f"results_dir={tmp_path}", *CPU_SLOTS, "launcher.slots=2", "launcher.max_runs_per_task=3")
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert "queued round 1: 6 runs (phase 1: 6) in 2 tasks on 2 CPU slots" in out.stdout, out.stdout
    assert f"follow: valley-status {sweep_dir(tmp_path)}" in out.stdout
    info = read_json(sweep_dir(tmp_path) / "local" / "supervisor.json")
    assert alive(info), "the supervisor must run on after the command returned"
    assert os.getsid(int(info["pid"])) == int(info["pid"]) != os.getsid(0)  # its own session: survives the shell
    rep = wait_finished(tmp_path, timeout=400)
    assert rep["cells"] == {"complete": 2, "total": 2} and rep["runs"]["done"] == 10
    assert rep["rounds"] == 2  # phase 2 (the winners' re-runs) was dispatched by the round-1 finaliser
    same_results(tmp_path, tuned_reference)
    wait_for(lambda: not alive(read_json(sweep_dir(tmp_path) / "local" / "supervisor.json")), 30,
             "the supervisor to exit once nothing is left")
    again = valley(*TUNED, f"results_dir={tmp_path}", *CPU_SLOTS, "launcher.slots=2")
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout
    assert report(sweep_dir(tmp_path))["rounds"] == 2
    print(f"local_gpus (2 CPU slots) submission returned in {took:.1f} s")


def test_local_supervisor_killed_then_lost_work_retried(tmp_path: Path, long_reference: Path) -> None:
    out = valley(*LONG, f"results_dir={tmp_path}", *CPU_SLOTS, "launcher.slots=1", "launcher.max_runs_per_task=1")
    assert out.returncode == 0, out.stderr
    info = read_json(sweep_dir(tmp_path) / "local" / "supervisor.json")
    wait_for(lambda: checkpointed(tmp_path), 120, "a checkpoint")
    os.killpg(int(info["pid"]), signal.SIGKILL)  # the supervisor and its worker: a machine's session gone
    wait_for(lambda: not alive(info), 30, "the supervisor to die")
    rep = wait_for(lambda: (r := report(sweep_dir(tmp_path)))["tasks"]["lost"] == 1 and r, 30, "a lost task")
    assert rep["tasks"]["pending"] == 2 and rep["runs"]["lost"] == 1  # the other unit and the finaliser wait
    assert [f["unit"] for f in rep["failed_tasks"]] == ["r0001-p1-00001"]
    text = status(sweep_dir(tmp_path)).stdout
    assert "lost     r0001-p1-00001" in text and "its process is gone" in text and "--retry failed" in text
    retry = status(sweep_dir(tmp_path), "--retry", "lost")
    assert retry.returncode == 0 and "round 2: resubmitted 1 runs in 1 tasks" in retry.stdout, retry.stdout
    rep = wait_finished(tmp_path, timeout=400)
    assert rep["runs"]["done"] == 2 and rep["cells"]["complete"] == 1 and rep["tasks"]["retried"] == 1
    same_results(tmp_path, long_reference, resumed=True)


# ------------------------------------------------------------------------------------------------ code versions
def _copy_checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for part in ("bench", "problems", "optimizers", "conf"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def test_code_changed_under_a_sweep(tmp_path: Path, tuned_reference: Path) -> None:
    """A snapshot sweep runs its submission's code whatever happens to the checkout; a ``code=checkout`` sweep whose
    checkout changed refuses, task by task, with one line."""
    repo = _copy_checkout(tmp_path)
    run = lambda *a: subprocess.run([sys.executable, "-m", "bench.cli", *a], cwd=repo,  # noqa: E731
                                    env={**env(), "PYTHONPATH": str(repo)}, capture_output=True, text=True,
                                    timeout=300)
    snap, checkout = tmp_path / "snap", tmp_path / "checkout"
    out = run(*TUNED, f"results_dir={snap}", *CPU_SLOTS)
    assert out.returncode == 0, out.stderr
    out2 = run(*TUNED, f"results_dir={checkout}", *CPU_SLOTS, "launcher.code=checkout")
    assert out2.returncode == 0, out2.stderr
    with open(repo / "bench" / "launch" / "task.py", "a") as fh:  # the checkout moves on
        fh.write("\n# changed after submission\n")
    rep = wait_finished(snap, timeout=400)
    assert rep["cells"]["complete"] == 2 and not rep["failed_tasks"]
    same_results(snap, tuned_reference)
    rep = wait_finished(checkout, timeout=400)
    refused = [f for f in rep["failed_tasks"] if "code changed under this sweep" in (f["error"] or "")]
    assert refused, rep["failed_tasks"]
    for f in refused:
        log = Path(f["log"]).read_text()
        assert log.count("valley: error: code changed under this sweep") == 1 and "Traceback" not in log, log
    recorded = set(records.read_runs(checkout).run_id) if (checkout / "runs").exists() else set()
    for u in units_of(checkout):
        if u["id"] in {f["unit"] for f in refused}:
            assert not set(u["run_ids"]) & recorded  # a refusing task trained nothing


# ------------------------------------------------------------------------------------------------ dead claims
def test_a_task_releases_the_trials_its_dead_predecessor_claimed(tmp_path: Path) -> None:
    """A trial claimed by a task of this sweep on another machine, heartbeat fresh, is failed at once by the unit that
    now holds its sample (no waiting for ``stale_after_s``); another sweep's live claim is left alone."""
    from optuna.trial import TrialState

    from bench.execute import RunEnv
    from bench.launch.task import release_dead_trials
    from bench.tuning import trials as batch_ops
    from bench.tuning.batch import SweepRun
    from bench.tuning.cell import Cell
    from bench.tuning.study import distributions
    from bench.tuning.sweep import compose_jobs

    cfg = compose_jobs([[f"results_dir={tmp_path}", "budget=small", "budget.samples=3", "problem.num_epochs=1"]])[0]
    sweep = SweepRun([Cell.from_config(cfg)], RunEnv(results_dir=str(tmp_path)))
    items = [i for i in sweep.phase1() if i.trial is not None]
    key = items[0].trial.study
    study, lead = sweep.study(key), sweep.studies[key].lead
    stream = lead.stream(3)
    far = {"machine": "another-node|boot|ns", "pid": 1, "start": 1, "token": "t"}
    for item, tag in zip(items[:2], ("SWEEP:r0001-p1-00001", "OTHER:r0001-p1-00001")):
        s = item.trial.sample
        batch_ops.claim(study, {s: (stream[s], item.spec.run_id)}, distributions(lead.search_space),
                        {**far, "tag": tag})
    assert release_dead_trials(sweep, items, "SWEEP") == 1
    states = {t.user_attrs["sample"]: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {items[0].trial.sample: TrialState.FAIL, items[1].trial.sample: TrialState.RUNNING}
