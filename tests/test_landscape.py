"""Loss landscapes (issue #14, §9): exactness where it can be checked, the parameter saver, the CLI end to end.

Exact references: P1 is a quadratic, L(θ) = mean_i ½ (θ − x_i)ᵀ H (θ − x_i), so along any directions its surface is
a closed-form quadratic of the coordinates and its Hessian is H — whose eigenvalues are the construction's draws
(``RandomState(42)``: 90 in (0, 1), 10 in (30, 60)). On networks: Hessian-vector products against central finite
differences of gradients (float64), and power iteration / Lanczos against ``torch.linalg.eigvalsh`` of the full
Hessian of a tiny model, computed independently with ``torch.func.hessian``.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from bench import records
from bench.execute import execute
from bench.landscape import analyses, directions, hessian, saver, store
from bench.landscape.surface import Layout, Surface
from bench.spec import make_spec
from problems.base import Problem, Split
from problems.quadratic_deep import hessian as p1_hessian
from tests.conftest import ADAM_DEFAULTS, P1_SETTINGS, ROOT, run_valley

CONF = ROOT / "conf"
CPU = torch.device("cpu")


def p1_spec(epochs: int = 6, optimizer: str = "adam", hp: dict | None = None, seed: int = 42):
    return make_spec("quadratic_deep", optimizer, hp or dict(ADAM_DEFAULTS), seed=seed,
                     problem_settings={**P1_SETTINGS, "num_epochs": epochs})


def yaml_spec(name: str, optimizer: str = "sgd", **settings):
    s = yaml.safe_load((CONF / "problem" / f"{name}.yaml").read_text())
    s.pop("name")
    s.update(settings)
    hp = yaml.safe_load((CONF / "optimizer" / f"{optimizer}.yaml").read_text())
    hp.pop("name")
    return make_spec(name, optimizer, hp, problem_settings=s)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smoke data sets, generated once for the module."""
    return tmp_path_factory.mktemp("landscape-data")


def h32() -> torch.Tensor:
    """P1's Hessian as the model holds it (float32), in float64."""
    return torch.from_numpy(p1_hessian(0).astype(np.float32)).double()


def construction_eigenvalues() -> np.ndarray:
    rng = np.random.RandomState(42)
    return np.sort(np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10))))


def p1_closed_form(surface: Surface, split: str, points: torch.Tensor) -> torch.Tensor:
    """L(θ) = ½ θᵀHθ − θᵀH x̄ + ½ mean_i x_iᵀ H x_i on the surface's rows, float64, for each row of ``points``."""
    x = torch.cat([b[0] for b in surface.batches[split]]).double()
    h = h32()
    xbar = x.mean(0)
    const = 0.5 * ((x @ h) * x).sum(1).mean()
    p = points.double()
    return 0.5 * ((p @ h) * p).sum(1) - p @ (h @ xbar) + const


# ---------------------------------------------------------------------------------------------- P1: exact
def test_p1_2d_grid_is_the_closed_form_quadratic() -> None:
    surf = Surface.from_spec(p1_spec())
    gen = torch.Generator().manual_seed(3)
    theta = torch.randn(surf.size, generator=gen) * 0.3
    d = directions.directions(surf.layout, theta, 2, seed=5)  # auto: unit directions (θ is one 1-D tensor)
    assert torch.allclose(d.norm(dim=1), torch.ones(2))
    axis = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    coefs = torch.cartesian_prod(axis, axis)
    values = surf.evaluate_affine(theta, d, coefs, ("train", "test"))
    points = theta.double() + coefs @ d.double()
    for split in ("train", "test"):
        exact = p1_closed_form(surf, split, points)
        assert torch.allclose(values[split]["loss"], exact, rtol=2e-6, atol=0), split
    # and in coefficients: L = L0 + g·(a d1 + b d2) + ½ [a b] DᵀHD [a b]ᵀ, a paraboloid of the grid
    g = h32() @ (theta.double() - torch.cat([b[0] for b in surf.batches["train"]]).double().mean(0))
    curvature = d.double() @ h32() @ d.double().T
    l0 = p1_closed_form(surf, "train", theta.double().reshape(1, -1))[0]
    quad = l0 + coefs @ (d.double() @ g) + 0.5 * ((coefs @ curvature) * coefs).sum(1)
    assert torch.allclose(values["train"]["loss"], quad, rtol=2e-6)


