"""The report's landscape section (issue #14, protocol §9): drawn from ``results_dir/landscape/`` alone (Parquet,
no torch), present when ``valley-landscape compute`` stored anything.

Per problem: a summary table per run — the top Hessian eigenvalue at the final point and its peak over training
(sharpness), the negative curvature left (λ_min), the 1-D slice's rise a half-span away (a flatness number in Li et
al.'s units), the share of the trajectory's movement in its PCA plane — then the figures (1-D and 2-D slices,
trajectories on their PCA planes, sharpness over training, interpolations) and the interpolation barriers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bench.analysis.names import OPTIMIZERS, PROBLEMS, ordered


def _tables(results_dir: str | Path) -> dict[str, pd.DataFrame]:
    from bench.landscape import store

    return {t: store.read(results_dir, t) for t in store.TABLES}


def _rise(grids: pd.DataFrame, aid: str, at: float) -> float:
    g = grids[(grids["analysis_id"] == aid) & (grids["split"] == "train") & (grids["metric"] == "loss")]
    if g.empty:
        return np.nan
    x, v = g["x"].to_numpy(float), g["value"].to_numpy(float)
    order = np.argsort(x)
    x, v = x[order], v[order]
    centre = np.interp(0.0, x, v)
    return float(np.mean([np.interp(-at, x, v), np.interp(at, x, v)]) - centre)


def summary_table(results_dir: str | Path, run_ids: Iterable[str] | None = None,
                  tables: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per run with landscape data (see the module docstring)."""
    t = tables or _tables(results_dir)
    a = t["analyses"]
    if a.empty:
        return pd.DataFrame()
    if run_ids is not None:
        a = a[a["run_id"].isin(list(run_ids))]
    a = a[a["kind"] != "interpolation"]
    rows = []
    for run_id, part in a.groupby("run_id", sort=False):
        first = part.iloc[0]
        row: dict[str, Any] = {"problem": first["problem"], "optimizer": first["optimizer"],
                               "budget": first["budget"], "seed": int(first["seed"]), "run_id": run_id,
                               "final_train_loss": first["record_train_loss"],
                               "final_test_loss": first["record_test_loss"]}
        sharp = part[part["kind"] == "sharpness"].sort_values("created_at")
        if len(sharp):
            s = t["sharpness"][t["sharpness"]["analysis_id"] == sharp.iloc[-1]["analysis_id"]].sort_values("epoch")
            if len(s):
                row.update(lambda_max_final=float(s["lambda_max"].iloc[-1]),
                           lambda_max_peak=float(s["lambda_max"].max()),
                           peak_epoch=int(s.loc[s["lambda_max"].idxmax(), "epoch"]),
                           lambda_min_final=s["lambda_min"].iloc[-1])
        one = part[part["kind"] == "slice1d"].sort_values("created_at")
        if len(one):
            span = float(one.iloc[-1]["span"])
            row[f"slice_rise_at_{span / 2:g}"] = _rise(t["grids"], one.iloc[-1]["analysis_id"], span / 2)
            row["normalisation"] = one.iloc[-1]["normalisation"]
        traj = part[part["kind"] == "trajectory"].sort_values("created_at")
        if len(traj):
            ev = traj.iloc[-1]["explained_variance"]
            if ev is not None and len(ev) >= 2:
                row["pca_variance_2d"] = float(ev[0] + ev[1])
        centre = part["center_train_loss"].dropna()
        if len(centre):
            row["centre_train_loss"] = float(centre.iloc[-1])
        origins = set(part["params_origin"].dropna())
        row["params"] = ",".join(sorted(origins)) or None
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {o: i for i, o in enumerate(OPTIMIZERS)}
    prob = {p: i for i, p in enumerate(PROBLEMS)}
    out = out.assign(_p=out["problem"].map(lambda p: prob.get(p, 99)),
                     _o=out["optimizer"].map(lambda o: order.get(o, 99))).sort_values(["_p", "_o", "seed"])
    return out.drop(columns=["_p", "_o"]).reset_index(drop=True)


