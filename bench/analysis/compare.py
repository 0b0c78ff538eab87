"""Two results sets side by side, cell by cell (e.g. this harness against the imported published runs).

Cells are matched on (problem, optimizer, schedule, budget); the published ``large_budget`` is imported as
``medium`` (§8: 50 samples), so it lines up with the harness's medium budget without any renaming here.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.analysis import stats
from bench.analysis.load import CELL_KEY, Results
from bench.analysis.names import higher_is_better
from bench.analysis.tables import problem_metric, sort_cells

COLUMNS = CELL_KEY + ["metric", "a_n", "a_mean", "a_std", "b_n", "b_mean", "b_std", "difference",
                      "relative_improvement", "p_a_beats_b", "welch_p"]


def compare(a: Results, a_main: pd.DataFrame, b: Results, b_main: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(matched cells with statistics, cells present in only one set). ``relative_improvement`` > 0: A is better."""
    if a_main.empty or b_main.empty:
        only = pd.concat([a_main[CELL_KEY].assign(only_in="A") if not a_main.empty else None,
                          b_main[CELL_KEY].assign(only_in="B") if not b_main.empty else None])
        return pd.DataFrame(columns=COLUMNS), only.reset_index(drop=True) if len(only) else only
    both = a_main.merge(b_main, on=CELL_KEY, suffixes=("_a", "_b"), how="outer", indicator=True)
    only = both.loc[both["_merge"] != "both", CELL_KEY].assign(
        only_in=both.loc[both["_merge"] != "both", "_merge"].map({"left_only": "A", "right_only": "B"}))
    matched = both[both["_merge"] == "both"]
    seeds_a = {k: g["test"].to_numpy() for k, g in a.seeds.groupby(CELL_KEY, observed=True)}
    seeds_b = {k: g["test"].to_numpy() for k, g in b.seeds.groupby(CELL_KEY, observed=True)}
    rows = []
    for r in matched.itertuples(index=False):
        key = (r.problem, r.optimizer, r.schedule, r.budget)
        metric = problem_metric(r.problem, a_main)
        higher = higher_is_better(metric)
        xa, xb = seeds_a.get(key, np.array([])), seeds_b.get(key, np.array([]))
        welch = np.nan
        if xa.size > 1 and xb.size > 1 and (xa.var() > 0 or xb.var() > 0):
            with warnings.catch_warnings():  # near-identical seeds (e.g. all diverged): precision warning only
                warnings.simplefilter("ignore", RuntimeWarning)
                welch = float(sps.ttest_ind(xa, xb, equal_var=False).pvalue)
        rows.append((*key, metric, r.n_seeds_a, r.mean_a, r.std_a, r.n_seeds_b, r.mean_b, r.std_b,
                     r.mean_a - r.mean_b, stats.relative_improvement(r.mean_b, r.mean_a, higher),
                     stats.prob_beats(xa, xb, higher), welch))
    return sort_cells(pd.DataFrame(rows, columns=COLUMNS)), sort_cells(only)
