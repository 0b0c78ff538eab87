"""Resume after SIGKILL: a real ``python -m bench.cli -m …`` sweep is killed at random moments, then finished.

After every kill the records written so far are snapshotted; at the end each expected run_id (derived here from the
configs, the study's sampler and the DeepOBS selection rule, independently of the tuning code) has exactly one runs
file, no run recorded before a kill was trained again, every Parquet file is readable, every cell is complete, and
every sample has exactly one COMPLETE Optuna trial.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pyarrow.parquet as pq
from omegaconf import OmegaConf
from optuna.trial import TrialState

from bench import records
from bench.spec import make_spec
from bench.tuning.cell import read_cells
from bench.tuning.study import open_storage
from optimizers import OPTIMIZERS
from optimizers.base import study_samples

ROOT = Path(__file__).resolve().parent.parent
EPOCHS, SEEDS, SAMPLES = 3, (42, 43, 44), 25
SETTINGS = {"batch_size": 128, "num_epochs": EPOCHS, "weight_decay": 0.0, "hessian_draw": 0, "size": "full"}


def sweep_args(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "-m", "optimizer=adam,sgd", "budget=oneshot,small",
            f"problem.num_epochs={EPOCHS}", f"tuning.seeds=[{','.join(map(str, SEEDS))}]", f"results_dir={results}",
            "progress=false", *extra]


def start(results: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(sweep_args(results, *extra), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def recorded(results: Path) -> dict[str, str]:
    """run_id -> started_at of every visible runs file."""
    out = {}
    for path in (results / "runs").glob("*.parquet"):
        out[path.stem] = str(pq.read_table(path).column("started_at")[0])
    return out


def wait_for_progress(results: Path, proc: subprocess.Popen, target: int, timeout: float = 120) -> bool:
    """Wait until the sweep has recorded ``target`` runs (so the kill lands while it works); False if it finished."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if (results / "runs").is_dir() and len(list((results / "runs").glob("*.parquet"))) >= target:
            return True
        time.sleep(0.01)
    raise AssertionError("the sweep made no progress")


def children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


# ------------------------------------------------------------------------------------------- expected runs
def defaults(optimizer: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optimizer" / f"{optimizer}.yaml"))
    return {k: v for k, v in cfg.items() if k != "name"}


def spec(optimizer: str, hp: dict, seed: int):
    return make_spec("quadratic_deep", optimizer, hp, seed=seed, problem_settings=SETTINGS)


def padded_final_valid(results: Path, run_id: str) -> float:
    """DeepOBS: the final validation loss; a diverged run counts with its epoch-0 value."""
    rec = records.find_run(results, run_id)
    if rec["status"] == "completed":
        return rec["final_valid_loss"]
    curves = pq.read_table(results / "curves" / f"{run_id}.parquet").to_pandas()
    return float(curves[(curves.epoch == 0) & (curves.split == "valid") & (curves.metric == "loss")].value.iloc[0])


def expected_cells(results: Path) -> dict[tuple[str, str], dict]:
    out = {}
    for opt in ("adam", "sgd"):
        hp = defaults(opt)
        out[(opt, "oneshot")] = {"run_ids": [spec(opt, hp, s).run_id for s in SEEDS], "trials": []}
        samples = study_samples(OPTIMIZERS.get(opt), SAMPLES)
        trials = [spec(opt, {**hp, **p}, 42).run_id for p in samples]
        valid = [padded_final_valid(results, r) for r in trials]
        winner = int(np.argmin(valid))  # first minimum: earliest sample on ties
        out[(opt, "small")] = {"run_ids": [spec(opt, {**hp, **samples[winner]}, s).run_id for s in SEEDS],
                               "trials": trials, "winner": winner}
    return out


# ------------------------------------------------------------------------------------------- the test
def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    rng = random.Random(2021)
    snapshots: list[dict[str, str]] = []
    kills = 0
    for attempt in range(5):
        proc = start(tmp_path, *(["tuning.workers=2"] if attempt == 2 else []))
        before = len(recorded(tmp_path)) if (tmp_path / "runs").exists() else 0
        try:  # kill after a random number of new runs, at a random moment of the next one (or its bookkeeping)
            if not wait_for_progress(tmp_path, proc, before + rng.randint(1, 8)):
                break  # finished before we could kill it
            time.sleep(rng.uniform(0.0, 0.25))
            if attempt == 2:  # kill only the coordinator: its pool workers must exit by themselves
                workers = children(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                deadline = time.monotonic() + 15
                while any(alive(w) for w in workers) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert not any(alive(w) for w in workers), "orphaned pool workers"
            os.killpg(proc.pid, signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        snapshots.append(recorded(tmp_path))
    assert kills == 5
    final = start(tmp_path)
    _, err = final.communicate(timeout=400)
    assert final.returncode == 0, err

    # every expected run exactly once, nothing else, nothing recorded before a kill trained again
    want = expected_cells(tmp_path)
    expected = {r for c in want.values() for r in [*c["run_ids"], *c["trials"]]}
    runs = recorded(tmp_path)
    assert set(runs) == expected
    assert {p.stem for p in (tmp_path / "curves").glob("*.parquet")} == expected
    for snap in snapshots:
        assert all(runs[r] == started for r, started in snap.items())

    # every visible Parquet file reads (kills leave only hidden temp files behind)
    for table in ("runs", "curves", "cells"):
        for path in (tmp_path / table).glob("*.parquet"):
            pq.read_table(path)
    assert len(records.read_runs(tmp_path)) == len(expected)

    cells = read_cells(tmp_path)
    assert len(cells) == 4 and set(cells.status) == {"complete"}
    for row in cells.itertuples():
        cell = want[(row.optimizer, row.budget)]
        assert list(row.run_ids) == cell["run_ids"] and list(row.trial_run_ids) == cell["trials"]
        tests = [records.find_run(tmp_path, r)["final_test_loss"] for r in cell["run_ids"]]
        if row.budget == "small":
            assert row.winner_sample == cell["winner"]
        assert row.n_diverged == 0 and row.test_mean == np.mean(tests) and row.test_std == np.std(tests)

    # the Optuna studies: one COMPLETE trial per sample, on the expected run
    storage = open_storage(str(tmp_path / "optuna" / "journal.log"))
    studies = optuna.get_all_study_names(storage)
    assert len(studies) == 2
    for name in studies:
        study = optuna.load_study(study_name=name, storage=storage)
        opt = study.user_attrs["optimizer"]
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["sample"] for t in done) == list(range(SAMPLES))
        for t in done:
            assert t.user_attrs["run_id"] == want[(opt, "small")]["trials"][t.user_attrs["sample"]]
        assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    lines = (tmp_path / "optuna" / "journal.log").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
