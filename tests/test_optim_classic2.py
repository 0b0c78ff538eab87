"""RAdam, AdaBound/AMSBound, Lookahead (Momentum, RAdam) and AdaBelief against independent numpy references.

The problem: two parameter tensors (float64) under a loss whose curvature and linear term change every step,
``L_t(θ) = Σ 0.5·h_t θ² + c_t θ`` (so g_t = h_t θ + c_t, with |g| spanning orders of magnitude). Torch computes
the gradients by autograd and steps the plugin's optimizer; the reference computes g_t by formula and applies the
update rule written out below in numpy, straight from §2.2 and the papers.
"""
from __future__ import annotations

import copy
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from optimizers import OPTIMIZERS
from optimizers.base import LogUniform, RandInt, study_samples

CONF = Path(__file__).resolve().parents[1] / "conf" / "optimizer"
SHAPES = [(3, 4), (5,)]
STEPS = 14  # RAdam's ρ_t crosses 5 at t = 6 (β2 ≥ .9) or 7 (β2 = .8): both regimes are covered

Arrays = list[np.ndarray]


def _problem(seed: int = 0) -> tuple[Arrays, list[Arrays], list[Arrays]]:
    rng = np.random.RandomState(seed)
    theta0 = [rng.normal(size=s) for s in SHAPES]
    h = [[rng.uniform(0.1, 2.0, size=s) for s in SHAPES] for _ in range(STEPS)]
    # |c| from 1e-2 to 1e1 so that per-element step sizes spread widely (AdaBound's clipping hits both bounds)
    c = [[rng.normal(size=s) * 10.0 ** rng.uniform(-2, 1, size=s) for s in SHAPES] for _ in range(STEPS)]
    return theta0, h, c


THETA0, H, C = _problem()


def grads(t: int, theta: Arrays) -> Arrays:
    """g at 0-based step t."""
    return [h * x + c for h, x, c in zip(H[t], theta, C[t])]


def defaults(name: str) -> dict[str, Any]:
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert cfg.pop("name") == name
    return cfg


def run_torch(name: str, hp: dict[str, Any], steps: int = STEPS, lr_factor_at: dict[int, float] | None = None,
              params: list[torch.nn.Parameter] | None = None, optimizer: torch.optim.Optimizer | None = None,
              start: int = 0) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
    """Steps start..steps-1 of the plugin's optimizer; ``lr_factor_at[t]`` sets group["lr"] = base·f before step t."""
    spec = OPTIMIZERS.get(name)
    if params is None:
        params = [torch.nn.Parameter(torch.tensor(x)) for x in THETA0]
    if optimizer is None:
        optimizer = spec.build(params, spec.validate(hp))
    for t in range(start, steps):
        if lr_factor_at and t in lr_factor_at:
            for g in optimizer.param_groups:
                g["lr"] = hp["learning_rate"] * lr_factor_at[t]
        optimizer.zero_grad(set_to_none=True)
        loss = sum((0.5 * torch.tensor(h) * p**2 + torch.tensor(c) * p).sum() for p, h, c in zip(params, H[t], C[t]))
        loss.backward()
        optimizer.step()
    return params, optimizer


def assert_close(params: list[torch.nn.Parameter], ref: Arrays, rtol: float = 1e-10) -> None:
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=rtol, atol=1e-13)


# --------------------------------------------------------------------------------------------- numpy references
class Ref:
    """A stateful reference step: ``step(t, θ, g, lr) -> θ'`` with t 1-based."""

    def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        raise NotImplementedError


