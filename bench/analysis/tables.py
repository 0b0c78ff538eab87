"""The report's tables, as tidy pandas frames (CSV-ready); the HTML/Markdown layout lives in bench/analysis/render.py.

Definitions (§5, spelled out because the paper's are [UNCONFIRMED]):

* main table: mean ± std (ddof=0) over the cell's seeds of the final test metric, per problem × optimizer ×
  schedule × budget, with a 95 % percentile-bootstrap interval over seeds.
* relative improvement of B over A: (B − A)/|A| for accuracy, (A − B)/|A| for losses (positive = better).
* gain of a (budget, schedule): the relative improvement of each optimizer's cell over the same optimizer's
  one-shot/constant cell, summarised per problem by the median and quartiles over optimizers.
* ranking: per problem, optimizers ranked by mean (1 = best, ties share the best rank), at one (budget, schedule).
* expected best of k trials: for each tuned stream (the trials of its largest budget, in sample order), the expected
  test metric of the trial with the best final validation metric among k drawn without replacement (exact order
  statistics, ties to the earlier sample as in DeepOBS).
* defaults vs tuning (conclusion 2): "try k optimizers at their defaults and keep the one with the best mean
  validation metric" (exact distribution over random k-subsets of the optimizers) against "tune one optimizer picked
  at random" (uniform over the optimizers' tuned cells).
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.analysis.load import CELL_KEY, Results
from bench.analysis.names import (BASELINE, BUDGETS, OPTIMIZERS, PROBLEM_METRIC, PROBLEMS, SCHEDULES,
                                  TUNED_BUDGETS, higher_is_better, ordered)

FULL_SEEDS = 10


def problem_metric(problem: str, main: pd.DataFrame | None = None) -> str:
    """The problem's comparison metric: from the data when present, else the study's table (§1)."""
    if main is not None and not main.empty and "metric" in main.columns:
        m = main.loc[main["problem"] == problem, "metric"].dropna()
        if not m.empty:
            return str(m.iloc[0])
    return PROBLEM_METRIC.get(problem, "loss")


def main_table(results: Results, *, n_boot: int = 2000) -> pd.DataFrame:
    """One row per cell: mean, std (ddof=0), bootstrap CI, seeds, diverged seeds, winner."""
    cells = results.cells
    cols = CELL_KEY + ["metric", "n_seeds", "n_listed", "n_diverged", "mean", "std", "ci_low", "ci_high",
                       "valid_mean", "num_samples", "n_trials", "winner_sample", "winner_hyperparameters"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    out = cells.rename(columns={"test_mean": "mean", "test_std": "std"}).copy()
    ci = {}
    for key, part in results.seeds.groupby(CELL_KEY, observed=True):
        ci[key] = stats.bootstrap_ci(part["test"].to_numpy(), n_boot=n_boot)
    keys = list(zip(*(out[c] for c in CELL_KEY)))
    out["ci_low"] = [ci.get(k, (math.nan, math.nan))[0] for k in keys]
    out["ci_high"] = [ci.get(k, (math.nan, math.nan))[1] for k in keys]
    out["metric"] = [m if isinstance(m, str) else PROBLEM_METRIC.get(p, "loss")
                     for p, m in zip(out["problem"], out["metric"])]
    return sort_cells(out[cols])


def sort_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the study's order: problems P1..P8, budgets, schedules, optimizers."""
    if df.empty:
        return df.reset_index(drop=True)
    orders = {"problem": PROBLEMS, "budget": BUDGETS, "schedule": SCHEDULES, "optimizer": OPTIMIZERS}
    keys = {}
    for col, canon in orders.items():
        if col in df.columns:
            order = ordered(df[col].dropna().unique(), canon)
            keys[col] = df[col].map({v: i for i, v in enumerate(order)})
    tmp = df.assign(**{f"_{c}": v for c, v in keys.items()})
    return tmp.sort_values([f"_{c}" for c in keys]).drop(columns=[f"_{c}" for c in keys]).reset_index(drop=True)


def fmt_mean_std(mean: float, std: float, n_seeds: int = FULL_SEEDS, n_diverged: int = 0) -> str:
    """``mean ± std`` with markers: † fewer than 10 seeds, ‡ diverged seeds inside."""
    if mean is None or not np.isfinite(mean):
        return "—"
    if np.isfinite(std) and std <= 1e-12 * max(abs(mean), 1.0):
        std = 0.0  # identical seeds (e.g. all diverged): no float-rounding noise in the table
    text = f"{mean:.4g} ± {std:.2g}" if np.isfinite(std) else f"{mean:.4g}"
    return text + ("†" if n_seeds < FULL_SEEDS else "") + ("‡" if n_diverged else "")


