"""Write ``<results_dir>/report/``: index.html (one self-contained page), report.md, figures/ (PNG + SVG) and
tables/ (CSV) — from the Parquet tables only.

Every section degrades to a sentence when its data are missing, and a coverage section lists what is missing
(problems without data, missing cells, cells with fewer than 10 seeds, diverged runs), so a partial study still
yields a report.
"""
from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import figures, tables, verdict
from bench.analysis.compare import compare
from bench.analysis.coverage import coverage
from bench.analysis.curves import read_curves
from bench.analysis.load import Results, load
from bench.analysis.names import BUDGETS, PROBLEMS, SCHEDULES, ordered
from bench.analysis.render import embedded_figure, html_table, md_table, page


LAST_TIMINGS: dict[str, float] = {}
"""Seconds per section of the last :func:`build` (printed by ``valley-report --timings``)."""


@dataclass
class Doc:
    """The report being written: parallel HTML and Markdown bodies, and every file referenced from them."""

    out: Path
    html: list[str] = field(default_factory=list)
    md: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, fn, *args) -> None:  # noqa: ANN001 - a section function and its arguments
        t0 = time.perf_counter()
        fn(self, *args)
        self.timings[name] = time.perf_counter() - t0

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append(f"\n{'#' * level} {text}\n")

    def para(self, text: str, cls: str | None = None) -> None:
        attr = f" class='{cls}'" if cls else ""
        self.html.append(f"<p{attr}>{html.escape(text)}</p>")
        self.md.append(("> " if cls else "") + text + "\n")

    def bullets(self, lines: list[str], cls: str | None = "note") -> None:
        if not lines:
            return
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        self.html.append(f"<ul class='{cls}'>{items}</ul>")
        self.md.append("\n".join(f"- {line}" for line in lines) + "\n")

    def table(self, df: pd.DataFrame, name: str | None, caption: str, *, index: bool = False, show: bool = True,
              max_rows: int = 60) -> None:
        """Write ``tables/<name>.csv`` (when named), link it, and show the first rows inline when ``show``."""
        link = ""
        if name is not None:
            rel = f"tables/{name}.csv"
            (self.out / "tables").mkdir(parents=True, exist_ok=True)
            df.to_csv(self.out / rel, index=index)
            self.files.append(rel)
            link = rel
        self.html.append(f"<p><strong>{html.escape(caption)}</strong>"
                         + (f" — <a href='{link}'>{link}</a>" if link else "") + "</p>")
        self.md.append(f"**{caption}**" + (f" — [{link}]({link})" if link else "") + "\n")
        if show:
            self.html.append(html_table(df, index=index, max_rows=max_rows))
            self.md.append(md_table(df, index=index, max_rows=max_rows))

    def figure(self, stem: str | None, caption: str) -> None:
        if stem is None:
            return
        png, svg = f"figures/{stem}.png", f"figures/{stem}.svg"
        self.files += [png, svg]
        self.html.append(embedded_figure(self.out / png, png, svg, caption))
        self.md.append(f"![{caption}]({png})\n\n[SVG]({svg})\n")


def _clean(out: Path) -> None:
    """Remove the figures and tables of an earlier report (this module owns those two folders)."""
    for sub, patterns in (("figures", ("*.png", "*.svg")), ("tables", ("*.csv",))):
        for pattern in patterns:
            for p in (out / sub).glob(pattern):
                p.unlink()


def _label(results: Results) -> str:
    return results.source or results.results_dir.name


