"""Parquet records: explicit schema, atomic writes, content-addressed skip, force, failed runs retried."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import bench.execute as execute_mod
from bench import records
from bench.execute import execute
from bench.spec import make_spec
from tests.conftest import ADAM_DEFAULTS, P1_SETTINGS


def spec(**kw):
    return make_spec("quadratic_deep", "adam", ADAM_DEFAULTS, problem_settings={**P1_SETTINGS, "num_epochs": 2}, **kw)


def test_tables_readable_with_pandas_and_schema(tmp_path) -> None:
    outs = [execute(spec(seed=s), tmp_path, device="cpu") for s in (42, 43)]
    runs = pd.read_parquet(tmp_path / "runs")
    curves = pd.read_parquet(tmp_path / "curves")
    assert list(runs.columns) == records.RUNS_SCHEMA.names
    assert list(curves.columns) == records.CURVES_SCHEMA.names
    assert sorted(runs["run_id"]) == sorted(o.run_id for o in outs)
    assert set(curves["split"]) == {"train", "valid", "test"} and set(curves["metric"]) == {"loss"}
    assert len(curves) == 2 * 3 * 3  # runs × epochs 0..2 × splits
    row = runs.set_index("run_id").loc[outs[0].run_id]
    assert row["status"] == "completed" and row["steps"] == 14 and row["grad_evals"] == 14
    assert json.loads(row["hyperparameters"]) == ADAM_DEFAULTS
    assert row["num_parameters"] == 100 and row["device"] == "cpu" and row["metric"] == "loss"
    assert "torch" in json.loads(row["versions"]) and row["finished_at"] >= row["started_at"]
    assert json.loads(row["spec"])["seed"] == 42
    # The final test loss is the last point of the test curve.
    c = curves[(curves.run_id == outs[0].run_id) & (curves.split == "test")].sort_values("epoch")
    assert row["final_test_loss"] == c["value"].iloc[-1]
    # Our own readers agree.
    assert len(records.read_runs(tmp_path)) == 2
    assert len(records.read_curves(tmp_path, [outs[0].run_id])) == 9


def test_rerun_skips_force_reruns(tmp_path, monkeypatch) -> None:
    calls = []
    real = execute_mod.train
    monkeypatch.setattr(execute_mod, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = execute(spec(), tmp_path, device="cpu")
    again = execute(spec(), tmp_path, device="cpu")
    assert len(calls) == 1 and again.skipped and again.record["run_id"] == first.run_id
    execute(spec(), tmp_path, device="cpu", force=True)
    assert len(calls) == 2
    assert len(list((tmp_path / "runs").glob("*.parquet"))) == 1


def test_crash_while_writing_leaves_nothing_visible(tmp_path, monkeypatch) -> None:
    def broken(table, where, *a, **k):
        open(where, "wb").write(b"PAR1 half")  # a partial temp file, then the "crash"
        raise OSError("disk full")

    monkeypatch.setattr(records.pq, "write_table", broken)
    with pytest.raises(OSError):
        execute(spec(), tmp_path, device="cpu")
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob(".*tmp"))
    monkeypatch.undo()
    execute(spec(), tmp_path, device="cpu")
    for f in tmp_path.rglob("*.parquet"):
        pq.read_table(f)


def test_failed_run_recorded_then_retried(tmp_path, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(execute_mod, "train", boom)
    out = execute(spec(), tmp_path, device="cpu")
    assert out.record["status"] == "failed" and "CUDA out of memory" in out.record["error"]
    assert not records.is_finished(tmp_path, out.run_id)
    monkeypatch.undo()
    again = execute(spec(), tmp_path, device="cpu")
    assert not again.skipped and again.record["status"] == "completed"


def test_empty_results_dir_reads_empty_frames(tmp_path) -> None:
    assert records.read_runs(tmp_path).empty and list(records.read_runs(tmp_path).columns) == records.RUNS_SCHEMA.names


def _three_runs(tmp_path) -> list[str]:
    return [execute(spec(seed=s), tmp_path, device="cpu").run_id for s in (42, 43, 44)]


def test_compact_packs_and_readers_see_each_run_once(tmp_path) -> None:
    ids = _three_runs(tmp_path)
    before_runs, before_curves = records.read_runs(tmp_path), records.read_curves(tmp_path)
    assert records.compact(tmp_path) == 3
    assert not [p for p in (tmp_path / "runs").glob("*.parquet") if records._is_loose(p)]
    assert len(list((tmp_path / "runs").glob("part-*.parquet"))) == 1
    after_runs, after_curves = records.read_runs(tmp_path), records.read_curves(tmp_path)
    pd.testing.assert_frame_equal(before_runs.sort_values("run_id").reset_index(drop=True),
                                  after_runs.sort_values("run_id").reset_index(drop=True))
    assert len(after_curves) == len(before_curves) == 3 * 9
    assert len(pd.read_parquet(tmp_path / "runs")) == 3  # plain pandas reads the packed layout too
    # Lookups and skipping work on packed records.
    assert records.find_run(tmp_path, ids[1])["seed"] == 43 and records.is_finished(tmp_path, ids[1])
    assert execute(spec(seed=43), tmp_path, device="cpu").skipped
    assert records.compact(tmp_path) == 0


def test_forced_rerun_after_compaction_shadows_then_replaces_packed_row(tmp_path) -> None:
    ids = _three_runs(tmp_path)
    records.compact(tmp_path)
    redo = execute(spec(seed=42), tmp_path, device="cpu", force=True)
    runs = records.read_runs(tmp_path)
    assert len(runs) == 3 and runs.set_index("run_id").loc[ids[0], "finished_at"] == redo.record["finished_at"]
    assert len(records.read_curves(tmp_path, [ids[0]])) == 9
    assert records.compact(tmp_path) == 1
    runs = records.read_runs(tmp_path)
    assert len(runs) == 3 and runs.set_index("run_id").loc[ids[0], "finished_at"] == redo.record["finished_at"]
    assert len(pd.read_parquet(tmp_path / "curves")) == 27  # the superseded packed rows are gone


def test_compaction_killed_between_steps_stays_consistent(tmp_path, monkeypatch) -> None:
    _three_runs(tmp_path)
    real_unlink = Path.unlink
    calls = []

    def dying_unlink(self, *a, **k):  # the kill lands after the parts are written, mid-way through cleanup
        if not self.name.startswith("."):  # temp files of the atomic writer do not count
            calls.append(self)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", dying_unlink)
    with pytest.raises(KeyboardInterrupt):
        records.compact(tmp_path)
    monkeypatch.undo()
    assert len(calls) == 2 and not calls[0].exists()  # one loose curves file gone, the rest still there
    assert len(records.read_runs(tmp_path)) == 3 and len(records.read_curves(tmp_path)) == 27
    records.compact(tmp_path)
    assert len(pd.read_parquet(tmp_path / "runs")) == 3 and len(pd.read_parquet(tmp_path / "curves")) == 27


def test_missing_data_propagates_and_writes_nothing(tmp_path, monkeypatch) -> None:
    from problems.datasets.errors import DataMissingError
    from problems.quadratic_deep import QuadraticDeep

    def missing(self):
        raise DataMissingError("train.gz is missing; download it by hand from URL and save it as PATH")

    monkeypatch.setattr(QuadraticDeep, "load_data", missing)
    with pytest.raises(DataMissingError):
        execute(spec(), tmp_path, device="cpu")
    assert not list(tmp_path.rglob("*.parquet"))


def test_lookups_of_a_few_runs_equal_the_full_scans(tmp_path) -> None:
    """find_runs / read_curves(ids) read only the files that hold those runs; they must return what the scans return,
    across packs, a run packed twice (its first pack owns it), a loose record shadowing a packed one, compaction."""
    src = tmp_path / "src"
    ids = [execute(spec(seed=s), src, device="cpu").run_id for s in (42, 43, 44, 45)]
    rows = {r: records.find_run(src, r) for r in ids}
    frame = records.read_curves(src)
    curves = {r: [(int(e), sp, m, v) for e, sp, m, v in frame[frame.run_id == r][["epoch", "split", "metric",
                                                                                   "value"]].itertuples(index=False)]
              for r in ids}
    out = tmp_path / "out"
    records.write_runs(out, [(rows[r], curves[r]) for r in ids[:3]])
    time_shift = {**rows[ids[2]], "wall_time_s": -2.0}
    # a second process packed ids[2] too (written as it would be: before it saw the first pack)
    name = "pack-99991231T000000-ffffffffffff.parquet"
    records.write_atomic(records._curves_table([(ids[2], curves[ids[2]][:3])]), out / "curves" / name)
    records.write_atomic(records._runs_table([time_shift]), out / "runs" / name)
    records.write_run(out, {**rows[ids[0]], "wall_time_s": -1.0}, curves[ids[0]][:5])  # shadows the packed row
    records.write_run(out, rows[ids[3]], curves[ids[3]])

    def check() -> None:
        scan = records.read_table(out, "curves", records.CURVES_SCHEMA)
        for some in ([ids[1]], [ids[0], ids[2]], ids, ids + ["0" * 20]):
            fast = records.read_curves(out, some).sort_values(["run_id", "epoch", "split", "metric"])
            want = scan[scan.run_id.isin(some)].sort_values(["run_id", "epoch", "split", "metric"])
            pd.testing.assert_frame_equal(fast.reset_index(drop=True), want.reset_index(drop=True))
        assert records.find_runs(out, ids + ["0" * 20]) == {r: records.find_run(out, r) for r in ids}

    check()
    assert len(records.read_curves(out, [ids[0]])) == 5 and records.find_run(out, ids[0])["wall_time_s"] == -1.0
    assert records.find_run(out, ids[2])["wall_time_s"] != -2.0
    records.compact(out)
    check()
