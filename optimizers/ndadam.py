"""ND-Adam, the study's ``NDAdamOptimizer`` (Zhang, Xu & Yang 2017, "Normalized Direction-preserving Adam").

The rule follows the authors' TF-1 class, zj10/ND-Adam ``NDAdamOptimizer(learning_rate, beta1, beta2, epsilon,
vec_axes={})`` (``_create_slots`` / ``_apply_dense``; matched by class name and signature; not on PyPI, so as
issue #15 and protocol §2 notes read it): only
the tensors its caller lists in ``vec_axes`` are stacks of weight vectors; every other tensor gets Adam in the
paper's form (ε added *after* the bias correction, not TF Adam's ε-hat)::

    others:  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  θ ← θ − lr·m̂/(sqrt(v̂) + ε),  m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)
    vectors: g_i ← g_i − (g_i·w_i)·w_i                                     (projection with the current w_i)
             m_i ← β1·m_i + (1−β1)·g_i;   v_i ← β2·v_i + (1−β2)·‖g_i‖²     (v_i: one scalar per vector)
             w̄_i ← w_i − f·lr·m̂_i/(sqrt(v̂_i) + ε);   w_i ← w̄_i/‖w̄_i‖          (f = vec_lr_factor, the class's 50)

Vectors are normalised only after each of their updates, never at initialisation (the TF class has no such step;
the paper's Algorithm 1 has one: ``normalise_at_init=true``).

Hyperparameters beyond the study's (none has a search distribution, so the sample stream lr, β1, β2 is Adam's):

* ``vec_axes`` — which tensors are weight vectors:
  ``none`` (default): none, as the study most likely ran it — it built optimizers as ``opt_class(lr,
  **hyperparameters)`` and its folder names carry no ``vec_axes``, so the class's default ``{}`` applied and ND-Adam
  was the Adam above. Nothing is touched at build time, so the epoch-0 evaluation is Adam's bit for bit ([DATA]: the
  published fmnist_2c2d ND-Adam seed-42 epoch-0 loss equals Adam's).
  ``dim0``: every parameter with ``ndim ≥ 2``, one vector per slice ``p[i]`` along dim 0 (flattened): rows of
  ``nn.Linear.weight`` (out, in), output filters of ``nn.Conv2d.weight`` (out, in, kh, kw), and equally the
  dim-0 slices of ``nn.ConvTranspose2d.weight`` (in, out, kh, kw) (per *input* channel), of P8's fused LSTM kernel
  (4h, in + h: one gate unit each), of ``softmax_w`` and of an embedding (per token).
  ``filters``: the layer kernels whose vectors ND-Adam's paper means — 2-D tensors (a linear layer's rows) and 4-D
  tensors (a conv layer's output filters, dim 0); tensors of other ranks use Adam. The optimizer sees tensors, not
  modules, so a 4-D ``ConvTranspose2d`` kernel is split along dim 0 here too, and a 2-D embedding or LSTM kernel
  counts as a linear layer: on the eight DeepOBS problems (no 3-D or 5-D parameters) ``filters`` and ``dim0`` pick
  the same vectors; they differ for Conv1d/Conv3d kernels.
* ``vec_lr_factor`` — f above, the TF class's 50 (only used when some tensor is a vector).
* ``normalise_at_init`` — normalise the vectors when the optimizer is built (paper, Algorithm 1), so the epoch-0
  evaluation already sees unit vectors; ``false`` (default) as the TF class. The paper's rule as this module had it
  before issue #15: ``vec_axes=dim0 vec_lr_factor=1 normalise_at_init=true``.

A zero vector has no direction: normalising keeps it at zero (norm clamped to the smallest positive float), and its
next update is the normalised −f·lr·m̂ direction.

Neither torch nor pytorch-optimizer implements this rule (the closest, pytorch-optimizer's AdamP, projects the update
but keeps per-element second moments and never normalises the weights), hence our own class; there is no
PyTorch-native rule, so no ``semantics`` option.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from optimizers._cohort import CohortRule, Regrad, floats, zeros_state
from optimizers._moments import MomentOptimizer
from optimizers.base import OPTIMIZERS, Hyper, OptimizerSpec, adam_family, positive

VEC_AXES = ("none", "dim0", "filters")


def is_weight_vectors(p: Tensor, vec_axes: str) -> bool:
    """Whether ND-Adam treats ``p`` as a stack of weight vectors along dim 0 under ``vec_axes``."""
    if vec_axes == "dim0":
        return p.ndim >= 2
    if vec_axes == "filters":
        return p.ndim in (2, 4)
    return False


def _normalised(w: Tensor) -> Tensor:
    """Rows of the 2-D view ``w`` scaled to unit L2 norm (zero rows stay zero)."""
    return w / w.norm(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


class NDAdam(MomentOptimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, epsilon: float = 1e-8, vec_axes: str = "none", vec_lr_factor: float = 50.0,
                 normalise_at_init: bool = False) -> None:
        if vec_axes not in VEC_AXES:
            raise ValueError(f"invalid vec_axes={vec_axes!r}: must be one of {', '.join(VEC_AXES)}")
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon, vec_axes=vec_axes,
                                      vec_lr_factor=vec_lr_factor))
        if normalise_at_init:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.requires_grad and is_weight_vectors(p, group["vec_axes"]):
                            p.copy_(_normalised(p.reshape(p.shape[0], -1)).view_as(p))

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        if is_weight_vectors(p, group["vec_axes"]):  # one second moment per weight vector
            return {"m": torch.zeros_like(p), "v": torch.zeros(p.shape[0], 1, dtype=p.dtype, device=p.device)}
        return super().init_state(p, group)

    def update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
               t: int) -> None:
        b1, b2, lr, eps = group["beta1"], group["beta2"], group["lr"], group["epsilon"]
        bc1, sqrt_bc2 = 1.0 - b1**t, math.sqrt(1.0 - b2**t)
        vectors = [p for p in params if is_weight_vectors(p, group["vec_axes"])]
        others = [p for p in params if not is_weight_vectors(p, group["vec_axes"])]
        for p in vectors:
            self._vector_step(p, b1, b2, group["vec_lr_factor"] * lr / bc1, sqrt_bc2, eps)
        if others:
            self._adam_step(others, b1, b2, lr / bc1, sqrt_bc2, eps)

    def _vector_step(self, p: Tensor, b1: float, b2: float, step_size: float, sqrt_bc2: float, eps: float) -> None:
        """ND-Adam on the rows of one weight tensor; ``step_size`` = f·lr/(1−β1^t)."""
        state = self.state[p]
        w = p.reshape(p.shape[0], -1)
        g = p.grad.reshape(p.shape[0], -1)
        g = g - (g * w).sum(dim=1, keepdim=True) * w
        m = state["m"].view(w.shape)
        m.lerp_(g, 1.0 - b1)
        state["v"].mul_(b2).add_(g.square().sum(dim=1, keepdim=True), alpha=1.0 - b2)
        denom = state["v"].sqrt().div_(sqrt_bc2).add_(eps)
        w_bar = w - step_size * m / denom
        p.copy_(_normalised(w_bar).view_as(p))

    def _adam_step(self, params: list[Tensor], b1: float, b2: float, step_size: float, sqrt_bc2: float,
                   eps: float) -> None:
        """The paper's Adam (ε after bias correction) for the parameters that are not weight vectors."""
        grads = [p.grad for p in params]
        ms = [self.state[p]["m"] for p in params]
        vs = [self.state[p]["v"] for p in params]
        torch._foreach_lerp_(ms, grads, 1.0 - b1)
        torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1.0 - b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, sqrt_bc2)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, ms, denom, value=-step_size)


