"""The report's figures: matplotlib (Agg, no display), colour-blind-safe, every axis labelled, PNG + SVG.

Colours are the Okabe–Ito palette (distinguishable under the common colour-vision deficiencies); with more than
eight optimizers a line style / marker separates the second group, so no figure relies on colour alone. Heat maps
use perceptually uniform (viridis) or colour-blind-safe diverging (PuOr) maps. Each function draws one figure from
tidy tables and returns the file stem it wrote (``<out>/<stem>.png`` and ``.svg``), or None when there is nothing
to draw.

Read at a glance, on the report's page:

* size: no figure is wider than the page's content column (``render.PAGE_WIDTH_PX`` at :data:`DPI`), so the page
  never scales a PNG down, and no text is smaller than :data:`MIN_FONT_PT` (≥ 11.7 px on the page);
* legends sit outside every axes (below multi-panel figures, to the right of one-panel ones), never on the data;
* axes follow the data that matter: the main figure gives one-shot and tuned results separate axes, each limited
  to the bulk of its points (:func:`robust_limits`), points beyond drawn at the axis edge with their value; the
  defaults-vs-tuned, best-of-k and curve panels limit their y axis the same way (and say what they clipped);
* tick labels never repeat (:class:`DistinctFormatter`).
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.analysis.names import BUDGETS, OPTIMIZERS, PROBLEMS, ordered  # noqa: E402
from bench.analysis.render import PAGE_WIDTH_PX  # noqa: E402
from bench.analysis.tables import problem_metric  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442"]
"""Okabe–Ito, reordered so that the low-contrast yellow comes last."""
BUDGET_COLORS = {"oneshot": "#E69F00", "small": "#56B4E9", "medium": "#009E73", "large": "#0072B2"}
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DPI = 120
"""Pixels per inch of the PNGs; a figure of ``PAGE_WIDTH_IN`` inches fills the page's column at 1:1."""
PAGE_WIDTH_IN = PAGE_WIDTH_PX / DPI
MIN_FONT_PT = 7.0
"""The smallest text in any figure (7 pt at 120 dpi, shown 1:1, is 11.7 px)."""
FONT = {"base": 9.0, "title": 10.0, "tick": 8.0, "legend": 8.0, "small": 7.0}
plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "font.size": FONT["base"],
                     "axes.titlesize": FONT["title"], "axes.labelsize": FONT["base"],
                     "xtick.labelsize": FONT["tick"], "ytick.labelsize": FONT["tick"],
                     "legend.fontsize": FONT["legend"], "legend.title_fontsize": FONT["legend"],
                     "figure.titlesize": FONT["title"] + 1, "svg.fonttype": "none", "svg.hashsalt": "valley"})


