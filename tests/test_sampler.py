"""The study's random-search sampler (§2.1, §2.2): values pinned from the published folder names, and the CLI.

The pinned values were read from the published result folders, so matching them to 1e-9 checks both the sampler
(seed 42, one stream, per sample per hyperparameter in order) and each optimizer's declared order and bounds.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench.samples import main
from optimizers import OPTIMIZERS
from optimizers.base import (BETA1_SPACE, BETA2_SPACE, MOMENTUM_SPACE, Hyper, LogUniform, OptimizerSpec, RandInt,
                             beta, learning_rate, study_samples)

ROOT = Path(__file__).resolve().parent.parent
REL = 1e-9
LR0 = 3.148911648e-03  # 10^(−4 + 4·0.3745401), the first draw of the seed-42 stream


def close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * abs(b)


def contains(samples: list[dict], expected: dict) -> int | None:
    """Index of the first sample matching every expected value, or None."""
    for i, s in enumerate(samples):
        if all(close(s[k], v) for k, v in expected.items()):
            return i
    return None


class LookaheadMomentumSpace(OptimizerSpec):
    """The study's LookaheadOptimizerMBGDMomentum space, built inline (order lr, momentum, k, α; §2.2)."""

    hyperparameters = {
        "learning_rate": learning_rate(),
        "momentum": beta(MOMENTUM_SPACE),
        "k": Hyper(int, low=1, search=RandInt(1, 20)),
        "alpha": Hyper(float, low=0.0, high=1.0, search=LogUniform(-4.0, 0.0)),
    }


class AMSBoundSpace(OptimizerSpec):
    """The study's AMSBound/AdaBound space, built inline (order lr, final_lr, β1, β2, γ; §2.2)."""

    hyperparameters = {
        "learning_rate": learning_rate(),
        "final_lr": Hyper(float, low=0.0, search=LogUniform(-3.0, -0.301)),
        "beta1": beta(BETA1_SPACE),
        "beta2": beta(BETA2_SPACE),
        "gamma": Hyper(float, low=0.0, search=LogUniform(-4.0, -1.0)),
    }


STUDY_OPTIMIZERS = [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).study_name is not None]


def test_study_optimizers_are_the_sixteen() -> None:
    assert len(STUDY_OPTIMIZERS) == 16 and {"adam", "ndadam", "adabelief", "lookahead_radam"} <= set(STUDY_OPTIMIZERS)


@pytest.mark.parametrize("name", STUDY_OPTIMIZERS)
def test_first_learning_rate_of_every_study_optimizer(name: str) -> None:
    spec = OPTIMIZERS.get(name)
    space = spec.search_space()
    assert list(space)[0] == "learning_rate"  # the study draws lr first for every optimizer
    assert close(study_samples(spec, 1)[0]["learning_rate"], LR0)


def test_adam_samples_from_the_published_folders() -> None:
    adam = study_samples(OPTIMIZERS.get("adam"), 75)
    assert contains(adam, {"beta1": 0.85332331198, "beta2": 0.83612286844, "learning_rate": 0.88623265086}) is not None
    # a large_budget folder (50 samples)
    assert contains(adam[:50], {"beta1": 6.6751530104e-01, "beta2": 8.4047875565e-01,
                                "learning_rate": 1.1040511903e-02}) is not None


def test_amsgrad_shares_adams_stream() -> None:
    """§2.1: the Adam sample above was also published for AMSGrad (same shape, same stream)."""
    ams = study_samples(OPTIMIZERS.get("amsgrad"), 75)
    assert ams == study_samples(OPTIMIZERS.get("adam"), 75)
    assert contains(ams, {"beta1": 0.85332331198, "beta2": 0.83612286844, "learning_rate": 0.88623265086}) is not None


def test_lookahead_momentum_example() -> None:
    first = study_samples(LookaheadMomentumSpace, 1)[0]
    assert first["k"] == 11 and isinstance(first["k"], int)
    assert close(first["alpha"], 0.13145103232)
    assert close(first["learning_rate"], LR0)
    assert close(first["momentum"], 0.71144760093)


def test_amsbound_example() -> None:
    assert contains(study_samples(AMSBoundSpace, 50), {"beta1": 0.84707137863, "beta2": 0.84338309931}) is not None