class RAdamRef(Ref):
    """Liu et al. 2020 / Keras port: rectified when ρ_t > 5, ε added to sqrt(v/(1−β2^t)) (``torch``: ε on sqrt(v))."""

    def __init__(self, beta1: float, beta2: float, epsilon: float, torch_eps: bool = False) -> None:
        self.b1, self.b2, self.eps, self.torch_eps = beta1, beta2, epsilon, torch_eps
        self.m = [np.zeros(s) for s in SHAPES]
        self.v = [np.zeros(s) for s in SHAPES]
        self.rectified: list[bool] = []

    def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        b1, b2 = self.b1, self.b2
        self.m = [b1 * m + (1 - b1) * gi for m, gi in zip(self.m, g)]
        self.v = [b2 * v + (1 - b2) * gi**2 for v, gi in zip(self.v, g)]
        m_hat = [m / (1 - b1**t) for m in self.m]
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        self.rectified.append(rho > 5)
        if rho <= 5:
            return [x - lr * mh for x, mh in zip(theta, m_hat)]
        r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        if self.torch_eps:
            denom = [(np.sqrt(v) + self.eps) / np.sqrt(1 - b2**t) for v in self.v]
        else:
            denom = [np.sqrt(v / (1 - b2**t)) + self.eps for v in self.v]
        return [x - lr * r * mh / d for x, mh, d in zip(theta, m_hat, denom)]


class AdaBoundRef(Ref):
    """Luo et al. 2019 (TF port): clip lr_t/(sqrt(v)+ε) into the γ-bounds around final_lr, times m."""

    def __init__(self, final_lr: float, beta1: float, beta2: float, gamma: float, epsilon: float, amsbound: bool,
                 base_lr: float | None = None) -> None:
        self.final_lr, self.b1, self.b2, self.gamma, self.eps = final_lr, beta1, beta2, gamma, epsilon
        self.amsbound, self.base_lr = amsbound, base_lr  # base_lr set: torch semantics (final_lr·lr/base_lr)
        self.m = [np.zeros(s) for s in SHAPES]
        self.v = [np.zeros(s) for s in SHAPES]
        self.v_hat = [np.zeros(s) for s in SHAPES]
        self.clipped_low = self.clipped_high = self.inside = 0

    def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        b1, b2 = self.b1, self.b2
        self.m = [b1 * m + (1 - b1) * gi for m, gi in zip(self.m, g)]
        self.v = [b2 * v + (1 - b2) * gi**2 for v, gi in zip(self.v, g)]
        self.v_hat = [np.maximum(vh, v) for vh, v in zip(self.v_hat, self.v)]
        second = self.v_hat if self.amsbound else self.v
        final_lr = self.final_lr if self.base_lr is None else self.final_lr * lr / self.base_lr
        low = final_lr * (1 - 1 / (self.gamma * t + 1))
        high = final_lr * (1 + 1 / (self.gamma * t))
        out = []
        for x, m, v in zip(theta, self.m, second):
            eta = lr * np.sqrt(1 - b2**t) / (1 - b1**t) / (np.sqrt(v) + self.eps)
            self.clipped_low += int((eta < low).sum())
            self.clipped_high += int((eta > high).sum())
            self.inside += int(((eta >= low) & (eta <= high)).sum())
            out.append(x - np.clip(eta, low, high) * m)
        return out


class MomentumRef(Ref):
    """TF MomentumOptimizer: v ← ρv + g; θ ← θ − lr·v."""

    def __init__(self, momentum: float) -> None:
        self.rho = momentum
        self.buf = [np.zeros(s) for s in SHAPES]

    def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        self.buf = [self.rho * b + gi for b, gi in zip(self.buf, g)]
        return [x - lr * b for x, b in zip(theta, self.buf)]


class AdaBeliefRef(Ref):
    """Zhuang et al. 2020, Algorithm 1: s ← β2 s + (1−β2)(g−m)² + ε; θ ← θ − lr·m̂/(sqrt(ŝ)+ε)."""

    def __init__(self, beta1: float, beta2: float, epsilon: float) -> None:
        self.b1, self.b2, self.eps = beta1, beta2, epsilon
        self.m = [np.zeros(s) for s in SHAPES]
        self.s = [np.zeros(s) for s in SHAPES]

    def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        b1, b2, eps = self.b1, self.b2, self.eps
        self.m = [b1 * m + (1 - b1) * gi for m, gi in zip(self.m, g)]
        self.s = [b2 * s + (1 - b2) * (gi - m) ** 2 + eps for s, gi, m in zip(self.s, g, self.m)]
        return [x - lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
                for x, m, s in zip(theta, self.m, self.s)]


