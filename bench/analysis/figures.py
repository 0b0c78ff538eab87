"""The report's figures: matplotlib (Agg, no display), colour-blind-safe, every axis labelled, PNG + SVG.

Colours are the Okabe–Ito palette (distinguishable under the common colour-vision deficiencies); with more than
eight optimizers a line style / marker separates the second group, so no figure relies on colour alone. Heat maps
use perceptually uniform (viridis) or colour-blind-safe diverging (PuOr) maps. Each function draws one figure from
tidy tables and returns the file stem it wrote (``<out>/<stem>.png`` and ``.svg``), or None when there is nothing
to draw.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.layout_engine  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.names import BUDGETS, OPTIMIZERS, PROBLEMS, ordered  # noqa: E402
from bench.analysis.tables import problem_metric  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442"]
"""Okabe–Ito, reordered so that the low-contrast yellow comes last."""
BUDGET_COLORS = {"oneshot": "#E69F00", "small": "#56B4E9", "medium": "#009E73", "large": "#0072B2"}
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "font.size": 8, "axes.titlesize": 9,
                     "svg.fonttype": "none", "svg.hashsalt": "valley"})


def style(index: int) -> dict:
    """Colour, line style and marker of the i-th series (colour cycles every 8, style every 8 after that)."""
    return {"color": OKABE_ITO[index % 8], "linestyle": LINESTYLES[(index // 8) % 4],
            "marker": MARKERS[(index // 8) % len(MARKERS)]}


def _budget_color(budget: str, index: int) -> str:
    return BUDGET_COLORS.get(budget, OKABE_ITO[(index + 4) % 8])


def metric_label(metric: str) -> str:
    return "final test accuracy (fraction) ↑" if metric == "accuracy" else "final test loss ↓"


def _save(fig: plt.Figure, out: Path, stem: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    title = fig._suptitle  # a one-panel figure is narrower than a long title: wrap it to the figure's width
    if title is not None:
        chars = max(int(fig.get_figwidth() * 72 / (0.62 * title.get_fontsize())), 20)
        title.set_text(textwrap.fill(title.get_text().replace("\n", " "), chars))
        if not isinstance(fig.get_layout_engine(), matplotlib.layout_engine.ConstrainedLayoutEngine):
            fig.tight_layout()
    fig.savefig(out / f"{stem}.png")
    fig.savefig(out / f"{stem}.svg", metadata={"Date": None})
    plt.close(fig)
    return stem


def _panels(problems: Sequence[str], width: float = 3.4, height: float = 2.8, ncols: int = 4,
            layout: str | None = None):
    n = max(len(problems), 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout=layout)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend(axes: Sequence[plt.Axes], **kwargs) -> None:  # noqa: ANN003 - matplotlib legend options
    """One legend, on the first panel that has labelled artists (the first panels may say 'no data')."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(**kwargs)
            return


def _problems(df: pd.DataFrame) -> list[str]:
    """The problems present, in the study's order (the report's coverage section lists the missing ones)."""
    return ordered(set(df["problem"]) if not df.empty else set(), PROBLEMS)


def main_figure(main: pd.DataFrame, schedule: str, out: Path) -> str | None:
    """Mean ± std of every optimizer per problem, one marker per budget, at one schedule."""
    part = main[main["schedule"] == schedule]
    if part.empty:
        return None
    problems = _problems(part)
    budgets = ordered(part["budget"], BUDGETS)
    fig, axes = _panels(problems, height=3.6)
    for ax, problem in zip(axes, problems):
        p = part[part["problem"] == problem]
        opts = ordered(p["optimizer"], OPTIMIZERS)
        ypos = {o: i for i, o in enumerate(opts)}
        for j, b in enumerate(budgets):
            q = p[p["budget"] == b]
            y = np.array([ypos[o] for o in q["optimizer"]]) + (j - (len(budgets) - 1) / 2) * 0.18
            ax.errorbar(q["mean"], y, xerr=q["std"], fmt=MARKERS[j], color=_budget_color(b, j), ms=3.5, lw=0.8,
                        label=b)
        ax.set_yticks(range(len(opts)), opts)
        ax.invert_yaxis()
        ax.set_title(problem)
        ax.set_xlabel(metric_label(problem_metric(problem, main)))
        ax.grid(axis="x", alpha=0.3)
    _legend(axes, title="budget", fontsize=7, loc="best")
    fig.suptitle(f"Final test metric, mean ± std over seeds — schedule {schedule}")
    fig.tight_layout()
    return _save(fig, out, f"main_{schedule}")