def test_nag_and_rmsprop_pairs() -> None:
    nag = study_samples(OPTIMIZERS.get("nag"), 50)
    for lr, rho in [(2.4637685959e-02, 5.829384543e-01), (7.5568101413e-01, 2.1154290797e-01)]:
        assert contains(nag, {"learning_rate": lr, "momentum": rho}) is not None
    rms = study_samples(OPTIMIZERS.get("rmsprop"), 50)
    assert contains(rms, {"learning_rate": 2.3423849847e-02, "decay": 1.3783237455e-03}) is not None


def test_a_wrong_order_misses_the_published_values() -> None:
    """Sensitivity: the same NAG space drawn in the order (momentum, lr) does not produce the published pair."""

    class Swapped(OptimizerSpec):
        hyperparameters = {"momentum": beta(MOMENTUM_SPACE), "learning_rate": learning_rate()}

    pair = {"learning_rate": 2.4637685959e-02, "momentum": 5.829384543e-01}
    assert contains(study_samples(Swapped, 50), pair) is None


def test_matches_the_studys_literal_procedure() -> None:
    """DeepOBS: np.random.seed(42) once, then global-RNG scipy rvs() per sample per hyperparameter, 10**U(a, b)."""
    saved = np.random.get_state()
    try:
        np.random.seed(42)
        expected = []
        for _ in range(30):
            expected.append({
                "learning_rate": np.power(10, stats.uniform(loc=-4.0, scale=4.0).rvs()),
                "momentum": np.power(10, stats.uniform(loc=-3.0, scale=3.0).rvs()),
                "k": stats.randint(1, 20).rvs(),
                "alpha": np.power(10, stats.uniform(loc=-4.0, scale=4.0).rvs()),
            })
    finally:
        np.random.set_state(saved)
    ours = study_samples(LookaheadMomentumSpace, 30)
    for a, b in zip(ours, expected, strict=True):
        assert a["k"] == b["k"]
        for key in ("learning_rate", "momentum", "alpha"):
            assert a[key] == pytest.approx(b[key], rel=1e-15)


# ---------------------------------------------------------------------------------------------------------- CLI
def parse_rows(text: str) -> list[list[str]]:
    """Data rows of the rich table: lines whose first cell is a sample index."""
    rows = []
    for line in text.splitlines():
        if "│" not in line:
            continue
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if cells and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_cli_prints_the_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adam", "5"]) == 0
    out = capsys.readouterr().out
    assert "learning_rate" in out and "beta1" in out and "beta2" in out and "AdamOptimizer" in out
    rows = parse_rows(out)
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    for row, sample in zip(rows, study_samples(OPTIMIZERS.get("adam"), 5), strict=True):
        assert [float(x) for x in row[1:]] == pytest.approx(
            [sample["learning_rate"], sample["beta1"], sample["beta2"]], rel=1e-10)
    assert rows[0][1] == "3.1489116480e-03"


def test_cli_integer_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lookahead_momentum", "1"]) == 0
    row = parse_rows(capsys.readouterr().out)[0]
    assert row[0] == "0" and row[3] == "11"


@pytest.mark.parametrize("argv,fragment", [(["nosuch", "3"], "unknown optimizer 'nosuch'; valid: "),
                                           (["adam", "0"], "n must be >= 1")])
def test_cli_errors_are_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and fragment in err
    if argv[0] == "nosuch":
        assert all(n in err for n in ("adam", "momentum", "nag", "rmsprop", "sgd"))


def test_cli_as_a_module() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "bench.samples", "nag", "3"], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    rows = parse_rows(ok.stdout)
    assert len(rows) == 3 and rows[0][1] == "3.1489116480e-03"
    bad = subprocess.run([sys.executable, "-m", "bench.samples", "nosuch"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_draws_equal_scipys_rvs_draw_for_draw() -> None:
    """LogUniform/RandInt write scipy's rvs out (speed); the streams must stay scipy's, value for value."""
    from scipy import stats

    from optimizers.base import LogUniform, RandInt

    ours, theirs = np.random.RandomState(42), np.random.RandomState(42)
    dists = [LogUniform(-4.0, 0.0), RandInt(1, 20), LogUniform(-0.301, -0.00043), LogUniform(-3.0, -0.301)]
    for i in range(6000):
        d = dists[i % len(dists)]
        if isinstance(d, LogUniform):
            expected = float(10.0 ** stats.uniform(loc=d.low_exp, scale=d.high_exp - d.low_exp).rvs(random_state=theirs))
        else:
            expected = int(stats.randint(d.low, d.high).rvs(random_state=theirs))
        assert d.rvs(ours) == expected
