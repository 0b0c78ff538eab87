"""The lecture's optimizers (SAM, L-BFGS, Sophia-G/H, §9) and the modern extras (AdamW, NAdamW, Lion, schedule-free
AdamW) against independent numpy references of their update rules.

Every torch run below goes through ``bench.train.make_step`` (the run loop's own step and closure) on a 7-d noisy
quadratic ``½·mean_i (θ−x_i)ᵀA(θ−x_i)`` split over two parameter tensors (so "global" norms span both), in float64
so that the references agree to ~1e-12. The references are written from the papers' formulas, not from the classes.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from bench.spec import make_spec
from bench.train import make_step, train
from optimizers import OPTIMIZERS
from optimizers.base import study_samples
from optimizers.sophiah import hutchinson_diagonal

NAMES = ("sam", "lbfgs", "sophiag", "sophiah", "adamw", "nadamw", "lion", "schedulefree_adamw")
CONF = Path(__file__).resolve().parent.parent / "conf" / "optimizer"
D, B, T = 7, 16, 8
_rng = np.random.RandomState(0)
_M = _rng.randn(D, D)
A_FULL = _M @ _M.T / D + 0.5 * np.eye(D)
A_DIAG = np.diag(np.linspace(0.5, 8.0, D))
THETA0 = _rng.randn(D)
BATCHES = [_rng.randn(B, D) + 0.3 for _ in range(T)]

# Sophia-H's run loop backpropagates with create_graph=True; zero_grad(set_to_none=True) breaks the cycle torch warns of.
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")


# --------------------------------------------------------------------------------------------------- the test bed
class Quad(nn.Module):
    """θ = (w ∈ R³, b ∈ R^{2×2}) flattened; per-example loss ½(θ−x)ᵀA(θ−x)."""

    def __init__(self, a: np.ndarray) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(THETA0[:3]))
        self.b = nn.Parameter(torch.tensor(THETA0[3:]).reshape(2, 2))
        self.register_buffer("a", torch.tensor(a))

    def theta(self) -> Tensor:
        return torch.cat([self.w, self.b.flatten()])

    def forward(self, x: Tensor) -> Tensor:
        d = self.theta() - x
        return 0.5 * ((d @ self.a) * d).sum(dim=1).mean()


class Bed:
    """A stand-in problem for ``make_step``: it logs the θ at which each loss / sampled loss is evaluated.

    Its sampled loss is ``½·mean_i (c_i·θ)²`` with c_i = tanh(x_i), a θ-dependent surrogate with a known gradient
    ĝ = Cᵀ(Cθ)/B, so Sophia-G's refresh schedule and its B·ĝ⊙ĝ scaling are checkable exactly.
    """

    def __init__(self, name: str, hp: dict[str, Any], a: np.ndarray = A_FULL) -> None:
        self.model = Quad(a)
        self.spec = OPTIMIZERS.get(name)
        self.optimizer = self.spec.build(self.model.parameters(), self.spec.validate(hp))
        self.spec.prepare(self.optimizer, self)
        self.seen: list[np.ndarray] = []
        self.sampled_seen: list[np.ndarray] = []
        self.step_fn, self.closure_calls = make_step(self, self.model, self.optimizer, self.spec)  # type: ignore[arg-type]

    def compute(self, model: Quad, batch: tuple[Tensor, ...], training: bool) -> tuple[Tensor, None]:
        self.seen.append(model.theta().detach().numpy().copy())
        return model(batch[0]), None

    def sampled_loss_terms(self) -> int:
        return B

    def sampled_loss(self, model: Quad, batch: tuple[Tensor, ...]) -> Tensor:
        self.sampled_seen.append(model.theta().detach().numpy().copy())
        return 0.5 * (torch.tanh(batch[0]) @ model.theta()).square().mean()

    def run(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for x in batches:
            self.step_fn((torch.tensor(x),))
            out.append(self.theta())
        return out

    def theta(self) -> np.ndarray:
        return self.model.theta().detach().numpy().copy()


def grad(theta: np.ndarray, x: np.ndarray, a: np.ndarray = A_FULL) -> np.ndarray:
    return a @ (theta - x.mean(axis=0))


def sampled_grad(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    c = np.tanh(x)
    return c.T @ (c @ theta) / x.shape[0]


def defaults(name: str, batch_size: int = 128) -> dict[str, Any]:
    """The YAML defaults, resolved in a config that has a problem (sophiag's B interpolates problem.batch_size)."""
    cfg = OmegaConf.merge({"problem": {"batch_size": batch_size}}, {"optimizer": OmegaConf.load(CONF / f"{name}.yaml")})
    out = OmegaConf.to_container(cfg, resolve=True)["optimizer"]
    out.pop("name")
    return out


def assert_path(torch_path: list[np.ndarray], ref_path: list[np.ndarray], rtol: float = 1e-10,
                atol: float = 1e-12) -> None:
    assert len(torch_path) == len(ref_path)
    for t, (a, b) in enumerate(zip(torch_path, ref_path)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"step {t + 1}")


# ------------------------------------------------------------------------------------------------------------ SAM
def ref_sam(lr: float, momentum: float, rho: float, adaptive: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    theta, v, path, eps_hats = THETA0.copy(), np.zeros(D), [], []
    for x in BATCHES:
        g = grad(theta, x)
        if adaptive:  # ASAM: ρ·θ²⊙g / ‖|θ|⊙g‖
            e = rho * theta**2 * g / np.linalg.norm(np.abs(theta) * g)
        else:
            e = rho * g / np.linalg.norm(g)
        v = momentum * v + grad(theta + e, x)
        theta = theta - lr * v
        path.append(theta)
        eps_hats.append(e)
    return path, eps_hats


@pytest.mark.parametrize("hp", [
    dict(defaults("sam")),
    dict(learning_rate=0.03, momentum=0.5, rho=0.3, adaptive=False),
    dict(learning_rate=0.02, momentum=0.8, rho=0.5, adaptive=True),
])
def test_sam_matches_reference_and_perturbs_at_the_global_l2_radius(hp: dict[str, Any]) -> None:
    bed = Bed("sam", hp)
    path = bed.run(BATCHES)
    ref, eps_hats = ref_sam(hp["learning_rate"], hp["momentum"], hp["rho"], hp["adaptive"])
    # pytorch_optimizer takes the global norm in float32 even for float64 parameters: ~1e-7 relative on ε̂.
    assert_path(path, ref, rtol=1e-7, atol=1e-8)
    assert bed.closure_calls() == 2 * T
    assert OPTIMIZERS.get("sam").grad_evals(hp, T, bed.closure_calls()) == 2 * T
    # Closure calls alternate θ_t, θ_t + ε̂_t on the same batch; the perturbation is the reference's ε̂.
    starts = [THETA0] + path[:-1]
    for t in range(T):
        np.testing.assert_allclose(bed.seen[2 * t], starts[t], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(bed.seen[2 * t + 1] - bed.seen[2 * t], eps_hats[t], rtol=1e-6, atol=1e-9)
        if not hp["adaptive"]:
            assert math.isclose(np.linalg.norm(bed.seen[2 * t + 1] - bed.seen[2 * t]), hp["rho"], rel_tol=1e-6)


# --------------------------------------------------------------------------------------------------------- L-BFGS
def ref_lbfgs(lr: float, history: int, batches: list[np.ndarray]) -> list[np.ndarray]:
    """torch.optim.LBFGS with max_iter = 1 and no line search, from the two-loop recursion (Nocedal & Wright 7.4)."""
    theta, path = THETA0.copy(), []
    dirs: list[np.ndarray] = []   # y_i
    stps: list[np.ndarray] = []   # s_i
    h_diag, d, t, prev_g = 1.0, None, None, None
    for n, x in enumerate(batches, 1):
        g = grad(theta, x)
        if n == 1:
            d = -g
        else:
            y, s = g - prev_g, d * t
            ys = y @ s
            if ys > 1e-10:  # curvature pairs with yᵀs ≤ 1e-10 are skipped
                if len(dirs) == history:
                    dirs.pop(0)
                    stps.pop(0)
                dirs.append(y)
                stps.append(s)
                h_diag = ys / (y @ y)
            q, alphas = -g, [0.0] * len(dirs)
            for i in reversed(range(len(dirs))):
                alphas[i] = (stps[i] @ q) / (dirs[i] @ stps[i])
                q = q - alphas[i] * dirs[i]
            r = h_diag * q
            for i in range(len(dirs)):
                beta_i = (dirs[i] @ r) / (dirs[i] @ stps[i])
                r = r + (alphas[i] - beta_i) * stps[i]
            d = r
        prev_g = g
        t = min(1.0, 1.0 / np.abs(g).sum()) * lr if n == 1 else lr
        assert g @ d < 0  # a descent direction: torch would stop the step otherwise
        theta = theta + t * d
        path.append(theta)
    return path


@pytest.mark.parametrize("lr,history", [(1.0, 10), (0.3, 3)])
def test_lbfgs_matches_two_loop_reference(lr: float, history: int) -> None:
    batches = BATCHES + [b[::-1] * 0.5 for b in BATCHES]  # 16 steps: the history of 3 wraps around
    hp = {**defaults("lbfgs"), "learning_rate": lr, "history_size": history}
    bed = Bed("lbfgs", hp)
    assert_path(bed.run(batches), ref_lbfgs(lr, history, batches), rtol=1e-9)
    assert bed.closure_calls() == len(batches)  # max_iter = 1: one gradient evaluation per mini-batch


def test_lbfgs_is_torch_lbfgs_with_the_mapped_arguments() -> None:
    hp = {**defaults("lbfgs"), "line_search_fn": "strong_wolfe", "history_size": 5, "max_iter": 2, "max_eval": 9}
    ours = Bed("lbfgs", hp)
    theirs = Bed("sgd", {"learning_rate": 0.0})  # a bed whose optimizer we replace by a hand-built torch LBFGS
    theirs.optimizer = torch.optim.LBFGS(theirs.model.parameters(), lr=1.0, max_iter=2, max_eval=9, history_size=5,
                                         line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-9)
    theirs.step_fn, theirs.closure_calls = make_step(theirs, theirs.model, theirs.optimizer, ours.spec)  # type: ignore[arg-type]
    a, b = ours.run(BATCHES), theirs.run(BATCHES)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert ours.closure_calls() == theirs.closure_calls() > 2 * T  # the line search evaluates more than once


def test_lbfgs_strong_wolfe_solves_a_deterministic_quadratic() -> None:
    """On one fixed batch, L-BFGS with a Wolfe line search and history ≥ dimension converges to the minimiser x̄.

    The tolerances are lowered because torch stops a step once gᵀd > −tolerance_change (1e-9 by default).
    """
    hp = {**defaults("lbfgs"), "line_search_fn": "strong_wolfe", "tolerance_change": 1e-25, "tolerance_grad": 1e-14}
    bed = Bed("lbfgs", hp)
    path = bed.run([BATCHES[0]] * 40)
    np.testing.assert_allclose(path[-1], BATCHES[0].mean(axis=0), atol=1e-8)


# --------------------------------------------------------------------------------------------------------- Sophia
def ref_sophia(hp: dict[str, Any], h_hat: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray,
               batches: list[np.ndarray]) -> tuple[list[np.ndarray], int, int]:
    """Liu et al. 2023, Algorithm 3; returns the path and how many coordinates were clipped / not clipped."""
    b1, b2, rho, k, lr, wd, eps = (hp[n] for n in ("beta1", "beta2", "rho", "k", "learning_rate", "weight_decay",
                                                   "epsilon"))
    theta, m, h, path, clipped, free = THETA0.copy(), np.zeros(D), np.zeros(D), [], 0, 0
    for t, x in enumerate(batches, 1):
        g = grad(theta, x, a)
        m = b1 * m + (1 - b1) * g
        if t % k == 1 % k:  # Algorithm 3: refresh when t mod k = 1 (every step when k = 1)
            h = b2 * h + (1 - b2) * h_hat(theta, x)
        theta = theta - lr * wd * theta
        ratio = m / np.maximum(rho * h, eps)
        clipped += int(np.sum(np.abs(ratio) > 1))
        free += int(np.sum(np.abs(ratio) < 1))
        theta = theta - lr * np.clip(ratio, -1.0, 1.0)
        path.append(theta)
    return path, clipped, free


SOPHIA_HP = [
    None,  # the YAML defaults: at lr 1e-3 and ρ 0.04 every coordinate stays clipped on this problem
    dict(learning_rate=0.05, beta1=0.9, beta2=0.95, rho=0.5, k=3, weight_decay=0.1, epsilon=1e-12),
    dict(learning_rate=0.02, beta1=0.8, beta2=0.9, rho=2.0, k=1, weight_decay=0.0, epsilon=1e-15),
]


@pytest.mark.parametrize("extra", SOPHIA_HP)
def test_sophiag_matches_reference_gnb_every_k_steps(extra: dict[str, Any] | None) -> None:
    batches = BATCHES * 3  # 24 steps: several refreshes for the default k = 10
    hp = {**defaults("sophiag", batch_size=B), **(extra or {})}
    bed = Bed("sophiag", hp)
    path = bed.run(batches)
    ref, clipped, free = ref_sophia(hp, lambda th, x: B * sampled_grad(th, x) ** 2, A_FULL, batches)
    assert_path(path, ref)
    assert clipped > 0 and (free > 0 or extra is None)  # both branches of the clip are exercised
    refresh_steps = [t for t in range(1, len(batches) + 1) if (t - 1) % hp["k"] == 0]
    assert bed.closure_calls() == len(batches) + len(refresh_steps)
    assert len(bed.sampled_seen) == len(refresh_steps)
    # The sampled loss is evaluated at θ_t (before the step) of each refresh step.
    starts = [THETA0] + path[:-1]
    for seen, t in zip(bed.sampled_seen, refresh_steps):
        np.testing.assert_allclose(seen, starts[t - 1], rtol=1e-12, atol=1e-12)


class CountingSophiaH:
    """Counts Hutchinson estimates by wrapping the estimator of a built optimizer."""

    def __init__(self, bed: Bed) -> None:
        self.calls: list[int] = []
        original = bed.optimizer.hessian_estimate

        def counted(params: list[Tensor], grads: list[Tensor], closure: Any) -> list[Tensor]:
            self.calls.append(bed.optimizer.state[params[0]]["step"] + 1)
            return original(params, grads, closure)

        bed.optimizer.hessian_estimate = counted  # type: ignore[method-assign]


@pytest.mark.parametrize("extra", SOPHIA_HP)
def test_sophiah_matches_reference_on_a_diagonal_hessian(extra: dict[str, Any] | None) -> None:
    """With diagonal A, u⊙(Au) = diag(A) for every Rademacher u, so the reference is deterministic."""
    batches = BATCHES * 3
    hp = {**defaults("sophiah"), **(extra or {})}
    bed = Bed("sophiah", hp, a=A_DIAG)
    counter = CountingSophiaH(bed)
    path = bed.run(batches)
    ref, clipped, free = ref_sophia(hp, lambda th, x: np.diag(A_DIAG).copy(), A_DIAG, batches)
    assert_path(path, ref)
    assert clipped > 0 and (free > 0 or extra is None)
    assert counter.calls == [t for t in range(1, len(batches) + 1) if (t - 1) % hp["k"] == 0]
    spec = OPTIMIZERS.get("sophiah")
    assert spec.grad_evals(hp, len(batches), 0) == len(batches) + len(counter.calls)


def test_sophia_fully_clipped_is_sign_momentum() -> None:
    """ρ → 0: every coordinate is clipped and the step is exactly lr·sign(m)."""
    hp = {**defaults("sophiah"), "rho": 1e-30, "learning_rate": 0.01, "beta1": 0.5}
    bed = Bed("sophiah", hp, a=A_DIAG)
    theta, m = THETA0.copy(), np.zeros(D)
    for x in BATCHES:
        before = bed.theta()
        bed.run([x])
        m = 0.5 * m + 0.5 * grad(theta, x, A_DIAG)
        theta = theta - 0.01 * np.sign(m)
        np.testing.assert_allclose(bed.theta() - before, -0.01 * np.sign(m), rtol=1e-12)


def test_hutchinson_is_unbiased_on_a_known_hessian() -> None:
    """Average of u⊙(Au) over Rademacher u → diag(A); per-coordinate variance Σ_{j≠i} A_ij² sets the tolerance."""
    torch.manual_seed(0)
    theta = torch.tensor(THETA0, requires_grad=True)
    a = torch.tensor(A_FULL)
    n = 4000
    draws = np.empty((n, D))
    for i in range(n):
        (g,) = torch.autograd.grad(0.5 * theta @ a @ theta, theta, create_graph=True)
        draws[i] = hutchinson_diagonal([theta], [g])[0].detach().numpy()
    sd = np.sqrt((A_FULL**2).sum(axis=1) - np.diag(A_FULL) ** 2)
    assert np.all(np.abs(draws.mean(axis=0) - np.diag(A_FULL)) < 5 * sd / np.sqrt(n))
    assert np.all(draws.std(axis=0) > 0.5 * sd)  # single draws are noisy: the average, not each draw, is exact


def test_hutchinson_needs_the_gradient_graph() -> None:
    theta = torch.tensor(THETA0, requires_grad=True)
    (g,) = torch.autograd.grad(0.5 * theta @ torch.tensor(A_FULL) @ theta, theta)
    with pytest.raises(RuntimeError, match="create_graph"):
        hutchinson_diagonal([theta], [g])


# ------------------------------------------------------------------------------------------ state_dict round trips
@pytest.mark.parametrize("name,extra", [
    ("sam", {}), ("sam", {"adaptive": True}), ("sophiag", {"k": 2}), ("sophiah", {"k": 2}),
    ("schedulefree_adamw", {}), ("lbfgs", {}),
])
def test_state_dict_round_trip_is_bit_for_bit(name: str, extra: dict[str, Any]) -> None:
    hp = {**defaults(name, batch_size=B), **extra}
    first = Bed(name, hp)
    first.run(BATCHES[:3])
    saved = copy.deepcopy(first.optimizer.state_dict())
    second = Bed(name, hp)
    with torch.no_grad():
        for p, q in zip(second.model.parameters(), first.model.parameters()):
            p.copy_(q)
    second.optimizer.load_state_dict(saved)
    for t, x in enumerate(BATCHES[3:]):
        for bed in (first, second):
            torch.manual_seed(t)  # Sophia-H's Rademacher probes come from the global generator
            bed.run([x])
        assert np.array_equal(first.theta(), second.theta()), f"step {t + 4}"
    a, b = first.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and a
    for key in a:
        for field, value in a[key].items():
            if isinstance(value, Tensor):
                assert torch.equal(value, b[key][field]), (key, field)
    if name == "sam":
        assert all("momentum_buffer" in s for s in a.values())  # the base optimizer's state travels with SAM


# ------------------------------------------------------------------------------------------------ modern extras
def ref_adamw(hp: dict[str, Any]) -> list[np.ndarray]:
    lr, b1, b2, eps, wd = (hp[n] for n in ("learning_rate", "beta1", "beta2", "epsilon", "weight_decay"))
    theta, m, v, path = THETA0.copy(), np.zeros(D), np.zeros(D), []
    for t, x in enumerate(BATCHES, 1):
        g = grad(theta, x)
        theta = theta * (1 - lr * wd)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        path.append(theta)
    return path


def ref_nadamw(hp: dict[str, Any]) -> list[np.ndarray]:
    lr, b1, b2, eps, wd, psi = (hp[n] for n in ("learning_rate", "beta1", "beta2", "epsilon", "weight_decay",
                                                "momentum_decay"))
    mu = [b1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in range(len(BATCHES) + 2)]
    theta, m, v, path = THETA0.copy(), np.zeros(D), np.zeros(D), []
    for t, x in enumerate(BATCHES, 1):
        g = grad(theta, x)
        theta = theta * (1 - lr * wd)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v / (1 - b2**t)) + eps
        prod_t, prod_next = np.prod(mu[1:t + 1]), np.prod(mu[1:t + 2])
        theta = theta - lr * (1 - mu[t]) / (1 - prod_t) * g / denom - lr * mu[t + 1] / (1 - prod_next) * m / denom
        path.append(theta)
    return path


def ref_lion(hp: dict[str, Any]) -> list[np.ndarray]:
    lr, b1, b2, wd = (hp[n] for n in ("learning_rate", "beta1", "beta2", "weight_decay"))
    theta, m, path = THETA0.copy(), np.zeros(D), []
    for x in BATCHES:
        g = grad(theta, x)
        theta = theta - lr * (np.sign(b1 * m + (1 - b1) * g) + wd * theta)
        m = b2 * m + (1 - b2) * g
        path.append(theta)
    return path


def ref_schedulefree(hp: dict[str, Any]) -> list[np.ndarray]:
    """Defazio et al. 2024 in x/z form; the parameters the run loop evaluates are x."""
    lr0, b1, b2, eps, wd, warm = (hp[n] for n in ("learning_rate", "beta1", "beta2", "epsilon", "weight_decay",
                                                  "warmup_steps"))
    x_avg, z, v, path, weight_sum, lr_max = THETA0.copy(), THETA0.copy(), np.zeros(D), [], 0.0, -1.0
    for t, x in enumerate(BATCHES, 1):
        lr = lr0 * (t / warm if t < warm else 1.0)
        y = (1 - b1) * z + b1 * x_avg
        g = grad(y, x)
        v = b2 * v + (1 - b2) * g * g
        d = g / (np.sqrt(v / (1 - b2**t)) + eps) + wd * y
        z = z - lr * d
        lr_max = max(lr, lr_max)
        weight_sum += lr_max**2
        c = lr_max**2 / weight_sum
        x_avg = (1 - c) * x_avg + c * z
        path.append(x_avg)
    return path


EXTRAS = {
    "adamw": (ref_adamw, dict(learning_rate=0.05, beta1=0.8, beta2=0.95, epsilon=1e-6, weight_decay=0.3)),
    "nadamw": (ref_nadamw, dict(learning_rate=0.05, beta1=0.8, beta2=0.95, epsilon=1e-6, weight_decay=0.3,
                                momentum_decay=0.05)),
    "lion": (ref_lion, dict(learning_rate=0.03, beta1=0.7, beta2=0.95, weight_decay=0.5)),
    "schedulefree_adamw": (ref_schedulefree, dict(learning_rate=0.1, beta1=0.8, beta2=0.95, epsilon=1e-6,
                                                  weight_decay=0.2, warmup_steps=3)),
}


@pytest.mark.parametrize("name", sorted(EXTRAS))
@pytest.mark.parametrize("use_defaults", [True, False])
def test_modern_extras_match_reference(name: str, use_defaults: bool) -> None:
    ref, non_default = EXTRAS[name]
    hp = defaults(name) if use_defaults else non_default
    bed = Bed(name, hp)
    path = bed.run(BATCHES)
    # torch.optim.NAdam keeps Π μ_i in a float32 scalar tensor (the default scalar dtype): ~1e-7 relative.
    assert_path(path, ref(hp), rtol=1e-6 if name == "nadamw" else 1e-9, atol=1e-9 if name == "nadamw" else 1e-12)
    assert OPTIMIZERS.get(name).grad_evals(hp, T, bed.closure_calls()) == T


def test_schedulefree_takes_gradients_at_y_and_leaves_x() -> None:
    hp = EXTRAS["schedulefree_adamw"][1]
    bed = Bed("schedulefree_adamw", hp)
    path = bed.run(BATCHES[:2])
    # step 1: y = x = z = θ0; step 2: y = (1−β1)·z₁ + β1·x₁ with z₁ = x₁ (c₁ = 1), i.e. y = x₁.
    np.testing.assert_allclose(bed.seen[0], THETA0, rtol=1e-12)
    np.testing.assert_allclose(bed.seen[1], path[0], rtol=1e-12)
    bed.run(BATCHES[2:4])
    assert not np.allclose(bed.seen[3], path[0])  # later y's differ from x: gradients are not taken at x
    before = bed.theta()
    bed.optimizer.eval()  # the library's own mode switch is a no-op here: parameters already are x
    np.testing.assert_array_equal(bed.theta(), before)
    np.testing.assert_allclose(before, ref_schedulefree(hp)[3], rtol=1e-10)


# ------------------------------------------------------------------------------- configs and the real run loop
@pytest.mark.parametrize("name", NAMES)
def test_yaml_defaults_validate_and_search_space_samples_are_valid(name: str) -> None:
    spec = OPTIMIZERS.get(name)
    hp = defaults(name)
    assert list(spec.validate(hp)) == list(spec.hyperparameters)
    for sample in study_samples(spec, 5):
        spec.validate({**hp, **sample})
    assert "learning_rate" in spec.search_space()


def test_sophiag_batch_size_follows_the_problem() -> None:
    """B comes from the problem (``sampled_loss_terms``), never from a hyperparameter."""
    assert "batch_size" not in OPTIMIZERS.get("sophiag").hyperparameters
    spec = make_spec("quadratic_deep", "sophiag", defaults("sophiag"),
                     problem_settings={"batch_size": 64, "num_epochs": 0})
    from problems.quadratic_deep import QuadraticDeep
    problem = QuadraticDeep(spec.problem_settings, 42, torch.device("cpu"))
    opt = OPTIMIZERS.get("sophiag").build([torch.nn.Parameter(torch.zeros(3))], spec.hyperparameters)
    OPTIMIZERS.get("sophiag").prepare(opt, problem)
    assert opt.batch_size == 64


@pytest.mark.parametrize("name,extra,expected", [
    ("sam", {}, 28), ("lbfgs", {}, 14), ("sophiag", {}, 16), ("sophiag", {"k": 3}, 19), ("sophiah", {}, 16),
    ("sophiah", {"k": 3}, 19), ("adamw", {}, 14), ("nadamw", {}, 14), ("lion", {}, 14),
    ("schedulefree_adamw", {}, 14), ("lbfgs", {"line_search_fn": "strong_wolfe"}, None),
])
def test_train_on_quadratic_deep_counts_gradient_evaluations(name: str, extra: dict[str, Any],
                                                             expected: int | None) -> None:
    """2 epochs × 7 steps; SAM 2/step; Sophia 1/step + 1 per refresh at steps 1, k+1, …; L-BFGS per closure call."""
    hp = {**defaults(name), **extra}
    spec = make_spec("quadratic_deep", name, hp, problem_settings={"batch_size": 128, "num_epochs": 2})
    result = train(spec)
    assert result.status == "completed"
    assert result.steps == 14
    if expected is None:
        assert result.grad_evals > 14  # strong-Wolfe trials are extra closure calls
    else:
        assert result.grad_evals == expected
    losses = result.series("test", "loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
