"""The landscape analyses of recorded runs: slices, the trajectory's PCA plane, sharpness, interpolation.

Each analysis works on a :class:`RunContext` (a runs row, its saved parameters, the run's loss surface) and writes
its Parquet tables (``bench.landscape.store``); its id hashes its kind, runs and settings, so repeating it finds the
stored result (``force`` recomputes).

* ``slice1d`` / ``slice2d`` — L(θ* + α d₁ (+ β d₂)) around the final point θ* on an ``n`` (× ``n``) grid of
  α, β ∈ [−span, span], d₁, d₂ random directions (seeds ``direction_seed``, ``+1``) with filter normalisation
  (``directions``); the 1-D slice uses d₁, so it is the β = 0 row of the 2-D one. Loss and accuracy on train-eval
  and test.
* ``trajectory`` (Li et al. §7) — the snapshots' differences θ_i − θ* (i < final) are centred and their two
  principal directions u₁, u₂ taken (float64 Gram matrix of the S ≤ 101 snapshots, streamed over the parameters,
  so a memory-mapped file of any size works); each snapshot is projected, ((θ_i − θ*)·u₁, (θ_i − θ*)·u₂), and the
  loss is evaluated on a grid of the plane θ* + x u₁ + y u₂ covering the projected path (+ ``pca_margin``). The
  explained variance ratios say how much of the path the plane holds.
* ``sharpness`` — the Hessian's extreme eigenvalues of the train-eval loss (L2 included, eval mode) by Lanczos
  (default) or power iteration on Hessian-vector products, at the final point and at up to
  ``sharpness_snapshots`` snapshots along the trajectory (evenly spaced, the final one always).
* ``interpolation`` — L((1 − α) θ_a + α θ_b) for two runs of one problem (the same architecture), α on
  [``interp_from``, ``interp_to``], on run a's evaluation rows; float buffers (BN statistics) interpolated the same
  way. A barrier (a bump above the straight line between the ends) says the two points sit in different basins.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.landscape import directions as dirs
from bench.landscape import hessian, saver, store
from bench.landscape.surface import Surface

Say = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """Every knob of the analyses; the ones an analysis depends on go into its id."""

    grid: int = 25                 # 2-D slice points per axis
    points_1d: int = 51            # 1-D slice points
    span: float = 1.0              # slice coordinates in [-span, span]
    normalisation: str = "auto"    # auto | filter | layer | unit (directions.py)
    one_d: str = "zero"            # zero | filter: 1-D tensors (biases, BN parameters) in the directions
    direction_seed: int = 0
    splits: tuple[str, ...] = ("train", "test")
    rows: int | None = None        # evaluated rows per split (None: all the run loop evaluates)
    batching: str = "auto"         # auto | vmap | loop
    points_per_pass: int | None = None
    pca_grid: int = 25             # trajectory-plane points per axis
    pca_margin: float = 0.25       # plane grid beyond the projected path, as a fraction of its extent
    method: str = "lanczos"        # lanczos | power
    lanczos_steps: int = 30
    power_iterations: int = 100
    top_k: int = 3
    hessian_rows: int | None = None  # train-eval rows of the Hessian (None: all evaluated rows)
    sharpness_snapshots: int = 50
    interp_points: int = 31
    interp_from: float = -0.25
    interp_to: float = 1.25

    def of(self, kind: str) -> dict[str, Any]:
        """The settings ``kind`` depends on (its id hashes them)."""
        common = {"splits": list(self.splits), "rows": self.rows}
        if kind == "slice1d":
            return {**common, "points": self.points_1d, "span": self.span, "normalisation": self.normalisation,
                    "one_d": self.one_d, "direction_seed": self.direction_seed}
        if kind == "slice2d":
            return {**common, "grid": self.grid, "span": self.span, "normalisation": self.normalisation,
                    "one_d": self.one_d, "direction_seed": self.direction_seed}
        if kind == "trajectory":
            return {**common, "grid": self.pca_grid, "margin": self.pca_margin}
        if kind == "sharpness":
            return {"method": self.method, "steps": self.lanczos_steps, "iterations": self.power_iterations,
                    "top_k": self.top_k, "rows": self.hessian_rows if self.hessian_rows is not None else self.rows,
                    "snapshots": self.sharpness_snapshots}
        if kind == "interpolation":
            return {**common, "points": self.interp_points, "from": self.interp_from, "to": self.interp_to}
        raise ValueError(f"unknown analysis kind {kind!r}")


@dataclass
class RunContext:
    """A recorded run ready for landscapes: its record, spec, saved parameters and (lazily) its loss surface."""

    results_dir: Path
    record: dict[str, Any]
    saved: saver.SavedParams
    device: str = "cpu"
    data_dir: str | None = None
    budget: str | None = None
    settings: Settings = field(default_factory=Settings)
    _surface: Surface | None = None

    @property
    def run_id(self) -> str:
        return str(self.record["run_id"])

    @property
    def spec(self) -> Any:
        return saver.spec_of(self.record)

    @property
    def label(self) -> str:
        budget = f" {self.budget}" if self.budget else ""
        return f"{self.record['optimizer']}{budget} s{int(self.record['seed'])}"

    @property
    def surface(self) -> Surface:
        if self._surface is None:
            s = self.settings
            self._surface = Surface.from_spec(self.spec, device=self.device, data_dir=self.data_dir,
                                              splits=s.splits, rows=s.rows, batching=s.batching,
                                              points_per_pass=s.points_per_pass)
            if self._surface.size != self.saved.params.shape[1]:
                raise ValueError(f"run {self.run_id}: the file holds {self.saved.params.shape[1]} parameters, the "
                                 f"model has {self._surface.size}")
        return self._surface

    def final(self) -> Tensor:
        return self.saved.final.clone()

    def final_buffers(self) -> dict[str, Tensor]:
        return self.saved.buffers_at(len(self.saved.epochs) - 1)


# ---------------------------------------------------------------------------------------------- helpers
def _meta(kind: str, ctx: RunContext, settings: Mapping[str, Any], aid: str, **extra: Any) -> dict[str, Any]:
    rec = ctx.record
    surf = ctx._surface
    return {
        "analysis_id": aid, "kind": kind, "created_at": datetime.now(timezone.utc), "run_id": ctx.run_id,
        "problem": rec["problem"], "optimizer": rec["optimizer"], "schedule": rec["schedule"],
        "seed": int(rec["seed"]), "budget": ctx.budget, "label": ctx.label, "hyperparameters": rec["hyperparameters"],
        "settings": json.dumps(dict(settings), sort_keys=True, default=str),
        "splits": ",".join(settings.get("splits", [])) or None,
        "rows_train": surf.rows.get("train") if surf is not None else None,
        "rows_test": surf.rows.get("test") if surf is not None else None,
        "batching": (f"{surf.batching} ({surf.points_per_pass} points per pass)" if surf is not None
                     and surf.batching == "vmap" else (surf.batching if surf is not None else None)),
        "device": str(surf.device) if surf is not None else ctx.device,
        "record_train_loss": _num(rec.get("final_train_loss")), "record_test_loss": _num(rec.get("final_test_loss")),
        "params_origin": ctx.saved.origin, "params_matches_record": ctx.saved.matches_record,
        "versions": json.dumps({"torch": torch.__version__, "numpy": np.__version__}),
        "notes": "; ".join(surf.notes) if surf is not None and surf.notes else None, **extra,
    }


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _grid_rows(values: Mapping[str, Mapping[str, Tensor]], xs: Sequence[float], ys: Sequence[float] | None
               ) -> list[dict[str, Any]]:
    out = []
    for split, metrics in values.items():
        for metric, vals in metrics.items():
            v = vals.tolist()
            for i, value in enumerate(v):
                out.append({"x": float(xs[i]), "y": float(ys[i]) if ys is not None else math.nan, "split": split,
                            "metric": metric, "value": float(value)})
    return out


def _mesh(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    return gx.reshape(-1), gy.reshape(-1)


def _center(ctx: RunContext) -> dict[str, float | None]:
    res = ctx.surface.evaluate(ctx.final(), ["train", "test"] if "test" in ctx.surface.batches else ["train"],
                               buffers=ctx.final_buffers())
    return {"center_train_loss": res.get("train", {}).get("loss"), "center_test_loss": res.get("test", {}).get("loss")}


def _done(results_dir: Path, aid: str, force: bool) -> bool:
    return not force and store.exists(results_dir, aid)


# ---------------------------------------------------------------------------------------------- slices
def slice_directions(ctx: RunContext, count: int) -> Tensor:
    s = ctx.settings
    return dirs.directions(ctx.surface.layout, ctx.final(), count, s.direction_seed, s.normalisation, s.one_d)


def run_slice(ctx: RunContext, dims: int, *, force: bool = False) -> str:
    """A 1-D (``dims=1``) or 2-D slice around the final point; returns its analysis id."""
    kind = "slice1d" if dims == 1 else "slice2d"
    s = ctx.settings
    settings = s.of(kind)
    aid = store.analysis_id(kind, [ctx.run_id], settings)
    if _done(ctx.results_dir, aid, force):
        return aid
    surf = ctx.surface
    d = slice_directions(ctx, dims)
    n = s.points_1d if dims == 1 else s.grid
    axis = np.linspace(-s.span, s.span, n)
    if dims == 1:
        xs, ys = axis, None
        coefs = torch.tensor(axis, dtype=torch.float64).reshape(-1, 1)
    else:
        xs, ys = _mesh(axis, axis)
        coefs = torch.tensor(np.stack([xs, ys], axis=1), dtype=torch.float64)
    t0 = time.perf_counter()
    values = surf.evaluate_affine(ctx.final(), d, coefs, s.splits, buffers=ctx.final_buffers())
    seconds = time.perf_counter() - t0
    meta = _meta(kind, ctx, settings, aid, normalisation=dirs.resolve(s.normalisation, surf.layout),
                 one_d=s.one_d, direction_seed=s.direction_seed, grid_points=n, span=s.span,
                 points=int(coefs.shape[0]), seconds=seconds, points_per_s=coefs.shape[0] / max(seconds, 1e-12),
                 **_center(ctx))
    store.write(ctx.results_dir, meta, grids=_grid_rows(values, xs, ys))
    return aid


# ---------------------------------------------------------------------------------------------- trajectory
@dataclass
class Plane:
    """The trajectory's PCA plane through the final point."""

    u: Tensor                  # [2, P] orthonormal directions (float32)
    explained: list[float]     # variance ratios of the two components
    coords: np.ndarray         # [S, 2] projections of every snapshot (the final one is (0, 0))
    residual: np.ndarray       # [S] the part of θ_i − θ* outside the plane (norm)


