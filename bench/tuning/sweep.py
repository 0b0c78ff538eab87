"""Expand a ``valley -m …`` command line into its jobs, the way Hydra's basic sweeper will, before Hydra runs.

The plan (dry run) and the progress display need the whole sweep up front. We reproduce the basic sweeper exactly:
``hydra.sweeper.params`` of the composed config (set by experiment presets) first, then the command line's
overrides, parsed by Hydra's own override parser and expanded by ``BasicSweeper.split_arguments`` (the product,
later keys varying fastest). Each job is then composed with Hydra's Compose API. Composition is the slow part
(~30 ms a job), so jobs that differ only in ``budget=`` share one composition and take the budget's YAML.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MULTIRUN_FLAGS = ("-m", "--multirun")


class SweepError(ValueError):
    """The command line cannot be expanded; the message is one line."""


def sweep_values(value: str) -> list[str]:
    """The values in an override value: ``adam``, ``adam,sgd`` or ``choice(adam,sgd)``."""
    value = value.strip()
    for fn in ("choice(", "glob("):
        if value.startswith(fn) and value.endswith(")"):
            value = value[len(fn):-1]
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip()]


def split_argv(argv: list[str]) -> tuple[bool, list[str]] | None:
    """``(multirun, overrides)``; None when Hydra flags other than ``-m`` are present (Hydra then handles it all)."""
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in MULTIRUN_FLAGS for f in flags):
        return None
    return bool(flags), [a for a in argv if not a.startswith("-")]


def _is_hydra(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job, in Hydra's order."""
    if not multirun:
        return [list(overrides)]
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            base = compose("config", overrides=fixed, return_hydra_config=True)
        params = OmegaConf.to_container(base.hydra.sweeper.params) if base.hydra.sweeper.params else {}
        lines = [f"{k}={v}" for k, v in params.items()] + list(overrides)
        return BasicSweeper.split_arguments(parser.parse_overrides(lines), None)[0]
    except Exception as err:  # noqa: BLE001 - Hydra's errors are multi-line; the user gets one
        raise SweepError(_one_line(err)) from None


def compose_jobs(jobs: list[list[str]]) -> list[dict[str, Any]]:
    """The resolved config of every job (plain dicts, as the Hydra app passes them to ``run_from_config``)."""
    from hydra import compose, initialize_config_dir

    cache: dict[tuple[str, ...], dict[str, Any]] = {}
    out = []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            for job in jobs:
                job = [o for o in job if not _is_hydra(o)]
                budget = [o for o in job if o.split("=", 1)[0] == "budget"]
                shared = not any(o.lstrip("+~").startswith("budget.") for o in job) and len(budget) == 1
                key = tuple(o for o in job if o not in budget) if shared else tuple(job)
                if key not in cache:
                    cache[key] = OmegaConf.to_container(compose("config", overrides=list(key)), resolve=True)
                cfg = dict(cache[key])
                if shared:
                    name = budget[0].split("=", 1)[1]
                    cfg["budget"] = None if name == "null" else dict(OmegaConf.to_container(
                        OmegaConf.load(CONF_DIR / "budget" / f"{name}.yaml"), resolve=True))
                out.append(cfg)
    except Exception as err:  # noqa: BLE001
        raise SweepError(_one_line(err)) from None
    return out


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__
