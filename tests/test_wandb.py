"""logger=wandb in-process (offline, CPU): configuration checks, runs read back from their ``.wandb`` files equal to
the Parquet rows (NaN-aware), many runs open at once (a cohort of 64), resume after a stop continues the same W&B
run and is complete by itself, the exporter (valley runs, imported runs, cells; idempotent; changed records
detected; --select) and a bounded ``wandb sync`` against an unreachable server."""
from __future__ import annotations

import json
import math
import os
import pickle
import socket
import time
from pathlib import Path

import pytest

from bench import records
from bench.checkpoint import CheckpointPolicy, CheckpointStore
from bench.execute import execute
from bench.loggers import payload
from bench.loggers import wandb as wl
from bench.loggers.wandb_export import (compare_run, curves_of, main as wandb_main, plan_export, read_rows, sync,
                                        write_items)
from bench.loggers.wandb_read import read_many, read_run, run_dirs
from bench.observers import EpochInfo, RunStart
from bench.spec import make_spec
from tests.conftest import ADAM_DEFAULTS, P1_SETTINGS

pytest.importorskip("wandb")


def spec_of(optimizer: str = "adam", epochs: int = 3, seed: int = 42, **hp):
    base = {"adam": ADAM_DEFAULTS, "sgd": {"learning_rate": 0.01},
            "momentum": {"learning_rate": 0.01, "momentum": 0.99, "momentum_warmup_epochs": 0,
                         "momentum_warmup_start": 0.5}}[optimizer]
    return make_spec("quadratic_deep", optimizer, {**base, **hp}, seed=seed,
                     problem_settings={**P1_SETTINGS, "num_epochs": epochs})


def settings(tmp_path: Path, **kw) -> wl.WandbSettings:
    return wl.WandbSettings(**{"mode": "offline", "dir": str(tmp_path), "flush_s": 0.2, **kw})


@pytest.fixture(autouse=True)
def drained():
    yield
    assert wl.drain(120)


def written(tmp_path: Path) -> dict[str, list[Path]]:
    return run_dirs(tmp_path / "wandb", include_online=False)


# ----------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("block, message", [
    ({"name": "wandb", "mode": "onlin"}, "unknown logger.mode 'onlin'; valid: offline, online, disabled"),
    ({"name": "wandb", "colour": 1}, "unknown setting 'logger.colour'"),
    ({"name": "wandb", "tags": "a"}, "invalid logger.tags='a': must be a list"),
    ({"name": "wandb", "tags": ["x" * 65]}, "tags are strings of 1-64 characters"),
    ({"name": "wandb", "init_timeout_s": 0}, "invalid logger.init_timeout_s=0"),
    ({"name": "wandb", "project": "a/b"}, "W&B project names cannot contain"),
])
def test_bad_blocks_are_one_line(block, message) -> None:
    error = wl.check_block(block)
    assert error is not None and message in error and "\n" not in error
    with pytest.raises(ValueError, match="logger"):
        wl.factory_from_config(block, {"results_dir": "r"})


def test_overrides_defaults_and_pickling(tmp_path) -> None:
    assert wl.check_override("logger.mode", "offline,online") is None
    assert "unknown logger.mode 'x'" in wl.check_override("logger.mode", "offline,x")
    assert wl.check_override("logger.tags", "[a,b]") is None
    assert wl.check_block({"name": "wandb", **wl.DEFAULTS}) is None
    factory = wl.factory_from_config({"name": "wandb", "tags": ["t1"]}, {"results_dir": str(tmp_path)})
    assert factory.settings.dir == str(tmp_path.absolute()) and factory.settings.mode == "offline"
    assert pickle.loads(pickle.dumps(factory)) == factory  # tuning workers are separate processes
    disabled = wl.factory_from_config({"name": "wandb", "mode": "disabled"}, {"results_dir": str(tmp_path)})
    assert disabled(spec_of(), {}) == []
    assert payload.project_for(None, "mnist_vae") == "valley-mnist_vae"
    assert payload.project_for("study-{problem}", "p") == "study-p"
    assert payload.tags_for({"role": ["trial", "seed"], "budget": ["small"]}, "valley", ["x"]) == \
        ["budget:small", "role:seed", "role:trial", "source:valley", "x"]
    assert payload.tags_for({}, "valley") == ["role:single", "source:valley"]


