"""Agreement of our re-runs with the published study, run by run and cell by cell (``valley-reproduce``).

Torch-free: the statistics here are used by ``bench.reproduce`` to write ``<results_dir>/agreement/runs.parquet``
and ``cells.parquet``, and the report reads those two tables (:func:`section`).

**Per published run** (a file of the published tree, re-run here with its exact settings and, on quadratic_deep,
its Hessian draw): TF's shuffle stream cannot be replayed in torch, so one published run is one draw from the
distribution of outcomes over data orders; we estimate that distribution from ``n`` seeds of ours (default 42..51,
the published seed among them) with the same settings and draw. With m, s the mean and sample std (ddof = 1) of our
final test metrics:

    agree  ⇔  |theirs − m| ≤ tolerance = max(Z · s, FLOOR_REL · max(|m|, 1))            (Z = 3, FLOOR_REL = 1e-3)

``z = (theirs − m) / s`` is the difference in units of our seed std. Under agreement (theirs exchangeable with our
seeds, normal outcomes) (theirs − m)/(s·sqrt(1 + 1/n)) is Student-t with n − 1 degrees of freedom, so with n = 10
the rule flags a run that truly agrees with probability P(|T₉| > 3/sqrt(1.1) = 2.86) ≈ 1.9 % (:func:`false_alarm`);
expect about two false "disagree" verdicts per hundred runs, and look at |z| and the cell test before calling one a
bug. The floor (0.1 % of the value, at least 0.001 in absolute terms: 0.1 percentage points of accuracy) keeps
problems whose seeds barely differ from flagging float-level differences.

Divergence: a run the study saw diverge agrees when at least one of our seeds diverged too; a run that finished
there is compared with our finished seeds only (if none finished: disagree). A diverged run's number in the cell
statistics is the study's padding, its epoch-0 value (as the published means).

**Per cell** (the published cell's seed runs): ours = for each published seed run, our run with the same seed and
draw (the published design mirrored: same seeds, same draws, only the data order differs), theirs = the published
runs. Two two-sided tests, both in the table: Welch's two-sample t-test, and the paired t-test of the per-seed
differences (published − ours, same seed and draw). The verdict uses Welch's test, except on cells whose published
runs were trained on different Hessian draws (P1 runs executed one after another in one process): there the
draw-to-draw spread of the final loss (std ≈ 5.8 loss units for the medium Lookahead-RAdam / cosine winner, against
a seed std of ≈ 0.05 within one draw) leaves Welch's test almost no power, while the pairs share their draw, so the
paired test decides (``test`` column). The cell agrees when p ≥ ALPHA (0.01, uncorrected) or the means differ by no
more than the floor. Standard deviations in these tables are sample std (ddof = 1); the study's tables use ddof = 0.
"""
from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

Z_TOLERANCE = 3.0
FLOOR_REL = 1e-3
ALPHA = 0.01
VERDICTS = ("disagree", "agree", "missing", "not_reproducible")  # report order: disagreements first

RUN_KEY = ["published_run_id", "variant"]
CELL_KEY = ["variant", "problem", "optimizer", "schedule", "budget"]
RUN_COLUMNS = [
    "published_run_id", "variant", "problem", "optimizer", "schedule", "budget", "role", "seed", "hessian_draw",
    "metric", "hyperparameters", "theirs", "their_status", "our_n", "our_n_diverged", "our_mean", "our_std",
    "difference", "z", "tolerance", "verdict", "reason", "our_run_ids", "our_seeds", "source_path",
]
CELL_COLUMNS = [
    "variant", "problem", "optimizer", "schedule", "budget", "metric", "n_theirs", "their_mean", "their_std",
    "n_ours", "our_mean", "our_std", "difference", "welch_t", "welch_df", "welch_p", "paired_n", "paired_t",
    "paired_p", "test", "runs_agree", "runs_disagree", "verdict", "reason",
]


def floor(mean: float, floor_rel: float = FLOOR_REL) -> float:
    """The absolute tolerance floor: ``floor_rel · max(|mean|, 1)``."""
    return floor_rel * max(abs(mean), 1.0) if math.isfinite(mean) else floor_rel


