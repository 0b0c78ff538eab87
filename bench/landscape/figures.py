"""Landscape figures from the Parquet tables alone (matplotlib, pandas; no torch), in the report's house style.

Every function draws one problem's analyses of one kind and returns the file stem it wrote (``<out>/<stem>.png`` and
``.svg``), or None when there is nothing to draw. Runs are coloured by optimizer (the report's palette and order),
one panel per run where a panel holds one run (contours), one line per run otherwise; legends sit outside the axes
and no figure is wider than the report's column (``bench.analysis.figures``).

* :func:`slice1d_figure` — L(θ* + α d) for every run (train solid, test dashed), loss and accuracy panels;
* :func:`slice2d_figure` — filled contours of the train loss around each run's final point, shared levels;
* :func:`trajectory_figure` — each run's path on its PCA plane over that plane's train-loss contour, axes labelled
  with the components' explained variance;
* :func:`sharpness_figure` — λ_max of the Hessian over training, one line per run (the 2/η line of plain and
  heavy-ball gradient descent where the run's learning rate is constant: the edge of stability);
* :func:`interpolation_figure` — L((1 − α) θ_a + α θ_b) for each pair, the ends marked.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis import figures as base
from bench.analysis.names import OPTIMIZERS, ordered

plt = base.plt
MAX_PANELS = 12


def _colors(analyses: pd.DataFrame) -> dict[str, dict]:
    """Style per optimizer, in the report's order, so a run looks the same in every landscape figure."""
    names = ordered(set(analyses["optimizer"].dropna()) | set(analyses["other_optimizer"].dropna()), OPTIMIZERS)
    return {o: base.style(i) for i, o in enumerate(names)}


def _grid(grids: pd.DataFrame, aid: str, split: str, metric: str) -> pd.DataFrame:
    g = grids[(grids["analysis_id"] == aid) & (grids["split"] == split) & (grids["metric"] == metric)]
    return g.sort_values(["y", "x"]) if g["y"].notna().any() else g.sort_values("x")


def _levels(values: np.ndarray, n: int = 14) -> np.ndarray:
    """Contour levels from the minimum to the 90th percentile (the far rim of a slice is orders of magnitude
    higher); log-spaced where the losses are positive and span more than a factor 10."""
    v = values[np.isfinite(values)]
    lo, hi = float(v.min()), float(np.quantile(v, 0.9))
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-3
    if lo > 0 and hi / lo > 10:
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def _mesh(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = np.unique(g["x"].to_numpy()), np.unique(g["y"].to_numpy())
    z = np.full((len(ys), len(xs)), np.nan)
    ix, iy = np.searchsorted(xs, g["x"].to_numpy()), np.searchsorted(ys, g["y"].to_numpy())
    z[iy, ix] = g["value"].to_numpy()
    return xs, ys, z


def _panel_grid(n: int, width: float = 3.5, height: float = 3.0):
    ncols, nrows = base._columns(n, width + 0.5, 3)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(base.PAGE_WIDTH_IN, (width + 0.5) * ncols), height * nrows),
                             squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _ordered_runs(meta: pd.DataFrame) -> pd.DataFrame:
    order = {o: i for i, o in enumerate(OPTIMIZERS)}
    return meta.assign(_o=meta["optimizer"].map(lambda o: order.get(o, len(order)))).sort_values(
        ["_o", "label"]).drop(columns="_o")


# ---------------------------------------------------------------------------------------------- slices
def slice1d_figure(analyses: pd.DataFrame, grids: pd.DataFrame, problem: str, out: Path) -> str | None:
    meta = _ordered_runs(analyses[(analyses["kind"] == "slice1d") & (analyses["problem"] == problem)])
    if meta.empty:
        return None
    colors = _colors(analyses)
    metrics = [m for m in ("loss", "accuracy") if (grids[grids["analysis_id"].isin(meta["analysis_id"])]["metric"]
                                                   == m).any()]
    fig, axes = _panel_grid(len(metrics), width=4.2, height=3.2)
    for ax, metric in zip(axes, metrics):
        for _, row in meta.iterrows():
            st = colors.get(row["optimizer"], base.style(0))
            for split, ls in (("train", "-"), ("test", "--")):
                g = _grid(grids, row["analysis_id"], split, metric)
                if g.empty:
                    continue
                ax.plot(g["x"], g["value"], color=st["color"], ls=ls, lw=1.1,
                        label=row["label"] if split == "train" else None)
        if metric == "loss":
            values = grids[grids["analysis_id"].isin(meta["analysis_id"]) & (grids["metric"] == "loss")]["value"]
            v = values.to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if len(v) and v.min() > 0 and v.max() / v.min() > 100:
                ax.set_yscale("log")
        ax.axvline(0.0, color="0.6", lw=0.6, ls=":")
        ax.set_xlabel("α (filter-normalised direction)" if meta["normalisation"].iloc[0] != "unit"
                      else "α (unit direction)")
        ax.set_ylabel(metric + (" (log)" if ax.get_yscale() == "log" else ""))
        ax.set_title(f"{problem}: {metric} along a random direction")
    base._legend_below(fig, axes, title="solid: train-eval · dashed: test")
    return base._save(fig, out, f"landscape_slice1d_{problem}")