class HeavyBallRef(Ref):
    """Heavy-ball momentum in EMA form: m ← ρm + (1−ρ)g; θ ← θ − lr/(1−ρ)·m (no bias correction beyond the
    constant 1/(1−ρ)). With ρ = β1 this is what the study's Lookahead-RAdam inner step reduces to (RAdam stuck at
    t = 1, ρ₁ = 1 < 5, un-rectified branch)."""

    def __init__(self, rho: float) -> None:
        self.rho = rho
        self.m = [np.zeros(s) for s in SHAPES]

    def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        self.m = [self.rho * m + (1 - self.rho) * gi for m, gi in zip(self.m, g)]
        return [x - lr / (1 - self.rho) * m for x, m in zip(theta, self.m)]


class LookaheadRef(Ref):
    """Zhang et al. 2019 with φ₀ = θ₀ and a sync φ ← φ + α(θ − φ), θ ← φ that leaves the inner state alone.

    ``replace`` (the study's TF wrapper): call n = t − 1 syncs *instead of* an inner step when n % k == 0 (its
    gradient unused), else one inner step; ``after`` (the paper): an inner step every call, a sync after every k-th.
    The inner optimizer is given its own count of the inner steps it took (1, 2, ...).
    """

    def __init__(self, inner: Ref, k: int, alpha: float, sync: str) -> None:
        self.inner, self.k, self.alpha, self.sync = inner, k, alpha, sync
        self.slow = [x.copy() for x in THETA0]
        self.syncs = self.inner_steps = 0

    def _sync(self, theta: Arrays) -> Arrays:
        self.slow = [s + self.alpha * (x - s) for s, x in zip(self.slow, theta)]
        self.syncs += 1
        return [s.copy() for s in self.slow]

    def _inner(self, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        self.inner_steps += 1
        return self.inner.step(self.inner_steps, theta, g, lr)

    def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
        n = t - 1
        if self.sync == "replace":
            return self._sync(theta) if n % self.k == 0 else self._inner(theta, g, lr)
        theta = self._inner(theta, g, lr)
        return self._sync(theta) if (n + 1) % self.k == 0 else theta


def run_ref(ref: Ref, lr: float, steps: int = STEPS, lr_factor_at: dict[int, float] | None = None) -> Arrays:
    theta = [x.copy() for x in THETA0]
    factor = 1.0
    for t in range(steps):
        factor = (lr_factor_at or {}).get(t, factor)
        theta = ref.step(t + 1, theta, grads(t, theta), lr * factor)
    return theta


# ------------------------------------------------------------------------------------------------------- RAdam
RADAM_CUSTOM = dict(learning_rate=0.03, beta1=0.7, beta2=0.8, epsilon=1e-2, semantics="tf")


@pytest.mark.parametrize("hp", [defaults("radam"), RADAM_CUSTOM], ids=["defaults", "custom"])
def test_radam_matches_reference(hp: dict[str, Any]) -> None:
    ref = RAdamRef(hp["beta1"], hp["beta2"], hp["epsilon"])
    expected = run_ref(ref, hp["learning_rate"])
    assert not all(ref.rectified) and any(ref.rectified)  # both branches taken
    assert ref.rectified.index(True) == (5 if hp["beta2"] > 0.9 - 1e-12 else 6)
    params, _ = run_torch("radam", hp)
    assert_close(params, expected)


def test_radam_torch_semantics_is_torch_optim_radam_and_differs_from_tf() -> None:
    hp = dict(RADAM_CUSTOM, semantics="torch")
    params, opt = run_torch("radam", hp)
    assert isinstance(opt, torch.optim.RAdam)
    torch_ref = run_ref(RAdamRef(0.7, 0.8, 1e-2, torch_eps=True), 0.03)
    assert_close(params, torch_ref)
    tf_ref = run_ref(RAdamRef(0.7, 0.8, 1e-2), 0.03)
    assert max(np.abs(a - b).max() for a, b in zip(torch_ref, tf_ref)) > 1e-6


# ---------------------------------------------------------------------------------------------- AdaBound family
BOUND_CUSTOM = dict(learning_rate=0.01, final_lr=0.05, beta1=0.8, beta2=0.95, gamma=0.5, epsilon=1e-3,
                    semantics="tf")


@pytest.mark.parametrize("name", ["adabound", "amsbound"])
@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "custom"])
def test_adabound_matches_reference(name: str, custom: bool) -> None:
    hp = dict(BOUND_CUSTOM) if custom else defaults(name)
    ref = AdaBoundRef(hp["final_lr"], hp["beta1"], hp["beta2"], hp["gamma"], hp["epsilon"], name == "amsbound")
    expected = run_ref(ref, hp["learning_rate"])
    if custom:  # the bounds are what is being tested: both must bind on some elements, and some must pass freely
        assert ref.clipped_low > 0 and ref.clipped_high > 0 and ref.inside > 0
    params, _ = run_torch(name, hp)
    assert_close(params, expected)


