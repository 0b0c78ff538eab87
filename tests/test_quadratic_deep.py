"""P1 quadratic_deep against §1 P1: the TF Hessian construction, the data, θ₀ = 1 and the published epoch-0 losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.spec import make_spec
from bench.train import train
from problems.quadratic_deep import QuadraticDeep, dataset, hessian
from tests.conftest import ADAM_DEFAULTS, P1_SETTINGS

# Published seed-42 values (§1 P1): test_losses[0], valid_losses[0] for draw k = 0 and the 2nd draw (k = 1).
PUBLISHED = {0: (353.44676426478793, 353.8127659388951), 1: (347.35823, 349.22410)}


def _independent_hessian(draw: int) -> np.ndarray:
    """The TF construction written again from the spec's pseudo-code (one shared RandomState(42))."""
    rng = np.random.RandomState(42)
    for _ in range(draw + 1):
        eig = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
        t = 2 * np.pi * rng.uniform()
        r = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        for d in range(2, 100):
            v = rng.normal(size=(d + 1, 1))
            v /= np.linalg.norm(v)
            e = np.zeros((d + 1, 1))
            e[0] = 1.0
            x = (e - v) / np.linalg.norm(e - v)
            dm = np.eye(d + 1)
            dm[1:, 1:] = r
            r = dm - 2 * x @ (x.T @ dm)
        r = -r
        h = r.T @ np.diag(eig) @ r
    return h


@pytest.mark.parametrize("draw", [0, 1])
def test_hessian_matches_independent_construction(draw: int) -> None:
    np.testing.assert_allclose(hessian(draw), _independent_hessian(draw), rtol=0, atol=1e-10)


def test_hessian_spectrum() -> None:
    h = hessian(0)
    np.testing.assert_allclose(h, h.T, atol=1e-10)
    eig = np.sort(np.linalg.eigvalsh(h))
    assert np.all((eig[:90] > 0) & (eig[:90] < 1)) and np.all((eig[90:] > 30) & (eig[90:] < 60))


def test_data_streams() -> None:
    for split, seed in (("train", 42), ("test", 43), ("valid", 44)):
        expected = np.random.RandomState(seed).normal(0.0, 0.6, (1000, 100)).astype(np.float32)
        np.testing.assert_array_equal(dataset(split), expected)
        assert dataset(split).dtype == np.float32


@pytest.mark.parametrize("draw", [0, 1])
def test_epoch0_losses_match_published(draw: int) -> None:
    spec = make_spec("quadratic_deep", "adam", ADAM_DEFAULTS,
                     problem_settings={**P1_SETTINGS, "num_epochs": 0, "hessian_draw": draw})
    result = train(spec)
    test0, valid0 = result.series("test", "loss")[0], result.series("valid", "loss")[0]
    assert test0 == pytest.approx(PUBLISHED[draw][0], rel=2e-6)
    assert valid0 == pytest.approx(PUBLISHED[draw][1], rel=2e-6)


def test_model_is_float32_ones_and_seven_steps() -> None:
    problem = QuadraticDeep(P1_SETTINGS, seed=42, device=torch.device("cpu"))
    problem.load_data()
    model = problem.build_model()
    assert model.theta.dtype == torch.float32 and torch.equal(model.theta, torch.ones(100))
    assert problem.steps_per_epoch() == 7
    batches = list(problem.train_batches(0))
    assert len(batches) == 7 and all(b[0].shape == (128, 100) for b in batches)
    assert problem.num_parameters(model) == 100
