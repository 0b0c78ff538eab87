"""Learning-rate schedules: the study's published factor lists (§3), the lecture's laws (§9) against independent
numpy formulas, reduce-on-plateau against torch's ReduceLROnPlateau, configuration errors, and the run loop really
training epoch n at lr·f_n."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bench.schedules import SCHEDULES
from bench.spec import SpecError, make_spec
from bench.train import train

CONF = Path(__file__).resolve().parent.parent / "conf" / "schedule"
STUDY = ("constant", "cosine", "cosine_wr", "trapezoidal")
P1 = {"batch_size": 128, "weight_decay": 0.0, "hessian_draw": 0, "size": "full"}
STEPS_PER_EPOCH = 1000 // 128  # P1: 7 drop-remainder batches



def make(name: str, num_epochs: int, steps_per_epoch: int = 7, **settings):
    return SCHEDULES.get(name)(num_epochs, steps_per_epoch, **settings)


def yaml_settings(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    cfg.pop("name")
    return cfg


# ------------------------------------------------------------------------------------------- study values (§3)
def test_cosine_published_values():
    f = make("cosine", 100).epoch_factors()
    assert len(f) == 101
    assert f[0] == 1.0
    assert f[1] == pytest.approx(0.9997532801828658, rel=1e-15, abs=0)
    assert f[50] == 0.5
    assert f[100] == pytest.approx(0.0, abs=1e-16)
    n = np.arange(1, 101)
    np.testing.assert_allclose(f[1:], 0.5 * (1 + np.cos(np.pi * n / 100)), rtol=1e-14, atol=1e-16)


def sgdr_reference(n: np.ndarray, t0: float, t_mult: float) -> np.ndarray:
    """Restart epochs listed explicitly: s_0 = 0, s_{k+1} = s_k + t0·t_mult^k."""
    starts = [0.0]
    while starts[-1] <= n.max():
        starts.append(starts[-1] + t0 * t_mult ** (len(starts) - 1))
    starts_arr = np.array(starts)
    k = np.searchsorted(starts_arr, n, side="right") - 1
    return 0.5 * (1 + np.cos(np.pi * (n - starts_arr[k]) / (t0 * t_mult ** k)))


FIRST_CYCLE = [0.97553, 0.90451, 0.79389, 0.65451, 0.5, 0.34549, 0.20611, 0.09549, 0.02447]


@pytest.mark.parametrize("num_epochs", [100, 50])
def test_cosine_wr_published_values(num_epochs):
    f = make("cosine_wr", num_epochs).epoch_factors()
    assert len(f) == num_epochs + 1 and f[0] == 1.0
    np.testing.assert_allclose(f[1:10], FIRST_CYCLE, atol=5e-6)
    restarts = [n for n in (10, 30, 70) if n <= num_epochs]
    for n in restarts:
        assert f[n] == 1.0
    # Only the restarts (and epoch 0) are at 1: restarts do not depend on N.
    assert [n for n in range(1, num_epochs + 1) if f[n] == 1.0] == restarts
    if num_epochs == 100:
        assert f[100] == pytest.approx(0.69134, abs=5e-6)
    n = np.arange(1, num_epochs + 1, dtype=float)
    np.testing.assert_allclose(f[1:], sgdr_reference(n, 10.0, 2.0), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("t0,t_mult", [(3.0, 1.0), (4.0, 3.0), (2.5, 1.5)])
def test_cosine_wr_other_cycles(t0, t_mult):
    s = make("cosine_wr", 60, t0=t0, t_mult=t_mult)
    n = np.arange(1, 61, dtype=float)
    np.testing.assert_allclose(s.epoch_factors()[1:], sgdr_reference(n, t0, t_mult), rtol=1e-12, atol=1e-15)


def test_cosine_wr_restart_exact_where_the_log_closed_form_rounds():
    """t0 = 1, t_mult = 3: restarts at 1, 4, 13, 40, 121; log(243)/log(3) < 5 would put 121 in the old cycle."""
    f = make("cosine_wr", 130, t0=1.0, t_mult=3.0).epoch_factors()
    assert [n for n in range(1, 131) if f[n] == 1.0] == [1, 4, 13, 40, 121]


def test_trapezoidal_published_values_n100():
    f = make("trapezoidal", 100).epoch_factors()
    expected = [1.0] + [n / 10 for n in range(1, 10)] + [1.0] * 81 + [k / 11 for k in range(10, 0, -1)]
    assert len(f) == len(expected) == 101
    np.testing.assert_allclose(f, expected, rtol=1e-15)
    assert f[1] == 0.1 and f[9] == 0.9 and f[10] == 1.0 and f[90] == 1.0
    assert f[91] == pytest.approx(10 / 11, rel=1e-15) and f[100] == pytest.approx(1 / 11, rel=1e-15)


def test_trapezoidal_published_values_n350():
    f = make("trapezoidal", 350).epoch_factors()
    expected = [1.0] + [n / 35 for n in range(1, 35)] + [1.0] * (315 - 35 + 1) + [k / 36 for k in range(35, 0, -1)]
    assert len(f) == len(expected) == 351
    np.testing.assert_allclose(f, expected, rtol=1e-15)
    assert f[35] == 1.0 and f[315] == 1.0 and f[316] == pytest.approx(35 / 36, rel=1e-15)


def test_trapezoidal_n_not_divisible_by_ten():
    """W = N/10 stays real (documented in trapezoidal.py): N = 95 gives ramps over 9.5 epochs."""
    f = make("trapezoidal", 95).epoch_factors()
    expected = [1.0] + [n / 9.5 for n in range(1, 10)] + [1.0] * (85 - 10 + 1) + [(96 - n) / 10.5 for n in range(86, 96)]
    np.testing.assert_allclose(f, expected, rtol=1e-15)
    for num_epochs in range(1, 30):  # always positive and never above 1, down to N = 1
        g = make("trapezoidal", num_epochs).epoch_factors()
        assert all(0 < x <= 1 for x in g), (num_epochs, g)


@pytest.mark.parametrize("name", sorted(SCHEDULES.names()))
def test_f0_is_one_in_epoch_granularity(name):
    """make_lr_schedule's sched[0] = lr_base, even where the law starts elsewhere (trapezoidal law(0) = 0)."""
    s = make(name, 20, **yaml_settings(name))
    assert s.granularity == "epoch"
    assert s.factor(0) == 1.0 and s.epoch_factors()[0] == 1.0
    assert s.factor(0, step=3) == 1.0  # epoch granularity ignores the step