def test_amsbound_max_matters() -> None:
    """With these gradients v decreases for some elements, so AMSBound's max(v̂, v) must change the result."""
    a = run_ref(AdaBoundRef(0.05, 0.8, 0.95, 0.5, 1e-3, amsbound=False), 0.01)
    b = run_ref(AdaBoundRef(0.05, 0.8, 0.95, 0.5, 1e-3, amsbound=True), 0.01)
    assert max(np.abs(x - y).max() for x, y in zip(a, b)) > 1e-6


@pytest.mark.parametrize("name", ["adabound", "amsbound"])
def test_final_lr_ignores_lr_rescaling_in_tf_semantics(name: str) -> None:
    """The run loop rescales group["lr"]; tf keeps the bounds at final_lr, torch scales final_lr by lr/base_lr."""
    change = {0: 1.0, 5: 0.1, 9: 0.01}
    results = {}
    for sem in ("tf", "torch"):
        hp = dict(BOUND_CUSTOM, semantics=sem)
        ref = AdaBoundRef(0.05, 0.8, 0.95, 0.5, 1e-3, name == "amsbound",
                          base_lr=None if sem == "tf" else hp["learning_rate"])
        results[sem] = run_ref(ref, hp["learning_rate"], lr_factor_at=change)
        params, opt = run_torch(name, hp, lr_factor_at=change)
        assert opt.param_groups[0]["final_lr"] == 0.05  # the hyperparameter itself is never rewritten
        assert_close(params, results[sem])
    assert max(np.abs(a - b).max() for a, b in zip(results["tf"], results["torch"])) > 1e-6


# ---------------------------------------------------------------------------------------------------- Lookahead
def _lookahead_ref(name: str, hp: dict[str, Any]) -> LookaheadRef:
    if name == "lookahead_momentum":
        inner: Ref = MomentumRef(hp["momentum"])
    elif hp["inner_step_count"] == "frozen":
        inner = HeavyBallRef(hp["beta1"])
    else:
        inner = RAdamRef(hp["beta1"], hp["beta2"], hp["epsilon"], torch_eps=hp["semantics"] == "torch")
    return LookaheadRef(inner, hp["k"], hp["alpha"], hp["sync"])


