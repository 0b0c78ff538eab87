"""Tuning cells: one-shot, nested budgets, selection, the cells table, Optuna trials, storages, workers, stale trials.

Cells are composed through the real config (``conf/``) with tiny settings (P1 with 2 epochs, budgets of a few samples,
three seeds). Expected values are recomputed here independently from the Parquet records (numpy), and trainings are
counted by wrapping ``bench.execute.train``.
"""
from __future__ import annotations

import collections
import json
import math
import multiprocessing
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest
import torch
from optuna.trial import TrialState

import bench.execute
from bench import records
from bench.tuning import study as study_mod
from bench.tuning.cell import Cell, RunView, TrialResult, read_cells, select, write_cell
from bench.tuning.runner import Where, run_cell
from bench.tuning.settings import STUDY_SEEDS, TuningError, check_value
from bench.tuning.sweep import compose_jobs
from optimizers import OPTIMIZERS
from optimizers.base import study_samples

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # P1's 100x100 matmuls: one thread is fastest, and the machine is shared


def make_cell(results: Path, *overrides: str, budget: str = "small", samples: int | None = 4,
              epochs: int = 2, seeds: str | None = "[42,43,44]") -> Cell:
    """A cell of the real config; three seeds unless ``seeds=None`` (the study's ten)."""
    args = [f"results_dir={results}", f"budget={budget}", f"problem.num_epochs={epochs}", *overrides]
    if seeds is not None:
        args.append(f"tuning.seeds={seeds}")
    if samples is not None and budget != "oneshot":
        args.append(f"budget.samples={samples}")
    return Cell.from_config(compose_jobs([args])[0])


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    """run_id -> how many times it was trained in this process."""
    counter: collections.Counter = collections.Counter()
    real = bench.execute.train

    def counting(spec, **kwargs):
        counter[spec.run_id] += 1
        return real(spec, **kwargs)

    monkeypatch.setattr(bench.execute, "train", counting)
    return counter


def final(results: Path, run_id: str, column: str) -> float:
    return records.find_run(results, run_id)[column]


def curve(results: Path, run_id: str, split: str) -> np.ndarray:
    t = pq.read_table(results / "curves" / f"{run_id}.parquet").to_pandas()
    t = t[(t.split == split) & (t.metric == "loss")].sort_values("epoch")
    return t.value.to_numpy()


# ------------------------------------------------------------------------------------------------- config
def test_budget_configs_and_study_defaults() -> None:
    cfgs = compose_jobs([[f"budget={b}"] for b in ("oneshot", "small", "medium", "large")])
    assert [c["budget"]["samples"] for c in cfgs] == [0, 25, 50, 75]
    cell = Cell.from_config(cfgs[1])
    t = cell.tuning
    assert (t.sampler, t.pruner, t.selection, t.diverged, t.workers) == ("study", "none", "final", "pad", 1)
    assert t.seeds == tuple(range(42, 52)) == STUDY_SEEDS
    assert t.tuning_seed == 42 and t.rerun_seeds == tuple(range(43, 52))
    assert t.storage == str(Path("results") / "optuna" / "journal.log")
    assert cell.label == "small" and not t.beyond_study


def test_tuning_values_are_checked() -> None:
    with pytest.raises(TuningError, match="unknown sampler 'grid'; valid: study, tpe, qmc, random"):
        check_value("sampler", "grid")
    with pytest.raises(TuningError, match="tuning.workers"):
        check_value("workers", 0)
    with pytest.raises(TuningError, match="distinct"):
        check_value("seeds", [42, 42])
    assert check_value("seeds", [1, 2]) == (1, 2)


