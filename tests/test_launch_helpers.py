"""Helpers of the launcher tests (tests/test_launch*.py, tests/test_slurm*.py): run the CLIs as a user does, wait
(polling, generous timeouts, never fixed sleeps), and compare a launched sweep's results with an undisturbed one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def valley(*args: str, cwd: Path | None = None, timeout: float = 300, extra_env: dict | None = None
           ) -> subprocess.CompletedProcess:
    base = env() if extra_env is None else {**env(), **extra_env}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd or ROOT, env=base,
                          capture_output=True, text=True, timeout=timeout)


def status(target: Path | str, *extra: str, timeout: float = 120, extra_env: dict | None = None
           ) -> subprocess.CompletedProcess:
    base = env() if extra_env is None else {**env(), **extra_env}
    return subprocess.run([sys.executable, "-m", "bench.launch.status", str(target), *extra], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=timeout)


def report(target: Path | str, **kw: Any) -> dict[str, Any]:
    out = status(target, "--json", **kw)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def cancel(target: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.launch.cancel", str(target)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=120)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def sweep_dir(results: Path) -> Path:
    found = [p for p in (results / "sweeps").iterdir() if (p / "sweep.json").exists()]
    assert len(found) == 1, found
    return found[0]


def settled(results: Path) -> bool:
    """The last round's finalising unit has ended (it ends after every task of its round, and it writes the next
    round, if any, before it ends): cheap to poll, it reads two small files."""
    def rounds() -> list[Path]:
        return sorted((sweep_dir(results) / "rounds").glob("[0-9]*.json"))

    seen = rounds()
    if not seen:
        return False
    final = [u["id"] for u in json.loads(seen[-1].read_text())["units"] if u["kind"] == "finalize"][0]
    path = sweep_dir(results) / "tasks" / f"{final}.json"
    state = json.loads(path.read_text()).get("state") if path.exists() else None
    return state in ("done", "failed", "cancelled") and rounds() == seen  # no round was added meanwhile


def wait_finished(results: Path, timeout: float = 400) -> dict[str, Any]:
    """The sweep's report once its last finalising unit has ended and nothing is pending or running."""
    def done() -> dict[str, Any] | None:
        if not settled(results):
            return None
        rep = report(sweep_dir(results))
        return rep if not (rep["tasks"]["pending"] or rep["tasks"]["running"]) else None
    return wait_for(done, timeout, f"the sweep in {results} to finish", interval=1.0)


def units_of(results: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((sweep_dir(results) / "rounds").glob("[0-9]*.json")):
        rnd = json.loads(path.read_text())
        jobs = [json.loads(line) for line in path.with_suffix(".jobs.jsonl").read_text().splitlines()] \
            if path.with_suffix(".jobs.jsonl").exists() else []
        for u in rnd["units"]:
            u = dict(u, round=rnd["round"])
            for entry in jobs:
                if u["id"] in entry["units"]:
                    k = entry["units"].index(u["id"])
                    u["job"] = f"{entry['job_id']}_{k}" if entry.get("array") else entry["job_id"]
            out.append(u)
    return out


def checkpointed(results: Path) -> list[str]:
    """run_ids with a mid-run checkpoint on disk right now."""
    directory = results / "checkpoints"
    return sorted(p.stem for p in directory.glob("*.pt")) if directory.is_dir() else []


def job_of_run(results: Path, run_id: str) -> str:
    for u in units_of(results):
        if run_id in u.get("run_ids", []) and "job" in u:
            return u["job"]
    raise AssertionError(f"no job holds run {run_id}")


def recorded_once(results: Path) -> Counter:
    """run_id -> how many visible runs files (loose or packed) hold it; every visible Parquet file must read."""
    count: Counter = Counter()
    for table in ("runs", "curves", "cells"):
        for path in (results / table).glob("*.parquet") if (results / table).is_dir() else []:
            data = pq.read_table(path)
            if table == "runs":
                count.update(data.column("run_id").to_pylist())
    return count


def same_results(launched: Path, reference: Path, *, resumed: bool | None = None) -> None:
    """The launched sweep recorded exactly the reference's runs, once each, with equal curves and cells."""
    from bench import records
    from bench.tuning.cell import read_cells

    once = recorded_once(launched)
    assert once and max(once.values()) == 1, {k: v for k, v in once.items() if v > 1}
    a, b = records.read_runs(launched), records.read_runs(reference)
    assert sorted(a.run_id) == sorted(b.run_id)
    assert set(a.status) <= {"completed", "diverged"}
    cols = ["run_id", "epoch", "split", "metric"]
    ca = records.read_curves(launched).sort_values(cols).reset_index(drop=True)
    cb = records.read_curves(reference).sort_values(cols).reset_index(drop=True)
    assert ca.equals(cb), "curves differ from the undisturbed sweep"
    keys = ["cell_id", "status", "winner_sample", "test_mean", "test_std", "n_seeds"]
    xa = read_cells(launched)[keys].sort_values("cell_id").reset_index(drop=True)
    xb = read_cells(reference)[keys].sort_values("cell_id").reset_index(drop=True)
    assert xa.equals(xb), (xa, xb)
    assert not checkpointed(launched), "checkpoints must be gone once the records are written"
    if resumed is not None:
        assert (a.resumes.max() >= 1) == resumed, a[["run_id", "resumes"]]


def reference(name: str, args: list[str], *extra: str) -> Callable[..., Path]:
    """A module-scoped fixture: the undisturbed sweep ``args`` run inline once, the results every launcher must equal."""
    import pytest

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
        results = tmp_path_factory.mktemp(name)
        out = valley(*args, f"results_dir={results}", *extra)
        assert out.returncode == 0, out.stderr
        return results
    return fixture