def main_pivot(main: pd.DataFrame, problem: str) -> pd.DataFrame:
    """The main table of one problem: optimizers × (schedule / budget), cells ``mean ± std``."""
    part = main[main["problem"] == problem]
    if part.empty:
        return pd.DataFrame()
    text = part.assign(text=[fmt_mean_std(m, s, n, d) for m, s, n, d in
                             zip(part["mean"], part["std"], part["n_seeds"], part["n_diverged"])])
    text["column"] = text["schedule"] + " / " + text["budget"]
    pivot = text.pivot_table(index="optimizer", columns="column", values="text", aggfunc="first")
    cols = [f"{s} / {b}" for s in ordered(part["schedule"], SCHEDULES) for b in ordered(part["budget"], BUDGETS)]
    rows = ordered(part["optimizer"], OPTIMIZERS)
    return pivot.reindex(index=rows, columns=[c for c in cols if c in pivot.columns]).fillna("—")


def settings_present(main: pd.DataFrame) -> list[tuple[str, str]]:
    """(budget, schedule) pairs with data, in study order."""
    if main.empty:
        return []
    pairs = set(zip(main["budget"], main["schedule"]))
    return [(b, s) for b in ordered(main["budget"], BUDGETS) for s in ordered(main["schedule"], SCHEDULES)
            if (b, s) in pairs]


def headline_setting(main: pd.DataFrame) -> tuple[str, str] | None:
    """The setting the one-figure summaries use: the largest tuned budget with data, constant schedule if present."""
    present = settings_present(main)
    if not present:
        return None
    budgets = [b for b in reversed(ordered(main["budget"], BUDGETS)) if b in TUNED_BUDGETS] or \
        ordered(main["budget"], BUDGETS)
    budget = budgets[0]
    scheds = [s for b, s in present if b == budget]
    return budget, ("constant" if "constant" in scheds else scheds[0])


def tuned_budget(main: pd.DataFrame) -> str | None:
    """The largest tuned budget present (the study's "tuned" side)."""
    budgets = [b for b in reversed(ordered(main["budget"], BUDGETS)) if b in TUNED_BUDGETS] if not main.empty else []
    return budgets[0] if budgets else None


def setting_means(main: pd.DataFrame, budget: str, schedule: str) -> pd.DataFrame:
    """problems × optimizers of cell means at one setting."""
    part = main[(main["budget"] == budget) & (main["schedule"] == schedule)]
    if part.empty:
        return pd.DataFrame()
    wide = part.pivot_table(index="problem", columns="optimizer", values="mean", aggfunc="first")
    return wide.reindex(index=ordered(part["problem"], PROBLEMS), columns=ordered(part["optimizer"], OPTIMIZERS))


# ----------------------------------------------------------------------------------------------- improvements
def oneshot_vs_tuned(main: pd.DataFrame) -> pd.DataFrame:
    """Per problem, optimizer and schedule: the one-shot mean, each tuned budget's mean and its relative gain."""
    if main.empty:
        return pd.DataFrame()
    wide = main.pivot_table(index=["problem", "optimizer", "schedule"], columns="budget", values="mean",
                            aggfunc="first")
    if "oneshot" not in wide.columns:
        return pd.DataFrame()
    out = wide.reset_index()
    out["metric"] = out["problem"].map(lambda p: problem_metric(p, main))
    for b in (b for b in TUNED_BUDGETS if b in wide.columns):
        out[f"gain_{b}"] = [stats.relative_improvement(a, t, higher_is_better(m))
                            for a, t, m in zip(out["oneshot"], out[b], out["metric"])]
    cols = ["problem", "metric", "optimizer", "schedule", "oneshot"] + \
        [c for b in TUNED_BUDGETS for c in (b, f"gain_{b}") if c in out.columns]
    return sort_cells(out[cols])


def gain_table(main: pd.DataFrame, baseline: tuple[str, str] = BASELINE) -> pd.DataFrame:
    """Median and quartiles over optimizers of the relative improvement of each (budget, schedule) over
    the baseline (one-shot, constant), per problem."""
    cols = ["problem", "metric", "budget", "schedule", "n_optimizers", "q25", "median", "q75"]
    if main.empty:
        return pd.DataFrame(columns=cols)
    base = main[(main["budget"] == baseline[0]) & (main["schedule"] == baseline[1])]
    base = base.set_index(["problem", "optimizer"])["mean"]
    rows = []
    for (problem, budget, schedule), part in main.groupby(["problem", "budget", "schedule"], observed=True):
        metric = problem_metric(problem, main)
        ref = base.reindex(list(zip([problem] * len(part), part["optimizer"])))
        rel = stats.relative_improvement(ref.to_numpy(), part["mean"].to_numpy(), higher_is_better(metric))
        rel = np.asarray(rel, dtype=float)
        rel = rel[np.isfinite(rel)]
        if rel.size == 0:
            continue
        q25, med, q75 = np.quantile(rel, [0.25, 0.5, 0.75])
        rows.append((problem, metric, budget, schedule, rel.size, q25, med, q75))
    return sort_cells(pd.DataFrame(rows, columns=cols))