def test_cell_identity_separates_what_matters(tmp_path: Path) -> None:
    a = make_cell(tmp_path)
    assert make_cell(tmp_path).cell_id == a.cell_id
    assert make_cell(tmp_path, "tuning.selection=best").cell_id != a.cell_id
    assert make_cell(tmp_path, samples=5).cell_id != a.cell_id
    # one study for every budget and selection of (problem + settings, optimizer, schedule)
    assert make_cell(tmp_path, samples=7, budget="large").study_name == a.study_name
    assert make_cell(tmp_path, "tuning.selection=best").study_name == a.study_name
    assert make_cell(tmp_path, epochs=3).study_name != a.study_name
    adam = make_cell(tmp_path, "optimizer=adam")
    assert adam.study_name != a.study_name
    assert make_cell(tmp_path, "optimizer=adam", "optimizer.epsilon=1e-7").study_name != adam.study_name
    beyond = make_cell(tmp_path, "tuning.sampler=tpe", "tuning.pruner=median")
    assert beyond.study_name != a.study_name and beyond.label == "small+tpe+median"


# ------------------------------------------------------------------------------------------------- one-shot
def test_oneshot_runs_the_defaults_with_every_seed(tmp_path: Path, trainings: collections.Counter) -> None:
    cell = make_cell(tmp_path, "optimizer=adam", budget="oneshot", seeds=None)
    outcome = run_cell(cell, Where(str(tmp_path)))
    row = outcome.row()
    write_cell(tmp_path, row)
    assert row["seeds"] == list(range(42, 52)) and row["n_seeds"] == 10 and row["status"] == "complete"
    for run_id, seed in zip(row["run_ids"], row["seeds"]):
        rec = records.find_run(tmp_path, run_id)
        assert rec["seed"] == seed
        assert json.loads(rec["hyperparameters"]) == {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999,
                                                      "epsilon": 1e-8, "semantics": "tf"}
    tests = np.array([final(tmp_path, r, "final_test_loss") for r in row["run_ids"]])
    assert row["test_mean"] == pytest.approx(tests.mean(), rel=1e-12)
    assert row["test_std"] == pytest.approx(np.sqrt(((tests - tests.mean()) ** 2).mean()), rel=1e-9)  # ddof 0
    assert row["winner_sample"] == -1 and row["num_samples"] == 0 and row["trial_run_ids"] == []
    assert json.loads(row["winner_hyperparameters"])["learning_rate"] == 1e-3
    assert sorted(trainings.values()) == [1] * 10
    table = read_cells(tmp_path)
    assert list(table.cell_id) == [cell.cell_id] and table.budget[0] == "oneshot"
    assert table.test_mean[0] == pytest.approx(tests.mean())


# ------------------------------------------------------------------------------------------------- tuned cells
def test_budgets_are_nested_and_nothing_is_trained_twice(tmp_path: Path, trainings: collections.Counter) -> None:
    small = make_cell(tmp_path, "optimizer=sgd", samples=4)
    large = make_cell(tmp_path, "optimizer=sgd", samples=7, budget="large")
    where = Where(str(tmp_path))
    s_row = run_cell(small, where).row()
    after_small = sum(trainings.values())
    assert after_small == 4 + 2  # 4 samples + 2 re-runs of the winner
    l_row = run_cell(large, where).row()
    again = run_cell(small, where).row()
    assert max(trainings.values()) == 1  # every run trained once
    assert again["run_ids"] == s_row["run_ids"] and sum(trainings.values()) == len(trainings)
    assert l_row["trial_run_ids"][:4] == s_row["trial_run_ids"]  # small is a prefix of large
    assert len(set(l_row["trial_run_ids"])) == 7
    samples = study_samples(OPTIMIZERS.get("sgd"), 7)
    assert l_row["trial_run_ids"] == [large.trial_spec(p).run_id for p in samples]
    # the runs of large: 3 new samples + re-runs (shared with small when the winner is the same)
    shared_winner = l_row["winner_sample"] == s_row["winner_sample"]
    assert sum(trainings.values()) == 6 + 3 + (0 if shared_winner else 2)
    # one Optuna study, one COMPLETE trial per sample, values as enqueued
    study = study_mod.open_study(large, create=False)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs["sample"] for t in trials) == list(range(7))
    for t in trials:
        assert t.params == {"learning_rate": samples[t.user_attrs["sample"]]["learning_rate"]}
    assert len(study.trials) == 7