def slice2d_figure(analyses: pd.DataFrame, grids: pd.DataFrame, problem: str, out: Path) -> str | None:
    return _contours(analyses, grids, problem, out, "slice2d", None)


def trajectory_figure(analyses: pd.DataFrame, grids: pd.DataFrame, trajectories: pd.DataFrame, problem: str,
                      out: Path) -> str | None:
    return _contours(analyses, grids, problem, out, "trajectory", trajectories)


def _contours(analyses: pd.DataFrame, grids: pd.DataFrame, problem: str, out: Path, kind: str,
              traj: pd.DataFrame | None) -> str | None:
    """One train-loss contour panel per run (shared levels); with ``traj`` the PCA-plane view and its paths."""
    meta = _ordered_runs(analyses[(analyses["kind"] == kind) & (analyses["problem"] == problem)]).head(MAX_PANELS)
    if meta.empty:
        return None
    parts = {aid: _grid(grids, aid, "train", "loss") for aid in meta["analysis_id"]}
    parts = {k: v for k, v in parts.items() if not v.empty}
    if not parts:
        return None
    meta = meta[meta["analysis_id"].isin(parts)]
    levels = _levels(np.concatenate([g["value"].to_numpy(dtype=float) for g in parts.values()]))
    log = levels[0] > 0 and levels[-1] / levels[0] > 10 and np.allclose(np.diff(np.log(levels)),
                                                                        np.log(levels[1] / levels[0]))
    norm = base.matplotlib.colors.LogNorm(levels[0], levels[-1]) if log else None
    fig, axes = _panel_grid(len(meta))
    cs = None
    trajectories = kind == "trajectory"
    for ax, (_, row) in zip(axes, meta.iterrows()):
        xs, ys, z = _mesh(parts[row["analysis_id"]])
        cs = ax.contourf(xs, ys, np.clip(z, levels[0], None), levels=levels, cmap="viridis", norm=norm,
                         extend="max")
        ax.contour(xs, ys, z, levels=levels, colors="white", linewidths=0.3, alpha=0.5)
        if trajectories and traj is not None:
            path = traj[traj["analysis_id"] == row["analysis_id"]].sort_values("epoch")
            if len(path):
                ax.plot(path["x"], path["y"], color="#D55E00", lw=1.2, marker="o", ms=2.2, label="trajectory")
                ax.plot(path["x"].iloc[:1], path["y"].iloc[:1], marker="s", color="white", mec="black", ms=5,
                        ls="none", label="epoch 0")
        ax.plot([0], [0], marker="*", color="white", mec="black", ms=9, ls="none", label="final point")
        if trajectories:
            ev = row["explained_variance"]
            ev = list(ev) if ev is not None and not (isinstance(ev, float) and math.isnan(ev)) else [math.nan] * 2
            ax.set_xlabel(f"PC 1 ({ev[0]:.1%} of the path's variance)")
            ax.set_ylabel(f"PC 2 ({ev[1]:.1%})")
        else:
            ax.set_xlabel("α (direction 1)")
            ax.set_ylabel("β (direction 2)")
        ax.set_title(row["label"])
    what = "trajectory on its PCA plane, train-eval loss" if trajectories else "train-eval loss around the final point"
    fig.suptitle(f"{problem}: {what}")
    if cs is not None:
        fig.colorbar(cs, ax=axes, label="train-eval loss" + (" (log scale)" if log else ""),
                     shrink=0.9 if len(axes) <= 2 else 0.6, aspect=30,
                     format=base.matplotlib.ticker.FormatStrFormatter("%.3g"))
    if trajectories:
        base._legend_below(fig, axes[:1] if len(axes) > 1 else axes)
    return base._save(fig, out, f"landscape_{'trajectory' if trajectories else 'slice2d'}_{problem}")


# ---------------------------------------------------------------------------------------------- sharpness
def stability_threshold(optimizer: str, hyperparameters: str | None, schedule: str | None) -> float | None:
    """2/η (SGD) or (2 + 2μ)/η (heavy ball, Nesterov, SAM's base): the largest curvature gradient descent with a
    constant step η is stable on (Cohen et al. 2021's edge of stability); None elsewhere."""
    if schedule != "constant" or not hyperparameters:
        return None
    try:
        hp = json.loads(hyperparameters)
    except (TypeError, ValueError):
        return None
    lr = hp.get("learning_rate")
    if not lr:
        return None
    if optimizer == "sgd":
        return 2.0 / lr
    if optimizer in ("momentum", "nag", "sam") and hp.get("momentum") is not None:
        return (2.0 + 2.0 * hp["momentum"]) / lr
    return None


