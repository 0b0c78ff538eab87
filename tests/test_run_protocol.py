"""The DeepOBS run protocol (§0.1–0.3) as the run loop implements it, and SGD/Adam with TF semantics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.benchmark import bare_loop
from bench.spec import RunSpec, SpecError, make_spec
from bench.train import train
from optimizers import OPTIMIZERS
from problems.base import Problem
from problems.quadratic_deep import QuadraticDeep, dataset, hessian
from tests.conftest import ADAM_DEFAULTS, P1_SETTINGS


def p1(optimizer: str = "adam", hp: dict | None = None, **kw) -> RunSpec:
    settings = {**P1_SETTINGS, **kw.pop("settings", {})}
    return make_spec("quadratic_deep", optimizer, hp or ADAM_DEFAULTS, problem_settings=settings, **kw)


def test_n_plus_one_evaluations_epoch0_before_any_step() -> None:
    result = train(p1(settings={"num_epochs": 3}))
    for split in ("train", "valid", "test"):
        assert len(result.series(split, "loss")) == 4
    assert result.steps == 21
    # Epoch 0 is θ = 1 before any step: recompute it by hand on the evaluated rows.
    h = torch.from_numpy(hessian(0).astype(np.float32))
    x = torch.from_numpy(dataset("valid"))[:896]
    d = 1.0 - x
    assert result.series("valid", "loss")[0] == pytest.approx((0.5 * ((d @ h) * d).sum(1)).mean().item(), rel=1e-6)
    assert {e for (e, *_rest) in result.curves} == {0, 1, 2, 3}


def test_batch_size_and_epochs_overridable() -> None:
    result = train(p1(settings={"num_epochs": 3, "batch_size": 64}))
    assert result.steps == 3 * (1000 // 64)


def test_repeat_order_reuses_one_permutation_fresh_draws_new() -> None:
    def epoch_batches(order: str, seed: int) -> list[list[torch.Tensor]]:
        prob = QuadraticDeep(P1_SETTINGS, seed=seed, device=torch.device("cpu"), data_order=order)
        prob.load_data()
        return [[b[0] for b in prob.train_batches(e)] for e in range(3)]

    rep = epoch_batches("repeat", 42)
    assert all(torch.equal(a, b) for e in (1, 2) for a, b in zip(rep[0], rep[e]))
    fresh = epoch_batches("fresh", 42)
    assert not torch.equal(fresh[0][0], fresh[1][0])
    other_seed = epoch_batches("repeat", 43)
    assert not torch.equal(rep[0][0], other_seed[0][0])
    # Drop-remainder: 7 batches of 128 distinct rows, 104 rows unused, the same ones every epoch.
    rows = torch.cat(rep[0])
    assert rows.shape == (896, 100) and torch.unique(rows, dim=0).shape[0] == 896


def test_train_eval_is_head_of_the_shuffled_stream() -> None:
    prob = QuadraticDeep(P1_SETTINGS, seed=42, device=torch.device("cpu"))
    prob.load_data()
    evaluated = torch.cat([b[0] for b in prob.eval_batches("train")])
    trained = torch.cat([b[0] for b in prob.train_batches(0)])
    assert torch.equal(evaluated, trained)


class _Tiny(Problem):
    name = "tiny"


def test_l2_on_kernels_only() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    prob = _Tiny({"batch_size": 1, "num_epochs": 1, "weight_decay": 0.002}, seed=0, device=torch.device("cpu"))
    expected = 0.5 * 0.002 * (model[0].weight.square().sum() + model[3].weight.square().sum())
    assert torch.allclose(prob.regularizer(model), expected)
    none = _Tiny({"batch_size": 1, "num_epochs": 1}, seed=0, device=torch.device("cpu"))
    assert none.regularizer(model) == 0.0


@pytest.mark.parametrize("hp", [ADAM_DEFAULTS, {**ADAM_DEFAULTS, "learning_rate": 0.05, "beta1": 0.6,
                                                 "beta2": 0.85, "epsilon": 0.3}])
def test_tf_adam_matches_reference(hp: dict) -> None:
    """tf.train.AdamOptimizer written from its documentation (epsilon-hat form) in numpy float64, step by step."""
    rng = np.random.RandomState(0)
    a = rng.normal(size=(5, 5))
    h = a @ a.T + np.eye(5)
    targets = rng.normal(size=(13, 5))  # a different target each step: varying gradients
    theta0 = rng.normal(size=5)
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    opt = OPTIMIZERS.get("adam").build([p], OPTIMIZERS.get("adam").validate(hp))
    theta, m, v = theta0.copy(), 0.0, 0.0
    for t in range(1, 13):
        g = h @ (theta - targets[t])
        m = hp["beta1"] * m + (1 - hp["beta1"]) * g
        v = hp["beta2"] * v + (1 - hp["beta2"]) * g * g
        lr_t = hp["learning_rate"] * np.sqrt(1 - hp["beta2"]**t) / (1 - hp["beta1"]**t)
        theta = theta - lr_t * m / (np.sqrt(v) + hp["epsilon"])
        p.grad = torch.tensor(h @ (p.detach().numpy() - targets[t]), dtype=torch.float64)
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-12, atol=1e-12)


def test_tf_adam_differs_from_torch_adam_and_torch_semantics_is_torch() -> None:
    g = torch.tensor([1e-4, -3e-4, 2e-5], dtype=torch.float64)
    out = {}
    for sem in ("tf", "torch"):
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        hp = {**ADAM_DEFAULTS, "epsilon": 1e-3, "semantics": sem}
        opt = OPTIMIZERS.get("adam").build([p], hp)
        for _ in range(3):
            p.grad = g.clone()
            opt.step()
        out[sem] = p.detach().clone()
    ref = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    topt = torch.optim.Adam([ref], lr=1e-3, betas=(0.9, 0.999), eps=1e-3)
    for _ in range(3):
        ref.grad = g.clone()
        topt.step()
    assert torch.equal(out["torch"], ref.detach())
    assert not torch.allclose(out["tf"], out["torch"], rtol=1e-3)


def test_sgd_is_plain_gradient_descent() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = OPTIMIZERS.get("sgd").build([p], {"learning_rate": 0.1})
    for g in ([0.5, 1.0], [-1.0, 2.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), [1.0 - 0.05 + 0.1, -2.0 - 0.1 - 0.2])


def test_divergence_stops_and_keeps_measured_metrics() -> None:
    result = train(p1("sgd", {"learning_rate": 10.0}, settings={"num_epochs": 20}))
    assert result.status == "diverged"
    losses = result.series("test", "loss")
    assert 1 < len(losses) < 21 and not math.isfinite(losses[-1]) and all(map(math.isfinite, losses[:-1]))
    rec = result.record()
    assert rec["status"] == "diverged" and rec["epochs_completed"] == len(losses) - 1
    assert rec["best_valid_epoch"] is not None and math.isfinite(rec["best_valid_test_metric"])


def test_determinism_bit_identical_curves() -> None:
    a = train(p1(settings={"num_epochs": 5}, seed=7))
    b = train(p1(settings={"num_epochs": 5}, seed=7))
    assert a.curves == b.curves
    c = train(p1(settings={"num_epochs": 5}, seed=8))
    assert a.curves != c.curves


def test_harness_and_bare_benchmark_loop_compute_the_same() -> None:
    history: list = []
    bare_loop(4, history=history)
    res = train(p1(settings={"num_epochs": 4}))
    for split_index, split in enumerate(("train", "valid", "test")):
        np.testing.assert_allclose([h[split_index] for h in history], res.series(split, "loss"), rtol=1e-6)


def test_run_id_is_a_content_hash() -> None:
    a, b = p1(), p1()
    assert a.run_id == b.run_id and len(a.run_id) == 20
    assert p1(seed=43).run_id != a.run_id
    assert p1(hp={**ADAM_DEFAULTS, "learning_rate": 0.0010000001}).run_id != a.run_id
    assert p1(settings={"hessian_draw": 1}).run_id != a.run_id
    assert p1(data_order="fresh").run_id != a.run_id
    # Int and float spellings of the same value are the same spec.
    assert p1(hp={**ADAM_DEFAULTS, "learning_rate": 1}).run_id == p1(hp={**ADAM_DEFAULTS, "learning_rate": 1.0}).run_id


@pytest.mark.parametrize("kwargs, fragment", [
    ({"optimizer": "adamm"}, "unknown optimizer 'adamm'; valid:"),
    ({"hp": {**ADAM_DEFAULTS, "learning_rate": -0.1}}, "invalid learning_rate=-0.1"),
    ({"hp": {**ADAM_DEFAULTS, "beta1": 1.0}}, "invalid beta1=1.0: must be a number in [0, 1)"),
    ({"hp": {**ADAM_DEFAULTS, "beta2": "x"}}, "invalid beta2='x'"),
    ({"hp": {**ADAM_DEFAULTS, "momentum": 0.9}}, "unknown hyperparameter 'momentum' for optimizer adam"),
    ({"hp": {**ADAM_DEFAULTS, "semantics": "keras"}}, "invalid semantics='keras': must be one of tf, torch"),
    ({"schedule": "linear"}, "unknown schedule 'linear'; valid:"),
    ({"settings": {"batch_size": 0}}, "invalid problem.batch_size=0"),
    ({"data_order": "random"}, "invalid data_order='random'"),
])
def test_spec_validation_one_line(kwargs: dict, fragment: str) -> None:
    optimizer = kwargs.pop("optimizer", "adam")
    with pytest.raises(SpecError) as err:
        p1(optimizer, **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)