def test_winner_is_best_final_validation_and_row_matches_records(tmp_path: Path) -> None:
    cell = make_cell(tmp_path, "optimizer=adam", samples=5, epochs=3)
    outcome = run_cell(cell, Where(str(tmp_path)))
    row = outcome.row()
    valid = np.array([final(tmp_path, r, "final_valid_loss") for r in row["trial_run_ids"]])
    assert row["winner_sample"] == int(np.argmin(valid))
    winner = study_samples(OPTIMIZERS.get("adam"), 5)[row["winner_sample"]]
    assert json.loads(row["winner_hyperparameters"]) == {**cell.defaults, **winner}
    assert row["run_ids"][0] == row["trial_run_ids"][row["winner_sample"]]  # the seed-42 run is the trial
    assert row["run_ids"] == [cell.spec(winner, s).run_id for s in (42, 43, 44)]
    tests = np.array([final(tmp_path, r, "final_test_loss") for r in row["run_ids"]])
    assert row["test_mean"] == pytest.approx(tests.mean(), rel=1e-12)
    assert row["test_std"] == pytest.approx(tests.std(ddof=0), rel=1e-9)
    assert (row["metric"], row["selection"], row["num_samples"], row["status"]) == ("loss", "final", 5, "complete")
    # Optuna trial attributes: hyperparameters, validation and test values, run_id, state
    study = study_mod.open_study(cell, create=False)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    for t in study.trials:
        run_id = row["trial_run_ids"][t.user_attrs["sample"]]
        assert t.state == TrialState.COMPLETE and t.user_attrs["run_id"] == run_id
        assert t.value == t.user_attrs["valid"] == final(tmp_path, run_id, "final_valid_loss")
        assert t.user_attrs["test"] == final(tmp_path, run_id, "final_test_loss")
        assert t.user_attrs["status"] == "completed"
    assert study.user_attrs["optimizer"] == "adam" and study.user_attrs["problem_settings"]["num_epochs"] == 3


def test_best_selection_uses_the_best_epoch(tmp_path: Path) -> None:
    cell = make_cell(tmp_path, "optimizer=sgd", "tuning.selection=best", samples=6, epochs=4)
    row = run_cell(cell, Where(str(tmp_path))).row()
    curves = [curve(tmp_path, r, "valid") for r in row["trial_run_ids"]]
    best = np.array([c[np.isfinite(c)].min() for c in curves])  # best over the epochs that were evaluated finite
    assert row["winner_sample"] == int(np.argmin(best)) and row["selection"] == "best"
    study = study_mod.open_study(cell, create=False)
    for t in study.trials:  # each trial keeps its best-epoch validation value (from the curves)
        assert t.user_attrs["result"]["valid_best"] == pytest.approx(best[t.user_attrs["sample"]], rel=1e-12)
    # (on P1 the final and best epochs pick the same sample; test_select_* tells the two rules apart)
    assert cell.cell_id != make_cell(tmp_path, "optimizer=sgd", samples=6, epochs=4).cell_id


def _view(sample: int, valid: float, status: str = "completed", initial: float = 10.0,
          best: float | None = None) -> TrialResult:
    return TrialResult(sample, {"x": sample}, RunView(f"r{sample}", 42, status, valid, valid + 1, initial,
                                                      initial + 1, best if best is not None else valid))


