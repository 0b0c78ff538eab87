"""What every optimizer plugin declares: its hyperparameters (valid ranges, the study's search distributions in
the study's sampling order), how to build the torch optimizer, and what one step costs.

Defaults live in ``conf/optimizer/<name>.yaml`` (one source of truth, visible to Hydra users); the spec holds what
the YAML cannot say: types, ranges, distributions and the update rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np
import torch

from bench.registry import Registry


class HyperparameterError(ValueError):
    """An invalid hyperparameter value or name; the message is the one line a user sees."""


@dataclass(frozen=True)
class LogUniform:
    """The study's ``log_uniform``: ``10 ** U(low_exp, high_exp)`` drawn with ``scipy.stats.uniform`` (exponents!)."""

    low_exp: float
    high_exp: float

    def rvs(self, rng: np.random.RandomState) -> float:
        """scipy's ``uniform(loc, scale).rvs(random_state=rng)`` is ``rng.uniform(0, 1) * scale + loc``: the same
        draw from the same stream, written out because building a frozen scipy distribution per value costs ~1 ms
        (``tests/test_sampler.py`` checks both agree draw for draw)."""
        return float(10.0 ** (rng.uniform(0.0, 1.0) * (self.high_exp - self.low_exp) + self.low_exp))


@dataclass(frozen=True)
class RandInt:
    """``scipy.stats.randint(low, high)``: integers low..high-1 (Lookahead's k uses randint(1, 20))."""

    low: int
    high: int

    def rvs(self, rng: np.random.RandomState) -> int:
        """scipy's ``randint(low, high).rvs(random_state=rng)`` is ``rng.randint(low, high)`` (checked in the tests)."""
        return int(rng.randint(self.low, self.high))


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: its type, valid range and (if the study tuned it) its search distribution."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    search: LogUniform | RandInt | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind is bool:
            return "true or false"
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        kind = "an integer" if self.kind is int else "a number"
        return f"{kind} in {lo}{low}, {high}{hi}"

    def check(self, name: str, value: Any) -> Any:
        """Return the value coerced to its type, or raise a one-line :class:`HyperparameterError`."""
        def bad() -> HyperparameterError:  # built only when needed: sweeps check ~10^5 values
            return HyperparameterError(f"invalid {name}={value!r}: must be {self.describe()}")

        if self.choices is not None:
            if value not in self.choices:
                raise bad()
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad()
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if self.kind is int:
            if float(value) != int(value):
                raise bad()
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad()
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise bad()
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise bad()
        return value


# Shorthands for the ranges that recur across optimizers.
def learning_rate(search: LogUniform | None = LogUniform(-4.0, 0.0)) -> Hyper:
    return Hyper(float, low=0.0, search=search)


def beta(search: LogUniform | None = None) -> Hyper:
    """A decay rate in [0, 1)."""
    return Hyper(float, low=0.0, high=1.0, high_open=True, search=search)


def positive(search: LogUniform | None = None) -> Hyper:
    return Hyper(float, low=0.0, low_open=True, search=search)


def semantics() -> Hyper:
    """``tf`` = the study's TensorFlow-1 update rule, ``torch`` = the PyTorch-native one where they differ."""
    return Hyper(str, choices=("tf", "torch"))


BETA1_SPACE = LogUniform(-0.301, -0.00043)  # ≈ LU(0.5, 0.999), the study's rounded exponents (§2.2)
BETA2_SPACE = LogUniform(-0.0969, -0.00043)  # ≈ LU(0.8, 0.999)
MOMENTUM_SPACE = LogUniform(-3.0, 0.0)  # LU(1e-3, 1)


def adam_family() -> dict[str, Hyper]:
    """lr, β1, β2 with Adam's distributions in Adam's sampling order (§2.2), and a fixed ε: the space the study
    used for Adam and the optimizers tuned like it (AMSGrad, NAdam, RAdam, ND-Adam, AdaBelief)."""
    return {"learning_rate": learning_rate(), "beta1": beta(BETA1_SPACE), "beta2": beta(BETA2_SPACE),
            "epsilon": positive()}