def false_alarm(n: int, z_tol: float = Z_TOLERANCE) -> float:
    """Probability that a run exchangeable with our n normal seeds is flagged (floor ignored)."""
    if n < 2:
        return math.nan
    return float(2.0 * sps.t.sf(z_tol / math.sqrt(1.0 + 1.0 / n), n - 1))


def run_agreement(theirs: float, their_diverged: bool, ours: Sequence[float], ours_diverged: Sequence[bool], *,
                  z_tol: float = Z_TOLERANCE, floor_rel: float = FLOOR_REL) -> dict[str, Any]:
    """One published run against our seeds (see the module docstring for the rule)."""
    vals = np.asarray(ours, dtype=float)
    div = np.asarray(ours_diverged, dtype=bool) | ~np.isfinite(vals)
    n, nd = int(vals.size), int(div.sum())
    out: dict[str, Any] = {"our_n": n, "our_n_diverged": nd, "our_mean": math.nan, "our_std": math.nan,
                           "difference": math.nan, "z": math.nan, "tolerance": math.nan}
    if n == 0:
        return {**out, "verdict": "missing", "reason": "no re-run of ours is recorded yet"}
    done = vals[~div]
    if done.size:
        out["our_mean"] = float(done.mean())
        out["our_std"] = float(done.std(ddof=1)) if done.size > 1 else math.nan
    if their_diverged:
        if nd:
            return {**out, "verdict": "agree", "reason": f"diverged in the study and in {nd} of our {n} seeds"}
        return {**out, "verdict": "disagree", "reason": f"diverged in the study, in none of our {n} seeds"}
    if not done.size:
        return {**out, "verdict": "disagree", "reason": f"finished in the study, diverged in all our {n} seeds"}
    m, s = out["our_mean"], out["our_std"]
    diff = float(theirs) - m
    tol = max(z_tol * s, floor(m, floor_rel)) if math.isfinite(s) else floor(m, floor_rel)
    if math.isfinite(s) and s > 0:
        z = diff / s
    else:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    out.update(difference=diff, z=z, tolerance=tol)
    note = f"; {nd} of our {n} seeds diverged (left out)" if nd else ""
    if abs(diff) <= tol:
        return {**out, "verdict": "agree", "reason": f"|difference| {abs(diff):.4g} ≤ tolerance {tol:.4g}{note}"}
    return {**out, "verdict": "disagree", "reason": f"|difference| {abs(diff):.4g} > tolerance {tol:.4g} "
                                                    f"({abs(z):.3g} of our seed std){note}"}


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's t statistic of mean(a) − mean(b), its Welch–Satterthwaite degrees of freedom and the two-sided p.

    Both samples constant: p = 1 when the means are equal, else 0 (t = ±inf)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan, math.nan
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    d = float(x.mean() - y.mean())
    if vx + vy == 0:
        return (0.0, math.nan, 1.0) if d == 0 else (math.copysign(math.inf, d), math.nan, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(x, y, equal_var=False)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return float(res.statistic), float(df), float(res.pvalue)


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[int, float, float]:
    """The paired t-test of a − b over the pairs where both are finite: (pairs, t, two-sided p).

    Constant differences: p = 1 when they are 0, else 0 (t = ±inf)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    if d.size < 2:
        return int(d.size), math.nan, math.nan
    sd = d.std(ddof=1)
    if sd == 0:
        m = float(d.mean())
        return int(d.size), (0.0 if m == 0 else math.copysign(math.inf, m)), (1.0 if m == 0 else 0.0)
    t = float(d.mean() / (sd / math.sqrt(d.size)))
    return int(d.size), t, float(2.0 * sps.t.sf(abs(t), d.size - 1))


def cell_agreement(theirs: Sequence[float], ours: Sequence[float], *, by_pairs: bool = False, alpha: float = ALPHA,
                   floor_rel: float = FLOOR_REL) -> dict[str, Any]:
    """A published cell's seed values against ours (diverged runs already padded; ``ours[i]`` is the mirror of
    ``theirs[i]``, NaN where missing); ``by_pairs``: the paired test decides (see the module docstring)."""
    x0, y0 = np.asarray(theirs, dtype=float), np.asarray(ours, dtype=float)
    x, y = x0[np.isfinite(x0)], y0[np.isfinite(y0)]
    out: dict[str, Any] = {
        "n_theirs": int(x.size), "their_mean": float(x.mean()) if x.size else math.nan,
        "their_std": float(x.std(ddof=1)) if x.size > 1 else math.nan, "n_ours": int(y.size),
        "our_mean": float(y.mean()) if y.size else math.nan,
        "our_std": float(y.std(ddof=1)) if y.size > 1 else math.nan}
    out["difference"] = out["their_mean"] - out["our_mean"]
    t, df, p = welch(x, y)
    n_pairs, pt, pp = paired(x0, y0) if x0.size == y0.size else (0, math.nan, math.nan)
    test = "paired" if by_pairs else "welch"
    out.update(welch_t=t, welch_df=df, welch_p=p, paired_n=n_pairs, paired_t=pt, paired_p=pp, test=test)
    if not y.size:
        return {**out, "verdict": "missing", "reason": "none of our mirrored runs is recorded yet"}
    fl = floor(out["our_mean"], floor_rel)
    if abs(out["difference"]) <= fl:
        return {**out, "verdict": "agree", "reason": f"means differ by {abs(out['difference']):.4g} ≤ floor {fl:.4g}"}
    p_used = pp if by_pairs else p
    if not math.isfinite(p_used):
        return {**out, "verdict": "missing", "reason": f"fewer than 2 {'pairs' if by_pairs else 'runs on a side'} "
                                                       f"({x.size} theirs, {y.size} ours)"}
    name = "paired t-test (same seeds and draws)" if by_pairs else "Welch"
    if p_used >= alpha:
        return {**out, "verdict": "agree", "reason": f"{name} p = {p_used:.3g} ≥ {alpha:g}"}
    return {**out, "verdict": "disagree", "reason": f"{name} p = {p_used:.3g} < {alpha:g} (means differ by "
                                                    f"{out['difference']:+.4g})"}


# ------------------------------------------------------------------------------------------------- tables
def paths(results_dir: str | Path) -> tuple[Path, Path]:
    root = Path(results_dir) / "agreement"
    return root / "runs.parquet", root / "cells.parquet"


def available(results_dir: str | Path) -> bool:
    return paths(results_dir)[0].exists()


def read(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs_path, cells_path = paths(results_dir)
    runs = pd.read_parquet(runs_path) if runs_path.exists() else pd.DataFrame(columns=RUN_COLUMNS)
    cells = pd.read_parquet(cells_path) if cells_path.exists() else pd.DataFrame(columns=CELL_COLUMNS)
    return runs, cells


def merge(old: pd.DataFrame, new: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """``old`` with the rows of ``new`` replacing those of the same key."""
    if old.empty:
        return new.reset_index(drop=True)
    if new.empty:
        return old.reset_index(drop=True)
    keys = set(map(tuple, new[key].astype(str).to_numpy()))
    keep = [tuple(k) not in keys for k in old[key].astype(str).to_numpy()]
    return pd.concat([old[keep], new], ignore_index=True)


def ordered_rows(df: pd.DataFrame, by_abs: str) -> pd.DataFrame:
    """Disagreements first, then by |``by_abs``| descending."""
    if df.empty:
        return df
    rank = df["verdict"].map({v: i for i, v in enumerate(VERDICTS)}).fillna(len(VERDICTS))
    mag = -df[by_abs].astype(float).abs().fillna(-np.inf)
    return df.assign(_r=rank, _m=mag).sort_values(["_r", "_m"], kind="stable").drop(columns=["_r", "_m"])


def counts(df: pd.DataFrame) -> dict[str, int]:
    return {v: int((df["verdict"] == v).sum()) for v in VERDICTS} if len(df) else {v: 0 for v in VERDICTS}


# ------------------------------------------------------------------------------------------------- figures
def _panel_keys(data: pd.DataFrame) -> list[tuple[str, str]]:
    """(problem, variant) panels in the report's problem order; the default variant first."""
    from bench.analysis.names import PROBLEMS, ordered

    variants = sorted(set(data["variant"].astype(str)), key=lambda v: (v != "default", v))
    return [(p, v) for p in ordered(data["problem"], PROBLEMS) for v in variants
            if ((data["problem"] == p) & (data["variant"] == v)).any()]