def gain_figure(gain: pd.DataFrame, out: Path) -> str | None:
    """Median (quartile bars) over optimizers of the relative improvement over one-shot/constant."""
    if gain.empty:
        return None
    problems = _problems(gain)
    fig, axes = _panels(problems, height=3.0)
    for ax, problem in zip(axes, problems):
        p = gain[gain["problem"] == problem]
        labels = [f"{b}\n{s}" for b, s in zip(p["budget"], p["schedule"])]
        x = np.arange(len(p))
        colors = [_budget_color(b, i) for i, b in enumerate(p["budget"])]
        med = 100 * p["median"].to_numpy()
        err = np.vstack([med - 100 * p["q25"].to_numpy(), 100 * p["q75"].to_numpy() - med])
        ax.bar(x, med, color=colors, yerr=err, capsize=2, error_kw={"lw": 0.8})
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xticks(x, labels, rotation=90, fontsize=6)
        ax.set_ylabel("relative improvement (%)")
        ax.set_title(problem)
    fig.suptitle("Gain over one-shot / constant: median and quartiles over optimizers")
    fig.tight_layout()
    return _save(fig, out, "gain")


def heatmap_figure(heat: pd.DataFrame, stem: str, title: str, out: Path) -> str | None:
    """Relative improvement (%) from optimizer A (row) to optimizer B (column), one panel per problem.

    Each panel has its own symmetric colour scale (clipped at the panel's 95th percentile of |value|): relative
    changes of a 1 %-accuracy one-shot run and of a tuned loss differ by orders of magnitude across problems."""
    if heat.empty:
        return None
    problems = ordered(heat["problem"], PROBLEMS)
    fig, axes = _panels(problems, width=4.6, height=4.3, layout="constrained")
    for ax, problem in zip(axes, problems):
        p = heat[heat["problem"] == problem]
        rows = ordered(p["from_optimizer"], OPTIMIZERS)
        cols = ordered(p["to_optimizer"], OPTIMIZERS)
        grid = p.pivot_table(index="from_optimizer", columns="to_optimizer", values="relative_improvement",
                             aggfunc="first").reindex(index=rows, columns=cols) * 100
        data = grid.to_numpy(dtype=float)
        finite = np.abs(data[np.isfinite(data)])
        lim = float(np.quantile(finite, 0.95)) if finite.size else 1.0
        im = ax.imshow(data, cmap="PuOr", vmin=-(lim or 1.0), vmax=lim or 1.0, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=5)
        ax.set_yticks(range(len(rows)), rows, fontsize=5)
        ax.set_xlabel("to optimizer B", fontsize=7)
        ax.set_ylabel("from optimizer A", fontsize=7)
        ax.set_title(problem)
        fig.colorbar(im, ax=ax, shrink=0.8, label="relative improvement (%)")
    fig.suptitle(title)
    return _save(fig, out, stem)


