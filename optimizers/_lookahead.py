"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"), shared by the study's
``LookaheadOptimizerMBGDMomentum`` and ``LookaheadOptimizerRAdam``.

Slow weights φ start at θ₀; after every k inner (fast) steps ``φ ← φ + α(θ − φ)`` and ``θ ← φ``; the inner
optimizer's state (momentum buffer, Adam moments and step count) is kept across synchronisations (§2.2 notes).

We use ``pytorch_optimizer.Lookahead`` (``pullback_momentum='none'``) because its maths is exactly this: its
synchronisation is ``θ ← lerp(θ, φ, 1−α) = φ + α(θ − φ)`` followed by ``φ ← θ``, it counts inner steps per group
(``group['counter']``, a param-group key, hence saved with the inner optimizer's state_dict), it leaves the inner
state alone, its ``param_groups`` *are* the inner optimizer's (so the run loop's per-epoch ``group['lr']``
rescaling reaches the inner step), and its state_dict holds the slow weights and the inner state_dict. It is a
torch.optim.Optimizer subclass. Its one restriction: α ∈ [0, 1) (α = 1, "no lookahead", is rejected); the study's
α ~ LU(1e-4, 1) never draws 1.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from pytorch_optimizer import Lookahead

from optimizers.base import Hyper, LogUniform, RandInt

K_SPACE = RandInt(1, 20)  # scipy.stats.randint(1, 20): k in 1..19 (§2.2)
ALPHA_SPACE = LogUniform(-4.0, 0.0)  # LU(1e-4, 1)


def k_hyper() -> Hyper:
    return Hyper(int, low=1, search=K_SPACE)


def alpha_hyper() -> Hyper:
    return Hyper(float, low=0.0, high=1.0, high_open=True, search=ALPHA_SPACE)


def wrap(inner: torch.optim.Optimizer, hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Lookahead with the plugin's ``k`` and ``alpha`` around an already built inner optimizer."""
    return Lookahead(inner, k=hp["k"], alpha=hp["alpha"], pullback_momentum="none")
