"""Sweeps through the CLI: a Hydra multirun of 8 cells, dry-run counts before and after, presets, bad input.

The CLI runs in subprocesses, as a user runs it (``python -m bench.cli``); expected numbers are derived here from
the configs and the records, not from the code under test.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import precheck
from bench.tuning import sweep
from bench.tuning.cell import Cell, CellOutcome, RunView, read_cells
from bench.tuning.cli import plan_of_configs
from bench.tuning.progress import Tracker, describe
from bench.tuning.settings import Budget, TuningError

ROOT = Path(__file__).resolve().parent.parent
STUDY_OPTIMIZERS = ["sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "ndadam", "adabound", "amsbound",
                    "adagrad", "adadelta", "rmsprop", "lookahead_momentum", "lookahead_radam", "adabelief"]
STUDY_SCHEDULES = ["constant", "cosine", "cosine_wr", "trapezoidal"]
PROBLEMS = ["quadratic_deep", "mnist_vae", "fmnist_2c2d", "cifar10_3c3d", "fmnist_vae", "cifar100_allcnnc",
            "svhn_wrn164", "tolstoi_char_rnn"]


def valley(*args: str, entry: str = "main", timeout: float = 400) -> subprocess.CompletedProcess:
    code = f"import sys; from bench.cli import {entry}; sys.argv = ['valley', *sys.argv[1:]]; {entry}()"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


SUMMARY = re.compile(r"(\d+) cells \((\d+) one-shot, (\d+) tuned\); (\d+) runs \((\d+) known"
                     r"(?: \+ (\d+) re-runs/trials not known yet)?\): (\d+) done, (\d+) to do")


def plan_numbers(stdout: str) -> dict[str, int]:
    m = SUMMARY.search(stdout)
    assert m, stdout
    keys = ("cells", "oneshot", "tuned", "runs", "known", "unknown", "done", "todo")
    return {k: int(v or 0) for k, v in zip(keys, m.groups())}


# ------------------------------------------------------------------------------------------------- the multirun
def test_multirun_of_8_cells_with_dry_runs_before_and_after(tmp_path: Path) -> None:
    assert (ROOT / "conf" / "schedule" / "cosine.yaml").exists()
    args = ["-m", "problem=quadratic_deep", "optimizer=adam,sgd", "schedule=constant,cosine", "budget=oneshot,small",
            "problem.num_epochs=2", "tuning.seeds=[42,43,44]", f"results_dir={tmp_path}", "progress=false"]
    before = valley(*[a for a in args if a != "-m"], entry="plan_main")  # valley-plan: the same line, dry
    assert before.returncode == 0, before.stderr
    # 4 one-shot cells x 3 seeds + 4 tuned cells x 25 samples known up front; 2 re-runs per tuned cell not yet
    assert plan_numbers(before.stdout) == {"cells": 8, "oneshot": 4, "tuned": 4, "runs": 12 + 100 + 8, "known": 112,
                                           "unknown": 8, "done": 0, "todo": 120}
    assert not (tmp_path / "runs").exists()  # a dry run trains nothing

    run = valley(*args)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/8" for i in range(1, 9)]
    assert "sweep: 8 cells (0 partial)" in run.stdout
    cells = read_cells(tmp_path)
    assert len(cells) == 8 and set(cells.status) == {"complete"} and set(cells.n_seeds) == {3}
    assert {(r.optimizer, r.schedule, r.budget) for r in cells.itertuples()} == {
        (o, s, b) for o in ("adam", "sgd") for s in ("constant", "cosine") for b in ("oneshot", "small")}
    n_runs = len(list((tmp_path / "runs").glob("*.parquet")))
    wanted = {r for row in cells.itertuples() for r in [*row.run_ids, *row.trial_run_ids]}
    assert n_runs == len(wanted) == 12 + 100 + 8  # every run of every cell, each once (winners differ per cell)

    after = valley(*args, "dry_run=true")
    assert after.returncode == 0, after.stderr
    assert plan_numbers(after.stdout) == {"cells": 8, "oneshot": 4, "tuned": 4, "runs": n_runs, "known": n_runs,
                                          "unknown": 0, "done": n_runs, "todo": 0}
    again = valley(*args)  # everything recorded: the sweep trains nothing and rewrites the same cells
    assert again.returncode == 0 and "(0 new)" in again.stdout
    assert sorted(read_cells(tmp_path).test_mean) == sorted(cells.test_mean)


# ------------------------------------------------------------------------------------------------- presets
def _axes(jobs: list[list[str]]) -> dict[str, set[str]]:
    axes: dict[str, set[str]] = {}
    for job in jobs:
        for o in job:
            key, _, value = o.partition("=")
            axes.setdefault(key, set()).add(value)
    return axes


def test_experiment_presets_set_the_whole_sweep() -> None:
    full = sweep.expand(["experiment=schmidt2021"], multirun=True)
    assert len(full) == 8 * 16 * 4 * 4
    axes = _axes(full)
    assert axes["problem"] == set(PROBLEMS) and axes["optimizer"] == set(STUDY_OPTIMIZERS)
    assert axes["schedule"] == set(STUDY_SCHEDULES) and axes["budget"] == {"oneshot", "small", "medium", "large"}
    quick = sweep.expand(["experiment=quick"], multirun=True)
    assert len(quick) == 16 * 4 * 4 and _axes(quick)["budget"] == {"oneshot", "small", "medium", "large"}
    # budgets vary fastest: the cells of one study run back to back
    assert [j[-2].split("=")[1] for j in quick[:4]] == ["oneshot", "small", "medium", "large"]
    # the command line narrows a preset's axis
    narrowed = sweep.expand(["experiment=quick", "optimizer=adam"], multirun=True)
    assert len(narrowed) == 4 * 4 and _axes(narrowed)["optimizer"] == {"adam"}
    cfg = sweep.compose_jobs([quick[0]])[0]
    assert cfg["problem"]["name"] == "quadratic_deep" and cfg["tuning"]["workers"] == 2 and cfg["engine"] == "auto"
    assert cfg["problem"]["num_epochs"] == 100 and cfg["budget"] == {"name": "oneshot", "samples": 0}


def test_the_oneshot_row_is_640_runs(tmp_path: Path) -> None:
    jobs = sweep.expand([f"optimizer={','.join(STUDY_OPTIMIZERS)}", f"schedule={','.join(STUDY_SCHEDULES)}",
                         "budget=oneshot", f"results_dir={tmp_path}"], multirun=True)
    plan = plan_of_configs(sweep.compose_jobs(jobs))
    assert (len(plan.cells), plan.total, len(plan.done), plan.unknown) == (64, 640, 0, 0)


@pytest.mark.parametrize("args", [
    ["experiment=quick", "optimizer=adam,lookahead_radam", "schedule=constant,plateau", "problem.num_epochs=3"],
    ["problem=quadratic_deep,fmnist_2c2d", "optimizer=sgd,adam", "budget=oneshot,medium", "optimizer.learning_rate=0.1",
     "tuning.workers=3", "seed=7", "schedule=step", "schedule.gamma=0.5"],
    ["experiment=schmidt2021", "problem=cifar10_3c3d", "optimizer=momentum", "budget=small,large",
     "problem.split=fixed", "logger=none"],
])
def test_composition_by_parts_equals_hydra_job_by_job(args: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    jobs = sweep.expand(args, multirun=True)
    fast = sweep.compose_jobs(jobs)
    with initialize_config_dir(config_dir=str(sweep.CONF_DIR), version_base="1.3"):
        for job, cfg in zip(jobs, fast):
            full = OmegaConf.to_container(compose("config", overrides=[o for o in job if not o.startswith("hydra")]),
                                          resolve=True)
            assert cfg == full, job


def test_the_full_study_composes_in_seconds() -> None:
    import time

    start = time.perf_counter()
    jobs = sweep.expand(["experiment=schmidt2021"], multirun=True)
    cfgs = sweep.compose_jobs(jobs)
    assert len(cfgs) == 2048 and time.perf_counter() - start < 30  # by parts: ~1 s (each job whole: ~60 s)
    assert {c["problem"]["name"] for c in cfgs} >= {"quadratic_deep", "tolstoi_char_rnn"}


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("arg, message", [
    ("budget=huge", "unknown budget 'huge'; valid: large, medium, oneshot, small"),
    ("experiment=nope", "unknown experiment 'nope'; valid: landscape_p1, landscape_p4, quick, schmidt2021"),
    ("tuning.sampler=grid", "unknown sampler 'grid'; valid: study, tpe, qmc, random"),
    ("tuning.sampler=tpe,grid", "unknown sampler 'grid'; valid: study, tpe, qmc, random"),
    ("tuning.pruner=asha", "unknown tuning.pruner 'asha'; valid: none, median, hyperband"),
    ("tuning.selection=last", "unknown tuning.selection 'last'; valid: final, best"),
    ("tuning.workers=0", "invalid tuning.workers=0: must be an integer >= 1"),
    ("tuning.seeds=[]", "invalid tuning.seeds=[]"),
    ("tuning.speed=1", "unknown setting 'tuning.speed'"),
    ("budget.samples=-3", "invalid budget.samples='-3'"),
    ("budget.size=3", "unknown setting 'budget.size'; valid: budget.samples"),
])
def test_bad_input_is_one_line(arg: str, message: str) -> None:
    error = precheck(["-m", arg])
    assert error is not None and message in error and "\n" not in error


@pytest.mark.parametrize("args", [["-m", "budget=oneshot,huge"], ["tuning.sampler=grid", "budget=small"],
                                  ["-m", "experiment=quick", "optimizer=nosuch"]])
def test_bad_input_through_the_cli(args: list[str], tmp_path: Path) -> None:
    res = valley(*args, f"results_dir={tmp_path}")
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("valley: error: ")


def test_budget_for_an_optimizer_without_search_space_is_one_line(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from optimizers import OPTIMIZERS
    from optimizers.base import learning_rate

    cfg = sweep.compose_jobs([["optimizer=sgd", "budget=small", f"results_dir={tmp_path}"]])[0]
    assert Cell.from_config(cfg).search_space  # sgd tunes its learning rate ...
    sgd = OPTIMIZERS.get("sgd")
    monkeypatch.setattr(sgd, "hyperparameters", {"learning_rate": learning_rate(search=None)})
    with pytest.raises(TuningError, match="^optimizer sgd has no tuned hyperparameters; use budget=oneshot$"):
        Cell.from_config(cfg)  # ... one that tunes nothing has only a one-shot cell
    cfg["budget"] = {"name": "oneshot", "samples": 0}
    assert not Cell.from_config(cfg).budget.tuned


# ------------------------------------------------------------------------------------------------- progress
def test_tracker_counts_runs_once_and_reports_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.tuning.progress as progress_mod

    tracker = Tracker(cells_total=2, runs_total=5, done_before={"a"})
    for run_id in ("a", "b", "b", "c"):
        tracker.run_done(run_id)
    now = tracker.started + 1.0  # a frozen clock: rate() and eta_s() see the same elapsed time
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: now)
    assert tracker.runs_done == 3 and tracker.done_now == {"b", "c"} and tracker.rate() > 0
    assert tracker.eta_s() == pytest.approx(2 / tracker.rate(), rel=0.2)
    cell = Cell.from_config(sweep.compose_jobs([["budget=oneshot", "tuning.seeds=[1,2]",
                                                 f"results_dir={tmp_path}"]])[0])
    outcome = CellOutcome(cell, None, [], [RunView("x", 1, "completed", 1.0, 2.0), RunView("y", 2, "completed", 1.0,
                                                                                           4.0)], True)
    assert "test loss 3 ± 1 (2 seeds)" in describe(outcome)
    tracker.cell_done(outcome)
    assert tracker.cells_done == 1 and "cells 1/2 · runs 3/5" in tracker.status()
    assert Budget("oneshot", 0).tuned is False


def test_budgets_sharing_a_winner_count_its_reruns_once(tmp_path: Path) -> None:
    """medium and large pick the same winner on P1 SGD: the sweep's run total shrinks to the distinct runs."""
    res = valley("-m", "optimizer=sgd", "budget=medium,large", "problem.num_epochs=2", "tuning.seeds=[42,43,44]",
                 "engine=auto", "progress=false", f"results_dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    summary = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("sweep:")][-1]
    assert "77/77 runs recorded (77 new)" in summary  # 75 trials + the shared winner's re-runs with seeds 43, 44