def test_p1_top_eigenvalue_is_the_constructions_largest() -> None:
    surf = Surface.from_spec(p1_spec())
    theta = torch.zeros(surf.size)
    eig = construction_eigenvalues()
    hvp = lambda v: surf.hvp(theta, v)  # noqa: E731
    lz = hessian.lanczos(hvp, surf.size, steps=60, top_k=3)
    assert lz.lambda_max == pytest.approx(eig[-1], rel=1e-6)
    assert lz.top == pytest.approx(list(eig[::-1][:3]), rel=1e-6)
    assert lz.lambda_min == pytest.approx(eig[0], abs=1e-4)
    # the float32 H the model holds is H up to rounding; the full Hessian through autograd is that H
    assert torch.allclose(surf.full_hessian(theta).double(), h32(), atol=1e-5)
    assert torch.linalg.eigvalsh(h32())[-1].item() == pytest.approx(eig[-1], rel=1e-7)


def test_p1_interpolation_is_the_closed_form_parabola_without_barrier() -> None:
    from bench.landscape.figures import barrier

    surf = Surface.from_spec(p1_spec())
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(surf.size, generator=gen), torch.randn(surf.size, generator=gen)
    alphas = torch.linspace(-0.25, 1.25, 13, dtype=torch.float64)
    values = surf.evaluate_affine(a, (b - a).reshape(1, -1), alphas.reshape(-1, 1), ("test",))["test"]["loss"]
    exact = p1_closed_form(surf, "test", a.double() + alphas.reshape(-1, 1) * (b - a).double())
    assert torch.allclose(values, exact, rtol=2e-6)
    assert barrier(alphas.numpy(), values.numpy()) == 0.0  # a convex function lies below its chords


# ---------------------------------------------------------------------------------------------- a tiny net
class Tiny(Problem):
    """A 119-parameter conv net on random data, L2 on its kernels: small enough for its full Hessian."""

    name = "tiny"
    has_accuracy = True

    def load_data(self) -> None:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(48, 1, 6, 6, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 3, (48,), generator=gen)
        self.data = {s: Split(x, y) for s in ("train", "valid", "test")}

    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)).double()

    def compute(self, model, batch, training):  # noqa: ANN001, ANN201
        logits = model(batch[0])
        acc = None if training else (logits.argmax(1) == batch[1]).double().mean()
        return F.cross_entropy(logits, batch[1]) + self.regularizer(model), acc


def tiny_surface() -> Surface:
    problem = Tiny({"batch_size": 16, "num_epochs": 1, "weight_decay": 0.05}, 0, CPU)
    problem.load_data()
    return Surface(problem, problem.build_model(), splits=("train",))


def independent_hessian(surf: Surface, theta: torch.Tensor) -> torch.Tensor:
    """The tiny problem's loss written out again (no Surface code), differentiated by torch.func.hessian."""
    model = surf.problem.build_model()
    names = [n for n, _ in model.named_parameters()]
    x = torch.cat([b[0] for b in surf.batches["train"]])
    y = torch.cat([b[1] for b in surf.batches["train"]])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, surf.layout.tensors(flat)))
        logits = torch.func.functional_call(model, parts, (x,))
        l2 = 0.5 * 0.05 * (parts["0.weight"].square().sum() + parts["3.weight"].square().sum())
        return F.cross_entropy(logits, y) + l2

    return torch.func.hessian(loss)(theta)