def defaults_vs_tuned_figure(dvt: pd.DataFrame, tuned: pd.DataFrame, label: str, out: Path) -> str | None:
    """Best of k optimizers at defaults (expected value, 10–90 % band) vs each optimizer tuned (dots)."""
    if dvt.empty:
        return None
    problems = _problems(dvt)
    fig, axes = _panels(problems, height=3.0)
    for ax, problem in zip(axes, problems):
        p = dvt[dvt["problem"] == problem]
        ax.fill_between(p["k"], p["defaults_q10"], p["defaults_q90"], color=OKABE_ITO[4], alpha=0.35,
                        label="defaults, 10–90 %")
        ax.plot(p["k"], p["defaults_expected"], color=OKABE_ITO[0], marker="o", ms=3, label="defaults, expected")
        t = tuned.loc[tuned["problem"] == problem, "mean"].to_numpy(dtype=float)
        xt = p["k"].max() + 1.5
        ax.scatter(np.full(t.size, xt), t, color=OKABE_ITO[3], marker="D", s=12, label=f"one optimizer {label}")
        ax.axhline(float(np.mean(t)) if t.size else np.nan, color=OKABE_ITO[3], ls="--", lw=0.8,
                   label="tuned, mean over optimizers")
        ax.set_xlabel("k optimizers tried at defaults (best by validation)")
        ax.set_ylabel(metric_label(problem_metric(problem, dvt)))
        ax.set_title(problem)
    _legend(axes, fontsize=6)
    fig.suptitle(f"Trying several optimizers at their defaults vs tuning one ({label})")
    fig.tight_layout()
    return _save(fig, out, "defaults_vs_tuned")


def profile_figure(profile: pd.DataFrame, setting: str, out: Path) -> str | None:
    """Dolan–Moré performance profiles."""
    if profile.empty or profile["rho"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, opt in enumerate(ordered(profile["optimizer"], OPTIMIZERS)):
        p = profile[profile["optimizer"] == opt]
        st = style(i)
        ax.step(p["tau"], p["rho"], where="post", color=st["color"], linestyle=st["linestyle"], label=opt, lw=1.2)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    ax.set_xlabel("performance ratio τ (cost / best cost; cost = loss or 1 − accuracy), log scale")
    ax.set_ylabel("fraction of problems within τ of the best")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Performance profiles ({setting})")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out, "performance_profile")


def _line_panels(data: pd.DataFrame, x: str, y: str, *, xlabel: str, ylabel: Callable[[str], str], lw: float,
                 ylabel_size: float | None = None) -> tuple[plt.Figure, list]:
    """One panel per problem, one line per optimizer (the house style of curve-like figures)."""
    problems = _problems(data)
    fig, axes = _panels(problems, height=3.0)
    for ax, problem in zip(axes, problems):
        p = data[data["problem"] == problem]
        for i, opt in enumerate(ordered(p["optimizer"], OPTIMIZERS)):
            q = p[p["optimizer"] == opt]
            st = style(i)
            ax.plot(q[x], q[y], color=st["color"], linestyle=st["linestyle"], lw=lw, label=opt)
        values = p[y].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size and values.min() > 0 and values.max() / values.min() > 100:
            ax.set_yscale("log")  # e.g. losses of near-divergent trials next to converged ones
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel(problem) + (" (log scale)" if ax.get_yscale() == "log" else ""), fontsize=ylabel_size)
        ax.set_title(problem)
    _legend(axes, fontsize=5, ncol=2)
    return fig, axes


def best_of_k_figure(ebk: pd.DataFrame, schedule: str, budget_sizes: dict[str, int], out: Path) -> str | None:
    """Expected test metric of the best-validation trial among k random-search trials, per optimizer."""
    part = ebk[ebk["schedule"] == schedule]
    if part.empty:
        return None
    fig, axes = _line_panels(part, "k", "expected_test", xlabel="k random-search trials", lw=1.0, ylabel_size=6,
                             ylabel=lambda problem: f"expected {metric_label(problem_metric(problem, part))}")
    for ax in axes:
        for n in budget_sizes.values():
            ax.axvline(n, color="0.6", lw=0.6, ls=":")
    fig.suptitle(f"Expected best-of-k random search (test metric of the best-validation trial), schedule {schedule}")
    fig.tight_layout()
    return _save(fig, out, "expected_best_of_k")


def rank_figure(ranks: pd.DataFrame, setting: str, out: Path) -> str | None:
    """Per-problem ranks (1 = best) with the mean rank as the last row."""
    if ranks.empty:
        return None
    data = ranks.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(0.45 * data.shape[1] + 2.5, 0.35 * data.shape[0] + 1.8))
    im = ax.imshow(data, cmap="viridis_r", aspect="auto")
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}" if i == data.shape[0] - 1 else f"{v:.0f}", ha="center", va="center",
                    fontsize=6, color="white" if v > np.nanmedian(data) else "black")
    ax.set_xticks(range(data.shape[1]), ranks.columns, rotation=90)
    ax.set_yticks(range(data.shape[0]), ranks.index)
    ax.set_xlabel("optimizer")
    ax.set_ylabel("problem")
    fig.colorbar(im, ax=ax, label="rank (1 = best)")
    ax.set_title(f"Rankings ({setting})")
    fig.tight_layout()
    return _save(fig, out, "rankings")


