"""The ``valley`` command as a user runs it: one run, multirun, divergence, and one-line errors for bad input."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import precheck
from tests.conftest import run_valley


def test_single_run_summary_and_records(tmp_path) -> None:
    out = run_valley("problem=quadratic_deep", "optimizer=adam", "schedule=constant", "seed=42",
                     "optimizer.learning_rate=0.01", "problem.num_epochs=3", f"results_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert "completed" in out.stdout and "steps/s" in out.stdout and str(tmp_path / "runs") in out.stdout
    runs = pd.read_parquet(tmp_path / "runs")
    assert len(runs) == 1 and json.loads(runs.hyperparameters[0])["learning_rate"] == 0.01
    assert runs.num_epochs[0] == 3 and runs.steps[0] == 21
    again = run_valley("optimizer=adam", "optimizer.learning_rate=0.01", "problem.num_epochs=3", f"results_dir={tmp_path}")
    assert "already recorded" in again.stdout


def test_multirun_carries_on_after_divergence(tmp_path) -> None:
    out = run_valley("-m", "optimizer=sgd", "optimizer.learning_rate=10.0,0.01", "problem.num_epochs=30",
                     f"results_dir={tmp_path}", "progress=false")
    assert out.returncode == 0, out.stderr
    runs = pd.read_parquet(tmp_path / "runs")
    assert sorted(runs.status) == ["completed", "diverged"]


@pytest.mark.parametrize("args, message", [
    (["problem=quadratic_dep"], "unknown problem 'quadratic_dep'; valid: "),
    (["optimizer=adamm"], "unknown optimizer 'adamm'; valid: "),
    (["schedule=cosin"], "unknown schedule 'cosin'; valid: "),
    (["optimizer=adam", "optimizer.learning_rate=-1"], "invalid learning_rate=-1"),
    (["optimizer=adam", "optimizer.beta1=1.5"], "invalid beta1=1.5: must be a number in [0, 1)"),
    (["optimizer=adam", "optimizer.beta2=abc"], "invalid beta2='abc'"),
    (["optimizer=adam", "optimizer.momentum=0.9"], "unknown hyperparameter 'momentum' for optimizer adam; valid: "),
    (["optimizer=adam", "+optimizer.momentum=0.9"], "unknown hyperparameter 'momentum' for optimizer adam; valid: "),
    (["problem.batch_size=-3"], "invalid problem.batch_size=-3"),
    (["sede=3"], "unknown setting 'sede'"),
    (["device=cuda:7"], "device='cuda:7' is not available here"),
    (["device=gpu"], "invalid device='gpu': must be auto, cpu, cuda or cuda:N"),
])
def test_bad_input_one_line_nothing_written(tmp_path, args, message) -> None:
    out = run_valley(*args, f"results_dir={tmp_path / 'r'}")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "r").exists()


def test_precheck_sweeps_and_valid_names() -> None:
    assert precheck(["optimizer=adam,sgd", "schedule=constant"]) is None
    assert "unknown optimizer 'nope'" in precheck(["-m", "optimizer=adam,nope"])
    assert precheck(["optimizer=adam", "optimizer.learning_rate=0.1"]) is None
    assert "for optimizer sgd" in precheck(["optimizer.beta1=0.5"])  # default optimizer is sgd


def test_missing_data_is_one_line_exit_1(tmp_path, monkeypatch, capsys) -> None:
    from bench.cli import run_from_config
    from problems.datasets.errors import DataMissingError
    from problems.quadratic_deep import QuadraticDeep

    def missing(self):
        raise DataMissingError("train.gz is missing and could not be downloaded; save it as /data/train.gz")

    monkeypatch.setattr(QuadraticDeep, "load_data", missing)
    cfg = {"problem": {"name": "quadratic_deep", "batch_size": 128, "num_epochs": 1, "weight_decay": 0.0,
                       "hessian_draw": 0, "size": "full"},
           "optimizer": {"name": "sgd", "learning_rate": 0.01}, "schedule": {"name": "constant", "granularity": "epoch"},
           "seed": 42, "data_order": "repeat", "results_dir": str(tmp_path), "device": "cpu", "progress": False}
    with pytest.raises(SystemExit) as exit_info:
        run_from_config(cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["valley: error: train.gz is missing and could not be downloaded; save it as /data/train.gz"]
    assert not list(tmp_path.rglob("*.parquet"))
