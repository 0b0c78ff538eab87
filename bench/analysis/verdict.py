"""Is there a single best optimizer? The study's conclusion 3, decided per setting with a stated test.

Rule (per (budget, schedule) setting and problem):

1. The best optimizer is the one with the best mean over seeds of the final test metric.
2. Every other optimizer A is compared with it by a one-sided Welch t-test on the seed-level values
   (H1: the best is better than A; unequal variances, as seeds of different optimizers have different spreads).
3. The p-values of the problem's m−1 comparisons are Holm-adjusted (family-wise error α = 0.05 per problem).
   Holm controls the error of declaring an optimizer *worse* than the best, and "no single best" is a claim built
   from such declarations, so this is the conservative direction: a larger tied set makes the claim harder to hold.
4. A is *tied with the best* if its adjusted p-value is ≥ α, or if it cannot be tested (fewer than two seeds on
   either side: nothing can be declared).

"No single best optimizer" holds at a setting when no optimizer is tied with the best on every problem that has
data there (and at least two problems have data; with one problem the question is undetermined). The reduced set of
consistently competitive optimizers is the set tied with the best on at least ``threshold`` (default 50 %) of the
problems with data.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.analysis.load import Results
from bench.analysis.names import OPTIMIZERS, PROBLEMS, ordered, higher_is_better
from bench.analysis.tables import problem_metric, settings_present

ALPHA = 0.05
THRESHOLD = 0.5


def tied_with_best(values: dict[str, np.ndarray], higher: bool, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per optimizer: n, mean, p (raw), p_holm, best, tied, testable, and P(it beats the best) over seed
    pairs (an effect size next to the test)."""
    cols = ["optimizer", "n", "mean", "p", "p_holm", "best", "tied", "testable", "p_beats_best"]
    vals = {o: np.asarray(v, dtype=float) for o, v in values.items() if len(v)}
    if not vals:
        return pd.DataFrame(columns=cols)
    names = list(vals)
    means = np.array([vals[o].mean() for o in names])
    b = int(np.argmax(means) if higher else np.argmin(means))  # ties: the first in the given order
    p = np.array([np.nan if i == b else stats.welch_one_sided(vals[names[b]], vals[o], higher)
                  for i, o in enumerate(names)])
    adj = stats.holm(p)
    testable = ~np.isnan(p)
    tied = (np.arange(len(names)) == b) | ~testable | (adj >= alpha)
    testable[b] = True
    beats = [stats.prob_beats(vals[o], vals[names[b]], higher) for o in names]
    return pd.DataFrame({"optimizer": names, "n": [vals[o].size for o in names], "mean": means, "p": p,
                         "p_holm": adj, "best": np.arange(len(names)) == b, "tied": tied, "testable": testable,
                         "p_beats_best": beats}, columns=cols)


def per_problem(results: Results, main: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """The tied-with-best analysis for every setting and problem with data (long: one row per optimizer)."""
    frames = []
    seeds = results.seeds
    for (budget, schedule, problem), part in seeds.groupby(["budget", "schedule", "problem"], observed=True):
        by_opt = {o: g["test"].to_numpy() for o, g in part.groupby("optimizer", observed=True)}
        order = ordered(by_opt, OPTIMIZERS)
        higher = higher_is_better(problem_metric(problem, main))
        t = tied_with_best({o: by_opt[o] for o in order}, higher, alpha)
        frames.append(t.assign(budget=budget, schedule=schedule, problem=problem))
    if not frames:
        return pd.DataFrame(columns=["budget", "schedule", "problem", "optimizer", "n", "mean", "p", "p_holm",
                                     "best", "tied", "testable", "p_beats_best"])
    out = pd.concat(frames, ignore_index=True)
    return out[["budget", "schedule", "problem"] + [c for c in out.columns if c not in ("budget", "schedule",
                                                                                      "problem")]]


def competitive(per: pd.DataFrame, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Per setting and optimizer: problems where it is tied with the best, out of problems with data."""
    cols = ["budget", "schedule", "optimizer", "tied_problems", "n_problems", "fraction", "reduced_set"]
    if per.empty:
        return pd.DataFrame(columns=cols)
    n_prob = per.groupby(["budget", "schedule"])["problem"].nunique().rename("n_problems")
    tied = per[per["tied"]].groupby(["budget", "schedule", "optimizer"])["problem"].nunique().rename("tied_problems")
    everyone = per[["budget", "schedule", "optimizer"]].drop_duplicates()
    out = everyone.merge(tied.reset_index(), how="left").merge(n_prob.reset_index(), how="left")
    out["tied_problems"] = out["tied_problems"].fillna(0).astype(int)
    out["fraction"] = out["tied_problems"] / out["n_problems"]
    out["reduced_set"] = out["fraction"] >= threshold
    return out.sort_values(["budget", "schedule", "fraction"], ascending=[True, True, False])[cols].reset_index(
        drop=True)


def summary(per: pd.DataFrame, main: pd.DataFrame) -> pd.DataFrame:
    """Per setting: problems with data, best optimizer per problem, optimizers tied everywhere, and the verdict."""
    cols = ["budget", "schedule", "n_problems", "problems", "best_per_problem", "tied_everywhere", "most_tied",
            "no_single_best"]
    rows = []
    for budget, schedule in settings_present(main):
        part = per[(per["budget"] == budget) & (per["schedule"] == schedule)]
        if part.empty:
            continue
        problems = ordered(part["problem"].unique(), PROBLEMS)
        best = {p: part.loc[(part["problem"] == p) & part["best"], "optimizer"].iloc[0] for p in problems}
        counts = part[part["tied"]].groupby("optimizer")["problem"].nunique()
        everywhere = [o for o in ordered(counts.index, OPTIMIZERS) if counts[o] == len(problems)]
        top = counts.sort_values(ascending=False, kind="stable")
        most = ", ".join(f"{o} {n}/{len(problems)}" for o, n in top.head(3).items())
        holds: bool | None = None if len(problems) < 2 else not everywhere
        rows.append((budget, schedule, len(problems), ", ".join(problems),
                     "; ".join(f"{p}: {o}" for p, o in best.items()), ", ".join(everywhere), most, holds))
    return pd.DataFrame(rows, columns=cols)


def headline(summ: pd.DataFrame, setting: tuple[str, str] | None) -> str:
    """One paragraph: the verdict at the headline setting, then over all settings."""
    if summ.empty or setting is None:
        return "No verdict: no setting has results on any problem."
    row = summ[(summ["budget"] == setting[0]) & (summ["schedule"] == setting[1])]
    parts = []
    if not row.empty:
        r = row.iloc[0]
        where = f"At {setting[0]} budget / {setting[1]} schedule ({r.n_problems} problems)"
        if r.no_single_best is None:
            parts.append(f"{where}: undetermined — at least two problems are needed.")
        elif r.no_single_best:
            parts.append(f"{where}: no optimizer is statistically tied with the best on every problem, so "
                         f"\"no single best optimizer\" HOLDS. Most often tied with the best: {r.most_tied}.")
        else:
            parts.append(f"{where}: {r.tied_everywhere} tied with the best on every problem, so \"no single best "
                         f"optimizer\" does NOT hold.")
    decided = summ[summ["no_single_best"].notna()]
    if len(decided):
        n_hold = int(decided["no_single_best"].astype(bool).sum())
        parts.append(f"Over all {len(decided)} settings with ≥ 2 problems it holds in {n_hold}.")
    return " ".join(parts)