LOOKAHEAD_CUSTOM = {
    "lookahead_momentum": dict(learning_rate=0.02, momentum=0.8, alpha=0.3, sync="replace"),
    "lookahead_radam": dict(learning_rate=0.03, beta1=0.7, beta2=0.8, alpha=0.3, epsilon=1e-2, semantics="tf",
                            sync="replace", inner_step_count="frozen"),
}
# (name, overrides of the custom settings): the study's rules, the paper's, and the mixed ones
LOOKAHEAD_RULES = [
    ("lookahead_momentum", {}),
    ("lookahead_momentum", {"sync": "after"}),
    ("lookahead_radam", {}),
    ("lookahead_radam", {"sync": "after"}),
    ("lookahead_radam", {"inner_step_count": "advancing"}),
    ("lookahead_radam", {"sync": "after", "inner_step_count": "advancing"}),
    ("lookahead_radam", {"sync": "after", "inner_step_count": "advancing", "semantics": "torch"}),
]


def _expected_syncs(sync: str, k: int, steps: int = STEPS) -> int:
    return -(-steps // k) if sync == "replace" else steps // k  # calls 0, k, 2k, ... | calls k-1, 2k-1, ...


@pytest.mark.parametrize("name", ["lookahead_momentum", "lookahead_radam"])
def test_lookahead_defaults_match_reference(name: str) -> None:
    hp = defaults(name)
    assert hp["sync"] == "replace" and hp.get("inner_step_count", "frozen") == "frozen"
    ref = _lookahead_ref(name, hp)
    change = {0: 1.0, 7: 0.5}  # the run loop's group["lr"] rescaling must reach the inner optimizer
    expected = run_ref(ref, hp["learning_rate"], lr_factor_at=change)
    assert ref.syncs == _expected_syncs("replace", 5) == 3
    params, opt = run_torch(name, hp, lr_factor_at=change)
    assert isinstance(opt, torch.optim.Optimizer)
    assert_close(params, expected)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name,overrides", LOOKAHEAD_RULES,
                         ids=[f"{n}-{'-'.join(o.values()) or 'tf'}" for n, o in LOOKAHEAD_RULES])
def test_lookahead_rules_match_reference(name: str, overrides: dict[str, Any], k: int) -> None:
    hp = dict(LOOKAHEAD_CUSTOM[name], **overrides, k=k)
    ref = _lookahead_ref(name, hp)
    change = {0: 1.0, 7: 0.5}
    expected = run_ref(ref, hp["learning_rate"], lr_factor_at=change)
    assert ref.syncs == _expected_syncs(hp["sync"], k) >= 4
    if isinstance(ref.inner, RAdamRef):  # the advancing inner RAdam reaches its rectified branch
        assert any(ref.inner.rectified) and not all(ref.inner.rectified)
    params, _ = run_torch(name, hp, lr_factor_at=change)
    assert_close(params, expected)


def test_lookahead_radam_tf_rule_is_heavy_ball_with_syncs_replacing_steps() -> None:
    """The study's rule written out in one loop: calls 0, k, 2k, ... sync (gradient unused), the others are
    m ← β1 m + (1−β1) g; θ ← θ − lr·m/(1−β1) — whatever β2 and ε are."""
    hp = dict(LOOKAHEAD_CUSTOM["lookahead_radam"], k=4, beta2=0.95, epsilon=0.5)
    b1, lr, k, alpha = hp["beta1"], hp["learning_rate"], hp["k"], hp["alpha"]
    theta = [x.copy() for x in THETA0]
    slow = [x.copy() for x in THETA0]
    m = [np.zeros(s) for s in SHAPES]
    for n in range(STEPS):
        g = grads(n, theta)
        if n % k == 0:
            slow = [s + alpha * (x - s) for s, x in zip(slow, theta)]
            theta = [s.copy() for s in slow]
        else:
            m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
            theta = [x - lr * mi / (1 - b1) for x, mi in zip(theta, m)]
    params, opt = run_torch("lookahead_radam", hp)
    assert_close(params, theta)
    # the advancing RAdam (rectified from t = 6 on) and the paper's sync both give something else
    for other in ({"inner_step_count": "advancing"}, {"sync": "after"}):
        moved, _ = run_torch("lookahead_radam", {**hp, **other})
        assert max(np.abs(p.detach().numpy() - x).max() for p, x in zip(moved, theta)) > 1e-3