def test_power_iteration_and_lanczos_match_eigvalsh_of_the_full_hessian() -> None:
    surf = tiny_surface()
    theta = surf.flat()
    assert surf.size == 119 and len(surf.batches["train"]) == 3  # 48 rows in chunks of 16
    full = independent_hessian(surf, theta)
    assert torch.allclose(surf.full_hessian(theta), full, atol=1e-12)
    evals = torch.linalg.eigvalsh(full)
    hvp = lambda v: surf.hvp(theta, v)  # noqa: E731
    dominant = evals[evals.abs().argmax()].item()
    power = hessian.power_iteration(hvp, surf.size, iterations=5000, tol=1e-13, dtype=torch.float64)
    assert power.lambda_max == pytest.approx(dominant, rel=1e-8)
    assert power.residual < 1e-5
    lz = hessian.lanczos(hvp, surf.size, steps=surf.size, top_k=3, dtype=torch.float64)
    assert lz.lambda_max == pytest.approx(evals[-1].item(), rel=1e-9)
    assert lz.lambda_min == pytest.approx(evals[0].item(), rel=1e-9, abs=1e-10)
    assert lz.top == pytest.approx(evals.flip(0)[:3].tolist(), rel=1e-8)
    few = hessian.lanczos(hvp, surf.size, steps=25, dtype=torch.float64)
    assert few.lambda_max == pytest.approx(evals[-1].item(), rel=1e-6)  # the extreme Ritz value converges first
    # the Hessian-vector products are the full Hessian's columns
    basis = torch.eye(surf.size, dtype=torch.float64)[:7]
    assert torch.allclose(surf.hvp(theta, basis), full[:7], atol=1e-12)


@pytest.mark.parametrize("name, rows, eps", [("tolstoi_char_rnn", 50, 1e-5), ("cifar10_3c3d", 128, 1e-7)])
def test_hvp_matches_finite_differences_on_a_smoke_net(name: str, rows: int, eps: float, data_dir: Path) -> None:
    """Smoke-size DeepOBS nets in float64: P8's LSTM (smooth: tanh and sigmoid gates, one batch of 50 × 50 chars)
    and P4's 3c3d (L2 on its six kernels: the regulariser must see the substituted weights; ReLU and max-pool
    kinks, so a small step keeps the differences away from them)."""
    surf = Surface.from_spec(yaml_spec(name, size="smoke"), data_dir=data_dir, rows=rows, splits=("train",),
                             dtype=torch.float64)
    assert surf.rows["train"] == rows
    theta = surf.flat()
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(surf.size, generator=gen, dtype=torch.float64)
    v /= v.norm()
    hv = surf.hvp(theta, v)
    _, g_plus = surf.loss_and_grad(theta + eps * v)
    _, g_minus = surf.loss_and_grad(theta - eps * v)
    fd = (g_plus - g_minus) / (2 * eps)
    assert (hv - fd).norm() / hv.norm() < 1e-5
    if name == "cifar10_3c3d":  # the L2 term's share of H·v is wd · v on the kernels
        assert surf.problem.weight_decay == 0.002
        saved, surf.problem.weight_decay = surf.problem.weight_decay, 0.0
        bare = surf.hvp(theta, v)
        surf.problem.weight_decay = saved
        mask = torch.cat([torch.full((p.numel(),), float(p.dim() > 1)) for p in surf.model.parameters()])
        assert torch.allclose(hv - bare, 0.002 * v * mask.double(), atol=1e-12)


# ---------------------------------------------------------------------------------------------- directions
def test_filter_normalisation_scales_each_filter_and_zeroes_biases() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    layout = Layout.of(model)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    raw = directions.random_direction(layout, 7)
    assert torch.equal(raw, directions.random_direction(layout, 7))
    d = directions.normalise(raw, theta, layout, "filter")
    for dp, wp, name in zip(layout.tensors(d), layout.tensors(theta), layout.names):
        if dp.dim() == 1:  # biases and BN gamma/beta: left at θ (Li et al.'s ignore=biasbn)
            assert torch.count_nonzero(dp) == 0, name
        else:
            assert torch.allclose(dp.reshape(dp.shape[0], -1).norm(dim=1), wp.reshape(wp.shape[0], -1).norm(dim=1),
                                  rtol=1e-5), name
    keep = directions.normalise(raw, theta, layout, "filter", one_d="filter")
    bias = layout.tensors(keep)[1]
    assert bias.norm() == pytest.approx(layout.tensors(theta)[1].norm().item(), rel=1e-5)
    layer = directions.normalise(raw, theta, layout, "layer")
    for dp, wp in zip(layout.tensors(layer), layout.tensors(theta)):
        assert dp.norm() == pytest.approx(wp.norm().item() if dp.dim() > 1 else 0.0, rel=1e-5)
    unit = directions.normalise(raw, theta, layout, "unit")
    assert unit.norm() == pytest.approx(1.0, rel=1e-6)
    assert directions.resolve("auto", layout) == "filter"
    assert directions.resolve("auto", Layout(("theta",), ((100,),))) == "unit"


