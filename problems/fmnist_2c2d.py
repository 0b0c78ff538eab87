"""P3 fmnist_2c2d: two conv + two dense layers on Fashion-MNIST (§1 P3, TF ``_2c2d.py``).

All kernels ``truncated_normal(stddev=0.05)`` and all biases ``constant(0.05)`` (TF); max-pools 2×2/2 'same'
(no padding needed on 28 and 14). No weight decay in DeepOBS. ``train_eval_size`` 10 000 (DeepOBS ``fmnist``).
Data stream as ``mnist_vae`` (one file, TF's buffer shuffle; under ``repeat`` the same 390 batches every epoch).
"""
from __future__ import annotations

from torch import nn

from problems._image import ImageClassifier
from problems._layers import Conv2d, MaxPool2d, TFFlatten, init_layer
from problems.base import PROBLEMS

KERNEL_STD = 0.05
BIAS = 0.05


def net_2c2d(num_outputs: int = 10) -> nn.Sequential:
    net = nn.Sequential(
        Conv2d(1, 32, 5, 1, "same"), nn.ReLU(), MaxPool2d(2, 2),      # 28 → 28 → 14
        Conv2d(32, 64, 5, 1, "same"), nn.ReLU(), MaxPool2d(2, 2),     # 14 → 14 → 7
        TFFlatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, num_outputs),
    )
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init_layer(m, "truncated_normal", bias=BIAS, std=KERNEL_STD)
    return net


@PROBLEMS.register
class Fmnist2c2d(ImageClassifier):
    study_name = "fmnist_2c2d"
    dataset = "fmnist"
    train_eval_size = 10_000

    def build_model(self) -> nn.Module:
        return net_2c2d(10)
