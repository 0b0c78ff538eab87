"""TF 1.x layer semantics the DeepOBS problems rely on: initialisers, fan computation and 'same' padding.

Why not the torch defaults: torch initialises conv/linear layers with Kaiming-uniform(a=√5) and biases from
U(±1/√fan_in); DeepOBS TF uses Glorot-uniform kernels with zero biases (``tf.layers``/``tf.get_variable``
defaults), Keras' ``glorot_normal`` (a *truncated* normal) and ``truncated_normal(0.05)``/``constant`` where a problem
asks for them. And torch's ``padding`` is symmetric, whereas TF's 'same' pads ``total // 2`` before and the rest
*after*: for a 3×3 stride-2 conv on 32×32 TF pads (0, 1), torch ``padding=1`` pads (1, 1) and samples a shifted grid.
The modules below reproduce TF exactly; they fall back to the native symmetric padding where TF's is symmetric.
"""
from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

L = TypeVar("L", nn.Conv2d, nn.ConvTranspose2d, nn.Linear)

TRUNCATED_NORMAL_STD_FACTOR = 0.87962566103423978
"""Std of a standard normal truncated to [−2, 2]; Keras' VarianceScaling divides by it so the *kept* std is right."""


# --------------------------------------------------------------------------------------------------- fans & inits
def tf_fans(shape_tf: tuple[int, ...]) -> tuple[int, int]:
    """TF ``_compute_fans`` on a TF-layout shape: 1-D → (n, n); 2-D → (in, out); conv (kh, kw, in, out) → ×kh·kw."""
    if len(shape_tf) == 1:
        return shape_tf[0], shape_tf[0]
    if len(shape_tf) == 2:
        return shape_tf[0], shape_tf[1]
    receptive = math.prod(shape_tf[:-2])
    return receptive * shape_tf[-2], receptive * shape_tf[-1]


def glorot_uniform_(tensor: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """``glorot_uniform``: U(±sqrt(6 / (fan_in + fan_out)))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-limit, limit)


def glorot_truncated_normal_(tensor: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """``tf.keras.initializers.glorot_normal`` (TF ≥ 1.13): N(0, σ²) truncated to ±2σ, σ = sqrt(2/(in+out))/0.8796.

    The truncation shrinks the std by exactly 0.8796, so the kept values have std sqrt(2/(fan_in+fan_out)).
    """
    std = math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_NORMAL_STD_FACTOR
    return truncated_normal_(tensor, std)


def truncated_normal_(tensor: Tensor, std: float) -> Tensor:
    """``tf.truncated_normal_initializer(stddev=std)``: N(0, std²) with draws outside ±2·std re-drawn."""
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def conv_fans(weight: Tensor, transposed: bool = False) -> tuple[int, int]:
    """TF fans of a torch conv weight: torch (out, in, kh, kw) ↔ TF (kh, kw, in, out).

    For a transposed conv torch stores (in, out, kh, kw) and TF (kh, kw, filters=out, in); Glorot only needs the sum.
    """
    a, b, kh, kw = weight.shape
    c_out, c_in = (b, a) if transposed else (a, b)
    if transposed:
        return tf_fans((kh, kw, c_out, c_in))
    return tf_fans((kh, kw, c_in, c_out))


def init_layer(layer: L, kernel: str, bias: float = 0.0, std: float = 0.05) -> L:
    """Initialise a conv / transposed conv / linear layer the TF way.

    ``kernel`` ∈ {"glorot_uniform", "glorot_normal", "truncated_normal"} (the last uses ``std``); bias = constant.
    """
    w = layer.weight
    if isinstance(layer, nn.Linear):
        fan_in, fan_out = tf_fans((w.shape[1], w.shape[0]))
    else:
        fan_in, fan_out = conv_fans(w, transposed=isinstance(layer, nn.ConvTranspose2d))
    if kernel == "glorot_uniform":
        glorot_uniform_(w, fan_in, fan_out)
    elif kernel == "glorot_normal":
        glorot_truncated_normal_(w, fan_in, fan_out)
    elif kernel == "truncated_normal":
        truncated_normal_(w, std)
    else:
        raise ValueError(f"unknown kernel initialiser {kernel!r}")
    if layer.bias is not None:
        with torch.no_grad():
            layer.bias.fill_(bias)
    return layer


# ----------------------------------------------------------------------------------------------- 'same' padding
def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'same' padding along one axis: output ceil(n/s); total = max((out−1)·s + k − n, 0); (total//2, rest)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an NCHW tensor; shapes are Python ints, so no host sync."""
    top, bottom = tf_same_pads(x.shape[-2], kernel[0], stride[0])
    left, right = tf_same_pads(x.shape[-1], kernel[1], stride[1])
    return top, bottom, left, right


class Conv2d(nn.Conv2d):
    """``tf.layers.conv2d`` with padding 'same' or 'valid' (TF's asymmetric 'same' where it differs from torch's)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: str = "same",
                 bias: bool = True) -> None:
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, bias=bias)
        self.tf_padding = padding

    def forward(self, x: Tensor) -> Tensor:
        if self.tf_padding == "valid":
            return F.conv2d(x, self.weight, self.bias, self.stride)
        top, bottom, left, right = _pads(x, self.kernel_size, self.stride)
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, padding=(top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``tf.layers.conv2d_transpose`` with padding 'same': output = input·stride.

    TF computes it as the gradient of a 'same' conv from the output size: the full transposed conv has
    (in−1)·s + k rows, of which TF drops ``total//2`` at the top and the rest at the bottom (torch's ``padding``
    can only crop symmetrically: for k=4, s=1 TF crops (1, 2)).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        h_out, w_out = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        top, bottom = tf_same_pads(h_out, self.kernel_size[0], self.stride[0])
        left, right = tf_same_pads(w_out, self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, padding=(top, left))
        full = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        return full[..., top:top + h_out, left:left + w_out]


class MaxPool2d(nn.Module):
    """``tf.nn.max_pool`` / ``tf.layers.max_pooling2d`` with 'same' padding: padded cells never win (−inf).

    torch's ``padding`` argument is symmetric (and limited to k//2); TF pads 3×3/2 on 28 as (0, 1).
    """

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = (kernel, kernel), (stride, stride)

    def forward(self, x: Tensor) -> Tensor:
        top, bottom, left, right = _pads(x, self.kernel, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding='same'"


def tf_flatten(x: Tensor) -> Tensor:
    """Flatten to (batch, −1) in TF's NHWC order, so dense kernels index features as TF's do.

    For randomly initialised i.i.d. kernels any fixed order gives the same distribution of functions; using TF's
    order keeps a TF checkpoint loadable by a plain reshape and costs one permute per batch.
    """
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


class TFFlatten(nn.Module):
    """``tf.layers.flatten`` as a module (NHWC order, see :func:`tf_flatten`)."""

    def forward(self, x: Tensor) -> Tensor:
        return tf_flatten(x)


class SpatialMean(nn.Module):
    """``tf.reduce_mean(x, axis=[1, 2])``: global average pooling over height and width."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))