# ---------------------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("name", ["fmnist_2c2d", "svhn_wrn164", "mnist_vae"])
def test_vmap_and_loop_agree(name: str, data_dir: Path) -> None:
    """Batched grid points equal one-point passes: conv nets, batch norm in eval mode with the run's running
    statistics (WRN: the statistics are perturbed, so a wrong buffer path shows), the VAE's fixed noise."""
    torch.set_num_threads(1)
    surf = Surface.from_spec(yaml_spec(name, size="smoke"), data_dir=data_dir, rows=32, batching="vmap",
                             points_per_pass=3)
    theta = surf.flat()
    buffers = {n: b + 0.1 * torch.rand_like(b) for n, b in surf.model.named_buffers() if b.is_floating_point()}
    d = directions.directions(surf.layout, theta, 2, seed=0)
    coefs = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.5, 0.1]], dtype=torch.float64)
    batched = surf.evaluate_affine(theta, d, coefs, buffers=buffers)
    assert surf.batching == "vmap" and not surf.notes
    surf.batching = "loop"
    looped = surf.evaluate_affine(theta, d, coefs, buffers=buffers)
    again = surf.evaluate_affine(theta, d, coefs, buffers=buffers)
    for split in batched:
        for metric in batched[split]:
            assert torch.allclose(batched[split][metric], looped[split][metric], rtol=1e-4, atol=1e-5)
            assert torch.equal(looped[split][metric], again[split][metric])  # common random numbers
    if name == "svhn_wrn164":
        plain = surf.evaluate_affine(theta, d, coefs[:1])
        assert not torch.allclose(plain["train"]["loss"], looped["train"]["loss"][:1])  # the buffers are used


def test_stateful_lstm_loops_and_restarts_its_state(data_dir: Path) -> None:
    surf = Surface.from_spec(yaml_spec("tolstoi_char_rnn", size="smoke"), data_dir=data_dir, batching="vmap")
    assert surf.batching == "loop"  # stateful: one point per pass
    theta = surf.flat()
    one = surf.evaluate(theta)
    assert surf.evaluate(theta) == one
    from bench.train import evaluate

    problem = surf.problem
    fresh = type(problem)(problem.settings, 42, CPU, "repeat", data_dir)
    fresh.load_data()
    torch.manual_seed(42)
    model = fresh.build_model()
    ref = evaluate(fresh, model)
    assert one["train"]["loss"] == pytest.approx(ref["train"]["loss"], rel=1e-6)
    assert one["test"]["accuracy"] == pytest.approx(ref["test"]["accuracy"], rel=1e-6)


# ---------------------------------------------------------------------------------------------- PCA plane
def test_pca_plane_of_a_planar_path_and_against_numpy() -> None:
    gen = torch.Generator().manual_seed(0)
    p = 500
    basis, _ = torch.linalg.qr(torch.randn(p, 2, generator=gen, dtype=torch.float64))
    final = torch.randn(p, generator=gen, dtype=torch.float64)
    t = torch.linspace(0, 1, 12, dtype=torch.float64)
    coords = torch.stack([3 * (1 - t), torch.sin(4 * t)], dim=1)
    coords[-1] = 0.0
    snaps = (final + coords @ basis.T).float()
    plane = analyses.pca_plane(snaps, chunk=64)
    assert sum(plane.explained) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(plane.residual, 0.0, atol=1e-4)
    back = torch.from_numpy(plane.coords) @ plane.u.double()  # reconstruct the differences from the plane
    assert torch.allclose(back, (snaps.double() - snaps[-1].double()), atol=1e-4)
    # against numpy on a path with noise: the same variance ratios and directions (up to sign)
    noisy = snaps + 0.01 * torch.randn(snaps.shape, generator=gen)
    plane = analyses.pca_plane(noisy, chunk=100)
    diff = (noisy[:-1] - noisy[-1]).double().numpy()
    diff -= diff.mean(0)
    _, s, vt = np.linalg.svd(diff, full_matrices=False)
    assert np.allclose(plane.explained, (s[:2] ** 2 / (s ** 2).sum()), rtol=1e-5)
    assert np.allclose(np.abs(plane.u.double().numpy() @ vt[:2].T), np.eye(2), atol=1e-4)


