from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("WANDB_MODE", "disabled")

# Tests run two workers on two cores (pytest -n 2): one intra-op thread each avoids oversubscription, which on a
# loaded machine slows small torch ops by an order of magnitude.
torch.set_num_threads(1)

P1_SETTINGS = {"batch_size": 128, "num_epochs": 100, "hessian_draw": 0, "size": "full", "weight_decay": 0.0}
ADAM_DEFAULTS = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "semantics": "tf"}


def run_valley(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The ``valley`` CLI in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd or ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def p1_settings() -> dict:
    return dict(P1_SETTINGS)
