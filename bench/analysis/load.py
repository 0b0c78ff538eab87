"""Read a results set (runs + cells, curves only where needed) into the frames every analysis works on.

One number per run: the final-epoch value of the problem's comparison metric (``metric`` column) on test and on
validation. Diverged runs have no meaningful final value (the run loop stops at the first non-finite evaluation and
stores what it measured, §8), so they get one of two documented substitutes:

* ``worst`` (default): the worst outcome of the problem — accuracy 0; for a loss (unbounded above) the worst loss
  observed on the problem: the largest finite final loss of any run of the problem and of any diverged run's
  epoch-0 loss. A diverged run therefore ranks below every run that finished, and the statistics stay finite.
* ``pad``: the study's own convention (DeepOBS ``_abort_routine``): the run's epoch-0 value, read from its curve.

Runs that are ``failed`` (crashed, to be retried) are not results and are left out; the cells that list them count
fewer seeds, which the coverage section reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from bench.analysis.curves import read_curves
from bench.records import CELLS_SCHEMA, FINISHED, RUNS_SCHEMA, read_table

DIVERGED_MODES = ("worst", "pad")
CELL_KEY = ["problem", "optimizer", "schedule", "budget"]
RUN_COLUMNS = [
    "run_id", "source", "problem", "optimizer", "schedule", "seed", "status", "metric",
    "final_valid_loss", "final_test_loss", "final_valid_accuracy", "final_test_accuracy",
    "num_epochs", "epochs_completed", "wall_time_s", "steps", "grad_evals",
]
CELL_COLUMNS = [
    "cell_id", "source", "problem", "optimizer", "schedule", "budget", "num_samples", "selection", "metric",
    "winner_sample", "winner_hyperparameters", "trial_run_ids", "run_ids", "status", "updated_at",
]
SOURCE_PREFERENCE = ("valley",)


@dataclass
class Results:
    """A loaded results set.

    runs:   one row per finished run: identity, ``diverged``, ``test``/``valid`` (final metric, substitute applied),
            cost columns.
    cells:  one row per (problem, optimizer, schedule, budget): the cells table's row plus seed statistics
            recomputed from ``seeds`` (n_seeds, n_diverged, test_mean, test_std (ddof=0), valid_mean).
    seeds:  one row per (cell, listed winner run) found in ``runs``.
    trials: one row per (tuned cell, tuning run) found in ``runs``; ``position`` = index in sample order.
    notes:  human-readable remarks on what was substituted, dropped or missing.
    """

    results_dir: Path
    source: str | None
    diverged_mode: str
    runs: pd.DataFrame
    cells: pd.DataFrame
    seeds: pd.DataFrame
    trials: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    missing_run_ids: int = 0

    @property
    def empty(self) -> bool:
        return self.cells.empty


def _read_table(root: Path, schema: pa.Schema, columns: list[str], source: str | None) -> pd.DataFrame:
    """records.read_table: loose per-run records shadow packed rows of the same run (each run read once)."""
    filt = None if source is None else ds.field("source") == source
    return read_table(root.parent, root.name, schema, filt, columns)


def _sources(root: Path) -> list[str]:
    sources: set[str] = set()
    for table, schema in (("cells", CELLS_SCHEMA), ("runs", RUNS_SCHEMA)):
        path = root / table
        if path.is_dir() and any(path.glob("*.parquet")):
            col = ds.dataset(path, schema=schema, format="parquet").to_table(columns=["source"]).column("source")
            sources |= {s for s in col.unique().to_pylist() if s is not None}
    return sorted(sources)


def choose_source(root: Path, source: str | None, notes: list[str]) -> str | None:
    """The source to analyse: the one asked for, or the only one present, or ``valley`` before the others."""
    if source is not None:
        return source
    found = _sources(root)
    if len(found) <= 1:
        return found[0] if found else None
    pick = next((s for s in SOURCE_PREFERENCE if s in found), found[0])
    notes.append(f"results dir holds several sources ({', '.join(found)}); this report covers '{pick}' "
                 f"(choose another with --source)")
    return pick


def _final_values(runs: pd.DataFrame) -> pd.DataFrame:
    acc = runs["metric"] == "accuracy"
    runs["test"] = runs["final_test_accuracy"].where(acc, runs["final_test_loss"]).astype(float)
    runs["valid"] = runs["final_valid_accuracy"].where(acc, runs["final_valid_loss"]).astype(float)
    finite = np.isfinite(runs["test"].to_numpy()) & np.isfinite(runs["valid"].to_numpy())
    runs["diverged"] = (runs["status"] == "diverged") | ~finite
    return runs


def _epoch0(results_dir: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Epoch-0 valid/test values of the problem's metric for the given runs (index run_id, columns valid0/test0)."""
    curves = read_curves(results_dir, runs["run_id"], splits=("valid", "test"), epochs=(0,))
    if curves.empty:
        return pd.DataFrame(columns=["valid0", "test0"], dtype=float)
    metric = runs.set_index("run_id")["metric"]
    curves = curves[curves["metric"].astype(str).to_numpy() == metric.reindex(curves["run_id"].astype(str)).to_numpy()]
    wide = curves.pivot_table(index="run_id", columns="split", values="value", aggfunc="first", observed=True)
    wide.index = wide.index.astype(str)
    return wide.rename(columns={"valid": "valid0", "test": "test0"}).reindex(columns=["valid0", "test0"])