# ---------------------------------------------------------------------------------------------- the saver
def test_snapshot_epochs() -> None:
    assert saver.snapshot_epochs(100, "trajectory") == list(range(101))
    big = saver.snapshot_epochs(350, "trajectory")
    assert big[:3] == [0, 4, 8] and big[-1] == 350 and len(big) == 89
    for n in (1, 7, 160, 200, 1000):
        assert len(saver.snapshot_epochs(n, "trajectory")) <= saver.MAX_SNAPSHOTS + 1
    assert saver.snapshot_epochs(50, "final") == [50] and saver.snapshot_epochs(50, "none") == []


class Recorder:
    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}

    def on_epoch(self, epoch, metrics, info):  # noqa: ANN001, ANN201
        self.rows[epoch] = info.flat_params().clone()


def test_saver_keeps_the_trajectory_and_changes_nothing_else(tmp_path: Path) -> None:
    spec = p1_spec(epochs=6)
    plain = execute(spec, tmp_path / "plain", device="cpu")
    watch = Recorder()
    factory = saver.SaverFactory(str(tmp_path / "saved"), "trajectory")
    saved = execute(spec, tmp_path / "saved", device="cpu", observers=[watch, *factory(spec, {"role": ["single"]})])
    assert plain.record["params_file"] is None
    assert saved.record["params_file"] == f"params/{spec.run_id}.pt"
    assert records.find_run(tmp_path / "saved", spec.run_id)["params_file"] == saved.record["params_file"]
    a = records.read_curves(tmp_path / "plain").drop(columns="run_id")
    b = records.read_curves(tmp_path / "saved").drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)  # save_params does not change what a run computes
    blob = saver.load(tmp_path / "saved" / saved.record["params_file"])
    assert blob.epochs == list(range(7)) and blob.params.shape == (7, 100) and blob.status == "completed"
    for i, epoch in enumerate(blob.epochs):
        assert torch.equal(blob.params[i], watch.rows[epoch])
    assert set(blob.constant_buffers) == {"hessian"} and not blob.buffers  # P1's H stored once
    assert not any((tmp_path / "saved" / "params" / ".partial").iterdir())


def test_saver_resumes_with_its_run(tmp_path: Path) -> None:
    """A run killed after epoch 3 (checkpoint every epoch) and resumed writes the same file as one that was not."""
    from bench.checkpoint import CheckpointPolicy, CheckpointStore

    spec = p1_spec(epochs=6)
    whole = tmp_path / "whole"
    execute(spec, whole, device="cpu", observers=saver.SaverFactory(str(whole), "trajectory")(spec, {}))
    root = tmp_path / "killed"
    store_ = CheckpointStore.under(root, CheckpointPolicy(enabled=True, every_epochs=1, every_minutes=0))

    def kill(epoch, metrics):  # noqa: ANN001, ANN202
        if epoch == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(spec, root, device="cpu", on_epoch=kill, checkpoints=store_,
                observers=saver.SaverFactory(str(root), "trajectory")(spec, {}))
    assert (root / "params" / ".partial" / f"{spec.run_id}.bin").exists()
    out = execute(spec, root, device="cpu", checkpoints=store_,
                  observers=saver.SaverFactory(str(root), "trajectory")(spec, {}))
    assert out.record["resumes"] == 1
    a, b = saver.load(whole / f"params/{spec.run_id}.pt"), saver.load(root / out.record["params_file"])
    assert a.epochs == b.epochs == list(range(7)) and not b.missing
    assert torch.equal(a.params, b.params)