def curves_figure(curves: pd.DataFrame, labels: pd.DataFrame, setting: str, out: Path,
                  metric_of: Callable[[str], str]) -> str | None:
    """Mean over seeds of the test-metric curve of every optimizer's cell at one setting.

    ``curves``: long (run_id, epoch, value); ``labels``: run_id → problem, optimizer."""
    if curves.empty:
        return None
    data = curves.merge(labels, on="run_id")
    mean = data.groupby(["problem", "optimizer", "epoch"], observed=True)["value"].mean().reset_index()
    fig, _ = _line_panels(mean, "epoch", "value", xlabel="epoch", lw=0.9,
                          ylabel=lambda problem: f"test {metric_of(problem)}")
    fig.suptitle(f"Test-metric curves, mean over seeds ({setting})")
    fig.tight_layout()
    return _save(fig, out, "curves")


def cost_figure(summary: pd.DataFrame, out: Path) -> str | None:
    """Device hours (or, where wall time is unknown, runs) per problem and budget."""
    part = summary[summary["problem"] != "all"]
    if part.empty:
        return None
    hours = part["device_hours"].notna().any()
    col, label = ("device_hours", "device hours (h)") if hours else ("runs", "runs (wall time not recorded)")
    wide = part.pivot_table(index="problem", columns="budget", values=col, aggfunc="first")
    wide = wide.reindex(index=ordered(wide.index, PROBLEMS), columns=ordered(wide.columns, BUDGETS))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    w = 0.8 / max(len(wide.columns), 1)
    for j, b in enumerate(wide.columns):
        ax.bar(np.arange(len(wide)) + j * w, wide[b].to_numpy(dtype=float), width=w, color=_budget_color(b, j),
               label=b)
    ax.set_xticks(np.arange(len(wide)) + w * (len(wide.columns) - 1) / 2, wide.index, rotation=30, ha="right")
    ax.set_ylabel(label)
    ax.set_xlabel("problem")
    ax.legend(title="budget", fontsize=7)
    ax.set_title("Compute cost per problem and budget (each run counted once)")
    fig.tight_layout()
    return _save(fig, out, "cost")


def comparison_figure(cmp: pd.DataFrame, a_name: str, b_name: str, out: Path) -> str | None:
    """Cell means of set A against set B, one panel per problem, the diagonal = agreement."""
    if cmp.empty:
        return None
    problems = ordered(cmp["problem"], PROBLEMS)
    fig, axes = _panels(problems, height=3.2, width=3.4)
    budgets = [b for b in BUDGETS if b in set(cmp["budget"])] + sorted(set(cmp["budget"]) - set(BUDGETS))
    for ax, problem in zip(axes, problems):
        p = cmp[cmp["problem"] == problem]
        for j, b in enumerate(budgets):
            q = p[p["budget"] == b]
            ax.scatter(q["b_mean"], q["a_mean"], s=10, color=_budget_color(b, j), marker=MARKERS[j % 8], label=b)
        lo = np.nanmin(p[["a_mean", "b_mean"]].to_numpy(dtype=float))
        hi = np.nanmax(p[["a_mean", "b_mean"]].to_numpy(dtype=float))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.7, ls="--")
        metric = problem_metric(problem, cmp)
        ax.set_xlabel(f"{b_name}: test {metric}")
        ax.set_ylabel(f"{a_name}: test {metric}")
        ax.set_title(problem)
    _legend(axes, title="budget", fontsize=6)
    fig.suptitle(f"{a_name} vs {b_name}: cell means (one point per optimizer × schedule)")
    fig.tight_layout()
    return _save(fig, out, "comparison")