def _substitute(results_dir: Path, runs: pd.DataFrame, mode: str, notes: list[str]) -> pd.DataFrame:
    div = runs["diverged"].to_numpy()
    if not div.any():
        return runs
    bad = runs[div]
    ok = runs[~div]
    e0 = _epoch0(results_dir, bad).reindex(bad["run_id"])
    for split in ("valid", "test"):
        epoch0 = pd.Series(e0[f"{split}0"].to_numpy(dtype=float), index=bad.index)
        worst_loss = pd.concat([ok.groupby("problem", observed=True)[split].max(),
                                epoch0.groupby(bad["problem"]).max()], axis=1).max(axis=1)
        worst = pd.Series(np.where(bad["metric"] == "accuracy", 0.0,
                                   bad["problem"].map(worst_loss).to_numpy(dtype=float)), index=bad.index)
        sub = worst
        if mode == "pad":
            missing = epoch0.isna()
            if missing.any():
                notes.append(f"{int(missing.sum())} diverged runs have no epoch-0 {split} value in curves/; "
                             f"they count as the worst outcome instead")
            sub = epoch0.where(~missing, worst)
        if sub.isna().any():
            notes.append(f"{int(sub.isna().sum())} diverged runs have no substitute {split} value (no finite value "
                         f"on their problem): left out")
        runs.loc[bad.index, split] = sub
    n = int(div.sum())
    how = "the study's padding with epoch-0 values" if mode == "pad" else "the worst outcome of their problem"
    notes.append(f"{n} diverged runs ({n / len(runs):.1%} of {len(runs)} finished runs) count as {how}")
    return runs


def _dedupe_cells(cells: pd.DataFrame, selection: str, notes: list[str]) -> pd.DataFrame:
    if cells.empty:
        return cells
    tuned = cells["budget"].ne("oneshot")
    if (tuned & cells["selection"].eq(selection)).any():
        other = tuned & cells["selection"].ne(selection)
        if other.any():
            notes.append(f"{int(other.sum())} tuned cells with selection other than '{selection}' left out")
        cells = cells[~other]
    elif tuned.any():
        notes.append(f"no tuned cell uses selection '{selection}'; reporting the tuned cells as they are "
                     f"(selection: {', '.join(sorted(set(cells.loc[tuned, 'selection'].dropna())))})")
    cells = cells.sort_values("updated_at", na_position="first")
    dup = cells.duplicated(CELL_KEY, keep="last")
    if dup.any():
        notes.append(f"{int(dup.sum())} older cells with the same (problem, optimizer, schedule, budget) replaced "
                     f"by the newest one")
    return cells[~dup].reset_index(drop=True)