@pytest.mark.parametrize("name,overrides", LOOKAHEAD_RULES[:3] + LOOKAHEAD_RULES[4:5],
                         ids=["momentum", "momentum-after", "radam", "radam-advancing"])
def test_lookahead_k1_never_trains_under_replace(name: str, overrides: dict[str, Any]) -> None:
    """k = 1: every call is a sync of φ = θ₀ with θ = θ₀ (the TF wrapper's k = 1 never trains); ``after`` trains."""
    hp = dict(LOOKAHEAD_CUSTOM[name], **overrides, k=1)
    params, opt = run_torch(name, hp)
    if hp["sync"] == "replace":
        for p, x in zip(params, THETA0):
            assert torch.equal(p.detach(), torch.tensor(x))
        assert not opt.inner.state  # no inner step was ever taken
    else:
        assert not any(torch.equal(p.detach(), torch.tensor(x)) for p, x in zip(params, THETA0))


@pytest.mark.parametrize("name", ["lookahead_momentum", "lookahead_radam"])
def test_lookahead_first_call_is_a_no_op(name: str) -> None:
    hp = defaults(name)
    params, opt = run_torch(name, hp, steps=1)
    for p, x in zip(params, THETA0):
        assert torch.equal(p.detach(), torch.tensor(x))  # bit for bit: φ + α(θ − φ) with φ = θ
    assert not opt.inner.state and opt.calls == 1
    params, _ = run_torch(name, hp, steps=2)  # the second call is the first inner step
    assert not any(torch.equal(p.detach(), torch.tensor(x)) for p, x in zip(params, THETA0))
    params, _ = run_torch(name, {**hp, "sync": "after"}, steps=1)  # the paper's rule steps at once
    assert not any(torch.equal(p.detach(), torch.tensor(x)) for p, x in zip(params, THETA0))


def test_lookahead_differs_from_its_inner_optimizer() -> None:
    hp = dict(LOOKAHEAD_CUSTOM["lookahead_momentum"], k=3, sync="after")
    with_la = run_ref(_lookahead_ref("lookahead_momentum", hp), 0.02)
    plain = run_ref(MomentumRef(0.8), 0.02)
    assert max(np.abs(a - b).max() for a, b in zip(with_la, plain)) > 1e-3


def test_lookahead_exposes_the_inner_param_groups() -> None:
    params = [torch.nn.Parameter(torch.tensor(x)) for x in THETA0]
    spec = OPTIMIZERS.get("lookahead_radam")
    opt = spec.build(params, spec.validate(defaults("lookahead_radam")))
    assert opt.param_groups is opt.inner.param_groups
    opt.load_state_dict(opt.state_dict())  # load_state_dict replaces the inner groups: still the same list
    assert opt.param_groups is opt.inner.param_groups
    opt.param_groups[0]["lr"] = 0.5
    assert opt.inner.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("name,overrides", LOOKAHEAD_RULES,
                         ids=[f"{n}-{'-'.join(o.values()) or 'tf'}" for n, o in LOOKAHEAD_RULES])
