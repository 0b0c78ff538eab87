"""Cross-cutting checks over every registered optimizer (whatever ``OPTIMIZERS.names()`` holds when collected):
YAML defaults and study names, checkpoint round trips, and short runs under every schedule."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bench.schedules import SCHEDULES
from bench.spec import make_spec
from bench.train import make_step, train
from optimizers import OPTIMIZERS
from optimizers.base import study_samples
from problems import PROBLEMS, Problem, Split
from problems.base import Batch

ROOT = Path(__file__).resolve().parent.parent
NAMES = OPTIMIZERS.names()
SCHEDULE_NAMES = SCHEDULES.names()
P1 = {"batch_size": 128, "weight_decay": 0.0, "hessian_draw": 0, "size": "full", "num_epochs": 2}


# §2: the 15 published folder names (TF class names), by our config name; §8: AdaBelief is the ICML 15th optimizer
# but has no published folder, so only "set, and not one of these" can be checked for it.
STUDY_NAMES = {
    "sgd": "GradientDescentOptimizer", "momentum": "MomentumOptimizer", "nag": "NAGOptimizer",
    "adam": "AdamOptimizer", "amsgrad": "AMSGrad", "nadam": "NadamOptimizer", "radam": "RAdamOptimizer",
    "ndadam": "NDAdamOptimizer", "adabound": "AdaBoundOptimizer", "amsbound": "AMSBoundOptimizer",
    "adagrad": "AdagradOptimizer", "adadelta": "AdadeltaOptimizer", "rmsprop": "RMSPropOptimizer",
    "lookahead_momentum": "LookaheadOptimizerMBGDMomentum", "lookahead_radam": "LookaheadOptimizerRAdam",
}
PUBLISHED_FOLDERS = ("AMSBoundOptimizer, AMSGrad, AdaBoundOptimizer, AdadeltaOptimizer, AdagradOptimizer, "
                     "AdamOptimizer, GradientDescentOptimizer, LookaheadOptimizerMBGDMomentum, LookaheadOptimizerRAdam, "
                     "MomentumOptimizer, NAGOptimizer, NDAdamOptimizer, NadamOptimizer, RAdamOptimizer, "
                     "RMSPropOptimizer").split(", ")

# Optimizers whose defaults may diverge within 2 epochs of P1, with the reason. None do at present.
EXPECTED_DIVERGED: dict[str, str] = {}


def defaults(name: str, problem: dict[str, Any] | None = None) -> dict[str, Any]:
    """The YAML's defaults as Hydra composes them: interpolations such as ``${problem.batch_size}`` resolve against
    the problem's settings (P1's YAML unless given)."""
    if problem is None:
        problem = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "problem" / "quadratic_deep.yaml"))
    composed = OmegaConf.create({"problem": problem,
                                 "optimizer": OmegaConf.load(ROOT / "conf" / "optimizer" / f"{name}.yaml")})
    cfg = OmegaConf.to_container(composed, resolve=True)["optimizer"]
    assert cfg.pop("name") == name, f"conf/optimizer/{name}.yaml: name must be {name}"
    return cfg


def schedule_settings(name: str) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "schedule" / f"{name}.yaml"))
    cfg.pop("name")
    return cfg


# ------------------------------------------------------------------------------------------ YAML and names
def test_every_optimizer_has_one_yaml():
    assert sorted(p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_yaml_defaults_are_exactly_the_declared_hyperparameters(name):
    cls = OPTIMIZERS.get(name)
    cfg = defaults(name)
    assert set(cfg) - set(cls.hyperparameters) == set(), "YAML keys that are not declared hyperparameters"
    assert set(cls.hyperparameters) - set(cfg) == set(), "declared hyperparameters without a YAML default"
    hp = cls.validate(cfg)
    assert hp == cfg


@pytest.mark.parametrize("name", NAMES)
def test_search_space_samples_are_valid(name):
    """The study's first samples, merged into the defaults, pass validation (ranges agree with distributions)."""
    cls = OPTIMIZERS.get(name)
    assert set(cls.search_space()) <= set(cls.hyperparameters)
    base = defaults(name)
    for sample in study_samples(cls, 5):
        cls.validate({**base, **sample})