def test_select_ties_divergence_and_accuracy(tmp_path: Path) -> None:
    cell = make_cell(tmp_path)
    assert select([_view(2, 1.0), _view(0, 1.0), _view(1, 2.0)], cell).sample == 0  # ties: earliest sample
    # DeepOBS pads a diverged run with its epoch-0 values: 5.0 beats a completed 7.0 ...
    trials = [_view(0, 7.0), _view(1, math.nan, "diverged", initial=5.0)]
    assert select(trials, cell).sample == 1
    # ... unless diverged runs are excluded
    assert select(trials, make_cell(tmp_path, "tuning.diverged=exclude")).sample == 0
    assert select([_view(0, 3.0, best=2.5), _view(1, 2.8, best=2.7)],
                  make_cell(tmp_path, "tuning.selection=best")).sample == 0
    assert select([], cell) is None
    # padded test values enter the reported mean; excluded ones do not
    v = RunView("r", 42, "diverged", math.nan, math.nan, 5.0, 6.0)
    assert v.test_value("pad") == 6.0 and v.test_value("exclude") is None


# ------------------------------------------------------------------------------------------------- storages
def test_sqlite_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    cell = make_cell(tmp_path, "optimizer=sgd", f"tuning.storage={url}", samples=3)
    row = run_cell(cell, Where(str(tmp_path))).row()
    assert row["status"] == "complete" and (tmp_path / "optuna.db").exists()
    study = optuna.load_study(study_name=cell.study_name, storage=url)
    assert sorted(t.user_attrs["sample"] for t in study.trials) == [0, 1, 2]
    assert not (tmp_path / "optuna").exists()  # nothing went to the default journal


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server (initdb + pg_ctl as user postgres), stopped and removed afterwards."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries on this machine")
    root = Path(tempfile.mkdtemp(prefix="valley-pg-"))
    shutil.chown(root, "postgres")
    data, sock = root / "data", root
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)], check=True,
                   capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off"
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
                    "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_pg, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "valley"], check=True,
                       capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/valley"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_storage(tmp_path: Path, postgres_url: str) -> None:
    cell = make_cell(tmp_path, "optimizer=sgd", f"tuning.storage={postgres_url}", samples=3)
    row = run_cell(cell, Where(str(tmp_path))).row()
    assert row["status"] == "complete"
    study = optuna.load_study(study_name=cell.study_name, storage=study_mod.open_storage(postgres_url))
    assert sorted(t.user_attrs["sample"] for t in study.trials) == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # a second creation (another coordinator) loads the same study instead of failing
    assert study_mod.open_study(cell, create=True)._study_id == study._study_id


# ------------------------------------------------------------------------------------------------- workers
def _counting_worker(cell: Cell, n: int, results: str, log: str, barrier) -> None:
    """A worker process: counts every training it does in ``log`` (one line per run_id)."""
    torch.set_num_threads(1)
    real = bench.execute.train

    def counting(spec, **kwargs):
        with open(log, "a") as fh:
            fh.write(spec.run_id + "\n")
        return real(spec, **kwargs)

    bench.execute.train = counting
    barrier.wait(timeout=120)  # both workers start together, so they really compete for the trials
    study_mod.work(cell, n, results)


def test_two_workers_share_one_study_and_train_each_sample_once(tmp_path: Path) -> None:
    cell = make_cell(tmp_path, "optimizer=adam", samples=12, epochs=10)
    study = study_mod.open_study(cell, create=True)  # created once, before the workers start
    assert study_mod.enqueue_missing(study, cell, 12, retry_failed_runs=True) == 12
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [ctx.Process(target=_counting_worker, args=(cell, 12, str(tmp_path), str(log), barrier))
             for log in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    per_worker = [log.read_text().split() if log.exists() else [] for log in logs]
    assert all(per_worker), "both workers trained samples"
    trained = [run_id for lines in per_worker for run_id in lines]
    expected = [cell.trial_spec(p).run_id for p in cell.stream(12)]
    assert sorted(trained) == sorted(expected)  # every sample trained, exactly once
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["sample"] for t in done) == list(range(12))
    assert all(t.state == TrialState.COMPLETE or t.user_attrs.get("spurious") for t in study.get_trials())