# ---------------------------------------------------------------------------------- lecture laws (§9) vs numpy
REFERENCES = {
    "constant": (lambda t, N, p: np.ones_like(t)),
    "cosine": (lambda t, N, p: 0.5 * (1 + np.cos(np.pi * t / N))),
    "cosine_wr": (lambda t, N, p: sgdr_reference(t, p["t0"], p["t_mult"])),
    "trapezoidal": (lambda t, N, p: np.select([t < N / 10, t <= N - N / 10], [t / (N / 10), 1.0],
                                              (N + 1 - t) / (N / 10 + 1))),
    "step": (lambda t, N, p: p["gamma"] ** np.floor(t / p["step_size"])),
    "exponential": (lambda t, N, p: p["gamma"] ** t),
    "inverse_time": (lambda t, N, p: 1 / (1 + p["decay_rate"] * t)),
}
NON_DEFAULT = {
    "constant": {}, "cosine": {}, "cosine_wr": {"t0": 3.0, "t_mult": 2.0}, "trapezoidal": {},
    "step": {"step_size": 4, "gamma": 0.5}, "exponential": {"gamma": 0.8}, "inverse_time": {"decay_rate": 0.7},
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("params", ["yaml", "non_default"])
def test_laws_against_reference(name, params):
    p = yaml_settings(name) if params == "yaml" else {"granularity": "epoch", **NON_DEFAULT[name]}
    num_epochs = 40
    s = make(name, num_epochs, **p)
    n = np.arange(1, num_epochs + 1, dtype=float)
    np.testing.assert_allclose(s.epoch_factors()[1:], REFERENCES[name](n, num_epochs, p), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_step_granularity_reads_the_law_at_fractional_epochs(name):
    num_epochs, spe = 12, 5
    p = {**NON_DEFAULT[name], "granularity": "step"}
    s = make(name, num_epochs, spe, **p)
    epochs, steps = np.meshgrid(np.arange(num_epochs), np.arange(spe), indexing="ij")
    got = np.array([[s.factor(int(e), int(i)) for i in range(spe)] for e in range(num_epochs)])
    np.testing.assert_allclose(got, REFERENCES[name](epochs + steps / spe, num_epochs, p), rtol=1e-12, atol=1e-15)
    assert s.factor(0, 0) == s.law(0.0)  # no f_0 quirk: the trapezoid's first step has factor 0
    if name == "trapezoidal":
        assert s.factor(0, 0) == 0.0 and s.factor(0, 1) == pytest.approx(0.2 / 1.2)


def test_step_and_exponential_values():
    s = make("step", 100, step_size=30, gamma=0.1)
    f = s.epoch_factors()
    assert f[29] == 1.0 and f[30] == pytest.approx(0.1) and f[59] == pytest.approx(0.1)
    assert f[60] == pytest.approx(0.01) and f[90] == pytest.approx(1e-3)
    e = make("exponential", 10, gamma=0.5)
    assert e.epoch_factors() == [1.0] + [0.5 ** n for n in range(1, 11)]
    i = make("inverse_time", 10, decay_rate=1.0)
    assert i.epoch_factors() == [1.0] + [1 / (1 + n) for n in range(1, 11)]


# ----------------------------------------------------------------------------------------------- plateau
def torch_plateau_factors(metrics, higher_is_better, **p) -> list[float]:
    """The LR that torch's ReduceLROnPlateau sets after each metric, on a base LR of 1."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max" if higher_is_better else "min", factor=p["gamma"], patience=p["patience"],
        threshold=p["threshold"], threshold_mode=p["threshold_mode"], cooldown=p["cooldown"],
        min_lr=p["min_factor"], eps=0.0)
    out = []
    for m in metrics:
        sched.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


def plateau_levels(metrics, higher_is_better, **p) -> list[float]:
    s = make("plateau", len(metrics), **p)
    levels = []
    for n, m in enumerate(metrics):
        s.observe(n, m, higher_is_better)
        levels.append(s.factor(n) if n else s.law(0))
    return levels


LOSSES = [5.0, 4.0, 4.0, 3.9999, 4.1, 3.0, 3.0, 3.0, 3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5]


def test_plateau_scripted_loss():
    """patience 2: a reduction after the 3rd consecutive epoch without a relative improvement of 1e-4."""
    p = {"gamma": 0.5, "patience": 2, "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0, "min_factor": 0.0}
    levels = plateau_levels(LOSSES, False, **p)
    # epochs 2, 3 (3.9999 is not < 4·(1 − 1e-4)), 4 bad → reduce at 4; 6, 7, 8 bad → reduce at 8;
    # 10..15 bad → reduce at 12 and 15.
    expected = [1, 1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .25, .125, .125, .125, .0625]
    assert levels == expected
    assert levels == torch_plateau_factors(LOSSES, False, **p)


def test_plateau_scripted_accuracy_higher_is_better():
    acc = [0.1, 0.5, 0.5, 0.49, 0.6, 0.6, 0.6, 0.9, 0.9, 0.9, 0.9]
    p = {"gamma": 0.1, "patience": 1, "threshold": 0.05, "threshold_mode": "abs", "cooldown": 1, "min_factor": 0.0}
    levels = plateau_levels(acc, True, **p)
    # 2, 3 bad → reduce at 3 (cooldown 1: epoch 4 improves anyway); 5, 6 bad → reduce at 6 (7 improves);
    # 8, 9 bad → reduce at 9; epoch 10 is in the cooldown. Read as a loss, the same sequence reduces differently.
    assert levels == pytest.approx([1, 1, 1, .1, .1, .1, .01, .01, .01, .001, .001], rel=1e-12)
    assert levels == pytest.approx(torch_plateau_factors(acc, True, **p), rel=1e-12)
    assert plateau_levels(acc, False, **p) == pytest.approx(torch_plateau_factors(acc, False, **p), rel=1e-12)
    assert plateau_levels(acc, False, **p) != levels


@pytest.mark.parametrize("seed", range(6))
def test_plateau_matches_torch_on_random_sequences(seed):
    rng = np.random.RandomState(seed)
    metrics = list(np.round(rng.uniform(0, 1, 60) + np.linspace(1, 0, 60) * (seed % 2), 2))
    p = {"gamma": float(rng.choice([0.1, 0.5])), "patience": int(rng.randint(0, 4)),
         "threshold": float(rng.choice([0.0, 1e-4, 0.05])), "threshold_mode": str(rng.choice(["rel", "abs"])),
         "cooldown": int(rng.randint(0, 3)), "min_factor": float(rng.choice([0.0, 1e-3]))}
    for higher in (False, True):
        assert plateau_levels(metrics, higher, **p) == pytest.approx(torch_plateau_factors(metrics, higher, **p),
                                                                      rel=1e-12)


def test_plateau_min_factor_and_law_history():
    s = make("plateau", 6, gamma=0.1, patience=0, min_factor=0.05)
    for n, m in enumerate([1.0, 2.0, 2.0]):
        s.observe(n, m, False)
    assert [s.factor(n) for n in range(3)] == [1.0, 0.1, 0.05]
    # Unobserved epochs keep the current factor; step granularity reads the same history.
    assert s.epoch_factors() == [1.0, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05]
    t = make("plateau", 6, 4, granularity="step", gamma=0.5, patience=0)
    t.observe(0, 1.0, False)
    assert [t.factor(0, i) for i in range(4)] == [1.0] * 4
    t.observe(1, 1.0, False)
    assert [t.factor(1, i) for i in range(4)] == [0.5] * 4


def test_plateau_rejects_out_of_order_and_direction_change():
    s = make("plateau", 5)
    s.observe(0, 1.0, False)
    with pytest.raises(ValueError, match="in order"):
        s.observe(2, 1.0, False)
    with pytest.raises(ValueError, match="higher_is_better"):
        s.observe(1, 1.0, True)


# ------------------------------------------------------------------------------------- configuration, registry
def test_registry_names_equal_yaml_names():
    assert sorted(SCHEDULES.names()) == sorted(p.stem for p in CONF.glob("*.yaml"))
    assert {"constant", "cosine", "cosine_wr", "trapezoidal", "step", "plateau", "exponential",
            "inverse_time"} <= set(SCHEDULES.names())


@pytest.mark.parametrize("name", sorted(SCHEDULES.names()))
def test_yaml_mirrors_declared_defaults(name):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert cfg.pop("name") == name
    assert cfg.pop("granularity") == "epoch"
    cls = SCHEDULES.get(name)
    assert cfg == {k: p.default for k, p in cls.parameters.items()}
    assert cls.canonical_settings({}) == {"granularity": "epoch", **cfg}
    assert cls.canonical_settings({"name": name, **yaml_settings(name)}) == cls.canonical_settings({})


def test_unknown_parameter_is_one_line_error():
    with pytest.raises(ValueError) as err:
        make("cosine_wr", 10, t_0=5)
    msg = str(err.value)
    assert "\n" not in msg and "'t_0'" in msg and "t0" in msg and "t_mult" in msg
    with pytest.raises(ValueError) as err:
        make("cosine", 10, gamma=0.5)
    assert "\n" not in str(err.value) and "cosine" in str(err.value)


@pytest.mark.parametrize("name,params,needle", [
    ("step", {"step_size": 0}, "schedule.step_size=0"),
    ("step", {"gamma": 1.5}, "schedule.gamma=1.5"),
    ("exponential", {"gamma": 0.0}, "schedule.gamma=0.0"),
    ("inverse_time", {"decay_rate": -1.0}, "schedule.decay_rate=-1.0"),
    ("cosine_wr", {"t_mult": 0.5}, "schedule.t_mult=0.5"),
    ("plateau", {"threshold_mode": "relative"}, "schedule.threshold_mode='relative'"),
    ("plateau", {"patience": 1.5}, "schedule.patience=1.5"),
    ("constant", {"granularity": "batch"}, "schedule.granularity='batch'"),
])
def test_invalid_values_are_one_line_errors(name, params, needle):
    with pytest.raises(ValueError) as err:
        make(name, 10, **params)
    assert "\n" not in str(err.value) and needle in str(err.value)
    with pytest.raises(SpecError) as err:
        make_spec("quadratic_deep", "sgd", {"learning_rate": 0.01}, schedule=name,
                  problem_settings={**P1, "num_epochs": 2}, schedule_settings=params)
    assert "\n" not in str(err.value) and needle in str(err.value)


# ---------------------------------------------------------------------------- the run loop applies the factors
@pytest.fixture
def recorded_lrs(monkeypatch):
    """Every SGD step's learning rate, in order."""
    lrs: list[float] = []
    original = torch.optim.SGD.step

    def step(self, closure=None):
        lrs.append(self.param_groups[0]["lr"])
        return original(self, closure)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    return lrs


RUN_LOOP_CASES = {
    "cosine": {"granularity": "epoch"},
    "cosine_wr": {"granularity": "epoch", "t0": 2.0, "t_mult": 2.0},
    "trapezoidal": {"granularity": "epoch"},
    "step": {"granularity": "epoch", "step_size": 1, "gamma": 0.5},
    "plateau": {"granularity": "epoch", "patience": 0, "threshold": 1e6, "threshold_mode": "abs"},
    "inverse_time": {"granularity": "step", "decay_rate": 0.5},
    "cosine/step": {"granularity": "step"},
}


@pytest.mark.parametrize("case", sorted(RUN_LOOP_CASES))
def test_run_loop_trains_epoch_n_at_lr_times_f_n(case, recorded_lrs):
    name, settings, lr, num_epochs = case.split("/")[0], RUN_LOOP_CASES[case], 0.01, 4
    spec = make_spec("quadratic_deep", "sgd", {"learning_rate": lr}, schedule=name,
                     problem_settings={**P1, "num_epochs": num_epochs}, schedule_settings=settings)
    result = train(spec)
    assert result.status == "completed"
    got = np.array(recorded_lrs).reshape(num_epochs, STEPS_PER_EPOCH)
    reference = make(name, num_epochs, STEPS_PER_EPOCH, **settings)  # fresh instance, nothing shared with the run
    if name == "plateau":
        # Replay the run's own validation losses in the loop's order: observe(n) before factor(n).
        for n, loss in enumerate(result.series("valid", "loss")[:num_epochs]):
            reference.observe(n, loss, False)
        # threshold 1e6 (abs): nothing after epoch 0 improves, so with patience 0 every epoch divides by 10.
        assert reference.epoch_factors()[:num_epochs] == pytest.approx([1.0, 0.1, 0.01, 0.001], rel=1e-12)
    expected = np.array([[lr * reference.factor(e, i) for i in range(STEPS_PER_EPOCH)] for e in range(num_epochs)])
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    if settings["granularity"] == "epoch":
        assert (got == got[:, :1]).all()  # piecewise constant per epoch
        assert got[0, 0] == lr  # f_0 = 1
    else:
        assert len(set(got.ravel().tolist())) > num_epochs  # the rate changes within epochs
    assert math.isfinite(result.series("test", "loss")[-1])
