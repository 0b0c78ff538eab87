"""Live loggers: sinks of the run loop's observer hook (``bench.observers``), chosen by the ``logger`` config group.

A logger can never fail or slow a run: it only observes epoch boundaries, the run loop drops one that raises, and
its module (and its library: ``wandb``) is imported only when chosen. Parquet stays the source of truth.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # no torch import here: the W&B writer process imports this package and must start light
    from bench.observers import ObserverFactory

LOGGERS = ("none", "wandb")


def observer_factory(cfg: Mapping[str, Any]) -> "ObserverFactory | None":
    """The per-run observer factory of the composed config's ``logger`` block (None for ``logger=none``)."""
    block = dict(cfg.get("logger") or {})
    name = block.get("name", "none")
    if name == "none":
        return None
    if name == "wandb":
        from bench.loggers.wandb import factory_from_config

        return factory_from_config(block, cfg)
    raise ValueError(f"unknown logger {name!r}; valid: {', '.join(LOGGERS)}")
