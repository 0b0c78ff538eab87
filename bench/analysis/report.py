"""Write ``<results_dir>/report/``: index.html (one self-contained page), report.md, figures/ (PNG + SVG) and
tables/ (CSV) — from the Parquet tables only.

Every section degrades to a sentence when its data are missing, and a coverage section lists what is missing
(problems without data, missing cells, cells with fewer than 10 seeds, diverged runs), so a partial study still
yields a report.
"""
from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import agreement, figures, landscape, tables, verdict
from bench.analysis.compare import compare
from bench.analysis.coverage import Coverage, coverage
from bench.analysis.curves import read_curves
from bench.analysis.load import Results, load
from bench.analysis.names import BUDGETS, OPTIMIZERS, PROBLEMS, SCHEDULES, ordered
from bench.analysis.render import embedded_figure, html_table, md_table, page, toc


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
    sections: list[tuple[str, str]] = field(default_factory=list)   # (anchor, text) of every h2, for the TOC
    toc_at: int | None = None                                        # where in ``html`` the TOC goes

    def timed(self, name: str, fn, *args) -> None:  # noqa: ANN001 - a section function and its arguments
        t0 = time.perf_counter()
        fn(self, *args)
        self.timings[name] = time.perf_counter() - t0

    def heading(self, text: str, level: int = 2) -> None:
        anchor = ""
        if level == 2:
            slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
            slug = slug if slug not in {a for a, _ in self.sections} else f"{slug}-{len(self.sections)}"
            self.sections.append((slug, text))
            anchor = f" id='{slug}'"
        self.html.append(f"<h{level}{anchor}>{html.escape(text)}</h{level}>")
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

    def collapsible(self, summary_html: str, body_html: str, open_: bool) -> None:
        """HTML only: a <details> block (the Markdown keeps the content in line)."""
        self.html.append(f"<details{' open' if open_ else ''}><summary>{summary_html}</summary>{body_html}</details>")

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
    cov = coverage(res)

    doc.heading("Crowded Valley replication report", 1)
    doc.para(summary_sentence(summ, per, setting, cov, main), cls="lead")
    doc.para(f"Results: {res.results_dir} · source: {res.source or '—'} · {len(res.runs)} finished runs, "
             f"{len(res.cells)} cells · diverged runs count as "
             f"{'the worst outcome of their problem' if diverged == 'worst' else 'their epoch-0 values (study)'} · "
             f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.", cls="meta")
    doc.para("Reported number: mean ± std (ddof = 0, as DeepOBS) over the cell's seeds of the final-epoch test "
             "metric (accuracy ↑ or loss ↓). † fewer than 10 seeds, ‡ diverged seeds included.", cls="meta")
    doc.toc_at = len(doc.html)

    doc.timings["load + tables + verdict"] = time.perf_counter() - t_start
    doc.timed("summary", _summary, main, summ, comp, setting, tuned)
    doc.timed("coverage", _coverage, cov)
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
    if agreement.available(results_dir):
        doc.timed("agreement", agreement.section, results_dir, fig_dir)
    doc.timed("landscape", landscape.section, res.results_dir, fig_dir)
    return _finish(doc)


def _finish(doc: Doc) -> Path:
    doc.heading("Files")
    doc.html.append("<ul class='files'>" + "".join(f"<li><a href='{f}'>{f}</a></li>" for f in doc.files)
                    + "<li><a href='report.md'>report.md</a></li></ul>")
    doc.md.append("\n".join(f"- [{f}]({f})" for f in doc.files) + "\n")
    doc.out.mkdir(parents=True, exist_ok=True)
    (doc.out / "report.md").write_text("\n".join(doc.md), encoding="utf-8")
    body = list(doc.html)
    if doc.toc_at is not None:
        body.insert(doc.toc_at, toc(doc.sections))
    index = doc.out / "index.html"
    index.write_text(page("Crowded Valley replication report", "\n".join(body)), encoding="utf-8")
    LAST_TIMINGS.clear()
    LAST_TIMINGS.update(doc.timings)
    return index


# ------------------------------------------------------------------------------------------------- summary
def summary_sentence(summ: pd.DataFrame, per: pd.DataFrame, setting: tuple[str, str] | None, cov: Coverage,
                     main: pd.DataFrame) -> str:
    """The page's first line: what the data show, in one sentence, from the verdict at the headline setting (is
    one optimizer tied with the best on every problem?) and the coverage (what is missing)."""
    gaps = _gaps(cov)
    row = summ[(summ["budget"] == setting[0]) & (summ["schedule"] == setting[1])] if setting and len(summ) else summ
    if setting is None or row.empty:
        return "No results to compare yet: no cell has finished seed runs" + (f" ({gaps})" if gaps else "") + "."
    r = row.iloc[0]
    part = per[(per["budget"] == setting[0]) & (per["schedule"] == setting[1])]
    where = f"at the {setting[0]} budget with the {setting[1]} schedule"
    n = int(r["n_problems"])
    if pd.isna(r["no_single_best"]):                                  # one problem: undetermined
        problem = str(r["problems"])
        t = part[part["problem"] == problem]
        best = t[t["best"]].iloc[0]
        others = int(t["tied"].sum()) - 1
        metric = tables.problem_metric(problem, main)
        text = (f"On {problem}, the only problem with data, {best['optimizer']} has the best mean test {metric} "
                f"{where} ({best['mean']:.4g}) and {others} of the other {len(t) - 1} optimizers are statistically "
                f"tied with it; whether one optimizer is best everywhere needs at least two problems")
    elif r["no_single_best"]:
        winners = part.loc[part["best"], "optimizer"].nunique()
        counts = part[part["tied"]].groupby("optimizer")["problem"].nunique()
        top = counts.max() if len(counts) else 0
        names = [o for o in ordered(counts.index, OPTIMIZERS) if counts[o] == top]
        text = (f"No single optimizer is best {where}: none is statistically tied with the best on all {n} problems "
                f"with data, the best mean comes from {winners} different optimizer{'s' if winners != 1 else ''}, "
                f"and the most consistent ({_names(names)}) {'is' if len(names) == 1 else 'are'} tied with the "
                f"best on {top} of {n}")
    else:
        names = [o.strip() for o in str(r["tied_everywhere"]).split(",") if o.strip()]
        text = (f"A single best optimizer exists {where}: {_names(names)} {'is' if len(names) == 1 else 'are'} "
                f"statistically tied with the best on all {n} problems with data, so \"no single best optimizer\" "
                f"does not hold")
    return text + (f" (partial data: {gaps})" if gaps else "") + "."


def _names(names: list[str], most: int = 3) -> str:
    """``a``, ``a and b``, ``a, b and c``, ``a, b, c and 4 others``."""
    if len(names) > most:
        return ", ".join(names[:most]) + f" and {len(names) - most} others"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _gaps(cov: Coverage) -> str:
    """What is missing, in a clause (empty when nothing is)."""
    parts = []
    if cov.problems_without_data:
        k = len(cov.problems_without_data)
        parts.append(f"{k} of the {len(PROBLEMS)} study problems have no results" if k > 1 else
                     f"{cov.problems_without_data[0]} has no results")
    if len(cov.missing_cells):
        k = len(cov.missing_cells)
        parts.append(f"{k} of {cov.n_expected} expected cells {'are' if k > 1 else 'is'} missing")
    if len(cov.short_cells):
        k = len(cov.short_cells)
        parts.append(f"{k} cell{'s have' if k > 1 else ' has'} fewer than {tables.FULL_SEEDS} seeds")
    return ", ".join(parts)


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


def _coverage(doc: Doc, cov: Coverage) -> None:
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
    for schedule in ordered(main["schedule"], SCHEDULES):
        doc.figure(figures.main_figure(main, schedule, fig_dir),
                   f"Final test metric per optimizer and budget (mean ± std over seeds), schedule {schedule}; "
                   f"one-shot and tuned cells on separate axes, each fitted to the bulk of its points (◀ ▶ mark "
                   f"points beyond the axis, with their value)")
    doc.table(main.drop(columns=["winner_hyperparameters"]), "main_table",
              "All cells (long format, with 95 % bootstrap intervals over seeds)", show=False)
    problems = ordered(main["problem"], PROBLEMS)
    for problem in problems:
        pivot = tables.main_pivot(main, problem)
        metric = tables.problem_metric(problem, main)
        title = f"{problem} — final test {metric} ({'↑' if metric == 'accuracy' else '↓'})"
        caption = "mean ± std over seeds; columns schedule / budget"
        doc.md.append(f"\n### {title}\n")
        doc.md.append(f"**{caption}**\n")
        doc.md.append(md_table(pivot, index=True))
        doc.collapsible(f"<h3>{html.escape(title)}</h3> <span class='meta'>({len(pivot)} optimizers × "
                        f"{len(pivot.columns)} schedule / budget columns)</span>",
                        f"<p><strong>{caption}</strong></p>" + html_table(pivot, index=True), open_=len(problems) <= 2)


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
