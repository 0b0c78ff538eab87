"""Result records: Parquet tables under ``results_dir`` with one explicit schema each.

A run writes ``runs/<run_id>.parquet`` (one row) and ``curves/<run_id>.parquet`` (its per-epoch metrics in long
format): the *loose* layout. Each file is written to a hidden temp file and renamed into place (atomic on POSIX);
the curves file is written first, so a runs file exists only for a finished run and its curves. Readers ignore
hidden files, so a kill at any moment leaves every visible file complete.

Tens of thousands of one-row files are slow to read, so ``compact`` packs loose records into multi-row
``part-*.parquet`` files. A loose record always supersedes packed rows of the same run_id (a ``force`` re-run after
compaction), and compaction removes superseded packed rows, so readers see each run exactly once at every moment,
even when compaction is killed half-way. Records never run anything.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
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
    # How the run was trained (never part of run_id; null in records written before these columns existed):
    ("engine", pa.string()),               # single | cohort | cohort_fast
    ("precision", pa.string()),            # fp32 | tf32 | bf16 (also in the spec: it changes the maths)
    ("deterministic", pa.bool_()),         # torch deterministic algorithms (CUDA); the CPU always is
    ("resumes", pa.int64()),               # times the run continued from a mid-run checkpoint
    ("params_file", pa.string()),          # saved parameters (save_params), relative to results_dir
    ("plugins", pa.string()),              # JSON: kind -> {name, sha256, path | entry_point} of plugins used
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
    ("tuner", pa.string()),                # oneshot | <sampler>+<pruner> (study+none = the study's random search)
    ("pruned_trials", pa.int64()),         # trials stopped early by a pruner (beyond the study)
    ("saved_epochs", pa.int64()),          # training epochs the pruner saved
])

FINISHED = ("completed", "diverged")


def write_atomic(table: pa.Table, path: Path) -> None:
    write_file_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_file_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` to a hidden file next to ``path``, fsync, rename: readers see the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _curves_table(items: Iterable[tuple[str, Iterable[tuple[int, str, str, float]]]]) -> pa.Table:
    ids, epochs, splits, metrics, values = [], [], [], [], []
    for run_id, curves in items:
        for epoch, split, metric, value in curves:
            ids.append(run_id)
            epochs.append(epoch)
            splits.append(split)
            metrics.append(metric)
            values.append(float(value))
    return pa.table({"run_id": pa.array(ids, pa.string()), "epoch": pa.array(epochs, pa.int32()),
                     "split": pa.array(splits, pa.string()), "metric": pa.array(metrics, pa.string()),
                     "value": pa.array(values, pa.float64())}, schema=CURVES_SCHEMA)


def _runs_table(runs: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{k: run.get(k) for k in RUNS_SCHEMA.names} for run in runs], schema=RUNS_SCHEMA)


def write_run(results_dir: str | Path, run: Mapping[str, Any], curves: Iterable[tuple[int, str, str, float]]) -> Path:
    """Write one run's curves, then its runs row (loose files); return the runs file."""
    root = Path(results_dir)
    run_id = run["run_id"]
    write_atomic(_curves_table([(run_id, curves)]), root / "curves" / f"{run_id}.parquet")
    runs_path = root / "runs" / f"{run_id}.parquet"
    write_atomic(_runs_table([run]), runs_path)
    return runs_path


def write_runs(results_dir: str | Path,
               items: list[tuple[Mapping[str, Any], Iterable[tuple[int, str, str, float]]]]) -> list[Path]:
    """Write many finished runs at once: one packed curves file, then one packed runs file (a cohort's records).

    Two small Parquet files per run cap a process at ~1,300 runs/s; one pack per batch does not. The guarantees
    stay those of loose files: the curves pack is renamed into place before the runs pack, so a visible runs row
    always has its curves, and a kill leaves no partial visible file. A run that already has a record (a retried
    failure, ``force``) is written loose instead, because a loose record shadows packed rows of its run_id; a pack
    therefore only ever holds runs that had no record when it was written. Returns the files written.
    """
    root = Path(results_dir)
    if len(items) <= 1:
        return [write_run(root, run, curves) for run, curves in items]
    recorded = find_runs(root, (run["run_id"] for run, _ in items))
    fresh, superseding = [], []
    for run, curves in items:
        (superseding if run["run_id"] in recorded else fresh).append((run, curves))
    paths = [write_run(root, run, curves) for run, curves in superseding]
    if len(fresh) == 1:
        paths.append(write_run(root, *fresh[0]))
    elif fresh:
        name = f"pack-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
        write_atomic(_curves_table((run["run_id"], curves) for run, curves in fresh), root / "curves" / name)
        write_atomic(_runs_table(run for run, _ in fresh), root / "runs" / name)
        paths.append(root / "runs" / name)
    return paths


LOOSE_NAME = re.compile(r"[0-9a-f]{20}")  # <run_id>.parquet (or <cell_id>.parquet); packed files have other names