def test_pool_workers_via_run_cell(tmp_path: Path) -> None:
    cell = make_cell(tmp_path, "optimizer=sgd", "tuning.workers=2", samples=5)
    row = run_cell(cell, Where(str(tmp_path), workers=2)).row()
    assert row["status"] == "complete" and row["n_seeds"] == 3
    reference = make_cell(tmp_path / "one", "optimizer=sgd", samples=5)
    ref_row = run_cell(reference, Where(str(tmp_path / "one"))).row()
    assert (row["winner_sample"], row["run_ids"], row["test_mean"]) == (
        ref_row["winner_sample"], ref_row["run_ids"], ref_row["test_mean"])


# ------------------------------------------------------------------------------------------------- crashes
def _dead_identity() -> dict:
    """The identity of a process on this machine that has exited (a crashed worker)."""
    proc = subprocess.Popen(["sleep", "60"])
    start = study_mod._proc_start(proc.pid)
    proc.kill()
    proc.wait()
    return {**study_mod.worker_identity(), "pid": proc.pid, "start": start}


@pytest.mark.parametrize("recorded", [False, True])
def test_stale_running_trial_is_redone(tmp_path: Path, trainings: collections.Counter, recorded: bool) -> None:
    cell = make_cell(tmp_path, "optimizer=sgd", samples=3)
    study = study_mod.open_study(cell, create=True)
    study_mod.enqueue_missing(study, cell, 3, retry_failed_runs=True)
    crashed = study.ask()  # a worker took sample 0 ...
    crashed.set_user_attr("worker", _dead_identity())  # ... and died (SIGKILL) while training it
    spec = cell.trial_spec(cell.stream(1)[0])
    if recorded:  # it died after writing the run's record but before telling Optuna
        bench.execute.execute(spec, tmp_path)
        trainings.clear()
    row = run_cell(cell, Where(str(tmp_path))).row()
    assert row["status"] == "complete"
    stale = study.trials[crashed.number]
    assert stale.state == TrialState.FAIL and stale.user_attrs["stale"]
    redo = [t for t in study.trials if t.user_attrs.get("sample") == 0 and t.state == TrialState.COMPLETE]
    assert len(redo) == 1 and redo[0].user_attrs["run_id"] == spec.run_id
    assert trainings[spec.run_id] == (0 if recorded else 1)  # a redo whose record exists costs nothing
    assert max(trainings.values()) == 1


def test_owner_liveness(tmp_path: Path) -> None:
    now = time.time() + 100  # the trials below start now; their last heartbeat is 10 s before `now`
    me = study_mod.worker_identity()
    live = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={"worker": me})
    assert study_mod.owner_alive(live, 300)
    dead = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={"worker": _dead_identity()})
    assert not study_mod.owner_alive(dead, 300)
    remote = {**me, "machine": "elsewhere"}  # another machine: only its heartbeat tells
    beat = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={"worker": remote, "heartbeat": now - 10})
    assert study_mod.owner_alive(beat, 300, now=now) and not study_mod.owner_alive(beat, 5, now=now)


def test_journal_survives_a_torn_write(tmp_path: Path) -> None:
    cell = make_cell(tmp_path, "optimizer=sgd", samples=2)
    study = study_mod.open_study(cell, create=True)
    study_mod.enqueue_missing(study, cell, 2, retry_failed_runs=True)
    journal = Path(cell.tuning.storage)
    with open(journal, "ab") as fh:  # a writer killed mid-append leaves half a record without its newline
        fh.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "key": "torn", "va')
    row = run_cell(cell, Where(str(tmp_path))).row()  # the next append cuts the torn tail first
    assert row["status"] == "complete"
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    fresh = optuna.load_study(study_name=cell.study_name, storage=study_mod.open_storage(str(journal)))
    assert len([t for t in fresh.trials if t.state == TrialState.COMPLETE]) == 2