class OptimizerSpec:
    """Base class of optimizer plugins.

    ``hyperparameters`` is ordered: the tuned ones (those with ``search``) are drawn in this order, which must be
    the study's sampling order (§2.2) so that sample i here is the study's sample i.
    """

    name: ClassVar[str]
    study_name: ClassVar[str | None] = None  # folder name in the published results (TF class name)
    hyperparameters: ClassVar[dict[str, Hyper]]
    needs_closure: ClassVar[bool] = False  # step(closure) that re-evaluates loss and gradients (L-BFGS, SAM)
    create_graph: ClassVar[bool] = False  # backward(create_graph=True) for Hessian-vector products (Sophia-H)
    cohort_rule: ClassVar[type | None] = None  # the batched form (an ``optimizers._cohort.CohortRule``), if any
    cohort_note: ClassVar[str | None] = None  # why there is none: the one line a user sees (engine=cohort)

    @classmethod
    def validate(cls, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
        """Check names and values; return them coerced, in declaration order."""
        unknown = sorted(set(hyperparameters) - set(cls.hyperparameters))
        if unknown:
            raise HyperparameterError(
                f"unknown hyperparameter '{unknown[0]}' for optimizer {cls.name}; valid: {', '.join(cls.hyperparameters)}"
            )
        missing = [k for k in cls.hyperparameters if k not in hyperparameters]
        if missing:
            raise HyperparameterError(f"optimizer {cls.name} needs a value for {', '.join(missing)}")
        out = {k: h.check(k, hyperparameters[k]) for k, h in cls.hyperparameters.items()}
        cls.check_combination(out)
        return out

    @classmethod
    def check_combination(cls, hp: Mapping[str, Any]) -> None:
        """Constraints across hyperparameters; raise :class:`HyperparameterError`."""

    @classmethod
    def search_space(cls) -> dict[str, LogUniform | RandInt]:
        return {k: h.search for k, h in cls.hyperparameters.items() if h.search is not None}

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        raise NotImplementedError

    @classmethod
    def prepare(cls, optimizer: torch.optim.Optimizer, problem: Any) -> None:
        """Called once after ``build`` with the run's problem, for what the update rule needs to know of it (e.g.
        Sophia-G's number of loss terms behind a batch mean). Duck-typed: optimizers never import problems."""

    @classmethod
    def on_epoch(cls, optimizer: torch.optim.Optimizer, epoch: int, num_epochs: int) -> None:
        """Called by the run loop before each training epoch (e.g. a momentum warm-up adjusts its coefficient)."""

    @classmethod
    def cohort_unsupported(cls, hp: Mapping[str, Any]) -> str | None:
        """Why trials of this optimizer with ``hp`` cannot train in a cohort (``bench.engine.cohort``); None: they can.

        A plugin opts in by setting ``cohort_rule``; without one its trials train alone."""
        if cls.cohort_rule is None:
            return cls.cohort_note or f"optimizer {cls.name} has no batched (cohort) form"
        return cls.cohort_rule.unsupported(hp)

    @classmethod
    def grad_evals(cls, hp: Mapping[str, Any], steps: int, closure_calls: int) -> float:
        """Gradient evaluations spent: one per step, or one per closure call for closure-driven optimizers."""
        return float(closure_calls if cls.needs_closure else steps)


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer", "optimizers")


def study_samples(spec: type[OptimizerSpec], n: int, seed: int = 42) -> list[dict[str, Any]]:
    """The first n random-search samples exactly as the study drew them (§2.1).

    ``np.random.seed(42)`` once, then for each sample each tuned hyperparameter in order via scipy ``rvs``; a
    ``RandomState(42)`` passed as ``random_state`` is the same stream as the seeded global one.
    """
    rng = np.random.RandomState(seed)
    space = spec.search_space()
    return [{name: dist.rvs(rng) for name, dist in space.items()} for _ in range(n)]
