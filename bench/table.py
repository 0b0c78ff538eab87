"""``valley-table [results_dir]``: mean ± std (ddof=0, as DeepOBS) of the final test metric over seeds.

With tuning cells (``budget=...`` sweeps) it prints the study's table: optimizer × schedule / budget per problem, from
the cells table. Without cells it groups the runs table by problem × optimizer × hyperparameters × schedule. The full
analysis is ``valley-report``.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.records import CELLS_SCHEMA, read_runs, read_table

BUDGET_ORDER = ("oneshot", "small", "medium", "large")
OPTIMIZER_ORDER = ("sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "ndadam", "adabound", "amsbound",
                   "adagrad", "adadelta", "rmsprop", "lookahead_momentum", "lookahead_radam", "adabelief")  # §2


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs[runs["status"].isin(["completed", "diverged"])].copy()
    runs["final_test"] = runs["final_test_accuracy"].where(runs["metric"] == "accuracy", runs["final_test_loss"])
    keys = ["problem", "metric", "optimizer", "hyperparameters", "schedule"]
    grouped = runs.groupby(keys, dropna=False)
    out = grouped["final_test"].agg(mean="mean", std=lambda s: s.std(ddof=0), seeds="count").reset_index()
    out["diverged"] = grouped["status"].agg(lambda s: int((s == "diverged").sum())).values
    return out.sort_values(["problem", "schedule", "mean"]).reset_index(drop=True)


def cell_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Wide table per problem: rows optimizer, columns (schedule, budget), values "mean ± std" (n seeds if < 10)."""
    cells = cells.copy()
    cells["text"] = [f"{m:.4g} ± {s:.2g}" + ("" if n >= 10 else f" (n={n})") if pd.notna(m) else "—"
                     for m, s, n in zip(cells.test_mean, cells.test_std, cells.n_seeds)]
    order = {b: i for i, b in enumerate(BUDGET_ORDER)}
    cells["budget_order"] = cells.budget.map(lambda b: order.get(b.split("+")[0], 9))
    cells = cells.sort_values(["schedule", "budget_order"])
    wide = cells.pivot_table(index="optimizer", columns=["schedule", "budget"], values="text", aggfunc="first",
                             sort=False)
    rank = {name: i for i, name in enumerate(OPTIMIZER_ORDER)}
    return wide.loc[sorted(wide.index, key=lambda o: (rank.get(o, len(rank)), o))]


def print_cells(cells: pd.DataFrame, console: Console) -> None:
    for (problem, metric), part in cells.groupby(["problem", "metric"]):
        arrow = "higher is better" if metric == "accuracy" else "lower is better"
        wide = cell_table(part)
        t = Table(title=f"{problem}: final test {metric} ({arrow}), mean ± std over 10 seeds, per schedule / budget",
                  title_justify="left")
        t.add_column("optimizer")
        for schedule, budget in wide.columns:
            t.add_column(f"{schedule}\n{budget}", justify="right")
        for optimizer, row in wide.iterrows():
            t.add_row(optimizer, *[v if isinstance(v, str) else "—" for v in row.values])
        console.print(t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default="results")
    args = parser.parse_args(argv)
    runs = read_runs(args.results_dir)
    if runs.empty:
        print(f"valley-table: error: no run records under {args.results_dir}/runs", file=sys.stderr)
        sys.exit(2)
    console = Console(width=max(Console().width, 240))
    cells = read_table(args.results_dir, "cells", CELLS_SCHEMA)
    if not cells.empty:
        print_cells(cells, console)
        console.print(f"{len(cells)} cells, {len(runs)} run records in {args.results_dir} (runs/, curves/, cells/)")
        return
    table = summarize(runs)
    for (problem, metric), part in table.groupby(["problem", "metric"]):
        arrow = "higher is better" if metric == "accuracy" else "lower is better"
        t = Table(title=f"{problem}: final test {metric} ({arrow}), mean ± std over seeds", title_justify="left")
        for col in ("optimizer", "schedule", "hyperparameters", "test " + metric, "seeds", "diverged"):
            t.add_column(col, justify="right" if col in ("seeds", "diverged") or col.startswith("test") else "left")
        for row in part.itertuples():
            t.add_row(row.optimizer, row.schedule, row.hyperparameters, f"{row.mean:.4f} ± {row.std:.4f}",
                      str(row.seeds), str(row.diverged))
        console.print(t)
    console.print(f"{len(runs)} run records in {args.results_dir}/runs (+ curves/); "
                  f"pandas.read_parquet('{args.results_dir}/runs') reads them")


if __name__ == "__main__":
    main()