def interpolation_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    from bench.landscape.figures import barrier

    a = tables["analyses"]
    a = a[a["kind"] == "interpolation"]
    rank = {o: i for i, o in enumerate(OPTIMIZERS)}
    prob = {p: i for i, p in enumerate(PROBLEMS)}
    a = a.assign(_p=a["problem"].map(lambda p: prob.get(p, 99)), _a=a["optimizer"].map(lambda o: rank.get(o, 99)),
                 _b=a["other_optimizer"].map(lambda o: rank.get(o, 99))).sort_values(["_p", "_a", "_b", "label"])
    rows = []
    grids = tables["grids"]
    for _, r in a.iterrows():
        row = {"problem": r["problem"], "from": r["label"], "to": r["other_label"]}
        for split in ("train", "test"):
            g = grids[(grids["analysis_id"] == r["analysis_id"]) & (grids["split"] == split)
                      & (grids["metric"] == "loss")]
            if len(g):
                x, v = g["x"].to_numpy(float), g["value"].to_numpy(float)
                row[f"barrier_{split}"] = barrier(x, v)
                row[f"loss_mid_{split}"] = float(np.interp(0.5, np.sort(x), v[np.argsort(x)]))
        rows.append(row)
    return pd.DataFrame(rows)


def section(doc: Any, results_dir: str | Path, fig_dir: Path) -> None:
    """The report section (a no-op without landscape data)."""
    from bench.landscape import figures, store

    if not store.has_data(results_dir):
        return
    t = _tables(results_dir)
    a = t["analyses"]
    doc.heading("Loss landscapes and sharpness")
    kinds = a["kind"].value_counts()
    doc.para("Where optimizers land (Li et al. 2018; protocol §9), from valley-landscape's tables: "
             + ", ".join(f"{n} {k}" for k, n in kinds.items()) + f" over {a['run_id'].nunique()} runs. "
             "Slices: L(θ* + α d₁ + β d₂) around each run's final point θ*, d random with filter normalisation "
             "(each filter scaled to the norm of the weights' filter; biases and batch-norm parameters left at θ*; "
             "P1, a single vector, uses unit directions), train-eval (the head of the run's training stream) and "
             "test, L2 included, eval mode (batch norm with the run's final running statistics). Sharpness: the "
             "top Hessian eigenvalue of the train-eval loss (Lanczos on Hessian-vector products).")
    summ = summary_table(results_dir, tables=t)
    if len(summ):
        doc.table(summ, "landscape_summary", "Per run: sharpness (λ_max final and peak, λ_min final), the 1-D "
                                             "slice's rise, the trajectory's share in its PCA plane", max_rows=60)
    for problem in ordered(set(a["problem"].dropna()), PROBLEMS):
        doc.heading(problem, 3)
        doc.figure(figures.slice1d_figure(a, t["grids"], problem, fig_dir),
                   f"{problem}: train-eval and test loss along one filter-normalised random direction")
        doc.figure(figures.slice2d_figure(a, t["grids"], problem, fig_dir),
                   f"{problem}: train-eval loss on a random 2-D slice around each final point (shared levels)")
        doc.figure(figures.trajectory_figure(a, t["grids"], t["trajectories"], problem, fig_dir),
                   f"{problem}: trajectories on their PCA planes over the plane's train-eval loss")
        doc.figure(figures.sharpness_figure(a, t["sharpness"], problem, fig_dir),
                   f"{problem}: top Hessian eigenvalue over training")
        doc.figure(figures.interpolation_figure(a, t["grids"], problem, fig_dir),
                   f"{problem}: linear interpolation between final points")
    interp = interpolation_table(t)
    if len(interp):
        doc.table(interp, "landscape_interpolation", "Interpolation barriers: max over α ∈ [0, 1] of L(α) above "
                                                     "the straight line between the ends (0: one basin)")
    cost = a[["problem", "kind", "label", "points", "seconds", "points_per_s", "batching", "device"]]
    doc.table(cost, "landscape_cost", "Cost of each landscape analysis (points: parameter vectors evaluated on "
                                      "every split; sharpness: Hessian-vector products)", show=False)