def test_failed_run_makes_a_partial_cell_and_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cell = make_cell(tmp_path, "optimizer=sgd", samples=3)
    real = bench.execute.train
    bad = cell.trial_spec(cell.stream(2)[1]).run_id

    def flaky(spec, **kwargs):
        if spec.run_id == bad:
            raise RuntimeError("boom")
        return real(spec, **kwargs)

    monkeypatch.setattr(bench.execute, "train", flaky)
    row = run_cell(cell, Where(str(tmp_path))).row()
    assert row["status"] == "partial" and records.find_run(tmp_path, bad)["status"] == "failed"
    monkeypatch.setattr(bench.execute, "train", real)
    row = run_cell(cell, Where(str(tmp_path))).row()  # the next invocation retries the failed sample
    assert row["status"] == "complete" and records.find_run(tmp_path, bad)["status"] in records.FINISHED


# ------------------------------------------------------------------------------------------------- beyond the study
def test_other_samplers_keep_budgets_nested(tmp_path: Path) -> None:
    small = make_cell(tmp_path, "optimizer=adam", "tuning.sampler=tpe", samples=3)
    large = make_cell(tmp_path, "optimizer=adam", "tuning.sampler=tpe", samples=5, budget="large")
    s_row = run_cell(small, Where(str(tmp_path))).row()
    l_row = run_cell(large, Where(str(tmp_path))).row()
    assert l_row["trial_run_ids"][:3] == s_row["trial_run_ids"] and len(set(l_row["trial_run_ids"])) == 5
    assert s_row["budget"] == "small+tpe" and l_row["tuner"] == "tpe+none"
    study = study_mod.open_study(large, create=False)
    assert sorted(t.user_attrs["sample"] for t in study.trials) == [0, 1, 2, 3, 4]
    space = OPTIMIZERS.get("adam").search_space()
    for t in study.trials:  # the sampler searched the study's space
        lr = t.params["learning_rate"]
        assert 10 ** space["learning_rate"].low_exp <= lr <= 10 ** space["learning_rate"].high_exp


def test_median_pruning_reports_saved_compute(tmp_path: Path) -> None:
    cell = make_cell(tmp_path, "optimizer=sgd", "tuning.pruner=median", samples=10, epochs=6)
    outcome = run_cell(cell, Where(str(tmp_path)))
    row = outcome.row()
    study = study_mod.open_study(cell, create=False)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert row["budget"] == "small+study+median" and row["status"] == "complete"
    assert outcome.pruned == len(pruned) >= 1
    assert outcome.saved_epochs == sum(6 - t.user_attrs["result"]["epochs_trained"] for t in pruned) > 0
    for t in pruned:  # a pruned run leaves no record: a run of the study protocol later trains it in full
        assert records.find_run(tmp_path, t.user_attrs["run_id"]) is None
    assert row["winner_sample"] not in {t.user_attrs["sample"] for t in pruned}


def test_cells_and_plans_read_compacted_records(tmp_path: Path, trainings: collections.Counter) -> None:
    from bench.tuning.plan import plan_cells

    cell = make_cell(tmp_path, "optimizer=sgd", "tuning.selection=best", samples=3)  # best: reads the curves
    first = run_cell(cell, Where(str(tmp_path))).row()
    assert records.compact(tmp_path) > 0 and not list((tmp_path / "curves").glob("[0-9a-f]*.parquet"))
    trainings.clear()
    again = run_cell(cell, Where(str(tmp_path))).row()
    assert not trainings  # every run found in the packed parts
    assert (again["winner_sample"], again["run_ids"], again["test_mean"]) == (
        first["winner_sample"], first["run_ids"], first["test_mean"])
    plan = plan_cells([cell], tmp_path)
    assert (plan.total, plan.todo, plan.unknown) == (3 + 2, 0, 0)
