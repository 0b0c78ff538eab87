"""P7 svhn_wrn164: Wide ResNet 16-4 on SVHN (§1 P7, TF ``_wrn.py`` / ``svhn_wrn164.py``).

Pre-activation units; every block changes the width (16 → 64 → 128 → 256), so its first unit always has a 1×1
projection shortcut, applied to the batch-normalised, ReLU'd input. Convs have no bias, Glorot-uniform kernels and
TF 'same' padding (stride-2 3×3 convs pad (0, 1), which torch's ``padding=1`` would not). Batch norm is TF's
``momentum=0.9`` (a running average keeping 90 %: torch ``momentum=0.1``) with ε = ``bn_epsilon`` (default 1e-5):
TF ``_wrn.py`` hard-codes ``epsilon=1e-5`` and its ``bn_momentum=0.9`` default, which ``svhn_wrn164`` does not
override. Batch statistics in training only; γ = 1, β = 0 as TF. L2 (default 0.0005) on every conv kernel and on
the dense kernel, not on BN parameters or the dense bias. ``train_eval_size`` 26 032 (DeepOBS ``svhn`` class).

Data stream (``_svhn_preprocess.py``, DeepOBS ``datasets/svhn.py``; mechanics in ``problems._image`` and
``problems.base``): ``train_32x32.mat`` is converted in file order into six CIFAR-style binaries, five of 12 800
records and one of 9 257, that go through ``tf.random_shuffle(filenames)`` at every initialisation —
``split: resampled``: ``valid`` = the first 26 032 records of the initialisation's file order (usually two whole
files and part of a third), training = the other 47 225, so every epoch trains on a fresh ~65 % of the 73 257 and
over a run on all of them; ``split: fixed`` holds the first 26 032 records of the ``.mat`` out (the rest still read
as pieces in a fresh order per initialisation). Then TF's ``shuffle(buffer_size=20000)`` (``shuffle: tf_buffer``;
``uniform`` repairs it), 368 batches of 128; augmentation without the flip. Under ``data_order=repeat`` (§0.1b)
the buffer shuffle's position permutation is the run's one, applied to each initialisation's new file order.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from problems._image import ImageClassifier
from problems._layers import Conv2d, SpatialMean, init_layer
from problems.base import PROBLEMS

BN_MOMENTUM_TF = 0.9
WIDTHS = (16, 64, 128, 256)  # [16, 16·k, 32·k, 64·k] with widening factor k = 4
STRIDES = (1, 2, 2)
NUM_UNITS = 2                # (16 − 4) / 6 residual units per block


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> Conv2d:
    return init_layer(Conv2d(c_in, c_out, kernel, stride, "same", bias=False), "glorot_uniform")


def _bn(channels: int, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=1.0 - BN_MOMENTUM_TF)


class Unit(nn.Module):
    """relu(BN(x)) → conv3×3(stride) → relu(BN) → conv3×3, plus the shortcut (a 1×1 projection of relu(BN(x)))."""

    def __init__(self, c_in: int, c_out: int, stride: int, eps: float) -> None:
        super().__init__()
        if c_in == c_out and stride != 1:
            raise ValueError("a strided unit without a width change needs DeepOBS' max-pool shortcut (not used here)")
        self.bn1, self.conv1 = _bn(c_in, eps), _conv(c_in, c_out, 3, stride)
        self.bn2, self.conv2 = _bn(c_out, eps), _conv(c_out, c_out, 3)
        self.shortcut = _conv(c_in, c_out, 1, stride) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        pre = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + shortcut


class WideResNet(nn.Module):
    def __init__(self, num_outputs: int = 10, bn_epsilon: float = 1e-5) -> None:
        super().__init__()
        self.conv = _conv(3, WIDTHS[0], 3)
        units: list[nn.Module] = []
        for i, stride in enumerate(STRIDES):
            units.append(Unit(WIDTHS[i], WIDTHS[i + 1], stride, bn_epsilon))
            units += [Unit(WIDTHS[i + 1], WIDTHS[i + 1], 1, bn_epsilon) for _ in range(NUM_UNITS - 1)]
        self.units = nn.Sequential(*units)
        self.bn = _bn(WIDTHS[-1], bn_epsilon)
        self.pool = SpatialMean()
        self.dense = init_layer(nn.Linear(WIDTHS[-1], num_outputs), "glorot_uniform", bias=0.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.units(self.conv(x))
        return self.dense(self.pool(torch.relu(self.bn(x))))


@PROBLEMS.register
class SvhnWrn164(ImageClassifier):
    study_name = "svhn_wrn164"
    dataset = "svhn"
    standardise = True
    flip = False  # DeepOBS' SVHN pipeline has no left-right flip (digits)
    has_weight_decay = True
    split_setting = True  # six converted binaries, shuffled by tf.random_shuffle at every initialisation
    train_eval_size = 26_032

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        super().check_settings(settings)
        eps = settings.get("bn_epsilon", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
            raise ValueError(f"invalid problem.bn_epsilon={eps!r}: must be a number > 0")

    def build_model(self) -> nn.Module:
        return WideResNet(10, bn_epsilon=float(self.settings.get("bn_epsilon", 1e-5)))
