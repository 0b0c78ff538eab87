"""The run spec: the canonical, validated description of one training run. Its content hash is the run_id.

Everything that changes what a run computes is in the spec (problem and its settings, optimizer and every
hyperparameter, schedule and its settings, seed, data order, protocol version); nothing else is (device, paths,
progress display), so the same spec always maps to the same record and a re-run finds it.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
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
    # Plugins from outside the repository (bench.plugins): kind -> {name, sha256, path | entry_point}. Their
    # name and source hash are identity; where they live is not (and the key is left out when there are none).
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def canonical(self) -> str:
        cached = self.__dict__.get("_canonical")
        if cached is None:  # computed once: a frozen spec never changes (sweeps hash ~10^5 of them)
            plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "plugins"}
            if self.plugins:
                plain["plugins"] = {k: {"name": v["name"], "sha256": v["sha256"]} for k, v in self.plugins.items()}
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
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not wd >= 0 or wd == float("inf"):
        raise SpecError(f"invalid problem.weight_decay={wd!r}: must be a number >= 0")
    known = problem_setting_keys(problem, problem_cls)
    unknown = sorted(set(settings) - known) if known else []
    if unknown:
        raise SpecError(f"unknown setting '{unknown[0]}' for problem {problem}; valid: {', '.join(sorted(known))}")
    check = getattr(problem_cls, "check_settings", None)
    if check is not None:
        try:
            check(settings)
        except ValueError as err:
            raise SpecError(str(err)) from None
    sizes = problem_cls.split_sizes(settings)
    if sizes and settings["batch_size"] > min(sizes.values()):
        split, n = min(sizes.items(), key=lambda kv: kv[1])
        raise SpecError(f"invalid problem.batch_size={settings['batch_size']}: must be an integer in [1, {n}] "
                        f"(the {split} split of {problem} at size {settings.get('size', 'full')} has {n} "
                        f"{'examples' if problem != 'tolstoi_char_rnn' else 'sequences'})")
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
    from bench import plugins

    refs = plugins.refs_of({"optimizer": optimizer, "problem": problem, "schedule": schedule})
    return RunSpec(problem=problem, optimizer=optimizer, hyperparameters=hp, schedule=schedule, seed=seed, plugins=refs,
                   problem_settings=settings, schedule_settings=sched, data_order=data_order, precision=precision,
                   arithmetic=arithmetic)


def problem_setting_keys(problem: str, problem_cls: Any) -> set[str]:
    """The settings a problem takes: the keys of its YAML defaults (a plugin: its declared defaults)."""
    defaults = getattr(problem_cls, "plugin_defaults", None)
    if defaults is not None:
        return set(defaults) | {"size"}
    return _yaml_keys(problem)


@lru_cache(maxsize=64)
def _yaml_keys(problem: str) -> set[str]:
    import yaml

    path = Path(__file__).resolve().parent.parent / "conf" / "problem" / f"{problem}.yaml"
    if not path.exists():
        return set()
    return set(yaml.safe_load(path.read_text()) or {}) - PROBLEM_NON_SPEC_KEYS


def spec_from_config(cfg: Mapping[str, Any]) -> RunSpec:
    """The run spec of a composed Hydra config (plain dict, resolved); its plugins are loaded first."""
    from bench import plugins

    try:
        plugins.ensure(cfg.get("plugins"))
    except plugins.PluginError as err:
        raise SpecError(str(err)) from None
    problem = dict(cfg["problem"])
    optimizer = dict(cfg["optimizer"])
    schedule = dict(cfg["schedule"])
    return make_spec(
        problem["name"], optimizer.pop("name"), optimizer, schedule=schedule["name"], seed=cfg["seed"],
        problem_settings=problem, schedule_settings=schedule, data_order=cfg.get("data_order", "repeat"),
        precision=cfg.get("precision", "fp32"),
        arithmetic="reordered" if cfg.get("engine") == "cohort_fast" else "exact",
    )