# ----------------------------------------------------------------------------------------------- live runs
def test_live_runs_read_back_equal_the_parquet_rows(tmp_path) -> None:
    factory = wl.WandbFactory(settings(tmp_path, tags=("t1",)))
    specs = [spec_of("adam"), spec_of("sgd", epochs=30, learning_rate=10.0), spec_of("momentum", epochs=4)]
    labels = {"role": ["trial"], "budget": ["small"]}
    for spec in specs:
        out = execute(spec, tmp_path, device="cpu", observers=factory(spec, labels))
        assert out.record["status"] in ("completed", "diverged")
    assert wl.drain(120)
    dirs = written(tmp_path)
    assert sorted(dirs) == sorted(s.run_id for s in specs) and all(len(d) == 1 for d in dirs.values())
    rows = {r["run_id"]: r for r in read_rows(tmp_path, "runs", records.RUNS_SCHEMA)}
    assert {r["status"] for r in rows.values()} == {"completed", "diverged"}
    curves = curves_of(tmp_path, list(rows))
    for spec, run in zip(specs, read_many([dirs[s.run_id][0] for s in specs])):
        rec = rows[spec.run_id]
        assert compare_run(run, rec, curves[spec.run_id]) == []
        assert run["id"] == spec.run_id and run["project"] == "valley-quadratic_deep"
        assert run["name"] == f"quadratic_deep/{spec.optimizer}/constant/s42" and run["job_type"] == "train"
        assert run["group"] == f"quadratic_deep/{spec.optimizer}/constant"
        assert run["tags"] == ["budget:small", "role:trial", "source:valley", "t1"]
        assert run["config"]["hyperparameters"] == json.loads(rec["hyperparameters"])
        assert [r["epoch"] for r in run["history"]] == list(range(rec["epochs_completed"] + 1))
        assert run["exit_code"] == 0 and run["summary"]["status"] == rec["status"]
        if rec["status"] == "diverged":  # W&B turns NaN into null in summaries: marked explicitly
            assert run["summary"]["diverged"] is True and run["summary"]["nonfinite"]
            assert all(run["summary"].get(k) is None for k in run["summary"]["nonfinite"])
            assert any(not math.isfinite(v) for v in run["history"][-1].values() if isinstance(v, float))
        else:
            assert run["history"][0]["lr_factor"] == 1.0 and "lr_factor" not in run["history"][-1]
    ledger = payload.Ledger(tmp_path / "wandb").latest()
    assert len(ledger) == 3 and all(e["by"] == "live" and e["complete"] and not e["synced"] for e in ledger.values())
    plan = plan_export(tmp_path, tmp_path / "wandb", extra_tags=["t1"])  # same content: nothing to export
    assert plan.items == [] and plan.unchanged == 3


def test_a_cohort_of_64_runs_open_at_once(tmp_path, capsys) -> None:
    n, epochs = 64, 20
    factory = wl.WandbFactory(settings(tmp_path))
    specs = [spec_of("adam", epochs=epochs, learning_rate=10 ** (-4 + i / 16)) for i in range(n)]
    observers = [factory(s, {"role": ["trial"], "budget": ["small"]})[0] for s in specs]
    t0 = time.perf_counter()
    calls, epoch_s = 0, 0.0
    for spec, obs in zip(specs, observers):
        obs.on_start(RunStart(spec=spec, start_epoch=0, num_parameters=100, device="cpu", engine="cohort"))
    curves = {s.run_id: [] for s in specs}
    for epoch in range(epochs + 1):
        for i, (spec, obs) in enumerate(zip(specs, observers)):
            metrics = {s: {"loss": 100.0 / (epoch + 1) + i + j} for j, s in enumerate(("train", "valid", "test"))}
            curves[spec.run_id] += [(epoch, s, "loss", v["loss"]) for s, v in metrics.items()]
            info = EpochInfo(lr_factor=1.0 if epoch < epochs else None, steps=epoch * 7, flat_params=lambda: None)
            t = time.perf_counter()
            obs.on_epoch(epoch, metrics, info)
            epoch_s += time.perf_counter() - t
            calls += 1
    for spec, obs in zip(specs, observers):
        rec = {"run_id": spec.run_id, "source": "valley", "spec": spec.canonical(), "status": "completed",
               "metric": "loss", "final_test_loss": curves[spec.run_id][-1][3], "epochs_completed": epochs,
               "steps": epochs * 7, "num_epochs": epochs}
        obs.on_end(rec)
    observer_s = time.perf_counter() - t0
    assert wl.drain(300)
    total_s = time.perf_counter() - t0
    dirs = written(tmp_path)
    assert len(dirs) == n and all(len(d) == 1 for d in dirs.values())
    ledger = payload.Ledger(tmp_path / "wandb").latest()
    assert len(ledger) == n and all(e["complete"] for e in ledger.values())
    for spec in (specs[0], specs[-1]):
        run = read_run(dirs[spec.run_id][0])
        assert len(run["history"]) == epochs + 1 and run["tags"] == ["budget:small", "role:trial", "source:valley"]
        assert run["history"][5]["valid/loss"] == curves[spec.run_id][5 * 3 + 1][3]
    with capsys.disabled():
        print(f"\n[wandb] cohort of {n} x {epochs + 1} epochs: on_epoch {epoch_s / calls * 1e6:.0f} us a call, all "
              f"observer calls {observer_s:.2f} s on the training thread; {n} W&B runs finished after "
              f"{total_s:.1f} s ({total_s / n * 1e3:.0f} ms/run, in the writer process)")
    assert epoch_s / calls < 2e-3  # the training thread only enqueues


