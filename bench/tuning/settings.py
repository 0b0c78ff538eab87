"""The ``tuning:`` config block and the budget group, validated into frozen dataclasses with one-line errors.

Defaults are the study's protocol (§4, §8): the study's random-search sampler, no pruning, selection by the
final-epoch validation metric, seeds 42..51 (42 trains every sample, 43..51 re-run the winner), DeepOBS's padding of
diverged runs with their epoch-0 values. Everything else (TPE/QMC/random samplers, median/Hyperband pruning,
``exclude`` for diverged runs) is an option beyond the study and is labelled so in the cells table.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

SAMPLERS = ("study", "tpe", "qmc", "random")
PRUNERS = ("none", "median", "hyperband")
SELECTIONS = ("final", "best")
DIVERGED = ("pad", "exclude")
JOURNAL_LOCKS = ("flock", "open", "symlink")
STUDY_SEEDS = tuple(range(42, 52))  # DeepOBS: seed 42 for tuning, np.arange(43, 52) for the re-runs (§4)


class TuningError(ValueError):
    """A bad ``tuning.*`` or ``budget.*`` value; the message is the one line a user sees."""


@dataclass(frozen=True)
class Budget:
    """A budget: ``samples`` = how many of the study's samples compete (0 = one-shot, the defaults)."""

    name: str
    samples: int

    @property
    def tuned(self) -> bool:
        return self.samples > 0


@dataclass(frozen=True)
class TuningSettings:
    storage: str
    sampler: str = "study"
    sampler_seed: int = 42
    pruner: str = "none"
    workers: int = 1
    selection: str = "final"
    diverged: str = "pad"
    seeds: tuple[int, ...] = STUDY_SEEDS
    heartbeat_s: float = 30.0
    stale_after_s: float = 300.0
    journal_lock: str = "flock"

    @property
    def beyond_study(self) -> bool:
        """True when the search itself differs from the paper's (another sampler, or pruning)."""
        return self.sampler != "study" or self.pruner != "none"

    @property
    def tuning_seed(self) -> int:
        return self.seeds[0]

    @property
    def rerun_seeds(self) -> tuple[int, ...]:
        return self.seeds[1:]


TUNING_KEYS = tuple(f.name for f in fields(TuningSettings))
_CHOICES = {"sampler": SAMPLERS, "pruner": PRUNERS, "selection": SELECTIONS, "diverged": DIVERGED,
            "journal_lock": JOURNAL_LOCKS}


def default_storage(results_dir: str | Path) -> str:
    return str(Path(results_dir) / "optuna" / "journal.log")


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TuningError(f"invalid tuning.{key}={value!r}: must be an integer >= {minimum}")
    return value


def _positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TuningError(f"invalid tuning.{key}={value!r}: must be a number > 0")
    return float(value)


def check_value(key: str, value: Any) -> Any:
    """Validate one ``tuning.<key>`` value; return it normalised or raise :class:`TuningError`."""
    if key not in TUNING_KEYS:
        raise TuningError(f"unknown setting 'tuning.{key}'; valid: {', '.join('tuning.' + k for k in TUNING_KEYS)}")
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            what = "sampler" if key == "sampler" else f"tuning.{key}"
            raise TuningError(f"unknown {what} {value!r}; valid: {', '.join(_CHOICES[key])}")
        return value
    if key == "storage":
        if not isinstance(value, str) or not value.strip():
            raise TuningError(f"invalid tuning.storage={value!r}: must be a journal file path or a database URL")
        return value
    if key in ("sampler_seed",):
        return _int(key, value, 0)
    if key == "workers":
        return _int(key, value, 1)
    if key in ("heartbeat_s", "stale_after_s"):
        return _positive(key, value)
    if key == "seeds":
        seeds = list(value) if isinstance(value, (list, tuple)) else None
        if (not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
                or len(set(seeds)) != len(seeds)):
            raise TuningError(f"invalid tuning.seeds={value!r}: must be a non-empty list of distinct integers >= 0 "
                              "(the first trains every sample, the rest re-run the winner)")
        return tuple(seeds)
    raise AssertionError(key)  # every key of TuningSettings is handled above


def tuning_from_config(cfg: Mapping[str, Any]) -> TuningSettings:
    """The validated settings of a composed config (the ``tuning:`` block may be missing: study defaults)."""
    block = dict(cfg.get("tuning") or {})
    values = {k: check_value(k, v) for k, v in block.items() if v is not None}
    values.setdefault("storage", default_storage(cfg.get("results_dir", "results")))
    settings = TuningSettings(**values)
    if settings.stale_after_s <= settings.heartbeat_s:
        raise TuningError(f"invalid tuning.stale_after_s={settings.stale_after_s:g}: must exceed "
                          f"tuning.heartbeat_s={settings.heartbeat_s:g}")
    return settings


def budget_from_config(cfg: Mapping[str, Any]) -> Budget:
    block = cfg.get("budget")
    if not isinstance(block, Mapping) or "name" not in block:
        raise TuningError("budget must be chosen from conf/budget (budget=oneshot|small|medium|large)")
    samples = block.get("samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise TuningError(f"invalid budget.samples={samples!r}: must be an integer >= 0 (0 = one-shot)")
    return Budget(name=str(block["name"]), samples=samples)


# ----------------------------------------------------------------------------------------- command-line checks
def check_override(key: str, value: str) -> str | None:
    """One line for a bad ``tuning.<key>=…`` or ``budget.<key>=…`` override (sweeps: every value), else None."""
    from bench.tuning.sweep import sweep_values

    group, _, sub = key.lstrip("+~").partition(".")
    if group == "tuning":
        if sub not in TUNING_KEYS:
            return f"unknown setting 'tuning.{sub}'; valid: {', '.join('tuning.' + k for k in TUNING_KEYS)}"
        values = [value] if sub == "seeds" or value.strip().startswith("[") else sweep_values(value)
        for raw in values:
            try:
                check_value(sub, _parse(raw))
            except TuningError as err:
                return str(err)
        return None
    if group == "budget":
        if sub != "samples":
            return f"unknown setting 'budget.{sub}'; valid: budget.samples"
        for raw in sweep_values(value):
            parsed = _parse(raw)
            if isinstance(parsed, bool) or not isinstance(parsed, int) or parsed < 0:
                return f"invalid budget.samples={raw!r}: must be an integer >= 0 (0 = one-shot)"
        return None
    return f"unknown setting '{key}'"


def _parse(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