def heatmap_table(main: pd.DataFrame, src: tuple[str, str], dst: tuple[str, str]) -> pd.DataFrame:
    """Relative improvement from optimizer A at setting ``src`` (row) to optimizer B at ``dst`` (column)."""
    cols = ["problem", "from_budget", "from_schedule", "to_budget", "to_schedule", "from_optimizer",
            "to_optimizer", "relative_improvement"]
    rows = []
    if main.empty:
        return pd.DataFrame(columns=cols)
    a = setting_means(main, *src)
    b = setting_means(main, *dst)
    for problem in ordered(main["problem"], PROBLEMS):
        if problem not in a.index or problem not in b.index:
            continue
        higher = higher_is_better(problem_metric(problem, main))
        for oa, va in a.loc[problem].dropna().items():
            for ob, vb in b.loc[problem].dropna().items():
                rows.append((problem, *src, *dst, oa, ob, stats.relative_improvement(va, vb, higher)))
    return pd.DataFrame(rows, columns=cols)


def rankings(main: pd.DataFrame, budget: str, schedule: str) -> pd.DataFrame:
    """problems × optimizers ranks at one setting (1 = best), plus a final row with the mean rank."""
    means = setting_means(main, budget, schedule)
    if means.empty:
        return means
    ranks = pd.DataFrame(index=means.index, columns=means.columns, dtype=float)
    for problem, row in means.iterrows():
        higher = higher_is_better(problem_metric(problem, main))
        ranks.loc[problem] = row.rank(ascending=not higher, method="min")
    ranks.loc["mean rank"] = ranks.mean(axis=0, skipna=True)
    return ranks


# ------------------------------------------------------------------------------------------------ random search
def expected_best_of_k_table(results: Results) -> pd.DataFrame:
    """Expected test metric of the best-validation trial among k random trials, k = 1..n, per tuned stream."""
    cols = ["problem", "metric", "optimizer", "schedule", "n_trials", "k", "expected_test"]
    trials = results.trials
    if trials.empty:
        return pd.DataFrame(columns=cols)
    cells = results.cells[results.cells["budget"] != "oneshot"]
    # the stream of a (problem, optimizer, schedule) = the trials of its cell with the most trials
    biggest = cells.sort_values("n_trials").drop_duplicates(["problem", "optimizer", "schedule"], keep="last")
    chosen = trials.merge(biggest[CELL_KEY + ["metric"]], on=CELL_KEY, how="inner")
    rows = []
    for (problem, optimizer, schedule), t in chosen.groupby(["problem", "optimizer", "schedule"], observed=True):
        t = t.sort_values("position")
        metric = t["metric"].iloc[0]
        metric = metric if isinstance(metric, str) else PROBLEM_METRIC.get(problem, "loss")
        ks = list(range(1, len(t) + 1))
        exp = stats.expected_best_of_k(t["valid"].to_numpy(), t["test"].to_numpy(), ks, higher_is_better(metric))
        rows.extend((problem, metric, optimizer, schedule, len(t), k, e) for k, e in zip(ks, exp))
    return sort_cells(pd.DataFrame(rows, columns=cols))


