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
    assert_page_opens_with_the_summary_and_a_table_of_contents(html)


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


# ------------------------------------------------------------------------------------- reading the page at a glance
def _drawn(fig: "matplotlib.figure.Figure") -> "matplotlib.figure.Figure":  # noqa: F821 - imported lazily
    """The figure, drawn (layout done); a closed figure gets a canvas again."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


def _layout_problems(fig: "matplotlib.figure.Figure") -> list[str]:  # noqa: F821 - imported lazily
    """What makes a figure hard to read on the page: wider than the page's column (the browser shrinks it), text
    below the minimum size, a legend box on any axes or title."""
    import matplotlib.text

    from bench.analysis import render

    renderer = _drawn(fig).canvas.get_renderer()
    problems = []
    width_px = fig.get_figwidth() * matplotlib.rcParams["savefig.dpi"]
    column = getattr(render, "PAGE_WIDTH_PX", 1360)
    if width_px > column + 0.5:
        problems.append(f"{width_px:.0f} px wide > page column {column} px")
    for t in fig.findobj(matplotlib.text.Text):   # 7 pt at 120 dpi, shown 1:1: 11.7 px
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 7.0:
            problems.append(f"text {t.get_text()[:20]!r} at {t.get_fontsize()} pt")
            break
    axes = [ax for ax in fig.get_axes() if ax.get_visible()]
    legends = list(fig.legends) + [ax.get_legend() for ax in axes if ax.get_legend() is not None]
    legends += [lg for sub in _subfigures(fig) for lg in sub.legends]
    titles = [t for f in [fig, *_subfigures(fig)] for t in (f._suptitle, f._supxlabel) if t is not None]
    titles += [ax.title for ax in axes if ax.get_title()]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in axes:
            if box.overlaps(ax.get_window_extent(renderer)):
                problems.append(f"legend over the axes {ax.get_title() or ax.get_label()!r}")
        for t in titles:
            if box.overlaps(t.get_window_extent(renderer)):
                problems.append(f"legend over the title {t.get_text()[:30]!r}")
    return problems


def _subfigures(fig) -> list:  # noqa: ANN001 - a matplotlib Figure
    out, stack = [], list(fig.subfigs)
    while stack:
        sub = stack.pop()
        out.append(sub)
        stack += list(sub.subfigs)
    return out


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Every figure the report writes, by stem, kept open for inspection."""
    from bench.analysis import figures

    figs: dict = {}
    save = figures._save

    def keep(fig, out, stem):  # noqa: ANN001, ANN202 - figures._save's signature
        figs[stem] = fig
        return save(fig, out, stem)

    monkeypatch.setattr(figures, "_save", keep)
    return figs


def demo_like_main(outlier: float | None = None) -> pd.DataFrame:
    """The P1 demo's shape: 16 optimizers × {oneshot, small} × constant; one-shot means 87.1–353 (defaults that
    barely move), tuned means 87.0–87.4 with std ≈ 0.05 (optionally one tuned optimizer stuck at ``outlier``)."""
    from bench.analysis.names import OPTIMIZERS

    rng = np.random.default_rng(3)
    opts = list(OPTIMIZERS[:16])
    rows = []
    for i, o in enumerate(opts):
        one = 353.4 if i in (2, 10) else (133.5 if i == 6 else 87.1 + 3 * rng.random())
        tuned = outlier if (outlier is not None and i == 11) else 87.0 + 0.4 * rng.random()
        rows.append(("quadratic_deep", o, "constant", "oneshot", one, 0.04 if one < 353 else 0.0))
        rows.append(("quadratic_deep", o, "constant", "small", tuned, 0.03 + 0.04 * rng.random()))
    return pd.DataFrame(rows, columns=["problem", "optimizer", "schedule", "budget", "mean", "std"]).assign(
        metric="loss", n_seeds=10, n_diverged=0)