def pca_plane(params: Tensor, final: Tensor | None = None, *, chunk: int = 1 << 20) -> Plane:
    """Top-2 principal directions of the centred differences θ_i − θ* (i < last), streamed over the parameters."""
    s_all, p = params.shape
    final = params[-1] if final is None else final
    rows = s_all - 1
    if rows < 2:
        raise ValueError(f"a trajectory plane needs at least 3 snapshots, got {s_all}")
    gram = torch.zeros(rows, rows, dtype=torch.float64)
    for c in range(0, p, chunk):
        d = params[:rows, c:c + chunk].double() - final[c:c + chunk].double()
        d = d - d.mean(dim=0, keepdim=True)
        gram += d @ d.T
    evals, evecs = torch.linalg.eigh(gram)
    evals, evecs = evals.flip(0).clamp(min=0.0), evecs.flip(1)
    total = float(evals.sum())
    if total <= 0 or float(evals[1]) <= 0:
        raise ValueError("the trajectory does not span a plane (fewer than two directions of movement)")
    u = torch.zeros(2, p, dtype=torch.float64)
    for c in range(0, p, chunk):
        d = params[:rows, c:c + chunk].double() - final[c:c + chunk].double()
        d = d - d.mean(dim=0, keepdim=True)
        u[:, c:c + chunk] = (evecs[:, :2].T @ d) / evals[:2].sqrt().reshape(2, 1)
    u = u / u.norm(dim=1, keepdim=True)
    coords = torch.zeros(s_all, 2, dtype=torch.float64)
    sq = torch.zeros(s_all, dtype=torch.float64)
    for c in range(0, p, chunk):
        d = params[:, c:c + chunk].double() - final[c:c + chunk].double()
        coords += d @ u[:, c:c + chunk].T
        sq += d.square().sum(dim=1)
    signs = torch.where(coords[0] < 0, -1.0, 1.0).to(torch.float64)  # orientation: the start in the (+, +) quadrant
    u, coords = u * signs.reshape(2, 1), coords * signs
    residual = (sq - coords.square().sum(dim=1)).clamp(min=0.0).sqrt()
    return Plane(u.float(), (evals[:2] / total).tolist(), coords.numpy(), residual.numpy())


