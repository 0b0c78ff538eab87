"""valley-report end to end on generated results sets: complete, partial, empty, compared, both curve layouts."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench.analysis.curves import read_curves
from bench.analysis.synthetic import SyntheticConfig, generate
from bench.records import CELLS_SCHEMA, read_runs, write_run
from bench.report import cli

SMALL = SyntheticConfig(n_problems=3, n_optimizers=4, n_schedules=2, n_trials=6, n_seeds=10, epoch_scale=0.04)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    counts = generate(root, SMALL)
    # 3 problems × 4 optimizers × 2 schedules: 6 trials + 10 one-shot + distinct re-runs per stream
    assert counts["cells"] == 3 * 4 * 2 * 4
    assert counts["runs"] >= 3 * 4 * 2 * (6 + 10 + 9)
    return root


def referenced(index: Path) -> set[str]:
    return set(re.findall(r"(?:href|src)='?\"?((?:figures|tables)/[^'\" >]+)", index.read_text()))


def test_synthetic_structure(generated: Path) -> None:
    cells = pq.read_table(generated / "cells", schema=CELLS_SCHEMA).to_pandas()
    tuned = cells[cells["budget"] != "oneshot"]
    assert set(tuned["num_samples"]) == {2, 4, 6}                     # nested budgets: 1/3, 2/3, all trials
    assert all(len(r) == 10 and len(set(r)) == 10 for r in cells["run_ids"])
    large = tuned[tuned["budget"] == "large"].iloc[0]
    small = tuned[(tuned["budget"] == "small") & (tuned["problem"] == large["problem"])
                  & (tuned["optimizer"] == large["optimizer"]) & (tuned["schedule"] == large["schedule"])].iloc[0]
    assert list(small["trial_run_ids"]) == list(large["trial_run_ids"])[:2]
    assert large["run_ids"][0] == large["trial_run_ids"][large["winner_sample"]]
    runs = read_runs(generated).set_index("run_id")
    # the winner has the best final validation metric among the budget's trials (diverged trials last)
    metric = large["metric"]
    t = runs.loc[list(large["trial_run_ids"])]
    valid = t[f"final_valid_{metric}"].where(t["status"] == "completed", -np.inf if metric == "accuracy" else np.inf)
    assert (valid.to_numpy().argmax() if metric == "accuracy" else valid.to_numpy().argmin()) == large["winner_sample"]


def test_report_renders_and_references_every_file(generated: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert cli.main([str(generated), "--out", str(out)]) == 0
    index = out / "index.html"
    html = index.read_text()
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"index.html", "report.md"}
    figs = {f for f in files if f.startswith("figures/")}
    csvs = {f for f in files if f.startswith("tables/")}
    for stem in ("main_constant", "gain", "defaults_vs_tuned", "rankings", "performance_profile",
                 "heatmap_oneshot", "heatmap_oneshot_to_large", "expected_best_of_k", "curves", "cost"):
        assert f"figures/{stem}.png" in figs and f"figures/{stem}.svg" in figs, stem
    for name in ("main_table", "gain", "verdict", "tied_with_best", "competitive", "rankings", "oneshot_vs_tuned",
                 "defaults_vs_tuned", "expected_best_of_k", "performance_profile", "cost_summary", "cost_per_cell"):
        assert f"tables/{name}.csv" in csvs, name
    assert files == figs | csvs and files <= referenced(index)         # every file exists and is linked
    assert html.count("data:image/png;base64,") == len(figs) // 2      # self-contained: PNGs embedded
    assert "no single best optimizer" in html and "Defaults vs tuning" in html
    md = (out / "report.md").read_text()
    assert all(f in md for f in files)
    main = pd.read_csv(out / "tables" / "main_table.csv")
    assert len(main) == 3 * 4 * 2 * 4 and (main["n_seeds"] == 10).all()
    assert "problems with no data" in html                              # 5 of the 8 study problems


def test_partial_results_report_what_is_missing(generated: Path, tmp_path: Path) -> None:
    root = tmp_path / "partial"
    for sub in ("runs", "curves"):
        (root / sub).mkdir(parents=True)
        for f in (generated / sub).glob("*.parquet"):
            (root / sub / f.name).write_bytes(f.read_bytes())
    cells = pq.read_table(generated / "cells", schema=CELLS_SCHEMA).to_pandas()
    drop = (cells["problem"] == "mnist_vae") & (cells["optimizer"] == "sgd") & (cells["budget"] == "large")
    cells = cells[~drop].copy()
    short = cells.index[(cells["budget"] == "oneshot")][0]
    cells.at[short, "run_ids"] = list(cells.at[short, "run_ids"])[:7]    # a cell with 7 of 10 seeds
    (root / "cells").mkdir()
    pq.write_table(__import__("pyarrow").Table.from_pandas(cells, schema=CELLS_SCHEMA, preserve_index=False),
                   root / "cells" / "cells.parquet")
    out = root / "report"
    assert cli.main([str(root), "--diverged", "pad"]) == 0
    html = (out / "index.html").read_text()
    assert "problems with no data: cifar10_3c3d, fmnist_vae, cifar100_allcnnc, svhn_wrn164, tolstoi_char_rnn" in html
    assert "2 of 96 expected cells are missing" in html                 # mnist_vae sgd large, both schedules
    assert "fewer than 10 finished seeds" in html
    assert "epoch-0 values" in html
    missing = pd.read_csv(out / "tables" / "missing_cells.csv")
    assert set(zip(missing["problem"], missing["optimizer"], missing["budget"])) == {("mnist_vae", "sgd", "large")}
    assert (out / "tables" / "short_cells.csv").exists()
    assert referenced(out / "index.html") >= {p.relative_to(out).as_posix() for p in out.rglob("*.csv")}


def test_empty_results_dir_still_reports(tmp_path: Path) -> None:
    assert cli.main([str(tmp_path)]) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "no cells under" in html and "problems with no data" in html
    assert cli.main([str(tmp_path / "absent")]) == 2


def test_compare_with_second_results_set(generated: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate(other, SyntheticConfig(**{**SMALL.__dict__, "seed": 5, "source": "crowded_valley", "n_optimizers": 3}))
    out = tmp_path / "cmp"
    assert cli.main([str(generated), "--out", str(out), "--compare-with", str(other)]) == 0
    html = (out / "index.html").read_text()
    assert "Comparison: synthetic vs crowded_valley" in html
    cmp = pd.read_csv(out / "tables" / "comparison.csv")
    assert len(cmp) == 3 * 3 * 2 * 4                                  # the shared optimizers' cells
    row = cmp.iloc[0]
    assert row["difference"] == pytest.approx(row["a_mean"] - row["b_mean"])
    only = pd.read_csv(out / "tables" / "comparison_unmatched.csv")
    assert set(only["only_in"]) == {"A"} and set(only["optimizer"]) == {"adam"}
    assert "figures/comparison.png" in referenced(out / "index.html")


def test_read_curves_both_layouts(generated: Path, tmp_path: Path) -> None:
    runs = read_runs(generated).head(5)
    ids = list(runs["run_id"])
    multi = read_curves(generated, ids, splits=("test",), epochs=(0, 1))
    assert set(multi["run_id"].astype(str)) == set(ids) and set(multi["split"]) == {"test"}
    assert set(multi["epoch"]) == {0, 1}
    # the same runs written one file per run, as the run loop does
    per_run = tmp_path / "per_run"
    full = read_curves(generated, ids)
    for rid, part in full.groupby("run_id", observed=True):
        rows = list(zip(part["epoch"], part["split"].astype(str), part["metric"].astype(str), part["value"]))
        write_run(per_run, {"run_id": rid, "status": "completed"}, rows)
    single = read_curves(per_run, ids, splits=("test",), epochs=(0, 1))
    key = ["run_id", "epoch", "split", "metric"]
    a = multi.astype({"run_id": str, "split": str, "metric": str}).sort_values(key).reset_index(drop=True)
    b = single.astype({"run_id": str, "split": str, "metric": str}).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert read_curves(generated, []).empty and read_curves(generated, ["nope"]).empty


def test_analysis_imports_no_torch() -> None:
    code = ("import sys, bench.analysis.report, bench.analysis.benchmark, bench.report.cli, bench.import_cv; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'wandb')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