def scatter_figure(runs: pd.DataFrame, out: Path) -> str | None:
    """Ours (mean ± tolerance) against theirs per published run, one panel per problem (and variant, when several
    were re-run); the diagonal = agreement."""
    from bench.analysis import figures as F

    data = runs[runs["verdict"].isin(["agree", "disagree"]) & np.isfinite(runs["our_mean"].astype(float))
                & np.isfinite(runs["theirs"].astype(float))]
    if data.empty:
        return None
    keys = _panel_keys(data)
    several = len({v for _, v in keys}) > 1
    fig, axes = F._panels([f"{p} · {v}" for p, v in keys], height=3.6 if several else 3.3, width=3.7)
    colors = {"agree": F.OKABE_ITO[0], "disagree": F.OKABE_ITO[3]}
    for ax, (problem, variant) in zip(axes, keys):
        p = data[(data["problem"] == problem) & (data["variant"] == variant)]
        for j, verdict in enumerate(("agree", "disagree")):
            q = p[p["verdict"] == verdict]
            if q.empty:
                continue
            ax.errorbar(q["theirs"], q["our_mean"], yerr=q["tolerance"].astype(float), fmt=F.MARKERS[j], ms=3.5,
                        lw=0.7, color=colors[verdict], label=verdict)
        vals = p[["theirs", "our_mean"]].to_numpy(dtype=float)
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.7, ls="--")
        metric = str(p["metric"].iloc[0])
        ax.set_xlabel(f"published: final test {metric}")
        ax.set_ylabel("ours: mean over seeds (± tolerance)")
        n_bad = int((p["verdict"] == "disagree").sum())
        lines = [problem] + (textwrap.wrap(variant.replace(",", ", "), 40) if several else [])
        lines[-1] += f" ({n_bad} of {len(p)} disagree)"
        ax.set_title("\n".join(lines), fontsize=F.FONT["base"])
    F._legend_below(fig, axes, title="verdict")
    fig.suptitle("Published runs vs our re-runs of their settings (dashed: equality)")
    return F._save(fig, out, "agreement_scatter")