def _plane_axis(values: np.ndarray, n: int, margin: float) -> np.ndarray:
    lo, hi = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
    extent = max(hi - lo, 1e-12)
    return np.linspace(lo - margin * extent, hi + margin * extent, n)


def run_trajectory(ctx: RunContext, *, force: bool = False) -> str | None:
    """The trajectory on its PCA plane, with the loss contour of that plane; None without a trajectory."""
    s = ctx.settings
    if len(ctx.saved.epochs) < 3:
        return None
    settings = s.of("trajectory")
    aid = store.analysis_id("trajectory", [ctx.run_id], settings)
    if _done(ctx.results_dir, aid, force):
        return aid
    plane = pca_plane(ctx.saved.params)
    surf = ctx.surface
    xs_axis = _plane_axis(plane.coords[:, 0], s.pca_grid, s.pca_margin)
    ys_axis = _plane_axis(plane.coords[:, 1], s.pca_grid, s.pca_margin)
    xs, ys = _mesh(xs_axis, ys_axis)
    coefs = torch.tensor(np.stack([xs, ys], axis=1), dtype=torch.float64)
    t0 = time.perf_counter()
    values = surf.evaluate_affine(ctx.final(), plane.u, coefs, s.splits, buffers=ctx.final_buffers())
    seconds = time.perf_counter() - t0
    path = [{"epoch": int(e), "x": float(x), "y": float(y), "residual": float(r)}
            for e, (x, y), r in zip(ctx.saved.epochs, plane.coords, plane.residual)]
    meta = _meta("trajectory", ctx, settings, aid, normalisation="pca", grid_points=s.pca_grid,
                 points=int(coefs.shape[0]), seconds=seconds, points_per_s=coefs.shape[0] / max(seconds, 1e-12),
                 explained_variance=plane.explained, snapshots=len(ctx.saved.epochs), **_center(ctx))
    store.write(ctx.results_dir, meta, grids=_grid_rows(values, xs, ys), trajectories=path)
    return aid


