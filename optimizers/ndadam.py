"""ND-Adam, the study's ``NDAdamOptimizer`` (Zhang, Xu & Yang 2017, "Normalized Direction-preserving Adam").

The paper's Algorithm 1. Each hidden unit's input weight vector w_i lives on the unit sphere and gets one adaptive
step size; every other parameter gets plain Adam::

    init:   w_i ← w_i/‖w_i‖;  m(w_i) ← 0;  v(w_i) ← 0
    step t: g_i ← ∇_{w_i} f − (∇_{w_i} f · w_i) w_i                  (projection onto the tangent space)
            m_i ← β1·m_i + (1−β1)·g_i;   v_i ← β2·v_i + (1−β2)·‖g_i‖²   (v_i: one scalar per vector)
            w̄_i ← w_i − lr·m̂_i/(sqrt(v̂_i) + ε),  m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)
            w_i ← w̄_i/‖w̄_i‖
    others: Kingma & Ba's Adam in the paper's form, θ ← θ − lr·m̂/(sqrt(v̂) + ε)

Neither torch nor pytorch-optimizer implements this (the closest, pytorch-optimizer's AdamP, projects the update
but keeps per-element second moments and never normalises the weights), hence our own class; there is no
PyTorch-native rule, so no ``semantics`` option.

Which tensors are "weight vectors" — ASSUMPTIONS (the optimizer sees tensors, not modules):

* Every trainable parameter with ``ndim ≥ 2`` is a stack of weight vectors along **dim 0**, each vector being the
  slice ``p[i]`` flattened: rows of ``nn.Linear.weight`` (out, in) = the input weights of output unit i; output
  filters of ``nn.Conv2d.weight`` (out, in, kh, kw). This is the same split as "all axes but the last" of TF's
  kernel layouts (dense (in, out), conv (kh, kw, in, out)), the natural reading of a TF port.
* ``nn.ConvTranspose2d.weight`` is (in, out, kh, kw), so its slices along dim 0 are per *input* channel; TF's
  conv2d_transpose kernel is (kh, kw, out, in), whose last axis is also the input channel, so both readings agree,
  but neither is "per hidden unit" (VAE decoders, P2/P5).
* P8's LSTM keeps TF's single (4h, in + h) kernel per layer, so each row is one gate unit's vector over [x, h], as
  in TF; ``softmax_w`` is (vocab, hidden), rows = output units. An embedding matrix (vocab, d) is normalised per
  token.
* 1-D parameters (biases, batch-norm scales and shifts) use Adam. Note P1's θ: TF's variable is 1-D (Adam there),
  a (1, 100) tensor would be normalised as one vector.
* Initial normalisation happens when the optimizer is built (the algorithm's initialisation step), so the epoch-0
  evaluation already sees unit-norm vectors. A zero vector has no direction: it stays zero at build time (norm
  clamped to the smallest positive float) and becomes the normalised first step afterwards.
* One learning rate for both parts (the paper allows separate ones; the study used a single lr, one-shot 1e-3).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from optimizers._moments import MomentOptimizer
from optimizers.base import OPTIMIZERS, OptimizerSpec, adam_family


def is_weight_vectors(p: Tensor) -> bool:
    """Whether ND-Adam treats ``p`` as a stack of unit weight vectors along dim 0 (see the module docstring)."""
    return p.ndim >= 2


def _normalised(w: Tensor) -> Tensor:
    """Rows of the 2-D view ``w`` scaled to unit L2 norm (zero rows stay zero)."""
    return w / w.norm(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


class NDAdam(MomentOptimizer):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, epsilon: float = 1e-8) -> None:
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon))
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.requires_grad and is_weight_vectors(p):
                        p.copy_(_normalised(p.reshape(p.shape[0], -1)).view_as(p))

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        if is_weight_vectors(p):  # one second moment per weight vector
            return {"m": torch.zeros_like(p), "v": torch.zeros(p.shape[0], 1, dtype=p.dtype, device=p.device)}
        return super().init_state(p, group)

    def update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
               t: int) -> None:
        b1, b2, lr, eps = group["beta1"], group["beta2"], group["lr"], group["epsilon"]
        bc1, sqrt_bc2 = 1.0 - b1**t, math.sqrt(1.0 - b2**t)
        vectors = [p for p in params if is_weight_vectors(p)]
        others = [p for p in params if not is_weight_vectors(p)]
        for p in vectors:
            self._vector_step(p, b1, b2, lr / bc1, sqrt_bc2, eps)
        if others:
            self._adam_step(others, b1, b2, lr / bc1, sqrt_bc2, eps)

    def _vector_step(self, p: Tensor, b1: float, b2: float, step_size: float, sqrt_bc2: float, eps: float) -> None:
        """ND-Adam on the rows of one weight tensor; ``step_size`` = lr/(1−β1^t)."""
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


@OPTIMIZERS.register
class NDAdamSpec(OptimizerSpec):
    study_name = "NDAdamOptimizer"
    # One-shot only in the published snapshot; tuned budgets use Adam's space and order (lr, β1, β2).
    hyperparameters = adam_family()

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        return NDAdam(params, lr=hp["learning_rate"], beta1=hp["beta1"], beta2=hp["beta2"], epsilon=hp["epsilon"])
