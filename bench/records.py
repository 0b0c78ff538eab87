"""Result records: two Parquet tables under ``results_dir`` with one explicit schema each.

``runs/<run_id>.parquet`` holds one row per run, ``curves/<run_id>.parquet`` its per-epoch metrics in long format.
Each file is written to a hidden temp file and renamed into place (atomic on POSIX); the curves file is written
first, so a runs file exists only for a finished run and its curves. Readers ignore hidden files, so a kill at any
moment leaves every visible file complete. Records never run anything.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")

RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("source", pa.string()),               # valley | crowded_valley (imported published runs)
    ("problem", pa.string()),
    ("optimizer", pa.string()),
    ("hyperparameters", pa.string()),      # JSON object, the published result files' names
    ("schedule", pa.string()),
    ("schedule_settings", pa.string()),    # JSON object
    ("seed", pa.int64()),
    ("data_order", pa.string()),
    ("problem_settings", pa.string()),     # JSON object (batch_size, num_epochs, weight_decay, size, ...)
    ("num_epochs", pa.int64()),
    ("batch_size", pa.int64()),
    ("status", pa.string()),               # completed | diverged | failed
    ("error", pa.string()),
    ("metric", pa.string()),               # the comparison metric: accuracy (higher is better) | loss
    ("final_train_loss", pa.float64()),
    ("final_valid_loss", pa.float64()),
    ("final_test_loss", pa.float64()),
    ("final_train_accuracy", pa.float64()),
    ("final_valid_accuracy", pa.float64()),
    ("final_test_accuracy", pa.float64()),
    ("epochs_completed", pa.int64()),      # training epochs run (N for a completed run)
    ("best_valid_epoch", pa.int64()),
    ("best_valid_test_metric", pa.float64()),
    ("wall_time_s", pa.float64()),
    ("steps", pa.int64()),
    ("grad_evals", pa.float64()),
    ("num_parameters", pa.int64()),
    ("device", pa.string()),
    ("versions", pa.string()),             # JSON object: python, torch, numpy, valley protocol
    ("git_commit", pa.string()),
    ("started_at", TS),
    ("finished_at", TS),
    ("protocol_version", pa.string()),
    ("spec", pa.string()),                 # the canonical run spec (JSON) whose hash is run_id
])

CURVES_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("epoch", pa.int32()),
    ("split", pa.string()),                # train | valid | test
    ("metric", pa.string()),               # loss | accuracy
    ("value", pa.float64()),
])

CELLS_SCHEMA = pa.schema([
    # One row per (problem, optimizer, schedule, budget) cell of a study: the tuning outcome and its 10 seeds.
    ("cell_id", pa.string()),              # hash of the cell's identity (problem settings, optimizer, schedule, budget, selection)
    ("source", pa.string()),               # valley | crowded_valley
    ("problem", pa.string()),
    ("optimizer", pa.string()),
    ("schedule", pa.string()),
    ("budget", pa.string()),               # oneshot | small | medium | large
    ("num_samples", pa.int64()),           # random-search samples behind the winner (0 for oneshot)
    ("selection", pa.string()),            # final | best (validation metric at the final / best epoch)
    ("metric", pa.string()),               # accuracy | loss
    ("winner_sample", pa.int64()),         # index in the study's sample stream (-1 for oneshot)
    ("winner_hyperparameters", pa.string()),  # JSON object
    ("trial_run_ids", pa.list_(pa.string())),  # the tuning runs (seed 42), sample order
    ("run_ids", pa.list_(pa.string())),    # the winner's runs, seeds 42..51
    ("seeds", pa.list_(pa.int64())),
    ("n_seeds", pa.int64()),
    ("n_diverged", pa.int64()),
    ("test_mean", pa.float64()),           # mean over the seeds of the final-epoch test metric
    ("test_std", pa.float64()),            # population std (ddof=0), as DeepOBS
    ("status", pa.string()),               # complete | partial
    ("updated_at", TS),
])

FINISHED = ("completed", "diverged")


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_run(results_dir: str | Path, run: Mapping[str, Any], curves: Iterable[tuple[int, str, str, float]]) -> Path:
    """Write one run's curves, then its runs row; return the runs file."""
    root = Path(results_dir)
    run_id = run["run_id"]
    rows = list(curves)
    curves_table = pa.table({
        "run_id": [run_id] * len(rows),
        "epoch": [r[0] for r in rows],
        "split": [r[1] for r in rows],
        "metric": [r[2] for r in rows],
        "value": [float(r[3]) for r in rows],
    }, schema=CURVES_SCHEMA)
    runs_table = pa.Table.from_pylist([{k: run.get(k) for k in RUNS_SCHEMA.names}], schema=RUNS_SCHEMA)
    _write_atomic(curves_table, root / "curves" / f"{run_id}.parquet")
    runs_path = root / "runs" / f"{run_id}.parquet"
    _write_atomic(runs_table, runs_path)
    return runs_path


def find_run(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    path = Path(results_dir) / "runs" / f"{run_id}.parquet"
    if not path.exists():
        return None
    return pq.read_table(path, schema=RUNS_SCHEMA).to_pylist()[0]


def is_finished(results_dir: str | Path, run_id: str) -> bool:
    """True when the run has a record that a re-run must not redo (completed or diverged; failed runs are retried)."""
    rec = find_run(results_dir, run_id)
    return rec is not None and rec["status"] in FINISHED


def _read(results_dir: str | Path, table: str, schema: pa.Schema, filter_expr: Any = None) -> pd.DataFrame:
    path = Path(results_dir) / table
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return schema.empty_table().to_pandas()
    dataset = ds.dataset(path, schema=schema, format="parquet")
    return dataset.to_table(filter=filter_expr).to_pandas()


def read_runs(results_dir: str | Path) -> pd.DataFrame:
    """Every run record (one explicit schema, so columns never go missing)."""
    return _read(results_dir, "runs", RUNS_SCHEMA)


def read_curves(results_dir: str | Path, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    filt = None if run_ids is None else ds.field("run_id").isin(list(run_ids))
    return _read(results_dir, "curves", CURVES_SCHEMA, filt)