def build(results_dir: str | Path, out: str | Path | None = None, *, compare_with: str | Path | None = None,
          diverged: str = "worst", source: str | None = None, compare_source: str | None = None,
          selection: str = "final") -> Path:
    """Build the report; return the path of index.html."""
    t_start = time.perf_counter()
    res = load(results_dir, diverged=diverged, source=source, selection=selection)
    out_dir = Path(out) if out is not None else Path(results_dir) / "report"
    _clean(out_dir)
    fig_dir = out_dir / "figures"
    doc = Doc(out_dir)
    main = tables.main_table(res)
    setting = tables.headline_setting(main)
    tuned = tables.tuned_budget(main)
    per = verdict.per_problem(res, main)
    summ = verdict.summary(per, main)
    comp = verdict.competitive(per)

    doc.heading("Crowded Valley replication report", 1)
    doc.para(f"Results: {res.results_dir} · source: {res.source or '—'} · {len(res.runs)} finished runs, "
             f"{len(res.cells)} cells · diverged runs count as "
             f"{'the worst outcome of their problem' if diverged == 'worst' else 'their epoch-0 values (study)'} · "
             f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.")
    doc.para("Reported number: mean ± std (ddof = 0, as DeepOBS) over the cell's seeds of the final-epoch test "
             "metric (accuracy ↑ or loss ↓). † fewer than 10 seeds, ‡ diverged seeds included.")

    doc.timings["load + tables + verdict"] = time.perf_counter() - t_start
    doc.timed("summary", _summary, main, summ, comp, setting, tuned)
    doc.timed("coverage", _coverage, res)
    if not main.empty:
        doc.timed("main", _main_tables, main, fig_dir)
        doc.timed("tuning", _tuning, main, res, fig_dir, setting, tuned)
        doc.timed("verdict", _verdict, main, per, summ, comp, fig_dir, setting)
        doc.timed("heatmaps", _heatmaps, main, fig_dir, setting, tuned)
        doc.timed("random search", _random_search, res, fig_dir, setting)
        doc.timed("curves", _curves, res, main, fig_dir, setting)
        doc.timed("cost", _cost, res, fig_dir)
        if compare_with is not None:
            other = load(compare_with, diverged=diverged, source=compare_source, selection=selection)
            doc.timed("comparison", _comparison, res, main, other, fig_dir)
    return _finish(doc)


def _finish(doc: Doc) -> Path:
    doc.heading("Files")
    doc.html.append("<ul class='files'>" + "".join(f"<li><a href='{f}'>{f}</a></li>" for f in doc.files)
                    + "<li><a href='report.md'>report.md</a></li></ul>")
    doc.md.append("\n".join(f"- [{f}]({f})" for f in doc.files) + "\n")
    doc.out.mkdir(parents=True, exist_ok=True)
    (doc.out / "report.md").write_text("\n".join(doc.md), encoding="utf-8")
    index = doc.out / "index.html"
    index.write_text(page("Crowded Valley replication report", "\n".join(doc.html)), encoding="utf-8")
    LAST_TIMINGS.clear()
    LAST_TIMINGS.update(doc.timings)
    return index


# ------------------------------------------------------------------------------------------------- sections
def _summary(doc: Doc, main: pd.DataFrame, summ: pd.DataFrame, comp: pd.DataFrame,
             setting: tuple[str, str] | None, tuned: str | None) -> None:
    doc.heading("Summary")
    doc.para(verdict.headline(summ, setting), cls="verdict")
    if setting is not None:
        red = comp[(comp["budget"] == setting[0]) & (comp["schedule"] == setting[1]) & comp["reduced_set"]]
        if len(red):
            doc.para(f"Reduced set of consistently competitive optimizers at {setting[0]}/{setting[1]} (tied with the "
                     f"best on ≥ {verdict.THRESHOLD:.0%} of the problems): "
                     + ", ".join(f"{o} ({f:.0%})" for o, f in zip(red["optimizer"], red["fraction"])) + ".")
    if tuned is not None and setting is not None:
        dvt = tables.defaults_vs_tuning(main, tuned, setting[1])
        if not dvt.empty:
            med = dvt.groupby("k")["p_defaults_at_least_as_good"].median()
            ok = med[med >= 0.5]
            k_text = (f"from k = {int(ok.index[0])} optimizers on, the median over problems of P(best of k defaults "
                      f"≥ one randomly chosen optimizer tuned at the {tuned} budget) is ≥ 50 %"
                      if len(ok) else f"for no k does trying k optimizers at defaults reach a median probability "
                                      f"of 50 % of matching one optimizer tuned at the {tuned} budget")
            doc.para(f"Defaults vs tuning (conclusion 2, schedule {setting[1]}): {k_text} "
                     f"(max over k: {med.max():.0%}).")


def _coverage(doc: Doc, res: Results) -> None:
    cov = coverage(res)
    doc.heading("Coverage: what is missing")
    lines = cov.lines()
    if not lines:
        doc.para(f"Complete: all {cov.n_expected} expected cells present with 10 seeds, no diverged seed runs.")
        return
    doc.bullets(lines)
    if len(cov.missing_cells):
        doc.table(cov.missing_cells, "missing_cells", "Missing cells", max_rows=40)
    if len(cov.short_cells):
        doc.table(cov.short_cells, "short_cells", "Cells with fewer than 10 seeds", max_rows=40)
    if len(cov.diverged_cells):
        doc.table(cov.diverged_cells, "diverged_cells", "Cells with diverged seed runs", show=False)


def _main_tables(doc: Doc, main: pd.DataFrame, fig_dir: Path) -> None:
    doc.heading("Main results")
    doc.table(main.drop(columns=["winner_hyperparameters"]), "main_table",
              "All cells (long format, with 95 % bootstrap intervals over seeds)", show=False)
    for problem in ordered(main["problem"], PROBLEMS):
        pivot = tables.main_pivot(main, problem)
        metric = tables.problem_metric(problem, main)
        doc.heading(f"{problem} — final test {metric} ({'↑' if metric == 'accuracy' else '↓'})", 3)
        doc.table(pivot, None, "mean ± std over seeds; columns schedule / budget", index=True)
    for schedule in ordered(main["schedule"], SCHEDULES):
        doc.figure(figures.main_figure(main, schedule, fig_dir),
                   f"Final test metric per optimizer and budget (mean ± std over seeds), schedule {schedule}")


def _tuning(doc: Doc, main: pd.DataFrame, res: Results, fig_dir: Path, setting: tuple[str, str] | None,
            tuned: str | None) -> None:
    doc.heading("One-shot vs tuned")
    ovt = tables.oneshot_vs_tuned(main)
    if ovt.empty:
        doc.para("No one-shot cells: the one-shot comparisons need them.")
    else:
        doc.table(ovt, "oneshot_vs_tuned", "One-shot mean and each tuned budget's mean with its relative gain",
                  show=False)
    gain = tables.gain_table(main)
    doc.table(gain, "gain", "Relative improvement of each budget × schedule over one-shot/constant: quartiles over "
                            "optimizers, per problem", max_rows=40)
    doc.figure(figures.gain_figure(gain, fig_dir), "Gain over one-shot/constant per budget × schedule")
    if tuned is None or setting is None:
        doc.para("No tuned cells: defaults-vs-tuning needs a tuned budget.")
        return
    dvt = tables.defaults_vs_tuning(main, tuned, setting[1])
    if dvt.empty:
        doc.para("Defaults vs tuning needs one-shot and tuned cells on the same problem.")
        return
    doc.table(dvt, "defaults_vs_tuned", f"Best of k optimizers at their defaults (chosen by mean validation metric) "
                                        f"vs one optimizer tuned at the {tuned} budget, schedule {setting[1]}",
              show=False)
    tuned_cells = main[(main["budget"] == tuned) & (main["schedule"] == setting[1])]
    doc.figure(figures.defaults_vs_tuned_figure(dvt, tuned_cells, f"tuned, {tuned}", fig_dir),
               "Trying several optimizers at their defaults (distribution over random k-subsets) vs tuning one")


def _verdict(doc: Doc, main: pd.DataFrame, per: pd.DataFrame, summ: pd.DataFrame, comp: pd.DataFrame,
             fig_dir: Path, setting: tuple[str, str] | None) -> None:
    doc.heading("Is there a single best optimizer?")
    doc.para("Rule: per setting and problem, every optimizer is compared with the best-mean one by a one-sided Welch "
             "t-test over seeds, Holm-adjusted over the problem's comparisons (α = 0.05); optimizers not "
             "significantly worse (or untestable, < 2 seeds) are tied with the best. \"No single best optimizer\" "
             "holds when no optimizer is tied with the best on every problem with data.")
    doc.table(summ, "verdict", "Verdict per budget × schedule", max_rows=40)
    doc.table(per, "tied_with_best", "Per problem: means, p-values and tied-with-best flags", show=False)
    doc.table(comp, "competitive", f"Problems on which each optimizer is tied with the best; reduced set = "
                                   f"≥ {verdict.THRESHOLD:.0%}", show=False)
    if setting is None:
        return
    label = f"{setting[0]} / {setting[1]}"
    ranks = tables.rankings(main, *setting)
    doc.table(ranks, "rankings", f"Per-problem rankings at {label} (1 = best)", index=True)
    doc.figure(figures.rank_figure(ranks, label, fig_dir), f"Per-problem rankings at {label}")
    prof = tables.performance_profile_table(main, *setting)
    doc.table(prof, "performance_profile", f"Performance profiles at {label}", show=False)
    doc.figure(figures.profile_figure(prof, label, fig_dir),
               f"Dolan–Moré performance profiles over problems at {label}")


def _heatmaps(doc: Doc, main: pd.DataFrame, fig_dir: Path, setting: tuple[str, str] | None,
              tuned: str | None) -> None:
    base = ("oneshot", setting[1] if setting else "constant")
    if not ((main["budget"] == base[0]) & (main["schedule"] == base[1])).any():
        return
    doc.heading("Switching optimizers: relative improvement A → B")
    one = tables.heatmap_table(main, base, base)
    doc.table(one, "heatmap_oneshot", "A one-shot → B one-shot", show=False)
    doc.figure(figures.heatmap_figure(one, "heatmap_oneshot", f"Relative improvement, A one-shot → B one-shot "
                                      f"({base[1]})", fig_dir), "Relative improvement from A (one-shot) to B (one-shot)")
    if tuned is not None:
        dst = (tuned, base[1])
        two = tables.heatmap_table(main, base, dst)
        doc.table(two, f"heatmap_oneshot_to_{tuned}", f"A one-shot → B tuned ({tuned})", show=False)
        doc.figure(figures.heatmap_figure(two, f"heatmap_oneshot_to_{tuned}", f"Relative improvement, A one-shot → "
                                          f"B tuned at {tuned} ({base[1]})", fig_dir),
                   f"Relative improvement from A (one-shot) to B (tuned, {tuned})")


def _random_search(doc: Doc, res: Results, fig_dir: Path, setting: tuple[str, str] | None) -> None:
    ebk = tables.expected_best_of_k_table(res)
    if ebk.empty or setting is None:
        return
    doc.heading("Random search: expected best of k trials")
    doc.para("Expected final test metric of the trial with the best final validation metric among k trials drawn "
             "without replacement from the tuning runs already made (exact order statistics; seed-42 runs).")
    doc.table(ebk, "expected_best_of_k", "Expected best of k, per stream", show=False)
    sizes = res.cells[res.cells["budget"] != "oneshot"].groupby("budget")["n_trials"].max()
    sizes = {b: int(sizes[b]) for b in ordered(sizes.index, BUDGETS)}
    doc.figure(figures.best_of_k_figure(ebk, setting[1], sizes, fig_dir),
               f"Expected best-of-k random search, schedule {setting[1]} (dotted: budget sizes)")


def _curves(doc: Doc, res: Results, main: pd.DataFrame, fig_dir: Path, setting: tuple[str, str] | None) -> None:
    if setting is None:
        return
    seeds = res.seeds[(res.seeds["budget"] == setting[0]) & (res.seeds["schedule"] == setting[1])]
    if seeds.empty:
        return
    curves = read_curves(res.results_dir, seeds["run_id"], splits=("test",), metrics=("accuracy", "loss"))
    if curves.empty:
        doc.para("No curves for the headline cells (curves/ missing).")
        return
    metric = {p: tables.problem_metric(p, main) for p in seeds["problem"].unique()}
    labels = seeds[["run_id", "problem", "optimizer"]].drop_duplicates("run_id")
    curves["run_id"] = curves["run_id"].astype(str)
    curves = curves.merge(labels[["run_id", "problem"]], on="run_id")
    curves = curves[curves["metric"].astype(str).to_numpy() == curves["problem"].map(metric).to_numpy()]
    curves = curves[["run_id", "epoch", "value"]]
    label = f"{setting[0]} / {setting[1]}"
    doc.heading("Learning curves")
    doc.figure(figures.curves_figure(curves, labels, label, fig_dir, lambda p: metric.get(p, "metric")),
               f"Test-metric curves of each optimizer's cell at {label}, mean over seeds")


def _cost(doc: Doc, res: Results, fig_dir: Path) -> None:
    doc.heading("Compute cost")
    summ = tables.cost_summary(res)
    doc.table(summ, "cost_summary", "Runs, gradient evaluations and device hours per problem and budget (each run "
                                    "counted once; nested budgets share their trials)", max_rows=40)
    doc.table(tables.cost_table(res), "cost_per_cell", "Cost per cell (trials ∪ winner seeds)", show=False)
    doc.figure(figures.cost_figure(summ, fig_dir), "Compute cost per problem and budget")


def _comparison(doc: Doc, res: Results, main: pd.DataFrame, other: Results, fig_dir: Path) -> None:
    a, b = _label(res), _label(other)
    if a == b:
        a, b = f"A ({res.results_dir})", f"B ({other.results_dir})"
    doc.heading(f"Comparison: {a} vs {b}")
    other_main = tables.main_table(other)
    cmp, only = compare(res, main, other, other_main)
    if cmp.empty:
        doc.para(f"No cell is present in both results sets ({len(res.cells)} vs {len(other.cells)} cells).")
    else:
        better = int(((cmp["welch_p"] < 0.05) & (cmp["relative_improvement"] > 0)).sum())
        worse = int(((cmp["welch_p"] < 0.05) & (cmp["relative_improvement"] < 0)).sum())
        doc.para(f"{len(cmp)} matched cells; median relative difference of {a} over {b}: "
                 f"{np.nanmedian(cmp['relative_improvement']):+.2%}; significantly better (Welch p < 0.05, "
                 f"two-sided, uncorrected) in {better}, worse in {worse}.")
        doc.table(cmp, "comparison", f"{a} (a_*) vs {b} (b_*), cell by cell", max_rows=80)
        doc.figure(figures.comparison_figure(cmp, a, b, fig_dir), f"Cell means, {a} vs {b}")
    if len(only):
        doc.table(only, "comparison_unmatched", "Cells present in only one of the two sets", show=False)