def _is_loose(path: Path) -> bool:
    return LOOSE_NAME.fullmatch(path.stem) is not None


def _visible(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))


def _packed(directory: Path) -> list[Path]:
    return [p for p in _visible(directory) if not _is_loose(p)]


@lru_cache(maxsize=64)
def _packed_index_cached(directory: str, fingerprint: tuple[tuple[str, int, int], ...]
                         ) -> tuple[dict[str, str], frozenset[str]]:
    index: dict[str, str] = {}
    duplicated: set[str] = set()
    for name, _, _ in fingerprint:  # sorted by name: the first packed file holding a run owns it
        for run_id in pq.read_table(Path(directory) / name, columns=["run_id"]).column("run_id").to_pylist():
            if index.setdefault(run_id, name) != name:
                duplicated.add(run_id)
    return index, frozenset(duplicated)


def _packed_owners(directory: Path) -> tuple[dict[str, str], frozenset[str]]:
    """run_id → the packed file that owns it, and the run_ids packed more than once; cached until the files change.

    Two processes that train the same run at the same moment (two machines on one study) can each pack it; readers
    then see only the owner's copy (the first file by name), so every run is read exactly once.
    """
    files = _packed(directory) if directory.is_dir() else []
    fingerprint = tuple((p.name, st.st_mtime_ns, st.st_size) for p, st in ((p, p.stat()) for p in files))
    return _packed_index_cached(str(directory), fingerprint) if files else ({}, frozenset())


def _packed_index(directory: Path) -> dict[str, str]:
    """run_id → packed file name (its owner), cached until the set of packed files changes."""
    return _packed_owners(directory)[0]