def _explode(cells: pd.DataFrame, column: str, runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    base = cells[CELL_KEY + [column]].copy()
    base["position"] = base[column].map(lambda v: list(range(len(v))) if v is not None else [])
    long = base.explode([column, "position"]).dropna(subset=[column]).rename(columns={column: "run_id"})
    if long.empty:
        cols = CELL_KEY + ["position", "run_id", "seed", "test", "valid", "diverged"]
        return pd.DataFrame(columns=cols), 0
    long["position"] = long["position"].astype(int)
    merged = long.merge(runs[["run_id", "seed", "test", "valid", "diverged"]], on="run_id", how="left")
    missing = int(merged["test"].isna().sum())
    return merged.dropna(subset=["test"]).reset_index(drop=True), missing


def _cell_stats(cells: pd.DataFrame, seeds: pd.DataFrame) -> pd.DataFrame:
    g = seeds.groupby(CELL_KEY, observed=True)
    agg = g.agg(n_seeds=("test", "size"), n_diverged=("diverged", "sum"), test_mean=("test", "mean"),
                test_std=("test", lambda s: float(np.std(s.to_numpy(), ddof=0))), valid_mean=("valid", "mean"))
    out = cells.drop(columns=["test_mean", "test_std", "n_seeds", "n_diverged"], errors="ignore")
    out = out.merge(agg.reset_index(), on=CELL_KEY, how="left")
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    out["n_diverged"] = out["n_diverged"].fillna(0).astype(int)
    out["n_listed"] = out["run_ids"].map(lambda v: 0 if v is None else len(v))
    out["n_trials"] = out["trial_run_ids"].map(lambda v: 0 if v is None else len(v))
    return out


def load(results_dir: str | Path, *, diverged: str = "worst", source: str | None = None,
         selection: str = "final") -> Results:
    """Load a results set for analysis; never fails on partial data (empty frames and notes instead)."""
    if diverged not in DIVERGED_MODES:
        raise ValueError(f"diverged={diverged!r}: must be one of {', '.join(DIVERGED_MODES)}")
    root = Path(results_dir)
    notes: list[str] = []
    src = choose_source(root, source, notes)
    runs = _read_table(root / "runs", RUNS_SCHEMA, RUN_COLUMNS, src)
    failed = ~runs["status"].isin(FINISHED)
    if failed.any():
        notes.append(f"{int(failed.sum())} runs with status other than completed/diverged (failed) left out")
    runs = runs[~failed].drop_duplicates("run_id", keep="last").reset_index(drop=True)
    runs = _substitute(root, _final_values(runs), diverged, notes)
    cells = _dedupe_cells(_read_table(root / "cells", CELLS_SCHEMA, CELL_COLUMNS, src), selection, notes)
    seeds, miss_s = _explode(cells, "run_ids", runs)
    trials, miss_t = _explode(cells[cells["budget"] != "oneshot"], "trial_run_ids", runs)
    if miss_s or miss_t:
        notes.append(f"cells list {miss_s} seed runs and {miss_t} tuning runs that have no finished run record")
    cells = _cell_stats(cells, seeds)
    if runs.empty:
        notes.append(f"no finished runs under {root}/runs")
    if cells.empty:
        notes.append(f"no cells under {root}/cells (the tuning step writes them): nothing to compare")
    return Results(results_dir=root, source=src, diverged_mode=diverged, runs=runs, cells=cells, seeds=seeds,
                   trials=trials, notes=notes, missing_run_ids=miss_s + miss_t)


def cell_values(results: Results, problem: str, optimizer: str, schedule: str, budget: str) -> np.ndarray:
    """Seed-level final test values of one cell (empty when the cell is missing)."""
    s = results.seeds
    m = (s["problem"] == problem) & (s["optimizer"] == optimizer) & (s["schedule"] == schedule) & (s["budget"] == budget)
    return s.loc[m, "test"].to_numpy(dtype=float)