def test_study_name_mapping_matches_the_published_folders():
    assert sorted(STUDY_NAMES.values()) == sorted(PUBLISHED_FOLDERS)


@pytest.mark.parametrize("name", sorted([*STUDY_NAMES, "adabelief"]))
def test_study_optimizers_exist_with_their_study_name(name):
    assert name in NAMES, f"optimizers/{name}.py is missing"
    study_name = OPTIMIZERS.get(name).study_name
    if name == "adabelief":
        assert isinstance(study_name, str) and study_name and study_name not in PUBLISHED_FOLDERS
    else:
        assert study_name == STUDY_NAMES[name]


@pytest.mark.parametrize("name", [n for n in NAMES if n not in STUDY_NAMES and n != "adabelief"])
def test_lecture_optimizers_have_no_study_name(name):
    """Beyond-the-study optimizers (§9) have no published results, so nothing may be compared with them."""
    assert OPTIMIZERS.get(name).study_name is None


# ------------------------------------------------------------------------------------- state_dict round trip
class TinyRegression(Problem):
    """A 2-layer MLP regression (several parameter tensors, biases, a nonlinearity) for the round trip."""

    name = "tiny_regression"
    study_name = "tiny_regression"

    def load_data(self) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 5, generator=g)
        y = torch.tanh(x @ torch.randn(5, 2, generator=g)) + 0.1 * torch.randn(96, 2, generator=g)
        self.data = {s: Split(x, y) for s in ("train", "valid", "test")}

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))

    def compute(self, model: nn.Module, batch: Batch, training: bool) -> tuple[torch.Tensor, None]:
        x, y = batch
        return 0.5 * (model(x) - y).square().sum(dim=1).mean(), None

    def sampled_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        f = model(batch[0])
        return 0.5 * (f - (f.detach() + torch.randn_like(f))).square().sum(dim=1).mean()


def round_trip_problem(kind: str) -> Problem:
    if kind == "quadratic_deep":
        problem = PROBLEMS.get("quadratic_deep")(P1, 42, torch.device("cpu"))
    else:
        problem = TinyRegression({"batch_size": 16, "num_epochs": 3}, 42, torch.device("cpu"))
    problem.load_data()
    return problem


def advance(problem: Problem, model: nn.Module, optimizer: torch.optim.Optimizer, cls, batches: list[Batch]) -> None:
    step, _ = make_step(problem, model, optimizer, cls)
    model.train()
    for batch in batches:
        step(batch)


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Recursive bit-for-bit equality of (nested) state dicts."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        same = torch.equal(a, b) or (torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
        assert same, f"{where}: max |difference| {(a.double() - b.double()).abs().max().item():.3g}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


CHECKPOINT_AT, TOTAL_STEPS = 3, 13  # mid Lookahead cycle (k 5); the rest crosses syncs at 5, 10 and a k=10 refresh