def test_save_params_runs_seeds_skips_tuning_trials() -> None:
    spec = p1_spec()
    f = saver.SaverFactory("r", "trajectory", "seeds")
    assert f(spec, {"role": ["trial"], "budget": ["small"]}) == []
    assert len(f(spec, {"role": ["seed"], "budget": ["small"]})) == 1
    assert len(f(spec, {"role": ["trial", "seed"]})) == 1  # a trial that is also a one-shot seed run
    assert len(f(spec, {"role": ["single"]})) == 1 and len(f(spec, {})) == 1
    assert len(saver.SaverFactory("r", "final")(spec, {"role": ["trial"]})) == 1
    assert saver.saver_factory({"save_params": "none"}) is None
    with pytest.raises(ValueError, match="save_params_runs"):
        saver.saver_factory({"save_params": "final", "save_params_runs": "winners"})
    import pickle

    assert pickle.loads(pickle.dumps(f)) == f
    from bench.cli import precheck

    assert "invalid save_params='often'" in precheck(["save_params=often"])
    assert precheck(["save_params=trajectory", "save_params_runs=seeds"]) is None


def test_retrain_keeps_parameters_of_a_run_recorded_without(tmp_path: Path) -> None:
    spec = p1_spec(epochs=5)
    out = execute(spec, tmp_path, device="cpu")
    assert out.record["params_file"] is None
    path = saver.retrain(tmp_path, records.find_run(tmp_path, spec.run_id))
    blob = saver.load(path)
    assert blob.origin == "retrain" and blob.matches_record and blob.max_curve_diff == 0.0
    assert records.find_run(tmp_path, spec.run_id)["params_file"] == f"params/{spec.run_id}.pt"
    assert len(records.read_runs(tmp_path)) == 1 and len(records.read_curves(tmp_path)) == 6 * 3
    # prune: a file no record knows goes, the run's stays
    (tmp_path / "params" / "0123456789abcdef0123.pt").write_bytes(b"x")
    assert [p.name for p in saver.prune(tmp_path)] == ["0123456789abcdef0123.pt"]
    assert path.exists()


