"""Statistics over seed-level and trial-level results: pure numpy/scipy functions, no I/O, no pandas state.

Every function takes the metric's direction explicitly (``higher``: accuracy is maximised, losses minimised), so the
same code serves both kinds of problem and nothing flips signs behind the caller's back.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

ArrayLike = Sequence[float] | np.ndarray


def mean_std(values: ArrayLike) -> tuple[float, float]:
    """Mean and population std (ddof=0), as the DeepOBS analyzer reports them (§4, ``np.std``)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=0))


def bootstrap_ci(values: ArrayLike, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (resampling seeds with replacement).

    With 10 seeds the interval is rough; it is shown next to mean ± std, not used for the verdict. A fixed RNG seed
    makes the report reproducible. Fewer than two values give (nan, nan): one seed says nothing about spread.
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


def prob_beats(a: ArrayLike, b: ArrayLike, higher: bool) -> float:
    """P(A beats B): probability that a random seed of A is better than a random seed of B, ties counting 1/2.

    This is the common-language effect size (AUC, Mann–Whitney U / (n_A n_B)) over all seed pairs.
    """
    x = np.asarray(a, dtype=float)[:, None]
    y = np.asarray(b, dtype=float)[None, :]
    if x.size == 0 or y.size == 0:
        return math.nan
    better = (x > y) if higher else (x < y)
    return float((better.sum() + 0.5 * (x == y).sum()) / (x.size * y.size))


def relative_improvement(base: ArrayLike | float, new: ArrayLike | float, higher: bool) -> np.ndarray | float:
    """Relative improvement of ``new`` over ``base``, positive when ``new`` is better (§5 heat-map definition).

    Accuracy: (new − base)/|base|; loss: (base − new)/|base| (sign-corrected so that lower loss is a gain).
    """
    b = np.asarray(base, dtype=float)
    n = np.asarray(new, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ((n - b) if higher else (b - n)) / np.abs(b)
    return float(out) if out.ndim == 0 else out


# ------------------------------------------------------------------------------------------------ best of k trials
def rank_order(valid: ArrayLike, higher: bool) -> np.ndarray:
    """Indices of the trials from best to worst validation value; ties keep sample order (earlier first).

    That is DeepOBS's rule: it ranks settings with Python's stable ``sorted``, so among equal validation values the
    earlier sample wins.
    """
    v = np.asarray(valid, dtype=float)
    key = -v if higher else v
    return np.argsort(key, kind="stable")


def best_of_k_weights(n: int, k: int) -> np.ndarray:
    """P(the trial of validation rank r is the best of a uniformly random k-subset of n trials), r = 1..n.

    Rank r is selected exactly when it is drawn and the other k−1 draws come from the n−r worse trials:
    C(n−r, k−1) / C(n, k). Exact integer binomials, so the weights are exact to float rounding for n ≤ 75 and beyond.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in 1..n={n}")
    return _weights(n)[k - 1]


@lru_cache(maxsize=256)
def _weights(n: int) -> np.ndarray:
    """Row k−1: best_of_k_weights(n, k) for k = 1..n (cached: every stream of a study has the same n)."""
    w = np.array([[math.comb(n - r, k - 1) / math.comb(n, k) for r in range(1, n + 1)] for k in range(1, n + 1)])
    w.setflags(write=False)
    return w


def best_of_k_distribution(valid: ArrayLike, test: ArrayLike, k: int, higher: bool) -> tuple[np.ndarray, np.ndarray]:
    """The exact distribution of the test value of the best-validation trial among k drawn without replacement.

    Returns (test values in validation-rank order, their probabilities). The tuning outcome of a budget of k
    random-search samples, computed from the n trials already run instead of by simulation.
    """
    order = rank_order(valid, higher)
    t = np.asarray(test, dtype=float)[order]
    return t, best_of_k_weights(len(t), k)


def expected_best_of_k(valid: ArrayLike, test: ArrayLike, ks: Sequence[int], higher: bool) -> np.ndarray:
    """E[test value of the best-validation trial among k random trials], for each k in ``ks`` (order statistics)."""
    order = rank_order(valid, higher)
    t = np.asarray(test, dtype=float)[order]
    k = np.asarray(ks, dtype=int)
    if t.size == 0:
        return np.full(k.size, math.nan)
    if k.size and (k.min() < 1 or k.max() > t.size):
        raise ValueError(f"every k must be in 1..{t.size}")
    return _weights(t.size)[k - 1] @ t


def discrete_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile (inverse CDF, lower) of a discrete distribution given by values and probabilities."""
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    idx = int(np.searchsorted(cdf, q - 1e-12, side="left"))
    return float(values[order][min(idx, len(values) - 1)])


def prob_at_least_as_good(x: np.ndarray, px: np.ndarray, y: np.ndarray, py: np.ndarray, higher: bool) -> float:
    """P(X at least as good as Y) for independent discrete X ~ (x, px), Y ~ (y, py)."""
    xx, yy = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    ok = (xx >= yy) if higher else (xx <= yy)
    return float(np.asarray(px, float) @ ok.astype(float) @ np.asarray(py, float))


# ----------------------------------------------------------------------------------------- performance profiles
def to_cost(values: ArrayLike, metric: str) -> np.ndarray:
    """A positive cost for performance profiles: the loss itself, or the error rate 1 − accuracy."""
    v = np.asarray(values, dtype=float)
    return 1.0 - v if metric == "accuracy" else v


def performance_ratios(costs: pd.DataFrame) -> pd.DataFrame:
    """Dolan–Moré ratios r_ps = cost_ps / min_s cost_ps (rows: problems, columns: solvers); missing → inf.

    Problems without any data or whose best cost is not positive are dropped (a ratio needs a positive reference).
    """
    best = costs.min(axis=1, skipna=True)
    keep = best.notna() & (best > 0)
    ratios = costs[keep].div(best[keep], axis=0)
    return ratios.fillna(np.inf)


def performance_profile(costs: pd.DataFrame, taus: ArrayLike) -> pd.DataFrame:
    """ρ_s(τ) = fraction of problems on which solver s is within a factor τ of the best (index: τ)."""
    ratios = performance_ratios(costs)
    t = np.asarray(taus, dtype=float)
    if ratios.empty:
        return pd.DataFrame(index=pd.Index(t, name="tau"), columns=costs.columns, dtype=float)
    r = ratios.to_numpy()[None, :, :]  # (tau, problem, solver)
    frac = (r <= t[:, None, None]).mean(axis=1)
    return pd.DataFrame(frac, index=pd.Index(t, name="tau"), columns=ratios.columns)


# ------------------------------------------------------------------------------------------------ significance
def welch_one_sided(best: ArrayLike, other: ArrayLike, higher: bool) -> float:
    """p-value of Welch's t-test for H1 "``best`` is better than ``other``" (unequal variances, one-sided).

    Degenerate cases are decided without the t distribution: fewer than two seeds on a side → nan (untestable);
    both sides constant → 0 if ``best`` is better, else 1.
    """
    a = np.asarray(best, dtype=float)
    b = np.asarray(other, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    diff = (a.mean() - b.mean()) if higher else (b.mean() - a.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    if se2 == 0.0:
        return 0.0 if diff > 0 else 1.0
    df = se2 ** 2 / ((va ** 2 / (a.size - 1) if va else 0.0) + (vb ** 2 / (b.size - 1) if vb else 0.0))
    return float(sps.t.sf(diff / math.sqrt(se2), df))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (family-wise error control); nan entries stay nan and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out