def interrupted_and_uninterrupted(cls, hp: dict[str, Any], problem: Problem) -> tuple[dict, dict]:
    """Train TOTAL_STEPS steps straight through, and again with a torch.save/torch.load checkpoint after
    CHECKPOINT_AT steps; return both runs' final {"model", "optimizer"} state dicts."""
    batches = [b for epoch in range(3) for b in problem.train_batches(epoch)][:TOTAL_STEPS]
    assert len(batches) == TOTAL_STEPS
    head, tail = batches[:CHECKPOINT_AT], batches[CHECKPOINT_AT:]

    torch.manual_seed(0)
    model = problem.build_model()
    opt = cls.build(model.parameters(), hp)
    cls.prepare(opt, problem)  # as the run loop does after build
    cls.on_epoch(opt, 0, 2)
    advance(problem, model, opt, cls, head)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state()}, buffer)
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    def continue_run(m: nn.Module, o: torch.optim.Optimizer) -> None:
        cls.on_epoch(o, 1, 2)  # an epoch boundary as the run loop makes it: hook, then the schedule's factor
        for group in o.param_groups:
            group["lr"] = group["lr"] * 0.5
        advance(problem, m, o, cls, tail)

    continue_run(model, opt)  # the uninterrupted run
    final = model.state_dict()
    assert any(not torch.equal(final[k], saved[k]) for k in final), "the continuation did not move the model"
    assert all(torch.isfinite(v).all() for v in final.values())

    buffer.seek(0)
    checkpoint = torch.load(buffer)  # weights_only: a checkpoint must hold tensors and plain Python values only
    # PyTorch's resume pattern: build model and optimizer afresh (from a different init, so that only the checkpoint
    # can carry the run's state), then load both.
    torch.manual_seed(1)
    model2 = problem.build_model()
    opt2 = cls.build(model2.parameters(), hp)
    cls.prepare(opt2, problem)
    model2.load_state_dict(checkpoint["model"])
    opt2.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"])
    continue_run(model2, opt2)
    return ({"model": final, "optimizer": opt.state_dict()},
            {"model": model2.state_dict(), "optimizer": opt2.state_dict()})


@pytest.mark.parametrize("kind", ["quadratic_deep", "mlp"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_is_bit_identical(name, kind):
    cls = OPTIMIZERS.get(name)
    problem = round_trip_problem(kind)
    straight, resumed = interrupted_and_uninterrupted(cls, cls.validate(defaults(name, problem.settings)), problem)
    assert_same(straight["model"], resumed["model"], "model")
    assert_same(straight["optimizer"], resumed["optimizer"], "optimizer")


class _CounterOutsideState(torch.optim.SGD):
    """A deliberately broken optimizer: lr/t with its step counter t kept outside ``self.state``."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.t = 0

    def step(self, closure=None):
        self.t += 1
        for group in self.param_groups:
            for p in group["params"]:
                p.data.add_(p.grad, alpha=-group["lr"] / self.t)


def test_round_trip_check_catches_state_kept_outside_the_state_dict():
    class Broken(OPTIMIZERS.get("sgd")):
        @classmethod
        def build(cls, params, hp):
            return _CounterOutsideState(params, hp["learning_rate"])

    straight, resumed = interrupted_and_uninterrupted(Broken, {"learning_rate": 0.01}, round_trip_problem("mlp"))
    with pytest.raises(AssertionError, match="max"):
        assert_same(straight["model"], resumed["model"], "model")
    assert_same(straight["optimizer"], resumed["optimizer"], "optimizer")  # the state dicts cannot tell


# ------------------------------------------------------------------------ every optimizer × every schedule
RUN_CASES = [(s, "epoch") for s in SCHEDULE_NAMES] + [("cosine", "step"), ("trapezoidal", "step")]


@pytest.mark.parametrize("schedule,granularity", RUN_CASES, ids=[f"{s}-{g}" for s, g in RUN_CASES])
@pytest.mark.parametrize("name", NAMES)
def test_two_epochs_of_p1_under_every_schedule(name, schedule, granularity):
    settings = {**schedule_settings(schedule), "granularity": granularity}
    spec = make_spec("quadratic_deep", name, defaults(name, P1), schedule=schedule, problem_settings=P1,
                     schedule_settings=settings)
    result = train(spec)
    losses = [v for (_, _, m, v) in result.curves if m == "loss"]
    if result.status == "diverged":
        assert name in EXPECTED_DIVERGED, f"{name} diverged under {schedule}: {result.series('test', 'loss')}"
        assert not all(math.isfinite(v) for v in losses)
        return
    assert result.status == "completed"
    assert all(math.isfinite(v) for v in losses)
    assert [e for (e, s, m, _) in result.curves if s == "test" and m == "loss"] == [0, 1, 2]
    assert result.steps == 2 * (1000 // 128)
    assert result.grad_evals >= result.steps  # every step costs at least one gradient
    record = result.record()
    assert record["status"] == "completed" and record["epochs_completed"] == 2