def defaults_vs_tuning(main: pd.DataFrame, budget: str, schedule: str) -> pd.DataFrame:
    """Conclusion 2: best of k optimizers at their defaults (chosen by validation) vs one optimizer tuned.

    Per problem and k: E, 10/50/90 % quantiles of the test mean of the best-of-k default optimizer; the tuned side's
    mean/median/best over optimizers; and P(best-of-k defaults is at least as good as a randomly chosen tuned
    optimizer).
    """
    cols = ["problem", "metric", "k", "n_optimizers", "defaults_expected", "defaults_q10", "defaults_median",
            "defaults_q90", "tuned_mean", "tuned_median", "tuned_best", "p_defaults_at_least_as_good"]
    rows = []
    one = main[(main["budget"] == "oneshot") & (main["schedule"] == schedule)]
    tuned = main[(main["budget"] == budget) & (main["schedule"] == schedule)]
    for problem in ordered(one["problem"], PROBLEMS):
        o = one[(one["problem"] == problem) & one["mean"].notna() & one["valid_mean"].notna()]
        t = tuned.loc[(tuned["problem"] == problem) & tuned["mean"].notna(), "mean"].to_numpy(dtype=float)
        if o.empty or t.size == 0:
            continue
        metric = problem_metric(problem, main)
        higher = higher_is_better(metric)
        pt = np.full(t.size, 1.0 / t.size)
        best_tuned = t.max() if higher else t.min()
        for k in range(1, len(o) + 1):
            vals, w = stats.best_of_k_distribution(o["valid_mean"].to_numpy(), o["mean"].to_numpy(), k, higher)
            rows.append((problem, metric, k, len(o), float(w @ vals), stats.discrete_quantile(vals, w, 0.1),
                         stats.discrete_quantile(vals, w, 0.5), stats.discrete_quantile(vals, w, 0.9),
                         float(t.mean()), float(np.median(t)), float(best_tuned),
                         stats.prob_at_least_as_good(vals, w, t, pt, higher)))
    return pd.DataFrame(rows, columns=cols)


def performance_profile_table(main: pd.DataFrame, budget: str, schedule: str, n_tau: int = 200) -> pd.DataFrame:
    """Dolan–Moré profile at one setting (cost = loss or 1 − accuracy), long: tau, optimizer, rho."""
    means = setting_means(main, budget, schedule)
    if means.empty:
        return pd.DataFrame(columns=["tau", "optimizer", "rho"])
    costs = pd.DataFrame({p: stats.to_cost(means.loc[p].to_numpy(), problem_metric(p, main)) for p in means.index},
                         index=means.columns).T
    ratios = stats.performance_ratios(costs)
    finite = ratios.to_numpy()[np.isfinite(ratios.to_numpy())]
    top = float(finite.max()) if finite.size else 1.0
    taus = np.unique(np.concatenate([[1.0], np.geomspace(1.0, max(top, 1.0 + 1e-9) * 1.05, n_tau)]))
    prof = stats.performance_profile(costs, taus)
    return prof.reset_index().melt(id_vars="tau", var_name="optimizer", value_name="rho")


# ------------------------------------------------------------------------------------------------------- cost
def _cell_runs(results: Results) -> pd.DataFrame:
    """Long (cell key, run_id) of every run behind each cell (tuning trials ∪ winner seeds), with its cost."""
    cells = results.cells
    ids = [list(dict.fromkeys(_list(t) + _list(r))) for t, r in zip(cells["trial_run_ids"], cells["run_ids"])]
    long = cells[CELL_KEY].assign(run_id=ids).explode("run_id").dropna(subset=["run_id"])
    return long.merge(results.runs[["run_id", "grad_evals", "wall_time_s"]], on="run_id", how="inner")


def cost_table(results: Results) -> pd.DataFrame:
    """Per cell: distinct runs behind it (tuning trials ∪ winner seeds), gradient evaluations, device hours."""
    cols = CELL_KEY + ["runs", "grad_evals", "device_hours"]
    if results.cells.empty:
        return pd.DataFrame(columns=cols)
    g = _cell_runs(results).groupby(CELL_KEY, observed=True)
    out = g.agg(runs=("run_id", "size"), grad_evals=("grad_evals", lambda s: s.sum(min_count=1)),
                device_hours=("wall_time_s", lambda s: s.sum(min_count=1) / 3600)).reset_index()
    return sort_cells(out[cols])


def cost_summary(results: Results) -> pd.DataFrame:
    """Distinct runs, gradient evaluations and device hours per problem and budget (each run counted once), and
    the whole results set."""
    cols = ["problem", "budget", "runs", "grad_evals", "device_hours"]
    if results.cells.empty:
        return pd.DataFrame(columns=cols)
    long = _cell_runs(results).drop_duplicates(["problem", "budget", "run_id"])
    g = long.groupby(["problem", "budget"], observed=True)
    out = g.agg(runs=("run_id", "size"), grad_evals=("grad_evals", lambda s: s.sum(min_count=1)),
                device_hours=("wall_time_s", lambda s: s.sum(min_count=1) / 3600)).reset_index()
    runs = results.runs
    total = pd.DataFrame([("all", "all", len(runs), float(runs["grad_evals"].sum(min_count=1)),
                           float(runs["wall_time_s"].sum(min_count=1)) / 3600)], columns=cols)
    return pd.concat([sort_cells(out[cols]), total], ignore_index=True)


def _list(v: Iterable[str] | None) -> list[str]:
    return [] if v is None else list(v)
