"""Launchers: where a composed sweep's runs happen. ``inline`` (this process and its tuning workers, the default),
``slurm`` (array jobs through submitit, fire-and-forget) and ``local_gpus`` (a detached supervisor filling a
workstation's GPUs). The same ``valley -m …`` command line goes to any of them (``launcher=…``); each sees the
sweep as its composed job configs and returns the process's exit code.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

LAUNCHERS = ("inline", "slurm", "local_gpus")


class LaunchError(ValueError):
    """A sweep that cannot be launched as asked; the message is one line."""


def launcher_name(cfgs: list[dict[str, Any]]) -> str:
    names = {str((c.get("launcher") or {}).get("name", "inline")) for c in cfgs}
    if len(names) != 1:
        raise LaunchError(f"one launcher per sweep, got {', '.join(sorted(names))}")
    name = names.pop()
    if name not in LAUNCHERS:
        raise LaunchError(f"unknown launcher {name!r}; valid: {', '.join(LAUNCHERS)}")
    return name


def launch(cfgs: list[dict[str, Any]], *, multirun: bool) -> int:
    """Hand the composed jobs to their launcher; returns the exit code."""
    name = launcher_name(cfgs)
    if importlib.util.find_spec(f"bench.launch.{name}") is None:
        raise LaunchError(f"launcher={name} is not available in this checkout")
    module = importlib.import_module(f"bench.launch.{name}")
    return int(module.launch(cfgs, multirun=multirun))