def z_histogram_figure(runs: pd.DataFrame, out: Path, z_tol: float = Z_TOLERANCE, clip: float = 10.0) -> str | None:
    """Histogram of the standardised differences z = (theirs − our mean) / our std, clipped at ±``clip`` (one
    outline per variant when several were re-run)."""
    from bench.analysis import figures as F

    data = runs[runs["verdict"].isin(["agree", "disagree"]) & runs["z"].notna()]
    if data.empty:
        return None
    fig, ax = F.plt.subplots(figsize=(min(F.PAGE_WIDTH_IN, 6.5), 3.0), layout="constrained")
    variants = sorted(set(data["variant"].astype(str)), key=lambda v: (v != "default", v))
    bins = np.linspace(-clip, clip, 41)
    beyond = 0
    for i, variant in enumerate(variants):
        z = data.loc[data["variant"] == variant, "z"].astype(float).to_numpy()
        beyond += int((np.abs(z) > clip).sum())
        kw = ({"color": F.OKABE_ITO[0], "edgecolor": "white", "lw": 0.4} if len(variants) == 1 else
              {"histtype": "step", "color": F.OKABE_ITO[i % 8], "lw": 1.2, "ls": F.LINESTYLES[(i // 8) % 4]})
        ax.hist(np.clip(z, -clip, clip), bins=bins, label=variant, **kw)
    for x in (-z_tol, z_tol):
        ax.axvline(x, color=F.OKABE_ITO[3], lw=0.9, ls="--")
    ax.yaxis.set_major_locator(F.matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("(published − our mean) / our seed std" + (f"; {beyond} beyond ±{clip:g} in the edge bins"
                                                             if beyond else ""))
    ax.set_ylabel("published runs")
    if len(variants) > 1:
        F._legend_right(fig, ax, title="variant")
    fig.suptitle(f"Standardised differences (dashed: ±{z_tol:g}, the rule's std part)")
    return F._save(fig, out, "agreement_z")


# ------------------------------------------------------------------------------------------------- report
RUN_SHOWN = ["verdict", "variant", "problem", "optimizer", "schedule", "budget", "role", "seed", "hessian_draw",
             "theirs", "our_mean", "our_std", "our_n", "z", "tolerance", "reason"]
CELL_SHOWN = ["verdict", "variant", "problem", "optimizer", "schedule", "budget", "n_theirs", "their_mean",
              "their_std", "n_ours", "our_mean", "our_std", "difference", "welch_p", "paired_p", "test", "runs_agree",
              "runs_disagree", "reason"]


def summary_line(runs: pd.DataFrame, cells: pd.DataFrame) -> str:
    r, c = counts(runs), counts(cells)
    parts = [f"{len(runs)} published runs re-run: {r['agree']} agree, {r['disagree']} disagree"]
    if r["missing"]:
        parts.append(f"{r['missing']} not re-run yet")
    if r["not_reproducible"]:
        parts.append(f"{r['not_reproducible']} not reproducible with our settings")
    text = ", ".join(parts)
    if len(cells):
        text += f"; {len(cells)} cells: {c['agree']} agree, {c['disagree']} disagree"
        if c["missing"]:
            text += f", {c['missing']} untestable"
    return text + "."


def section(doc: Any, results_dir: str | Path, fig_dir: Path) -> None:
    """The report's agreement section (``doc`` is ``bench.analysis.report.Doc``)."""
    runs, cells = read(results_dir)
    doc.heading("Agreement with the published study (valley-reproduce)")
    if runs.empty:
        doc.para("No agreement table yet: run valley-reproduce.")
        return
    doc.para(summary_line(runs, cells), cls="verdict")
    n = int(np.nanmedian(runs["our_n"].astype(float))) if runs["our_n"].notna().any() else 10
    doc.para(f"Rule per published run: agree when |published − our mean| ≤ max({Z_TOLERANCE:g} · our seed std, "
             f"{FLOOR_REL:g} · max(|our mean|, 1)); our mean and std (ddof = 1) over the extra seeds of the same "
             f"settings and Hessian draw (TF's data order cannot be replayed). A run that truly agrees is flagged "
             f"with probability ≈ {false_alarm(max(n, 2)):.1%} at n = {n}. Per cell: the published seeds against our "
             f"runs of the same seeds and draws, Welch's two-sided t-test (the paired t-test of the per-seed "
             f"differences where the published runs used different Hessian draws, whose spread would swamp "
             f"Welch's); agree when p ≥ {ALPHA:g} or the means differ by no more than the floor. Disagreements are "
             f"listed first.")
    doc.figure(scatter_figure(runs, fig_dir), "Published final test metric against our mean over seeds (± the "
                                              "tolerance), per published run")
    doc.figure(z_histogram_figure(runs, fig_dir), "Standardised differences of the published runs")
    if len(cells):
        shown = ordered_rows(cells, "difference")
        doc.table(shown[[c for c in CELL_SHOWN if c in shown.columns]], "agreement_cells",
                  "Per cell: published seeds vs our runs of the same seeds and draws", max_rows=60)
    shown = ordered_rows(runs, "z")
    doc.table(shown[[c for c in RUN_SHOWN if c in shown.columns]], "agreement_runs",
              "Per published run: ours (mean ± std over seeds of the same draw) vs theirs", max_rows=60)
    variants = sorted(set(runs["variant"].astype(str)))
    if len(variants) > 1:
        per = runs.groupby("variant")["verdict"].value_counts().unstack(fill_value=0)
        doc.table(per.reset_index(), "agreement_variants",
                  "Verdicts per variant (optimizer options changed for the re-runs)")