# ---------------------------------------------------------------------------------------------- sharpness
def snapshot_indices(count: int, most: int) -> list[int]:
    """Up to ``most`` snapshot indices, evenly spread, the first and the last always included."""
    if count <= most:
        return list(range(count))
    picks = np.unique(np.round(np.linspace(0, count - 1, max(most, 2))).astype(int))
    return [int(i) for i in picks]


def eigen_at(surf: Surface, theta: Tensor, buffers: Mapping[str, Tensor], settings: Settings,
             start: Tensor | None = None) -> hessian.Eigen:
    rows = settings.hessian_rows

    def hvp(v: Tensor) -> Tensor:
        return surf.hvp(theta, v, rows=rows, buffers=buffers)

    if settings.method == "power":
        return hessian.power_iteration(hvp, surf.size, iterations=settings.power_iterations, seed=0, start=start,
                                       device=surf.device, dtype=surf.dtype)
    return hessian.lanczos(hvp, surf.size, steps=settings.lanczos_steps, top_k=settings.top_k, seed=0,
                           device=surf.device, dtype=surf.dtype)


def run_sharpness(ctx: RunContext, *, force: bool = False, say: Say | None = None) -> str:
    """Top Hessian eigenvalues at the snapshots (the final point only for ``save_params=final``)."""
    s = ctx.settings
    settings = s.of("sharpness")
    aid = store.analysis_id("sharpness", [ctx.run_id], settings)
    if _done(ctx.results_dir, aid, force):
        return aid
    surf = ctx.surface
    picks = snapshot_indices(len(ctx.saved.epochs), s.sharpness_snapshots)
    rows, hvps, t_all = [], 0, time.perf_counter()
    start = None
    for i in picks:
        t0 = time.perf_counter()
        theta = ctx.saved.params[i].clone()
        if not torch.isfinite(theta).all():
            continue
        eig = eigen_at(surf, theta, ctx.saved.buffers_at(i), s, start)
        start = eig.vector if s.method == "power" else None  # power iteration warm-starts from the last vector
        hvps += eig.iterations
        rows.append({"run_id": ctx.run_id, "epoch": int(ctx.saved.epochs[i]), "lambda_max": eig.lambda_max,
                     "lambda_min": eig.lambda_min, "top": eig.top, "residual": eig.residual,
                     "iterations": eig.iterations, "seconds": time.perf_counter() - t0, "method": eig.method})
    seconds = time.perf_counter() - t_all
    meta = _meta("sharpness", ctx, settings, aid, points=hvps, seconds=seconds,
                 points_per_s=hvps / max(seconds, 1e-12), snapshots=len(rows))
    store.write(ctx.results_dir, meta, sharpness=rows)
    if say is not None and rows:
        say(f"  sharpness {ctx.label}: λ_max {rows[-1]['lambda_max']:.4g} at epoch {rows[-1]['epoch']} "
            f"({len(rows)} snapshots, {hvps} Hessian-vector products, {seconds:.1f} s)")
    return aid