def find_run(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """The runs row of ``run_id`` (loose file first, then packed files), or None."""
    return find_runs(results_dir, [run_id]).get(run_id)


def _where(directory: Path, owners: Mapping[str, str], run_ids: Iterable[str]
           ) -> tuple[list[Path], dict[str, list[str]]]:
    """Where the visible records of ``run_ids`` are in ``directory`` (runs/ or curves/): their loose files, and the
    rest by owning pack name (runs without a record are left out)."""
    loose: list[Path] = []
    by_pack: dict[str, list[str]] = {}
    for run_id in dict.fromkeys(run_ids):
        path = directory / f"{run_id}.parquet"
        if path.exists():
            loose.append(path)
        elif run_id in owners:
            by_pack.setdefault(owners[run_id], []).append(run_id)
    return loose, by_pack


def find_runs(results_dir: str | Path, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The runs rows of many run_ids at once (those recorded): each owning pack is read once, not once per run."""
    directory = Path(results_dir) / "runs"
    if not directory.is_dir():
        return {}
    loose, by_pack = _where(directory, _packed_index(directory), run_ids)
    found = {path.stem: pq.read_table(path, schema=RUNS_SCHEMA).to_pylist()[0] for path in loose}
    for name, ids in by_pack.items():
        for row in pq.read_table(directory / name, schema=RUNS_SCHEMA, filters=[("run_id", "in", ids)]).to_pylist():
            found.setdefault(row["run_id"], row)
    return found


def is_finished(results_dir: str | Path, run_id: str) -> bool:
    """True when the run has a record that a re-run must not redo (completed or diverged; failed runs are retried)."""
    rec = find_run(results_dir, run_id)
    return rec is not None and rec["status"] in FINISHED


def read_table(results_dir: str | Path, table: str, schema: pa.Schema, filter_expr: Any = None,
               columns: list[str] | None = None) -> pd.DataFrame:
    """One table (runs, curves, cells) as pandas, each run once: loose records shadow packed rows of the same run_id.

    Only the packed/loose rule is handled here; ``filter_expr`` and ``columns`` are pushed down to pyarrow.
    """
    directory = Path(results_dir) / table
    files = _visible(directory) if directory.is_dir() else []
    empty = schema.empty_table() if columns is None else schema.empty_table().select(columns)
    if not files:
        return empty.to_pandas()
    loose = [p for p in files if _is_loose(p)]
    packed = [p for p in files if not _is_loose(p)]
    key = "cell_id" if "cell_id" in schema.names else "run_id"  # a loose file is named after its key
    parts = []
    if packed:
        expr = filter_expr
        if loose:
            shadowed = ds.field(key).isin([p.stem for p in loose])
            expr = ~shadowed if expr is None else (expr & ~shadowed)
        owners, duplicated = _packed_owners(Path(results_dir) / "runs") if key == "run_id" else ({}, frozenset())
        if not duplicated:
            parts.append(ds.dataset(packed, schema=schema, format="parquet").to_table(columns=columns, filter=expr))
        else:  # a run packed twice: each file keeps only the runs it owns
            for path in packed:
                foreign = pa.array([r for r in duplicated if owners[r] != path.name], pa.string())
                file_expr = expr if not len(foreign) else (
                    ~ds.field(key).isin(foreign) if expr is None else (expr & ~ds.field(key).isin(foreign)))
                parts.append(ds.dataset([path], schema=schema, format="parquet").to_table(columns=columns,
                                                                                           filter=file_expr))
    if loose:
        parts.append(ds.dataset(loose, schema=schema, format="parquet").to_table(columns=columns, filter=filter_expr))
    return pa.concat_tables(parts).to_pandas()


def read_runs(results_dir: str | Path) -> pd.DataFrame:
    """Every run record, each run once (one explicit schema, so columns never go missing)."""
    return read_table(results_dir, "runs", RUNS_SCHEMA)


def read_curves(results_dir: str | Path, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    if run_ids is not None:
        run_ids = list(run_ids)
        owned = _curves_of_owners(Path(results_dir), run_ids)
        if owned is not None:
            return owned
    filt = None if run_ids is None else ds.field("run_id").isin(run_ids)
    return read_table(results_dir, "curves", CURVES_SCHEMA, filt)


def _curves_of_owners(root: Path, run_ids: list[str], most: int = 256) -> pd.DataFrame | None:
    """Curves of a few runs from only the files that hold them (a run's loose file, else the pack named like its
    runs pack), the rows :func:`read_table` would return; None when that cannot be decided (then scan everything).

    Scanning every pack for one run costs ~0.15 s at the P1 row's 6,376 runs, and planning a sweep reads the curves
    of every diverged run."""
    curves_dir = root / "curves"
    if len(run_ids) > most or not curves_dir.is_dir():
        return None
    owners = _packed_index(root / "runs") if (root / "runs").is_dir() else {}
    loose, by_pack = _where(curves_dir, owners, run_ids)  # no runs row: no visible curves (they land first)
    if any(not (curves_dir / name).exists() for name in by_pack):
        return None  # compacted under another name
    parts = [ds.dataset(loose, schema=CURVES_SCHEMA, format="parquet").to_table()] if loose else []
    for name, ids in by_pack.items():
        parts.append(ds.dataset([curves_dir / name], schema=CURVES_SCHEMA, format="parquet").to_table(
            filter=ds.field("run_id").isin(ids)))
    return (pa.concat_tables(parts) if parts else CURVES_SCHEMA.empty_table()).to_pandas()


def compact(results_dir: str | Path) -> int:
    """Pack every finished loose record into one new part per table; return how many runs were packed.

    Order keeps readers consistent if killed at any point: (1) packed rows that the loose records supersede are
    dropped from their parts, (2) the new curves part, then the new runs part are written, (3) the loose curves,
    then the loose runs files are removed. Between the steps a loose record still shadows its packed copy.
    Safe while runs are being written: only the loose files listed at the start are touched.
    """
    root = Path(results_dir)
    runs_dir, curves_dir = root / "runs", root / "curves"
    loose_runs = [p for p in _visible(runs_dir) if _is_loose(p)] if runs_dir.is_dir() else []
    if not loose_runs:
        return 0
    ids = [p.stem for p in loose_runs]
    loose_curves = [curves_dir / f"{i}.parquet" for i in ids if (curves_dir / f"{i}.parquet").exists()]
    new_runs = ds.dataset(loose_runs, schema=RUNS_SCHEMA, format="parquet").to_table()
    new_curves = (ds.dataset(loose_curves, schema=CURVES_SCHEMA, format="parquet").to_table()
                  if loose_curves else CURVES_SCHEMA.empty_table())
    # A run whose loose curves are already gone (a killed earlier compaction) keeps its packed curves.
    shadowed = {curves_dir: pa.array([p.stem for p in loose_curves], pa.string()), runs_dir: pa.array(ids)}
    for directory, schema in ((curves_dir, CURVES_SCHEMA), (runs_dir, RUNS_SCHEMA)):
        id_set = shadowed[directory]
        for part in _packed(directory) if directory.is_dir() and len(id_set) else []:
            table = pq.read_table(part, schema=schema)
            keep = pa.compute.invert(pa.compute.is_in(table.column("run_id"), value_set=id_set))
            if not pa.compute.all(keep).as_py():
                write_atomic(table.filter(keep), part)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    if new_curves.num_rows:
        write_atomic(new_curves, curves_dir / name)
    write_atomic(new_runs, runs_dir / name)
    for path in loose_curves + loose_runs:
        path.unlink(missing_ok=True)
    return len(ids)


def compact_main(argv: list[str] | None = None) -> None:
    """``valley-compact [results_dir]``: pack loose per-run records into multi-row Parquet parts."""
    import argparse

    parser = argparse.ArgumentParser(description=compact_main.__doc__)
    parser.add_argument("results_dir", nargs="?", default="results")
    args = parser.parse_args(argv)
    print(f"packed {compact(args.results_dir)} runs under {args.results_dir}/runs and curves")