@pytest.mark.parametrize("outlier", [None, 150.0])
def test_main_figure_tuned_axis_follows_the_tuned_results(captured: dict, tmp_path: Path,
                                                           outlier: float | None) -> None:
    from bench.analysis import figures

    main = demo_like_main(outlier)
    figures.main_figure(main, "constant", tmp_path)
    fig = _drawn(captured["main_constant"])
    tuned = main[(main["budget"] == "small") & (main["mean"] < 100)]
    extent = (tuned["mean"] + tuned["std"]).max() - (tuned["mean"] - tuned["std"]).min()   # ≈ 0.5
    axes = [ax for ax in fig.get_axes() if "small" in ax.get_legend_handles_labels()[1]]
    assert axes, "no axes shows the tuned (small) cells"
    for ax in axes:
        lo, hi = ax.get_xlim()
        assert lo <= tuned["mean"].min() and tuned["mean"].max() <= hi
        assert hi - lo <= 1.5 * extent, f"tuned axis {lo:.1f}–{hi:.1f} for tuned results spanning {extent:.2f}"
    texts = [t.get_text() for ax in axes for t in ax.texts]
    assert ("150" in texts) == (outlier is not None)          # the outlier is marked at the edge with its value
    one = [ax for ax in fig.get_axes() if ax.get_gid() == "quadratic_deep|oneshot"][0]
    assert one.get_xlim()[1] >= 353.4 or "353.4" in [t.get_text() for t in one.texts]
    assert not _layout_problems(fig)


def test_robust_limits() -> None:
    from bench.analysis.figures import robust_limits

    lo, hi, out = robust_limits([87.0, 87.1, 87.2, 87.4, 353.0], [0.05] * 5)
    assert list(out) == [False, False, False, False, True] and 86.9 < lo < 87.0 and 87.4 < hi < 87.6
    lo, hi, out = robust_limits([87.0, 87.0, 87.0, 87.1], [0.05] * 4)    # near-identical: no outlier
    assert not out.any() and hi > 87.1
    lo, hi, out = robust_limits([1.0, 300.0, 2.0])                       # too few points to call one an outlier
    assert not out.any() and lo < 1.0 and hi > 300.0
    lo, hi, out = robust_limits([np.nan, np.nan])
    assert (lo, hi) == (0.0, 1.0) and not out.any()


def _visible_tick_labels(axis) -> list[str]:  # noqa: ANN001 - a matplotlib Axis
    lo, hi = sorted(axis.get_view_interval())
    labels = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        if tick.label1.get_visible() and tick.label1.get_text() and lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
            labels.append(tick.label1.get_text())
    return labels


@pytest.mark.parametrize("top", [1.32, 1.8, 3.5, 40.0, 2000.0])
def test_performance_profile_tick_labels_never_repeat(captured: dict, tmp_path: Path, top: float) -> None:
    from bench.analysis import figures

    taus = np.unique(np.concatenate([[1.0], np.geomspace(1.0, top, 200)]))
    ratios = {"sgd": 1.0, "adam": 1.0 + (top - 1) / 3, "nag": top / 1.01}
    prof = pd.DataFrame([(t, o, float(t >= r)) for o, r in ratios.items() for t in taus],
                        columns=["tau", "optimizer", "rho"])
    figures.profile_figure(prof, "small / constant", tmp_path)
    fig = _drawn(captured["performance_profile"])
    labels = _visible_tick_labels(fig.axes[0].xaxis)
    assert len(labels) >= 3, labels
    assert len(labels) == len(set(labels)), labels
    assert not _layout_problems(fig)


@pytest.mark.parametrize("layout", ["3 problems", "1 problem, 16 optimizers"])
def test_every_report_figure_reads_at_page_width(generated: Path, tmp_path: Path, captured: dict,
                                                 layout: str) -> None:
    from bench.analysis.report import build

    root = generated
    if layout.startswith("1 problem"):                 # the demo's shape: one panel per figure, long legends
        root = tmp_path / "one"
        generate(root, SyntheticConfig(n_problems=1, n_optimizers=16, n_schedules=1, n_trials=6, epoch_scale=0.04))
    build(root, tmp_path / "report")
    assert {"main_constant", "gain", "heatmap_oneshot", "defaults_vs_tuned", "performance_profile", "rankings",
            "expected_best_of_k", "curves", "cost"} <= set(captured)
    problems = {stem: p for stem, fig in captured.items() if (p := _layout_problems(fig))}
    assert not problems


# ------------------------------------------------------------------------------------------ the summary sentence
def _verdict_inputs(values: dict[str, dict[str, list[float]]], metric: str = "loss", budget: str = "large"):
    """(summ, per, main) of the verdict from seed values {problem: {optimizer: [test per seed]}}."""
    from types import SimpleNamespace

    from bench.analysis import verdict

    seeds = pd.DataFrame([(budget, "constant", p, o, v) for p, opts in values.items() for o, vs in opts.items()
                          for v in vs], columns=["budget", "schedule", "problem", "optimizer", "test"])
    main = seeds.groupby(["budget", "schedule", "problem", "optimizer"], as_index=False)["test"].mean().rename(
        columns={"test": "mean"}).assign(metric=metric)
    per = verdict.per_problem(SimpleNamespace(seeds=seeds), main)
    return verdict.summary(per, main), per, main