def style(index: int) -> dict:
    """Colour, line style and marker of the i-th series (colour cycles every 8, style every 8 after that)."""
    return {"color": OKABE_ITO[index % 8], "linestyle": LINESTYLES[(index // 8) % 4],
            "marker": MARKERS[(index // 8) % len(MARKERS)]}


def _budget_color(budget: str, index: int) -> str:
    return BUDGET_COLORS.get(budget, OKABE_ITO[(index + 4) % 8])


def metric_label(metric: str) -> str:
    return "final test accuracy (fraction) ↑" if metric == "accuracy" else "final test loss ↓"


def short_metric_label(metric: str) -> str:
    return "test accuracy ↑" if metric == "accuracy" else "test loss ↓"


# ------------------------------------------------------------------------------------------------ axes helpers
class DistinctFormatter(matplotlib.ticker.Formatter):
    """Plain decimal tick labels with the fewest decimals (at most 6) that keep the axis' labels distinct.

    A fixed ``"%.1f"`` turns ticks 0.05 apart into "1.0 1.1 1.1 1.2 1.2 1.3"; this picks two decimals there, none
    for 1, 2, 5, 10."""

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        vals = np.asarray(values, dtype=float)
        n = len(np.unique(vals))
        labels: list[str] = []
        for decimals in range(7):
            labels = [f"{v:.{decimals}f}" for v in vals]
            if len(set(labels)) == n:
                break
        return labels

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}"


def ratio_axis(axis: matplotlib.axis.Axis, hi: float) -> None:
    """A log-scaled axis from 1 to ``hi`` (performance ratios) with readable, never repeated tick labels: linear
    steps when the range is short (1–1.3: 1.00 1.05 1.10 …), 1-2-5 per decade when it is long; no minor labels."""
    hi = max(float(hi), 1.0 + 1e-6)
    if axis.axis_name == "x":
        axis.axes.set_xscale("log")
        axis.axes.set_xlim(1.0, hi)
    else:
        axis.axes.set_yscale("log")
        axis.axes.set_ylim(1.0, hi)
    if hi < 4.0:
        axis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        axis.set_minor_locator(matplotlib.ticker.NullLocator())
    else:
        axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_minor_locator(matplotlib.ticker.LogLocator(base=10, subs="auto"))
    axis.set_major_formatter(DistinctFormatter())
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def robust_limits(values: Sequence[float], errors: Sequence[float] | None = None, k: float = 3.0,
                  pad: float = 0.06) -> tuple[float, float, np.ndarray]:
    """Axis limits that cover the bulk of ``values`` (± ``errors``) and a mask of the points left outside.

    Bulk = within Tukey's far fences, ``k`` × IQR beyond the quartiles, the IQR floored at the median error bar so
    that near-identical values are never called outliers. With fewer than four finite values everything is bulk.
    An outlier is drawn at the axis edge with its value (:func:`_mark_outliers`) instead of stretching the axis:
    the tuned results of P1 (87.0–87.4) next to a one-shot run left at its epoch-0 loss (353)."""
    v = np.asarray(values, dtype=float)
    e = np.zeros_like(v) if errors is None else np.nan_to_num(np.asarray(errors, dtype=float), nan=0.0)
    finite = np.isfinite(v)
    out = np.zeros(v.shape, dtype=bool)
    if not finite.any():
        return 0.0, 1.0, out
    if finite.sum() >= 4:
        q1, q3 = np.quantile(v[finite], [0.25, 0.75])
        scale = max(q3 - q1, float(np.median(e[finite])), 1e-12 * max(abs(q1), abs(q3), 1.0))
        out = finite & ((v < q1 - k * scale) | (v > q3 + k * scale))
    core = finite & ~out
    lo, hi = float(np.min(v[core] - e[core])), float(np.max(v[core] + e[core]))
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.02
    return lo - pad * span, hi + pad * span, out


def _mark_outliers(ax: plt.Axes, values: np.ndarray, positions: np.ndarray, lo: float, hi: float, color: str,
                   axis: str = "x") -> None:
    """Points beyond the limits: an arrowhead on the axis edge at their row (``axis="x"``) or column (``"y"``) and
    their value next to it; several beyond the same edge at one position share one label."""
    values, positions = np.asarray(values, dtype=float), np.asarray(positions, dtype=float)
    beyond = np.isfinite(values) & ((values < lo) | (values > hi))
    groups: dict[tuple[float, bool], list[float]] = {}
    for v, pos in zip(values[beyond], positions[beyond]):
        groups.setdefault((float(pos), bool(v > hi)), []).append(float(v))
    for (pos, above), vs in groups.items():
        edge = 1.0 if above else 0.0
        vs = sorted(vs)
        text = ", ".join(f"{v:.4g}" for v in vs[:3]) + (f" (+{len(vs) - 3})" if len(vs) > 3 else "")
        if axis == "x":
            tr = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
            marker, offset = (">" if above else "<"), ((-6 if above else 6), 0)
            align = {"ha": "right" if above else "left", "va": "center"}
            xy = (edge, pos)
        else:
            tr = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
            marker, offset = ("^" if above else "v"), (0, (-6 if above else 6))
            # vertical text: labels of neighbouring positions (k = 1, 2, 3) stand side by side
            align = {"ha": "center", "va": "top" if above else "bottom", "rotation": 90}
            xy = (pos, edge)
        ax.plot([xy[0]], [xy[1]], marker=marker, color=color, ms=5, transform=tr, clip_on=False, ls="none")
        ax.annotate(text, xy, xycoords=tr, xytext=offset, textcoords="offset points", fontsize=FONT["small"],
                    color=color, **align)


# ------------------------------------------------------------------------------------------------ layout helpers
def _save(fig: plt.Figure, out: Path, stem: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    title = fig._suptitle  # a one-panel figure is narrower than a long title: wrap it to the figure's width
    if title is not None:
        chars = max(int(fig.get_figwidth() * 72 / (0.55 * title.get_fontsize())), 20)
        title.set_text(textwrap.fill(title.get_text().replace("\n", " "), chars))
    fig.savefig(out / f"{stem}.png")
    fig.savefig(out / f"{stem}.svg", metadata={"Date": None})
    plt.close(fig)
    return stem


def _columns(n: int, panel_width: float, max_cols: int) -> tuple[int, int]:
    """(columns, rows) of ``n`` panels of ``panel_width`` inches that fit the page's width."""
    ncols = max(1, min(n, max_cols, int(PAGE_WIDTH_IN // panel_width)))
    return ncols, math.ceil(n / ncols)


def _panels(problems: Sequence[str], width: float = 3.7, height: float = 3.0, max_cols: int = 3):
    """One panel per problem, as many per row as fit the page at ``width`` inches each (constrained layout)."""
    n = max(len(problems), 1)
    ncols, nrows = _columns(n, width, max_cols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(width * ncols, PAGE_WIDTH_IN), height * nrows),
                             squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _handles(axes: Sequence[plt.Axes]) -> tuple[list, list[str]]:
    """The labelled artists of all panels, each label once, in first-seen order (panels may differ)."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    return handles, labels


def _entry_width_pt(labels: Sequence[str], fontsize: float) -> float:
    """Estimated width of one legend entry: handle, padding and the longest label."""
    return 3.2 * fontsize + 0.6 * fontsize * max(len(lab) for lab in labels)


def _legend_below(fig: plt.Figure, axes: Sequence[plt.Axes], title: str | None = None) -> None:
    """One legend for the whole figure, below the panels (outside every axes); the figure grows to make room.
    A one-panel figure gets it on the right instead (below, a long legend would be taller than the panel)."""
    if len(axes) == 1:
        _legend_right(fig, axes[0], title)
        return
    handles, labels = _handles(axes)
    if not labels:
        return
    fs = FONT["legend"]
    ncol = max(1, min(len(labels), int(0.95 * fig.get_figwidth() * 72 // _entry_width_pt(labels, fs))))
    rows = math.ceil(len(labels) / ncol)
    fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() + (rows + (1 if title else 0)) * 1.45 * fs / 72
                        + 0.25)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, title=title, frameon=False)


def _legend_right(fig: plt.Figure, ax: plt.Axes, title: str | None = None) -> None:
    """The legend of a one-panel figure, right of the axes (outside it); the figure grows to make room, up to the
    page's width."""
    handles, labels = _handles([ax])
    if not labels:
        return
    fs = FONT["legend"]
    per_col = max(1, int((fig.get_figheight() * 72 - 80) // (1.45 * fs)))   # clear of the titles above
    ncol = math.ceil(len(labels) / per_col)
    extra = ncol * _entry_width_pt(labels + ([title] if title else []), fs) / 72 + 0.15
    fig.set_size_inches(min(PAGE_WIDTH_IN, fig.get_figwidth() + extra), fig.get_figheight())
    if title and len(title) > 30:
        title = textwrap.fill(title, 30)
    fig.legend(handles, labels, loc="outside right center", ncol=ncol, title=title, frameon=False)


def _fit_y(ax: plt.Axes, values: np.ndarray, log_ok: bool = False) -> str:
    """Limit the y axis to the bulk of ``values`` (:func:`robust_limits`); a log scale when the bulk is positive
    and spans more than a factor 100. Returns a note for the title when values were left beyond the axis."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return ""
    lo, hi, out = robust_limits(values)
    core = values[~out]
    if log_ok and core.min() > 0 and core.max() / core.min() > 100:
        ax.set_yscale("log")
        lo, hi = core.min() / 1.3, core.max() * 1.3
    if not out.any():
        return ""
    ax.set_ylim(lo, hi)
    beyond = values[out]
    parts = ([f"up to {beyond.max():.3g}"] if (beyond > hi).any() else []) + \
        ([f"down to {beyond.min():.3g}"] if (beyond < lo).any() else [])
    return f"{' and '.join(parts)} beyond the axis"


def _problems(df: pd.DataFrame) -> list[str]:
    """The problems present, in the study's order (the report's coverage section lists the missing ones)."""
    return ordered(set(df["problem"]) if not df.empty else set(), PROBLEMS)


def main_figure(main: pd.DataFrame, schedule: str, out: Path) -> str | None:
    """Mean ± std of every optimizer per problem at one schedule: one-shot and tuned budgets on separate axes.

    One-shot defaults and tuned cells differ by far more than tuned optimizers differ among themselves (P1: up to
    353 vs 87.0–87.4), so each gets its own axis, limited to the bulk of its points (outliers at the edge, with
    their value). Axes are tagged ``<problem>|oneshot`` / ``<problem>|tuned`` (``Axes.get_gid``)."""
    part = main[main["schedule"] == schedule]
    if part.empty:
        return None
    problems = _problems(part)
    budgets = ordered(part["budget"], BUDGETS)
    groups = [g for g in (["oneshot"], [b for b in budgets if b != "oneshot"]) if set(g) & set(budgets)]
    n_opts = len(set(part["optimizer"]))
    group_w = 2.1 if len(groups) > 1 else 3.6
    block_w = 1.25 + group_w * len(groups)             # y labels + panels of one problem: two fit the page's width
    ncols, nrows = _columns(len(problems), block_w, 2)
    width = min(PAGE_WIDTH_IN, block_w * ncols)
    row_h = 0.17 * n_opts + 1.4
    fig = plt.figure(figsize=(width, row_h * nrows), layout="constrained")
    subs = fig.subfigures(nrows, ncols, squeeze=False).ravel()
    all_axes = []
    for sub, problem in zip(subs, problems):
        p = part[part["problem"] == problem]
        opts = ordered(p["optimizer"], OPTIMIZERS)
        ypos = {o: i for i, o in enumerate(opts)}
        axes = sub.subplots(1, len(groups), sharey=True, squeeze=False).ravel()
        for ax, group in zip(axes, groups):
            q = p[p["budget"].isin(group)]
            present = [b for b in group if b in set(q["budget"])]
            lo, hi, outlier = robust_limits(q["mean"].to_numpy(dtype=float), q["std"].to_numpy(dtype=float))
            outlier = pd.Series(outlier, index=q.index)
            for b in present:
                j = budgets.index(b)
                r = q[q["budget"] == b]
                y = np.array([ypos[o] for o in r["optimizer"]]) + (present.index(b) - (len(present) - 1) / 2) * 0.2
                keep = ~outlier[r.index].to_numpy()
                color = _budget_color(b, j)
                ax.errorbar(r["mean"].to_numpy()[keep], y[keep], xerr=r["std"].to_numpy()[keep], fmt=MARKERS[j],
                            color=color, ms=4, lw=0.9, label=b)
                _mark_outliers(ax, r["mean"].to_numpy()[~keep], y[~keep], lo, hi, color)
            ax.set_xlim(lo, hi)
            ax.set_gid(f"{problem}|{'oneshot' if group == ['oneshot'] else 'tuned'}")
            ax.set_title("one-shot (defaults)" if group == ["oneshot"] else "tuned: " + ", ".join(present),
                         fontsize=FONT["base"])
            ax.grid(axis="x", alpha=0.3)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
        axes[0].set_yticks(range(len(opts)), opts)
        axes[0].set_ylim(len(opts) - 0.5, -0.5)
        sub.suptitle(problem, fontsize=FONT["title"])
        sub.supxlabel(metric_label(problem_metric(problem, main)), fontsize=FONT["base"])
        all_axes += list(axes)
    for sub in subs[len(problems):]:
        sub.set_visible(False)
    _legend_below(fig, all_axes, title="budget")
    fig.suptitle(f"Final test metric, mean ± std over seeds — schedule {schedule}")
    return _save(fig, out, f"main_{schedule}")


def gain_figure(gain: pd.DataFrame, out: Path) -> str | None:
    """Median (quartile bars) over optimizers of the relative improvement over one-shot/constant."""
    if gain.empty:
        return None
    problems = _problems(gain)
    fig, axes = _panels(problems, width=3.7, height=3.1)
    for ax, problem in zip(axes, problems):
        p = gain[gain["problem"] == problem]
        x = np.arange(len(p))
        med = 100 * p["median"].to_numpy()
        err = np.vstack([med - 100 * p["q25"].to_numpy(), 100 * p["q75"].to_numpy() - med])
        budgets = ordered(p["budget"], BUDGETS)
        for j, b in enumerate(budgets):
            m = (p["budget"] == b).to_numpy()
            ax.bar(x[m], med[m], color=_budget_color(b, BUDGETS.index(b) if b in BUDGETS else j), yerr=err[:, m],
                   capsize=2, error_kw={"lw": 0.8}, label=b)
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xticks(x, list(p["schedule"]), rotation=90, fontsize=FONT["small"])
        ax.set_ylabel("relative improvement (%)")
        ax.set_title(problem)
    _legend_below(fig, axes, title="budget (bars: median over optimizers; whiskers: quartiles)")
    fig.suptitle("Gain of each budget × schedule over one-shot / constant")
    return _save(fig, out, "gain")


def heatmap_figure(heat: pd.DataFrame, stem: str, title: str, out: Path) -> str | None:
    """Relative improvement (%) from optimizer A (row) to optimizer B (column), one panel per problem.

    Each panel has its own symmetric colour scale (clipped at the panel's 95th percentile of |value|): relative
    changes of a 1 %-accuracy one-shot run and of a tuned loss differ by orders of magnitude across problems."""
    if heat.empty:
        return None
    problems = ordered(heat["problem"], PROBLEMS)
    n_opts = max(len(set(heat["from_optimizer"])), len(set(heat["to_optimizer"])))
    fig, axes = _panels(problems, width=2.3 + 0.15 * n_opts, height=1.9 + 0.15 * n_opts, max_cols=4)
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
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=FONT["small"])
        ax.set_yticks(range(len(rows)), rows, fontsize=FONT["small"])
        ax.set_xlabel("to optimizer B")
        ax.set_ylabel("from optimizer A")
        ax.set_title(problem)
        fig.colorbar(im, ax=ax, shrink=0.85, label="relative improvement (%)")
    fig.suptitle(title)
    return _save(fig, out, stem)


def defaults_vs_tuned_figure(dvt: pd.DataFrame, tuned: pd.DataFrame, label: str, out: Path) -> str | None:
    """Best of k optimizers at defaults (expected value, 10–90 % band) vs each optimizer tuned (dots)."""
    if dvt.empty:
        return None
    problems = _problems(dvt)
    fig, axes = _panels(problems, width=3.7 if len(problems) > 1 else 4.6, height=3.0 if len(problems) > 1 else 3.4)
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
        # the axis follows the bulk of curve, band and tuned cells; what lies far beyond it (P1: one-shot losses
        # of 120–353 next to tuned 87.0–87.4) is clipped, its points marked at the edge with their value
        expected = p["defaults_expected"].to_numpy(dtype=float)
        band = p[["defaults_q10", "defaults_q90"]].to_numpy(dtype=float).ravel()
        lo, hi, _ = robust_limits(np.concatenate([expected, t, band]))
        if t.size:                                     # the tuned mean stays in view, off the edge
            margin = 0.05 * (hi - lo)
            lo, hi = min(lo, float(np.mean(t)) - margin), max(hi, float(np.mean(t)) + margin)
        ax.set_ylim(lo, hi)
        _mark_outliers(ax, expected, p["k"].to_numpy(dtype=float), lo, hi, OKABE_ITO[0], axis="y")
        _mark_outliers(ax, t, np.full(t.size, xt), lo, hi, OKABE_ITO[3], axis="y")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("k optimizers tried at defaults")
        ax.set_ylabel(short_metric_label(problem_metric(problem, dvt)))
        ax.set_title(problem)
    _legend_below(fig, axes)
    fig.suptitle(f"Trying k optimizers at their defaults (best by validation) vs tuning one ({label})")
    return _save(fig, out, "defaults_vs_tuned")


def profile_figure(profile: pd.DataFrame, setting: str, out: Path) -> str | None:
    """Dolan–Moré performance profiles."""
    if profile.empty or profile["rho"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(9.0, 4.6), layout="constrained")
    for i, opt in enumerate(ordered(profile["optimizer"], OPTIMIZERS)):
        p = profile[profile["optimizer"] == opt]
        st = style(i)
        ax.step(p["tau"], p["rho"], where="post", color=st["color"], linestyle=st["linestyle"], label=opt, lw=1.3)
    ratio_axis(ax.xaxis, float(profile["tau"].max()))
    ax.set_xlabel("performance ratio τ = cost / best cost (cost = loss or 1 − accuracy), log scale")
    ax.set_ylabel("fraction of problems within τ of the best")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Performance profiles ({setting})")
    ax.grid(alpha=0.3)
    _legend_right(fig, ax)
    return _save(fig, out, "performance_profile")


def _line_panels(data: pd.DataFrame, x: str, y: str, *, xlabel: str, ylabel: Callable[[str], str],
                 lw: float) -> tuple[plt.Figure, list]:
    """One panel per problem, one line per optimizer (the house style of curve-like figures)."""
    problems = _problems(data)
    fig, axes = _panels(problems, width=3.7 if len(problems) > 1 else 5.0, height=3.0 if len(problems) > 1 else 3.4)
    for ax, problem in zip(axes, problems):
        p = data[data["problem"] == problem]
        for i, opt in enumerate(ordered(p["optimizer"], OPTIMIZERS)):
            q = p[p["optimizer"] == opt]
            st = style(i)
            ax.plot(q[x], q[y], color=st["color"], linestyle=st["linestyle"], lw=lw, label=opt)
        # e.g. one-shot losses of near-divergent trials (1e16) next to converged ones (87): the axis shows the bulk
        note = _fit_y(ax, p[y].to_numpy(dtype=float), log_ok=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel(problem) + (" (log)" if ax.get_yscale() == "log" else ""))
        ax.set_title(problem + (f"\n({note})" if note else ""))
    _legend_below(fig, axes)
    return fig, axes


def best_of_k_figure(ebk: pd.DataFrame, schedule: str, budget_sizes: dict[str, int], out: Path) -> str | None:
    """Expected test metric of the best-validation trial among k random-search trials, per optimizer."""
    part = ebk[ebk["schedule"] == schedule]
    if part.empty:
        return None
    fig, axes = _line_panels(part, "k", "expected_test", xlabel="k random-search trials", lw=1.1,
                             ylabel=lambda problem: f"expected {short_metric_label(problem_metric(problem, part))}")
    for ax in axes:
        for n in budget_sizes.values():
            ax.axvline(n, color="0.6", lw=0.6, ls=":")
    fig.suptitle(f"Expected best-of-k random search (test metric of the best-validation trial), schedule {schedule}")
    return _save(fig, out, "expected_best_of_k")


def rank_figure(ranks: pd.DataFrame, setting: str, out: Path) -> str | None:
    """Per-problem ranks (1 = best) with the mean rank as the last row."""
    if ranks.empty:
        return None
    data = ranks.to_numpy(dtype=float)
    size = (min(PAGE_WIDTH_IN, 0.5 * data.shape[1] + 3.2), 0.32 * data.shape[0] + 2.4)
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    im = ax.imshow(data, cmap="viridis_r", aspect="auto")
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}" if i == data.shape[0] - 1 else f"{v:.0f}", ha="center", va="center",
                    fontsize=FONT["small"], color="white" if v > np.nanmedian(data) else "black")
    ax.set_xticks(range(data.shape[1]), ranks.columns, rotation=90)
    ax.set_yticks(range(data.shape[0]), ranks.index)
    ax.set_xlabel("optimizer")
    ax.set_ylabel("problem")
    fig.colorbar(im, ax=ax, label="rank (1 = best)")
    ax.set_title(f"Rankings ({setting})")
    return _save(fig, out, "rankings")


def curves_figure(curves: pd.DataFrame, labels: pd.DataFrame, setting: str, out: Path,
                  metric_of: Callable[[str], str]) -> str | None:
    """Mean over seeds of the test-metric curve of every optimizer's cell at one setting.

    ``curves``: long (run_id, epoch, value); ``labels``: run_id → problem, optimizer."""
    if curves.empty:
        return None
    data = curves.merge(labels, on="run_id")
    mean = data.groupby(["problem", "optimizer", "epoch"], observed=True)["value"].mean().reset_index()
    fig, _ = _line_panels(mean, "epoch", "value", xlabel="epoch", lw=1.0,
                          ylabel=lambda problem: f"test {metric_of(problem)}")
    fig.suptitle(f"Test-metric curves, mean over seeds ({setting})")
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
    fig, ax = plt.subplots(figsize=(min(PAGE_WIDTH_IN, 3.4 + 0.8 * len(wide)), 3.6), layout="constrained")
    w = 0.8 / max(len(wide.columns), 1)
    for j, b in enumerate(wide.columns):
        ax.bar(np.arange(len(wide)) + j * w, wide[b].to_numpy(dtype=float), width=w, color=_budget_color(b, j),
               label=b)
    ax.set_xticks(np.arange(len(wide)) + w * (len(wide.columns) - 1) / 2, wide.index, rotation=30, ha="right")
    ax.set_ylabel(label)
    ax.set_xlabel("problem")
    ax.set_title("Compute cost per problem and budget (each run counted once)")
    _legend_right(fig, ax, title="budget")
    return _save(fig, out, "cost")


def comparison_figure(cmp: pd.DataFrame, a_name: str, b_name: str, out: Path) -> str | None:
    """Cell means of set A against set B, one panel per problem, the diagonal = agreement."""
    if cmp.empty:
        return None
    problems = ordered(cmp["problem"], PROBLEMS)
    fig, axes = _panels(problems, height=3.3, width=3.7)
    budgets = [b for b in BUDGETS if b in set(cmp["budget"])] + sorted(set(cmp["budget"]) - set(BUDGETS))
    for ax, problem in zip(axes, problems):
        p = cmp[cmp["problem"] == problem]
        for j, b in enumerate(budgets):
            q = p[p["budget"] == b]
            ax.scatter(q["b_mean"], q["a_mean"], s=12, color=_budget_color(b, j), marker=MARKERS[j % 8], label=b)
        lo = np.nanmin(p[["a_mean", "b_mean"]].to_numpy(dtype=float))
        hi = np.nanmax(p[["a_mean", "b_mean"]].to_numpy(dtype=float))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.7, ls="--")
        metric = problem_metric(problem, cmp)
        ax.set_xlabel(f"{textwrap.shorten(b_name, 28)}: test {metric}")
        ax.set_ylabel(f"{textwrap.shorten(a_name, 28)}: test {metric}")
        ax.set_title(problem)
    _legend_below(fig, axes, title="budget")
    fig.suptitle(f"{a_name} vs {b_name}: cell means (one point per optimizer × schedule; dashed: agreement)")
    return _save(fig, out, "comparison")
