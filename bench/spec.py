"""The run spec: the canonical, validated description of one training run. Its content hash is the run_id.

Everything that changes what a run computes is in the spec (problem and its settings, optimizer and every
hyperparameter, schedule and its settings, seed, data order, protocol version); nothing else is (device, paths,
progress display), so the same spec always maps to the same record and a re-run finds it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from bench import PROTOCOL_VERSION
from bench.precision import PRECISIONS
from bench.registry import UnknownNameError
from bench.schedules import SCHEDULES
from optimizers import OPTIMIZERS
from optimizers.base import HyperparameterError
from problems import PROBLEMS


class SpecError(ValueError):
    """A spec that fails validation; the message is one line naming the bad value and what is valid."""


PROBLEM_NON_SPEC_KEYS = {"name", "data_dir", "resources"}  # resources: what a launcher asks a cluster for
SIZES = ("full", "smoke")
DATA_ORDERS = ("repeat", "fresh")
ARITHMETICS = ("exact", "reordered")


@dataclass(frozen=True)
class RunSpec:
    problem: str
    optimizer: str
    hyperparameters: Mapping[str, Any]
    schedule: str = "constant"
    seed: int = 42
    problem_settings: Mapping[str, Any] = field(default_factory=dict)
    schedule_settings: Mapping[str, Any] = field(default_factory=lambda: {"granularity": "epoch"})
    data_order: str = "repeat"
    precision: str = "fp32"  # fp32 | tf32 | bf16 (bench.precision): it changes the maths, so it is identity
    arithmetic: str = "exact"  # exact | reordered (engine=cohort_fast: P1's closed form, not bit-identical)
    protocol_version: str = PROTOCOL_VERSION

    def canonical(self) -> str:
        cached = self.__dict__.get("_canonical")
        if cached is None:  # computed once: a frozen spec never changes (sweeps hash ~10^5 of them)
            plain = {f.name: getattr(self, f.name) for f in fields(self)}
            cached = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=_plain)
            object.__setattr__(self, "_canonical", cached)
        return cached

    @property
    def run_id(self) -> str:
        cached = self.__dict__.get("_run_id")
        if cached is None:
            cached = hashlib.sha256(self.canonical().encode()).hexdigest()[:20]
            object.__setattr__(self, "_run_id", cached)
        return cached

    @property
    def num_epochs(self) -> int:
        return int(self.problem_settings["num_epochs"])

    @property
    def batch_size(self) -> int:
        return int(self.problem_settings["batch_size"])


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON-serialisable: {value!r}")


def _int_setting(settings: dict[str, Any], key: str, minimum: int) -> None:
    value = settings.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"invalid problem.{key}={value!r}: must be an integer >= {minimum}")


_SPECS: dict[str, RunSpec] = {}


def make_spec(problem: str, optimizer: str, hyperparameters: Mapping[str, Any], *, schedule: str = "constant",
              seed: int = 42, problem_settings: Mapping[str, Any], schedule_settings: Mapping[str, Any] | None = None,
              data_order: str = "repeat", precision: str = "fp32", arithmetic: str = "exact") -> RunSpec:
    """Validate every part and return the canonical spec; raise :class:`SpecError` with one clear line.

    Memoised on its arguments: a sweep builds the same trial specs for every budget of a study.
    """
    try:
        key = json.dumps([problem, optimizer, hyperparameters, schedule, seed, problem_settings, schedule_settings,
                          data_order, precision, arithmetic], sort_keys=True, default=_plain)
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _SPECS:
        return _SPECS[key]
    spec = _make_spec(problem, optimizer, hyperparameters, schedule=schedule, seed=seed,
                      problem_settings=problem_settings, schedule_settings=schedule_settings, data_order=data_order,
                      precision=precision, arithmetic=arithmetic)
    if key is not None:
        if len(_SPECS) > 500_000:
            _SPECS.clear()
        _SPECS[key] = spec
    return spec


def _make_spec(problem: str, optimizer: str, hyperparameters: Mapping[str, Any], *, schedule: str = "constant",
              seed: int = 42, problem_settings: Mapping[str, Any], schedule_settings: Mapping[str, Any] | None = None,
              data_order: str = "repeat", precision: str = "fp32", arithmetic: str = "exact") -> RunSpec:
    try:
        problem_cls = PROBLEMS.get(problem)
        opt_cls = OPTIMIZERS.get(optimizer)
        sched_cls = SCHEDULES.get(schedule)
        hp = opt_cls.validate(hyperparameters)
    except (UnknownNameError, HyperparameterError) as err:
        raise SpecError(str(err)) from None
    settings = {k: v for k, v in problem_settings.items() if k not in PROBLEM_NON_SPEC_KEYS}
    _int_setting(settings, "batch_size", 1)
    _int_setting(settings, "num_epochs", 0)
    if settings.get("size", "full") not in SIZES:
        raise SpecError(f"invalid problem.size={settings.get('size')!r}: must be one of {', '.join(SIZES)}")
    wd = settings.get("weight_decay", 0.0)
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
        raise SpecError(f"invalid problem.weight_decay={wd!r}: must be a number >= 0")
    check = getattr(problem_cls, "check_settings", None)
    if check is not None:
        try:
            check(settings)
        except ValueError as err:
            raise SpecError(str(err)) from None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"invalid seed={seed!r}: must be an integer >= 0")
    if data_order not in DATA_ORDERS:
        raise SpecError(f"invalid data_order={data_order!r}: must be one of {', '.join(DATA_ORDERS)}")
    if precision not in PRECISIONS:
        raise SpecError(f"invalid precision={precision!r}: must be one of {', '.join(PRECISIONS)}")
    if arithmetic not in ARITHMETICS:
        raise SpecError(f"invalid arithmetic={arithmetic!r}: must be one of {', '.join(ARITHMETICS)}")
    try:
        # Defaults filled in, so the same law written out or left implicit is the same spec (and run_id).
        sched = sched_cls.canonical_settings(schedule_settings or {})
        sched_cls(num_epochs=max(settings["num_epochs"], 1), steps_per_epoch=1, **sched)
    except (TypeError, ValueError) as err:
        raise SpecError(f"invalid schedule settings for {schedule}: {err}") from None
    return RunSpec(problem=problem, optimizer=optimizer, hyperparameters=hp, schedule=schedule, seed=seed,
                   problem_settings=settings, schedule_settings=sched, data_order=data_order, precision=precision,
                   arithmetic=arithmetic)


def spec_from_config(cfg: Mapping[str, Any]) -> RunSpec:
    """The run spec of a composed Hydra config (plain dict, resolved)."""
    problem = dict(cfg["problem"])
    optimizer = dict(cfg["optimizer"])
    schedule = dict(cfg["schedule"])
    return make_spec(
        problem["name"], optimizer.pop("name"), optimizer, schedule=schedule["name"], seed=cfg["seed"],
        problem_settings=problem, schedule_settings=schedule, data_order=cfg.get("data_order", "repeat"),
        precision=cfg.get("precision", "fp32"),
        arithmetic="reordered" if cfg.get("engine") == "cohort_fast" else "exact",
    )