def _coverage(without: list[str] = (), missing: int = 0, short: int = 0):  # noqa: ANN202
    from bench.analysis.coverage import Coverage

    cells = pd.DataFrame({"problem": ["quadratic_deep"] * 30})
    return Coverage(list(without), cells.head(missing), cells.head(short), cells.head(0), 96, 96 - missing, [])


def test_summary_sentence_when_one_optimizer_is_best_everywhere() -> None:
    from bench.analysis import report

    rng = np.random.default_rng(0)
    values = {p: {o: list(level + 0.01 * rng.standard_normal(10)) for o, level in
                  (("sgd", 100.0), ("momentum", 101.0), ("adam", 90.0))}
              for p in ("quadratic_deep", "mnist_vae", "fmnist_vae")}
    summ, per, main = _verdict_inputs(values)
    text = report.summary_sentence(summ, per, ("large", "constant"), _coverage(), main)
    assert text == ("A single best optimizer exists at the large budget with the constant schedule: adam is "
                    "statistically tied with the best on all 3 problems with data, so \"no single best optimizer\" "
                    "does not hold.")


def test_summary_sentence_when_no_single_optimizer_is_best() -> None:
    from bench.analysis import report

    rng = np.random.default_rng(1)
    winners = {"quadratic_deep": "adam", "mnist_vae": "sgd", "fmnist_vae": "adam"}
    values = {p: {o: list((90.0 if o == w else 100.0) + rng.standard_normal(10)) for o in ("sgd", "adam", "nag")}
              for p, w in winners.items()}
    summ, per, main = _verdict_inputs(values)
    cov = _coverage(without=["fmnist_2c2d", "cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164", "tolstoi_char_rnn"],
                    missing=2, short=1)
    text = report.summary_sentence(summ, per, ("large", "constant"), cov, main)
    assert text == ("No single optimizer is best at the large budget with the constant schedule: none is "
                    "statistically tied with the best on all 3 problems with data, the best mean comes from 2 "
                    "different optimizers, and the most consistent (adam) is tied with the best on 2 of 3 (partial "
                    "data: 5 of the 8 study problems have no results, 2 of 96 expected cells are missing, 1 cell has "
                    "fewer than 10 seeds).")


def test_summary_sentence_on_one_problem_and_on_nothing() -> None:
    from bench.analysis import report

    rng = np.random.default_rng(2)
    values = {"quadratic_deep": {o: list(level + 0.05 * rng.standard_normal(10)) for o, level in
                                 (("sgd", 87.30), ("adam", 87.02), ("nag", 87.03), ("adagrad", 88.0))}}
    summ, per, main = _verdict_inputs(values, budget="small")
    cov = _coverage(without=["mnist_vae", "fmnist_2c2d", "cifar10_3c3d", "fmnist_vae", "cifar100_allcnnc",
                             "svhn_wrn164", "tolstoi_char_rnn"])
    text = report.summary_sentence(summ, per, ("small", "constant"), cov, main)
    assert text.startswith("On quadratic_deep, the only problem with data, adam has the best mean test loss at the "
                           "small budget with the constant schedule (87.0")
    assert "and 1 of the other 3 optimizers are statistically tied with it; whether one optimizer is best " \
           "everywhere needs at least two problems (partial data: 7 of the 8 study problems have no results)." in text
    empty = report.summary_sentence(pd.DataFrame(), pd.DataFrame(), None, _coverage(without=["quadratic_deep"]),
                                    pd.DataFrame())
    assert empty == "No results to compare yet: no cell has finished seed runs (quadratic_deep has no results)."


def assert_page_opens_with_the_summary_and_a_table_of_contents(html: str) -> None:
    body = html[html.index("<body>"):]
    first = re.search(r"<h1>.*?</h1>\s*<p class='lead'>(.*?)</p>", body, re.S)
    assert first and first.group(1).startswith(("No single optimizer is best", "A single best optimizer exists"))
    assert "(partial data: 5 of the 8 study problems have no results" in first.group(1)
    sections = re.findall(r"<h2 id='([^']+)'>", body)
    assert {"summary", "main-results", "compute-cost", "files"} <= set(sections)
    toc = re.search(r"<nav class='toc'>(.*?)</nav>", body, re.S).group(1)
    assert all(f"href='#{s}'" in toc for s in sections)
    assert body.index("<nav class='toc'>") < body.index("<h2")
    assert body.index("figures/main_constant.png") < body.index("<details")   # figure before the long tables