class StopAtCheckpoint:
    """Turns the checkpoint of ``epoch`` into SystemExit, as a launcher turns SIGTERM/USR2 into one."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_checkpoint(self, epoch: int) -> None:
        if epoch == self.epoch:
            raise SystemExit(143)


def test_a_resumed_run_continues_the_same_wandb_run_complete_by_itself(tmp_path) -> None:
    from bench.train import train

    spec = spec_of("adam", epochs=8)
    factory = wl.WandbFactory(settings(tmp_path))
    store = CheckpointStore.under(tmp_path, CheckpointPolicy(every_epochs=1, every_minutes=0))
    with pytest.raises(SystemExit):
        train(spec, checkpoints=store, observers=factory(spec, {}), on_epoch=StopAtCheckpoint(4))
    first = written(tmp_path)[spec.run_id]
    assert len(first) == 1  # on_stop finished it before the process would go down
    stopped = read_run(first[0])
    assert stopped["exit_code"] == 1 and stopped["summary"]["status"] == "stopped"
    assert [r["epoch"] for r in stopped["history"]] == [0, 1, 2, 3]
    out = execute(spec, tmp_path, device="cpu", observers=factory(spec, {}), checkpoints=store)
    assert out.record["resumes"] == 1
    assert wl.drain(120)
    dirs = written(tmp_path)[spec.run_id]
    assert len(dirs) == 2
    resumed = read_run(dirs[-1])
    assert resumed["resumed"] and resumed["id"] == spec.run_id
    assert compare_run(resumed, out.record, curves_of(tmp_path, [spec.run_id])[spec.run_id]) == []
    # The first segment is not needed: even if it had been lost (SIGKILL before wandb flushed), the resumed one
    # re-logged the restored epochs 0..3 (bit-identical) and holds the whole run.
    assert [r["epoch"] for r in resumed["history"]] == list(range(9))
    assert resumed["history"][2] == {**stopped["history"][2], "_step": 2}


# ----------------------------------------------------------------------------------------------- export
def _imported_and_cells(tmp_path: Path, recs: list[dict]) -> None:
    """An imported published run (source crowded_valley) and two cells (small: trials + seeds; oneshot)."""
    curves = curves_of(tmp_path, [r["run_id"] for r in recs])
    imp = {**recs[0], "run_id": "f" * 20, "source": "crowded_valley",
           "spec": json.dumps({"source_path": "oneshot/quadratic_deep/AdamOptimizer/x.json"})}
    records.write_run(tmp_path, imp, curves[recs[0]["run_id"]])
    now = recs[0]["finished_at"]
    small = {"cell_id": "a" * 20, "source": "valley", "problem": "quadratic_deep", "optimizer": "adam",
             "schedule": "constant", "budget": "small", "num_samples": 2, "selection": "final", "metric": "loss",
             "winner_sample": 1, "winner_hyperparameters": recs[1]["hyperparameters"],
             "trial_run_ids": [recs[0]["run_id"], recs[1]["run_id"]], "run_ids": [recs[1]["run_id"], recs[2]["run_id"]],
             "seeds": [42, 43], "n_seeds": 2, "n_diverged": 0, "test_mean": 1.5, "test_std": float("nan"),
             "status": "complete", "updated_at": now, "tuner": "study+none", "pruned_trials": 0, "saved_epochs": 0}
    oneshot = {**small, "cell_id": "b" * 20, "budget": "oneshot", "num_samples": 0, "winner_sample": -1,
               "trial_run_ids": [], "run_ids": [recs[3]["run_id"]], "seeds": [42], "n_seeds": 1, "test_std": 0.0,
               "tuner": "oneshot"}
    import pyarrow as pa

    for cell in (small, oneshot):
        records.write_atomic(pa.Table.from_pylist([cell], schema=records.CELLS_SCHEMA),
                             tmp_path / "cells" / f"{cell['cell_id']}.parquet")


def test_export_valley_imported_and_cells_idempotent_and_change_aware(tmp_path, capsys) -> None:
    specs = [spec_of("adam", seed=42), spec_of("adam", seed=42, learning_rate=0.01), spec_of("adam", seed=43,
             learning_rate=0.01), spec_of("sgd", epochs=2)]
    recs = [execute(s, tmp_path, device="cpu").record for s in specs]
    _imported_and_cells(tmp_path, recs)
    wandb_dir = tmp_path / "wandb"

    plan = plan_export(tmp_path, wandb_dir, select={"budget": {"small"}})
    assert plan.by_kind == {"run": 3, "cell": 1}
    plan = plan_export(tmp_path, wandb_dir, select={"kind": {"imported"}})
    assert plan.by_kind == {"imported": 1}
    wandb_main(["export", str(tmp_path), "--dry-run"])
    assert "dry run: 7 W&B runs to write (2 cell, 1 imported, 4 run; 7 new, 0 changed)" in capsys.readouterr().out
    assert not wandb_dir.exists()

    wandb_main(["export", str(tmp_path)])
    assert "wrote 7 of 7 W&B runs" in capsys.readouterr().out
    dirs = written(tmp_path)
    assert len(dirs) == 7 and all(len(d) == 1 for d in dirs.values())
    wandb_main(["export", str(tmp_path)])  # a second export writes nothing
    assert "0 W&B runs to write" in capsys.readouterr().out and len(written(tmp_path)) == 7
    assert sum(len(d) for d in written(tmp_path).values()) == 7

    folded = dict(zip(dirs, read_many([d[0] for d in dirs.values()])))
    rows = {r["run_id"]: r for r in read_rows(tmp_path, "runs", records.RUNS_SCHEMA)}
    curves = curves_of(tmp_path, list(rows))
    for rid, rec in rows.items():
        assert compare_run(folded[rid], rec, curves[rid]) == [], rid
    assert folded[recs[0]["run_id"]]["tags"] == ["budget:small", "role:trial", "source:valley"]
    assert folded[recs[1]["run_id"]]["tags"] == ["budget:small", "role:seed", "role:trial", "source:valley"]
    assert folded[recs[3]["run_id"]]["tags"] == ["budget:oneshot", "role:seed", "source:valley"]
    imported = folded["f" * 20]
    assert imported["job_type"] == "imported" and "source:crowded_valley" in imported["tags"]
    assert imported["config"]["origin"]["source_path"].startswith("oneshot/")
    cell = folded["cell-" + "a" * 20]
    assert cell["job_type"] == "cell" and cell["group"] == "quadratic_deep/adam/constant"
    assert cell["name"] == "quadratic_deep/adam/constant/small" and cell["config"]["budget"] == "small"
    assert cell["config"]["winner_hyperparameters"] == json.loads(recs[1]["hyperparameters"])
    assert cell["summary"]["test_mean"] == 1.5 and cell["summary"]["test_std"] is None
    assert cell["summary"]["nonfinite"] == ["test_std"]
    table = next((dirs["cell-" + "a" * 20][0] / "files" / "media" / "table").glob("trials*.table.json"))
    data = json.loads(table.read_text())
    assert data["columns"][:5] == ["role", "sample", "run_id", "seed", "status"] and len(data["data"]) == 4
    assert [r[2] for r in data["data"]] == [recs[0]["run_id"], recs[1]["run_id"], recs[1]["run_id"], recs[2]["run_id"]]

    # A changed record (a forced re-run) is detected and written again; the rest stays.
    changed = {**rows[recs[2]["run_id"]], "wall_time_s": 123.0}
    records.write_run(tmp_path, changed, curves[recs[2]["run_id"]])
    plan = plan_export(tmp_path, wandb_dir)
    assert (plan.changed, plan.new, len(plan.items)) == (1, 0, 1) and plan.items[0].init["id"] == recs[2]["run_id"]
    assert write_items(plan.items, settings(tmp_path)) == 1
    again = written(tmp_path)[recs[2]["run_id"]]
    assert len(again) == 2 and read_run(again[-1])["summary"]["wall_time_s"] == 123.0
    assert plan_export(tmp_path, wandb_dir).items == []
    assert len(plan_export(tmp_path, wandb_dir, force=True).items) == 7


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_is_bounded_against_an_unreachable_server(tmp_path, monkeypatch) -> None:
    spec = spec_of("adam", epochs=2)
    execute(spec, tmp_path, device="cpu", observers=wl.WandbFactory(settings(tmp_path))(spec, {}))
    assert wl.drain(60)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "c4n4ry" + "0" * 34)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    t0 = time.monotonic()
    uploaded, pending, message = sync(tmp_path / "wandb", timeout_s=8)
    assert time.monotonic() - t0 < 20
    assert (uploaded, pending) == (0, 1) and "timed out after 8 s" in message and "run valley-wandb sync again" in message
    assert not any(e.get("synced") for e in payload.Ledger(tmp_path / "wandb").latest().values())
    assert os.path.isdir(written(tmp_path)[spec.run_id][0])  # the offline data stays