class NDAdamCohort(CohortRule):
    """Batched ND-Adam without weight vectors (``vec_axes=none``, the study's): the paper's Adam, ε after the bias
    correction, with :meth:`NDAdam._adam_step`'s kernels."""

    @staticmethod
    def unsupported(hp: Mapping[str, Any]) -> str | None:
        if hp["vec_axes"] != "none":
            return f"ND-Adam with vec_axes={hp['vec_axes']} (per-vector norms) has no batched form; vec_axes=none has"
        return None

    def configure(self, hps: list[Mapping[str, Any]], params: list[Tensor]) -> None:
        self.trial = {"beta1": floats(hps, "beta1"), "beta2": floats(hps, "beta2"), "eps": floats(hps, "epsilon"),
                      "t": np.zeros(len(hps), dtype=np.int64)}
        self.state = {"m": zeros_state(params), "v": zeros_state(params)}

    def step(self, params: list[Tensor], grads: list[Tensor], lrs: np.ndarray, regrad: Regrad | None = None) -> None:
        tr = self.trial
        tr["t"] = t = tr["t"] + 1
        b1, b2 = tr["beta1"], tr["beta2"]
        step_size = lrs / (1.0 - self.pow("beta1", t))
        sqrt_bc2 = np.sqrt(1.0 - self.pow("beta2", t))
        neg_step, bc2 = self.columns(-step_size, params), self.columns(sqrt_bc2, params)
        for i, (p, g, m, v) in enumerate(zip(params, grads, self.state["m"], self.state["v"])):
            m.lerp_(g, self.constant("1-b1", 1.0 - b1, p))
            v.lerp_(g * g, self.constant("1-b2", 1.0 - b2, p))
            denom = torch.sqrt(v)
            denom.div_(bc2[i])
            denom.add_(self.constant("eps", tr["eps"], p))
            p.addcdiv_(m * neg_step[i], denom)


@OPTIMIZERS.register
class NDAdamSpec(OptimizerSpec):
    study_name = "NDAdamOptimizer"
    # One-shot only in the published snapshot; tuned budgets use Adam's space and order (lr, β1, β2).
    hyperparameters = {
        **adam_family(),
        "vec_axes": Hyper(str, choices=VEC_AXES),
        "vec_lr_factor": positive(),
        "normalise_at_init": Hyper(bool),
    }
    cohort_rule = NDAdamCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return NDAdam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"],
                      vec_axes=hp["vec_axes"], vec_lr_factor=hp["vec_lr_factor"],
                      normalise_at_init=hp["normalise_at_init"])