def sharpness_figure(analyses: pd.DataFrame, sharpness: pd.DataFrame, problem: str, out: Path) -> str | None:
    meta = _ordered_runs(analyses[(analyses["kind"] == "sharpness") & (analyses["problem"] == problem)])
    data = sharpness[sharpness["analysis_id"].isin(meta["analysis_id"])]
    if data.empty:
        return None
    colors = _colors(analyses)
    fig, axes = _panel_grid(1, width=6.0, height=3.4)
    ax = axes[0]
    for _, row in meta.iterrows():
        d = data[data["analysis_id"] == row["analysis_id"]].sort_values("epoch")
        if d.empty:
            continue
        st = colors.get(row["optimizer"], base.style(0))
        ax.plot(d["epoch"], d["lambda_max"], color=st["color"], ls=st["linestyle"], lw=1.2,
                marker="o" if len(d) < 3 else None, ms=3, label=row["label"])
        limit = stability_threshold(row["optimizer"], row["hyperparameters"], row["schedule"])
        if limit is not None and limit < 10 * float(d["lambda_max"].max()):
            ax.axhline(limit, color=st["color"], lw=0.7, ls=":")
    v = data["lambda_max"].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 30:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top Hessian eigenvalue λ_max" + (" (log)" if ax.get_yscale() == "log" else ""))
    ax.set_title(f"{problem}: sharpness over training (dotted: 2/η edge of stability)")
    base._legend_right(fig, ax)
    return base._save(fig, out, f"landscape_sharpness_{problem}")


# ---------------------------------------------------------------------------------------------- interpolation
def barrier(alphas: np.ndarray, losses: np.ndarray) -> float:
    """The largest excess of L(α) over the straight line between L(0) and L(1), α in [0, 1] (0 = no barrier)."""
    order = np.argsort(alphas)
    a, v = alphas[order], losses[order]
    l0, l1 = np.interp(0.0, a, v), np.interp(1.0, a, v)
    inside = (a >= 0) & (a <= 1)
    if not inside.any():
        return math.nan
    return float(max(0.0, np.max(v[inside] - ((1 - a[inside]) * l0 + a[inside] * l1))))


def interpolation_figure(analyses: pd.DataFrame, grids: pd.DataFrame, problem: str, out: Path) -> str | None:
    meta = analyses[(analyses["kind"] == "interpolation") & (analyses["problem"] == problem)]
    if meta.empty:
        return None
    order = {o: i for i, o in enumerate(OPTIMIZERS)}
    meta = meta.assign(_a=meta["optimizer"].map(lambda o: order.get(o, 99)),
                       _b=meta["other_optimizer"].map(lambda o: order.get(o, 99))).sort_values(
        ["_a", "_b", "label", "other_label"])
    splits = [s for s in ("train", "test") if (grids[grids["analysis_id"].isin(meta["analysis_id"])]["split"]
                                               == s).any()]
    fig, axes = _panel_grid(len(splits), width=4.6, height=3.4)
    for ax, split in zip(axes, splits):
        for i, (_, row) in enumerate(meta.iterrows()):
            st = base.style(i)
            g = _grid(grids, row["analysis_id"], split, "loss")
            if g.empty:
                continue
            ax.plot(g["x"], g["value"], color=st["color"], ls=st["linestyle"], lw=1.1,
                    label=f"{row['label']} → {row['other_label']}")
        for x in (0.0, 1.0):
            ax.axvline(x, color="0.6", lw=0.6, ls=":")
        part = grids[grids["analysis_id"].isin(meta["analysis_id"]) & (grids["metric"] == "loss")
                     & (grids["split"] == split)]["value"].to_numpy(float)
        part = part[np.isfinite(part)]
        if len(part) and part.min() > 0 and part.max() / part.min() > 100:
            ax.set_yscale("log")
        ax.set_xlabel("α: (1 − α) θ_a + α θ_b")
        ax.set_ylabel(f"{'train-eval' if split == 'train' else split} loss"
                      + (" (log)" if ax.get_yscale() == "log" else ""))
        ax.set_title(f"{'train-eval' if split == 'train' else split}")
    fig.suptitle(f"{problem}: linear interpolation between final points (a bump between 0 and 1: a barrier)")
    base._legend_below(fig, axes)
    return base._save(fig, out, f"landscape_interpolation_{problem}")


def all_figures(analyses: pd.DataFrame, grids: pd.DataFrame, trajectories: pd.DataFrame, sharpness: pd.DataFrame,
                out: Path) -> list[tuple[str, str, str]]:
    """Every figure of every problem: (problem, kind, stem)."""
    from bench.analysis.names import PROBLEMS

    drawn = []
    for problem in ordered(set(analyses["problem"].dropna()), PROBLEMS):
        for kind, stem in (("slice1d", slice1d_figure(analyses, grids, problem, out)),
                           ("slice2d", slice2d_figure(analyses, grids, problem, out)),
                           ("trajectory", trajectory_figure(analyses, grids, trajectories, problem, out)),
                           ("sharpness", sharpness_figure(analyses, sharpness, problem, out)),
                           ("interpolation", interpolation_figure(analyses, grids, problem, out))):
            if stem is not None:
                drawn.append((problem, kind, stem))
    return drawn