# ---------------------------------------------------------------------------------------------- end to end
def test_landscape_cli_end_to_end(tmp_path: Path) -> None:
    """Two one-shot cells on P1 with trajectories (2 seeds each), valley-landscape on both, valley-report."""
    res = tmp_path / "res"
    cp = run_valley("-m", "problem=quadratic_deep", "optimizer=sgd,adam", "budget=oneshot", "problem.num_epochs=8",
                    "tuning.seeds=[42,43]", "save_params=trajectory", "save_params_runs=seeds", f"results_dir={res}",
                    "progress=false")
    assert cp.returncode == 0, cp.stderr
    runs = records.read_runs(res)
    assert len(runs) == 4 and runs["params_file"].notna().all()
    cmd = [sys.executable, "-m", "bench.landscape.cli", "compute", str(res), "--problem", "quadratic_deep",
           "--budget", "oneshot", "--grid", "5", "--points-1d", "7", "--pca-grid", "5", "--lanczos-steps", "25",
           "--sharpness-snapshots", "3", "--interp-points", "5"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    cp = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert cp.returncode == 0, cp.stderr
    meta = store.read(res, "analyses")
    assert sorted(meta["kind"].value_counts().items()) == [("interpolation", 1), ("sharpness", 2), ("slice1d", 2),
                                                           ("slice2d", 2), ("trajectory", 2)]
    assert set(meta["seed"]) == {42}  # --seeds first: one run per cell
    sl = meta[meta["kind"] == "slice2d"]
    assert np.allclose(sl["center_train_loss"], sl["record_train_loss"], rtol=1e-6)  # P1: the run's train-eval
    assert np.allclose(sl["center_test_loss"], sl["record_test_loss"], rtol=1e-6)
    sharp = store.read(res, "sharpness")
    assert np.allclose(sharp["lambda_max"], construction_eigenvalues()[-1], rtol=1e-5)  # H, wherever θ is
    assert sorted(sharp.groupby("analysis_id")["epoch"].apply(list).iloc[0]) == [0, 4, 8]
    grids = store.read(res, "grids")
    one = grids[grids["analysis_id"].isin(meta.loc[meta["kind"] == "slice1d", "analysis_id"])]
    assert len(one) == 2 * 7 * 2  # 2 runs x 7 points x {train, test} loss
    traj = store.read(res, "trajectories")
    assert len(traj) == 2 * 9 and (traj[traj["epoch"] == 8][["x", "y"]] == 0).all().all()
    figs = sorted(p.name for p in (res / "landscape" / "figures").glob("*.png"))
    assert figs == [f"landscape_{k}_quadratic_deep.png" for k in
                    ("interpolation", "sharpness", "slice1d", "slice2d", "trajectory")]
    assert "lambda_max_final" in cp.stdout
    again = subprocess.run(cmd + ["--no-figures"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and len(store.read(res, "analyses")) == len(meta)  # found, not recomputed
    rep = subprocess.run([sys.executable, "-m", "bench.report.cli", str(res)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert rep.returncode == 0, rep.stderr
    md = (res / "report" / "report.md").read_text()
    assert "## Loss landscapes and sharpness" in md and "landscape_trajectory_quadratic_deep.png" in md
    assert (res / "report" / "tables" / "landscape_summary.csv").exists()


def test_landscape_cli_errors(tmp_path: Path) -> None:
    from bench.landscape import cli

    with pytest.raises(SystemExit):
        cli.main(["compute", str(tmp_path / "missing"), "--run", "x"])
    execute(p1_spec(epochs=2), tmp_path, device="cpu")
    with pytest.raises(SystemExit):
        cli.main(["compute", str(tmp_path)])  # no selection
    with pytest.raises(SystemExit):
        cli.main(["compute", str(tmp_path), "--run", "ffff"])
    with pytest.raises(SystemExit):
        cli.main(["compute", str(tmp_path), "--problem", "quadratic_deep", "--what", "everything"])


def test_landscape_modules_for_the_report_import_no_torch() -> None:
    code = ("import sys, bench.analysis.landscape, bench.landscape.figures, bench.landscape.store; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_store_roundtrip_and_ids(tmp_path: Path) -> None:
    aid = store.analysis_id("slice1d", ["r"], {"a": 1})
    assert aid == store.analysis_id("slice1d", ["r"], {"a": 1}) != store.analysis_id("slice1d", ["r"], {"a": 2})
    store.write(tmp_path, {"analysis_id": aid, "kind": "slice1d", "run_id": "r"},
                grids=[{"x": 0.0, "y": math.nan, "split": "train", "metric": "loss", "value": 1.5}])
    assert store.exists(tmp_path, aid) and store.has_data(tmp_path)
    g = store.read(tmp_path, "grids")
    assert list(g.columns) == store.GRIDS_SCHEMA.names and g["value"].tolist() == [1.5]
    assert store.read(tmp_path, "sharpness").empty
    assert json.loads(json.dumps(analyses.settings_dict(analyses.Settings())))["grid"] == 25


def synthetic_landscape(root: Path, optimizers=("sgd", "momentum", "adam", "adabelief", "sam")) -> None:
    """Landscape tables of five runs on one problem, every kind, written through the store (no torch)."""
    axis = np.linspace(-1, 1, 9)
    gx, gy = np.meshgrid(axis, axis)
    for i, opt in enumerate(optimizers):
        common = {"run_id": f"run{i}", "problem": "fmnist_2c2d", "optimizer": opt, "schedule": "constant",
                  "seed": 43, "budget": "small", "label": f"{opt} small s43", "hyperparameters":
                  json.dumps({"learning_rate": 0.1, "momentum": 0.9}), "normalisation": "filter", "span": 1.0,
                  "record_train_loss": 0.3, "record_test_loss": 0.4, "center_train_loss": 0.3,
                  "params_origin": "run"}
        for kind in ("slice1d", "slice2d", "trajectory", "sharpness"):
            aid = f"{kind}{i}"
            meta = {**common, "analysis_id": aid, "kind": kind, "created_at": pd.Timestamp.now(tz="UTC")}
            if kind == "slice1d":
                rows = [{"x": x, "y": math.nan, "split": s, "metric": m, "value": (1 + i) * x * x + 0.3 + o}
                        for x in axis for s, o in (("train", 0), ("test", 0.1)) for m in ("loss", "accuracy")]
                store.write(root, meta, grids=rows)
            elif kind == "sharpness":
                store.write(root, meta, sharpness=[{"run_id": f"run{i}", "epoch": e, "lambda_max": 10 + i * e,
                                                    "lambda_min": -0.1, "top": [10.0], "method": "lanczos"}
                                                   for e in range(0, 11, 2)])
            else:
                z = np.exp((1 + i) * (gx ** 2 + 0.3 * gy ** 2))
                rows = [{"x": x, "y": y, "split": "train", "metric": "loss", "value": v}
                        for x, y, v in zip(gx.ravel(), gy.ravel(), z.ravel())]
                extra = {}
                if kind == "trajectory":
                    meta["explained_variance"] = [0.9, 0.05]
                    extra["trajectories"] = [{"epoch": e, "x": 0.8 * (1 - e / 10), "y": 0.1 * math.sin(e),
                                              "residual": 0.0} for e in range(11)]
                store.write(root, meta, grids=rows, **extra)
    for k, (a, b) in enumerate(__import__("itertools").combinations(range(len(optimizers)), 2)):
        meta = {"analysis_id": f"interp{k}", "kind": "interpolation", "run_id": f"run{a}", "other_run_id": f"run{b}",
                "problem": "fmnist_2c2d", "optimizer": optimizers[a], "other_optimizer": optimizers[b],
                "label": f"{optimizers[a]} small s43", "other_label": f"{optimizers[b]} small s43", "seed": 43}
        rows = [{"x": x, "y": math.nan, "split": s, "metric": "loss", "value": 0.3 + k * 0.01 + np.sin(np.pi * x)}
                for x in np.linspace(-0.25, 1.25, 7) for s in ("train", "test")]
        store.write(root, meta, grids=rows)


def test_landscape_figures_read_at_a_glance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's rules (tests/test_report.py): no wider than the page, no text under 7 pt, legends off the
    axes; and the report section and its tables from the same data."""
    from bench.analysis import figures as base
    from bench.analysis.landscape import interpolation_table, summary_table
    from bench.landscape import figures
    from tests.test_report import _layout_problems

    synthetic_landscape(tmp_path)
    figs: dict = {}
    save = base._save

    def keep(fig, out, stem):  # noqa: ANN001, ANN202
        figs[stem] = fig
        return save(fig, out, stem)

    monkeypatch.setattr(base, "_save", keep)
    t = {name: store.read(tmp_path, name) for name in store.TABLES}
    drawn = figures.all_figures(t["analyses"], t["grids"], t["trajectories"], t["sharpness"], tmp_path / "f")
    assert sorted(k for _, k, _ in drawn) == ["interpolation", "sharpness", "slice1d", "slice2d", "trajectory"]
    for stem, fig in figs.items():
        assert _layout_problems(fig) == [], stem
    summ = summary_table(tmp_path)
    assert list(summ["optimizer"]) == ["sgd", "momentum", "adam", "adabelief", "sam"]
    assert summ["lambda_max_peak"].tolist() == [10, 20, 30, 40, 50]
    assert summ["peak_epoch"].tolist() == [0, 10, 10, 10, 10]
    assert summ["slice_rise_at_0.5"].tolist() == pytest.approx([0.25 * (1 + i) for i in range(5)])
    interp = interpolation_table(t)
    assert len(interp) == 10 and interp["barrier_train"].min() > 0.9  # sin(πα) on [0, 1]: a bump of height ~1