# ---------------------------------------------------------------------------------------------- interpolation
def same_architecture(a: RunContext, b: RunContext) -> str | None:
    """Why two runs cannot be interpolated (None when they can)."""
    if a.record["problem"] != b.record["problem"]:
        return "different problems"
    pa_, pb = json.loads(a.record["problem_settings"]), json.loads(b.record["problem_settings"])
    if pa_ != pb:
        return "different problem settings"
    if a.saved.params.shape[1] != b.saved.params.shape[1]:
        return "different parameter counts"
    return None


def run_interpolation(a: RunContext, b: RunContext, *, force: bool = False) -> str:
    """L((1 − α) θ_a + α θ_b) on run a's rows; returns the analysis id."""
    s = a.settings
    why = same_architecture(a, b)
    if why is not None:
        raise ValueError(f"cannot interpolate {a.run_id} and {b.run_id}: {why}")
    settings = s.of("interpolation")
    aid = store.analysis_id("interpolation", [a.run_id, b.run_id], settings)
    if _done(a.results_dir, aid, force):
        return aid
    surf = a.surface
    alphas = np.linspace(s.interp_from, s.interp_to, s.interp_points)
    theta_a, theta_b = a.final(), b.final()
    ba, bb = a.final_buffers(), b.final_buffers()
    delta = {k: bb[k].to(v.dtype) - v for k, v in ba.items() if k in bb and v.is_floating_point()
             and bb[k].shape == v.shape}
    coefs = torch.tensor(alphas, dtype=torch.float64).reshape(-1, 1)
    t0 = time.perf_counter()
    values = surf.evaluate_affine(theta_a, (theta_b - theta_a).reshape(1, -1), coefs, s.splits, buffers=ba,
                                  buffer_delta=delta or None)
    seconds = time.perf_counter() - t0
    meta = _meta("interpolation", a, settings, aid, other_run_id=b.run_id, other_optimizer=b.record["optimizer"],
                 other_label=b.label, normalisation="none", grid_points=s.interp_points,
                 points=len(alphas), seconds=seconds, points_per_s=len(alphas) / max(seconds, 1e-12),
                 **_center(a))
    store.write(a.results_dir, meta, grids=_grid_rows(values, alphas, None))
    return aid


def settings_dict(settings: Settings) -> dict[str, Any]:
    return asdict(settings)