def test_lookahead_state_dict_round_trip_mid_cycle(name: str, overrides: dict[str, Any]) -> None:
    """Save after 3 of k=5 steps (torch.save), load into a fresh optimizer over a copy: bit-identical continuation."""
    hp = dict(defaults(name), **overrides, k=5)
    steps = 13  # two synchronisations after the reload, and an advancing inner RAdam crosses ρ_t > 5 meanwhile
    full, _ = run_torch(name, hp, steps=steps)
    params, opt = run_torch(name, hp, steps=3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    copies = copy.deepcopy(params)
    spec = OPTIMIZERS.get(name)
    fresh = spec.build(copies, spec.validate(hp))
    fresh.load_state_dict(torch.load(buffer))  # weights_only: tensors and plain python values
    resumed, _ = run_torch(name, hp, steps=steps, params=copies, optimizer=fresh, start=3)
    for a, b in zip(full, resumed):
        assert torch.equal(a, b)
    # a fresh optimizer *without* the state diverges from the uninterrupted run (the test can fail)
    bare = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restarted, _ = run_torch(name, hp, steps=steps, params=bare, optimizer=spec.build(bare, spec.validate(hp)),
                             start=3)
    assert not all(torch.equal(a, b) for a, b in zip(full, restarted))


@pytest.mark.parametrize("name", ["lookahead_momentum", "lookahead_radam"])
def test_lookahead_step_never_syncs_with_the_host(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No tensor → python conversion inside step() (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``)."""
    params = [torch.nn.Parameter(torch.tensor(x)) for x in THETA0]
    spec = OPTIMIZERS.get(name)
    opt = spec.build(params, spec.validate(dict(defaults(name), k=3)))

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("host sync inside step()")

    for t in range(7):
        opt.zero_grad(set_to_none=True)
        sum((0.5 * torch.tensor(h) * p**2 + torch.tensor(c) * p).sum() for p, h, c in zip(params, H[t], C[t])).backward()
        with monkeypatch.context() as mp:
            for attr in ("item", "tolist", "__bool__", "__float__", "__int__"):
                mp.setattr(torch.Tensor, attr, refuse)
            opt.step()


# ---------------------------------------------------------------------------------------------------- AdaBelief
@pytest.mark.parametrize("hp", [defaults("adabelief"), dict(learning_rate=0.03, beta1=0.7, beta2=0.8, epsilon=1e-2)],
                         ids=["defaults", "custom"])
def test_adabelief_matches_reference(hp: dict[str, Any]) -> None:
    expected = run_ref(AdaBeliefRef(hp["beta1"], hp["beta2"], hp["epsilon"]), hp["learning_rate"])
    params, _ = run_torch("adabelief", hp)
    assert_close(params, expected)


def test_adabelief_epsilon_enters_inside_the_root() -> None:
    """With a large ε the in-s ε matters: dropping it from the reference must break the match."""
    hp = dict(learning_rate=0.03, beta1=0.7, beta2=0.8, epsilon=1e-2)

    class NoInnerEps(AdaBeliefRef):
        def step(self, t: int, theta: Arrays, g: Arrays, lr: float) -> Arrays:
            out = super().step(t, theta, g, lr)
            self.s = [s - self.eps for s in self.s]  # remove the ε stored in s for the next step
            return out

    params, _ = run_torch("adabelief", hp)
    wrong = run_ref(NoInnerEps(0.7, 0.8, 1e-2), 0.03)
    assert max(np.abs(p.detach().numpy() - w).max() for p, w in zip(params, wrong)) > 1e-6


# --------------------------------------------------------------------------------------- spaces and defaults (§2.2)
ADAM_SPACE = [("learning_rate", LogUniform(-4.0, 0.0)), ("beta1", LogUniform(-0.301, -0.00043)),
              ("beta2", LogUniform(-0.0969, -0.00043))]
BOUND_SPACE = [("learning_rate", LogUniform(-4.0, 0.0)), ("final_lr", LogUniform(-3.0, -0.301)),
               ("beta1", LogUniform(-0.301, -0.00043)), ("beta2", LogUniform(-0.0969, -0.00043)),
               ("gamma", LogUniform(-4.0, -1.0))]
LA = [("k", RandInt(1, 20)), ("alpha", LogUniform(-4.0, 0.0))]
EXPECTED: dict[str, tuple[list[tuple[str, Any]], dict[str, Any]]] = {
    "radam": (ADAM_SPACE, dict(learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-7, semantics="tf")),
    "adabound": (BOUND_SPACE, dict(learning_rate=1e-3, final_lr=0.1, beta1=0.9, beta2=0.999, gamma=1e-3,
                                   epsilon=1e-8, semantics="tf")),
    "amsbound": (BOUND_SPACE, dict(learning_rate=1e-3, final_lr=0.1, beta1=0.9, beta2=0.999, gamma=1e-3,
                                   epsilon=1e-8, semantics="tf")),
    "lookahead_momentum": ([("learning_rate", LogUniform(-4.0, 0.0)), ("momentum", LogUniform(-3.0, 0.0)), *LA],
                           dict(learning_rate=1e-2, momentum=0.99, k=5, alpha=0.5, sync="replace")),
    "lookahead_radam": (ADAM_SPACE + LA, dict(learning_rate=1e-3, beta1=0.9, beta2=0.999, k=5, alpha=0.5,
                                              epsilon=1e-7, semantics="tf", sync="replace",
                                              inner_step_count="frozen")),
    "adabelief": (ADAM_SPACE, dict(learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-16)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_space_order_and_defaults(name: str) -> None:
    space, one_shot = EXPECTED[name]
    spec = OPTIMIZERS.get(name)
    assert list(spec.search_space().items()) == space
    cfg = defaults(name)
    assert cfg == one_shot
    assert spec.validate(cfg) == one_shot
    assert set(spec.hyperparameters) == set(one_shot)


def test_study_samples_quoted_in_spec() -> None:
    """§2.2: Lookahead-Momentum's sample (α .13145103232, k 11, lr 3.148911648e-3, ρ .71144760093), and AMSBound's
    (β1 .84707137863, β2 .84338309931) come out of the seed-42 stream with these spaces and orders."""
    la = study_samples(OPTIMIZERS.get("lookahead_momentum"), 1)[0]
    assert la["k"] == 11
    np.testing.assert_allclose([la["learning_rate"], la["momentum"], la["alpha"]],
                               [3.148911648e-03, 0.71144760093, 0.13145103232], rtol=1e-9)
    ams = study_samples(OPTIMIZERS.get("amsbound"), 50)
    assert any(math.isclose(s["beta1"], 0.84707137863, rel_tol=1e-9)
               and math.isclose(s["beta2"], 0.84338309931, rel_tol=1e-9) for s in ams)
    assert ams == study_samples(OPTIMIZERS.get("adabound"), 50)
    ks = [s["k"] for s in study_samples(OPTIMIZERS.get("lookahead_radam"), 200)]
    assert min(ks) == 1 and max(ks) == 19


@pytest.mark.parametrize("name,bad", [("lookahead_momentum", {"k": 0}), ("lookahead_momentum", {"alpha": 1.5}),
                                      ("lookahead_momentum", {"sync": "before"}),
                                      ("lookahead_radam", {"sync": "Replace"}),
                                      ("lookahead_radam", {"inner_step_count": "finished"}),
                                      ("lookahead_radam", {"semantics": "torch"}),  # torch's RAdam cannot freeze t
                                      ("adabound", {"gamma": 0.0}), ("radam", {"semantics": "keras"})])
def test_invalid_values_rejected(name: str, bad: dict[str, Any]) -> None:
    from optimizers.base import HyperparameterError

    spec = OPTIMIZERS.get(name)
    with pytest.raises(HyperparameterError) as info:
        spec.validate({**defaults(name), **bad})
    message = str(info.value)
    assert "\n" not in message and next(iter(bad)) in message


# ----------------------------------------------------------------------------------------------- through the run loop
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_one_shot_run_on_quadratic_deep(name: str) -> None:
    from bench.spec import make_spec
    from bench.train import train

    problem = yaml.safe_load((CONF.parent / "problem" / "quadratic_deep.yaml").read_text())
    problem.update(num_epochs=2)
    spec = make_spec("quadratic_deep", name, defaults(name), schedule="constant", seed=42, problem_settings=problem)
    result = train(spec)
    assert result.status == "completed"
    assert result.grad_evals == result.steps == 14  # a Lookahead sync call evaluated its gradient too
    train_loss = result.series("train", "loss")
    assert len(train_loss) == 3 and all(math.isfinite(v) for v in train_loss)
    assert train_loss[-1] < train_loss[0]
