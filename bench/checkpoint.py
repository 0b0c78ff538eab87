"""Mid-run checkpoints: a run's whole state at an epoch boundary, written atomically, so a killed run resumes.

A checkpoint is taken between two epochs (after training epoch e, before evaluating epoch e+1) when the policy says
it is due: ``every_epochs`` epochs or ``every_minutes`` minutes after the last one (the first that comes; 0 turns
a criterion off). It holds everything the rest of the run depends on — model, optimizer and schedule state, every
RNG (torch global and CUDA, numpy, python, the problem's data generator and cached data order), the curves so far,
step and gradient-evaluation counters — so that on the CPU a resumed run's curves are bit-identical to the
uninterrupted run's (``tests/test_checkpoint.py``).

Checkpoints are an implementation detail of *how* a run happened: they are never part of the run_id, they live
under ``results_dir/checkpoints/`` (a shared filesystem on a cluster), and they are removed as soon as the run's
record is written. A checkpoint that does not belong to the spec (another canonical spec, another format) or cannot
be read is ignored and replaced, never trusted.
"""
from __future__ import annotations

import io
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a checkpoint is due; ``enabled=false`` never writes one (a re-run then starts from epoch 0)."""

    enabled: bool = True
    every_epochs: int = 0  # 0: by time only
    every_minutes: float = 5.0  # 0: by epochs only

    def due(self, epochs_since: int, seconds_since: float) -> bool:
        if not self.enabled:
            return False
        by_epochs = self.every_epochs > 0 and epochs_since >= self.every_epochs
        by_time = self.every_minutes > 0 and seconds_since >= 60.0 * self.every_minutes
        return by_epochs or by_time


class CheckpointError(ValueError):
    """A bad ``checkpoint.*`` setting; the message is one line."""


def policy_from_config(block: Any) -> CheckpointPolicy:
    """The validated ``checkpoint:`` block of a composed config (missing keys: the defaults)."""
    block = dict(block or {})
    unknown = sorted(set(block) - {"enabled", "every_epochs", "every_minutes"})
    if unknown:
        raise CheckpointError(f"unknown setting 'checkpoint.{unknown[0]}'; valid: checkpoint.enabled, "
                              "checkpoint.every_epochs, checkpoint.every_minutes")
    enabled = block.get("enabled", True)
    if not isinstance(enabled, bool):
        raise CheckpointError(f"invalid checkpoint.enabled={enabled!r}: must be true or false")
    epochs = block.get("every_epochs", 0)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise CheckpointError(f"invalid checkpoint.every_epochs={epochs!r}: must be an integer >= 0 (0 = off)")
    minutes = block.get("every_minutes", 5.0)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0:
        raise CheckpointError(f"invalid checkpoint.every_minutes={minutes!r}: must be a number >= 0 (0 = off)")
    return CheckpointPolicy(enabled=enabled, every_epochs=epochs, every_minutes=float(minutes))


class CheckpointStore:
    """Checkpoint files ``<directory>/<key>.pt`` (key: a run_id, or a cohort's id), atomic and self-validating."""

    def __init__(self, directory: str | Path, policy: CheckpointPolicy = CheckpointPolicy()) -> None:
        self.directory = Path(directory)
        self.policy = policy

    @classmethod
    def under(cls, results_dir: str | Path, policy: CheckpointPolicy = CheckpointPolicy()) -> CheckpointStore:
        return cls(Path(results_dir) / "checkpoints", policy)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def save(self, key: str, identity: str, state: dict[str, Any]) -> Path:
        """Write ``state`` for ``key`` (``identity``: what a later load must match, e.g. the canonical spec)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "identity": identity, "saved_at": time.time(), "state": state}, buffer)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(buffer.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def load(self, key: str, identity: str) -> dict[str, Any] | None:
        """The saved state of ``key`` if it exists, is readable and belongs to ``identity``; else None."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a torn or foreign file is never trusted; the run starts afresh
            return None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("identity") != identity:
            return None
        return blob["state"]

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Every global random stream a run draws from (the problem's own generator is saved by the problem)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

