"""``valley-table [results_dir]``: mean ± std (ddof=0, as DeepOBS) of the final test metric over seeds, per setting.

Groups the runs table by problem × optimizer × hyperparameters × schedule; the full analysis is ``valley-report``.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.records import read_runs


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    runs = runs[runs["status"].isin(["completed", "diverged"])].copy()
    runs["final_test"] = runs["final_test_accuracy"].where(runs["metric"] == "accuracy", runs["final_test_loss"])
    keys = ["problem", "metric", "optimizer", "hyperparameters", "schedule"]
    grouped = runs.groupby(keys, dropna=False)
    out = grouped["final_test"].agg(mean="mean", std=lambda s: s.std(ddof=0), seeds="count").reset_index()
    out["diverged"] = grouped["status"].agg(lambda s: int((s == "diverged").sum())).values
    return out.sort_values(["problem", "schedule", "mean"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", default="results")
    args = parser.parse_args(argv)
    runs = read_runs(args.results_dir)
    if runs.empty:
        print(f"valley-table: error: no run records under {args.results_dir}/runs", file=sys.stderr)
        sys.exit(2)
    table = summarize(runs)
    console = Console(width=160)
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
