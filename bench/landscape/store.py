"""Landscape results as Parquet under ``results_dir/landscape/`` (pyarrow and pandas only: no torch).

One analysis (a 1-D or 2-D slice, a trajectory's PCA plane, a sharpness series, an interpolation) has a content
id (``analysis_id``: the hash of its kind, its runs and its settings) and writes, each to a hidden temp file renamed
into place, its data first and then its row in ``analyses`` — so an ``analyses`` row means a complete analysis, and
re-running the same analysis finds it (``--force`` recomputes)::

    landscape/analyses/<id>.parquet      one row: what, of which run(s), how, cost, centre values vs the record
    landscape/grids/<id>.parquet         long format: x, y (NaN on 1-D), split (train|test), metric, value
    landscape/trajectories/<id>.parquet  the snapshots projected on the PCA plane: epoch, x, y
    landscape/sharpness/<id>.parquet     per snapshot: λ_max, λ_min, the top-k, residual, iterations, seconds

``pandas.read_parquet("results/landscape/grids")`` reads every grid; :func:`read` reads a table with its explicit
schema (columns never go missing).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from bench.records import TS, write_atomic

ROOT = "landscape"
KINDS = ("slice1d", "slice2d", "trajectory", "sharpness", "interpolation")

ANALYSES_SCHEMA = pa.schema([
    ("analysis_id", pa.string()),
    ("kind", pa.string()),                  # slice1d | slice2d | trajectory | sharpness | interpolation
    ("created_at", TS),
    ("run_id", pa.string()),                # the run (interpolation: the α = 0 end)
    ("other_run_id", pa.string()),          # interpolation: the α = 1 end
    ("problem", pa.string()),
    ("optimizer", pa.string()),
    ("other_optimizer", pa.string()),
    ("schedule", pa.string()),
    ("seed", pa.int64()),
    ("budget", pa.string()),                # the budgets of the cells listing the run (comma-separated), or null
    ("label", pa.string()),                 # display label of the run (optimizer, budget, seed)
    ("other_label", pa.string()),
    ("hyperparameters", pa.string()),       # JSON
    ("settings", pa.string()),              # JSON: every setting of the analysis (its id hashes them)
    ("normalisation", pa.string()),         # filter | layer | unit | pca (trajectory plane) | none (interpolation)
    ("one_d", pa.string()),                 # zero | filter: what the directions do with 1-D tensors (biases, BN)
    ("direction_seed", pa.int64()),
    ("grid_points", pa.int64()),            # per axis
    ("span", pa.float64()),
    ("splits", pa.string()),                # comma-separated
    ("rows_train", pa.int64()),             # evaluated rows per split
    ("rows_test", pa.int64()),
    ("batching", pa.string()),              # vmap (points per pass) | loop
    ("device", pa.string()),
    ("points", pa.int64()),                 # parameter vectors evaluated (grids) / Hessian-vector products (sharpness)
    ("seconds", pa.float64()),
    ("points_per_s", pa.float64()),
    ("explained_variance", pa.list_(pa.float64())),  # trajectory: the PCA components' variance ratios
    ("center_train_loss", pa.float64()),    # the grid's value at the run's final point
    ("center_test_loss", pa.float64()),
    ("record_train_loss", pa.float64()),    # the run record's final_{train,test}_loss, for comparison
    ("record_test_loss", pa.float64()),
    ("params_origin", pa.string()),         # run (saved while training) | retrain (valley-landscape re-trained it)
    ("params_matches_record", pa.bool_()),  # retrain: the re-trained curves equal the recorded ones
    ("snapshots", pa.int64()),              # snapshots used (trajectory, sharpness)
    ("notes", pa.string()),
    ("versions", pa.string()),              # JSON: torch, numpy
])

GRIDS_SCHEMA = pa.schema([
    ("analysis_id", pa.string()),
    ("x", pa.float64()),
    ("y", pa.float64()),                    # NaN for 1-D slices and interpolations
    ("split", pa.string()),
    ("metric", pa.string()),                # loss | accuracy
    ("value", pa.float64()),
])

TRAJECTORIES_SCHEMA = pa.schema([
    ("analysis_id", pa.string()),
    ("epoch", pa.int64()),
    ("x", pa.float64()),                    # (θ_epoch − θ_final) · u_1
    ("y", pa.float64()),                    # (θ_epoch − θ_final) · u_2
    ("residual", pa.float64()),             # ‖θ_epoch − θ_final‖ left outside the plane
])

SHARPNESS_SCHEMA = pa.schema([
    ("analysis_id", pa.string()),
    ("run_id", pa.string()),
    ("epoch", pa.int64()),
    ("lambda_max", pa.float64()),
    ("lambda_min", pa.float64()),           # Lanczos only (null for power iteration)
    ("top", pa.list_(pa.float64())),        # the k largest eigenvalue estimates
    ("residual", pa.float64()),             # relative residual of the top estimate
    ("iterations", pa.int64()),             # Hessian-vector products
    ("seconds", pa.float64()),
    ("method", pa.string()),                # lanczos | power | full (eigvalsh of the full Hessian)
])

TABLES = {"analyses": ANALYSES_SCHEMA, "grids": GRIDS_SCHEMA, "trajectories": TRAJECTORIES_SCHEMA,
          "sharpness": SHARPNESS_SCHEMA}


def analysis_id(kind: str, run_ids: Iterable[str], settings: Mapping[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "runs": list(run_ids), "settings": dict(settings)}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def root(results_dir: str | Path) -> Path:
    return Path(results_dir) / ROOT


def path(results_dir: str | Path, table: str, aid: str) -> Path:
    return root(results_dir) / table / f"{aid}.parquet"


def exists(results_dir: str | Path, aid: str) -> bool:
    return path(results_dir, "analyses", aid).exists()


def _table(rows: list[Mapping[str, Any]] | pd.DataFrame, schema: pa.Schema) -> pa.Table:
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


def write(results_dir: str | Path, meta: Mapping[str, Any], **data: list[Mapping[str, Any]] | pd.DataFrame) -> Path:
    """Write an analysis: its data tables (``grids=``, ``trajectories=``, ``sharpness=``), then its row."""
    aid = meta["analysis_id"]
    for table, rows in data.items():
        if rows is None:
            continue
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        frame = frame.assign(analysis_id=aid)
        write_atomic(_table(frame, TABLES[table]), path(results_dir, table, aid))
    out = path(results_dir, "analyses", aid)
    write_atomic(_table([dict(meta)], ANALYSES_SCHEMA), out)
    return out


def read(results_dir: str | Path, table: str, analysis_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """One table (every analysis, or the given ones) with its explicit schema."""
    schema = TABLES[table]
    directory = root(results_dir) / table
    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_"))) \
        if directory.is_dir() else []
    if analysis_ids is not None:
        wanted = set(analysis_ids)
        files = [p for p in files if p.stem in wanted]
    if not files:
        return schema.empty_table().to_pandas()
    return ds.dataset(files, schema=schema, format="parquet").to_table().to_pandas()


def has_data(results_dir: str | Path) -> bool:
    directory = root(results_dir) / "analyses"
    return directory.is_dir() and any(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
