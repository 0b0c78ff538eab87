"""Expand a ``valley -m …`` command line into its jobs, the way Hydra's basic sweeper will, before Hydra runs.

The plan (dry run) and the progress display need the whole sweep up front. We reproduce the basic sweeper exactly:
``hydra.sweeper.params`` of the composed config (set by experiment presets) first, then the command line's
overrides, parsed by Hydra's own override parser and expanded by ``BasicSweeper.split_arguments`` (the product,
later keys varying fastest). Each job is then composed with Hydra's Compose API, by parts (``compose_jobs``).
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
        from bench import plugins

        # Only the sweeper's params are read from this composition: a group's keys (``budget.samples=3``) are left
        # out, since their group may be a sweep here (``budget=oneshot,small``) with nothing to override yet.
        fixed = [o.input_line for o in parsed if not o.is_sweep_override() and not _group_key(o.input_line)]
        fixed += [o] if (o := plugins.searchpath_override()) else []
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            base = compose("config", overrides=fixed, return_hydra_config=True)
        params = OmegaConf.to_container(base.hydra.sweeper.params) if base.hydra.sweeper.params else {}
        lines = [f"{k}={v}" for k, v in params.items()] + list(overrides)
        return BasicSweeper.split_arguments(parser.parse_overrides(lines), None)[0]
    except Exception as err:  # noqa: BLE001 - Hydra's errors are multi-line; the user gets one
        raise SweepError(_one_line(err)) from None


SWAPPABLE_GROUPS = ("problem", "optimizer", "schedule", "budget", "logger", "launcher")
"""Config groups whose node depends on nothing but its own option and the command line's other overrides."""


def _group_key(override: str) -> bool:
    """``problem.num_epochs=3``: a key inside a config group's node."""
    key = override.lstrip("+~").split("=", 1)[0]
    return "." in key and key.split(".", 1)[0] in SWAPPABLE_GROUPS


def _group_choice(override: str) -> tuple[str, str] | None:
    key, sep, value = override.partition("=")
    return (key, value) if sep and key in SWAPPABLE_GROUPS else None


def compose_jobs(jobs: list[list[str]]) -> list[dict[str, Any]]:
    """The resolved config of every job (plain dicts, as the Hydra app passes them to ``run_from_config``).

    Composition is the slow part (~30 ms a job; the full study has 2,048 jobs), so jobs are composed by parts: the
    overrides that are not a group choice (``problem.num_epochs=3``, ``experiment=…``, ``seed=…``) are composed
    once, and each group option once on top of them; a job is that base with its groups' nodes swapped in. This
    equals Hydra's own composition because no node of our configs interpolates another group's node
    (``tests/test_sweep.py`` checks it job by job against ``compose``); 33 compositions instead of 2,048.
    """
    from hydra import compose, initialize_config_dir

    from bench import plugins

    out = []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cache: dict[tuple[str, ...], dict[str, Any]] = {}

            search = [o] if (o := plugins.searchpath_override()) else []

            def composed(overrides: tuple[str, ...]) -> dict[str, Any]:
                if overrides not in cache:
                    cache[overrides] = OmegaConf.to_container(compose("config", overrides=[*search, *overrides]),
                                                              resolve=True)
                return cache[overrides]

            for job in jobs:
                job = [o for o in job if not _is_hydra(o)]
                choices = [c for o in job if (c := _group_choice(o)) is not None]
                if len({g for g, _ in choices}) != len(choices):
                    out.append(dict(composed(tuple(job))))  # a group chosen twice: Hydra decides
                    continue
                # a group whose keys the job overrides (problem.split=…) is composed with them, not swapped
                keyed = {o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] for o in job if _group_choice(o) is None}
                rest = tuple(o for o in job if _group_choice(o) is None or _group_choice(o)[0] in keyed)
                choices = [(g, v) for g, v in choices if g not in keyed]
                cfg = dict(composed(rest))
                for group, option in choices:
                    node = composed((*rest, f"{group}={option}"))[group]
                    cfg[group] = dict(node) if isinstance(node, dict) else node  # jobs share nested nodes: read-only
                refs = plugins.refs_of({k: cfg[k]["name"] for k in plugins.KINDS if isinstance(cfg.get(k), dict)})
                if refs:
                    cfg["plugins"] = refs  # so that any process can load them (bench.plugins.ensure)
                out.append(cfg)
    except Exception as err:  # noqa: BLE001
        raise SweepError(_one_line(err)) from None
    return out


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__
