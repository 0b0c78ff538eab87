"""P4 cifar10_3c3d: three conv + three dense layers on CIFAR-10 (§1 P4, TF ``_3c3d.py``).

Conv kernels Keras ``glorot_normal`` (truncated normal), dense kernels ``glorot_uniform``, biases 0; max-pools 3×3/2
'same' with TF's bottom/right padding (28 → 14 pads (0, 1)); L2 (default 0.002) on all six kernels.
``train_eval_size`` 10 000 (DeepOBS ``cifar10``); data augmented and standardised by the CIFAR pipeline.
"""
from __future__ import annotations

from torch import nn

from problems._image import ImageClassifier
from problems._layers import Conv2d, MaxPool2d, TFFlatten, init_layer
from problems.base import PROBLEMS


def net_3c3d(num_outputs: int = 10) -> nn.Sequential:
    net = nn.Sequential(
        Conv2d(3, 64, 5, 1, "valid"), nn.ReLU(), MaxPool2d(3, 2),     # 32 → 28 → 14
        Conv2d(64, 96, 3, 1, "valid"), nn.ReLU(), MaxPool2d(3, 2),    # 14 → 12 → 6
        Conv2d(96, 128, 3, 1, "same"), nn.ReLU(), MaxPool2d(3, 2),    # 6 → 6 → 3
        TFFlatten(), nn.Linear(3 * 3 * 128, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, num_outputs),
    )
    for m in net:
        if isinstance(m, nn.Conv2d):
            init_layer(m, "glorot_normal", bias=0.0)
        elif isinstance(m, nn.Linear):
            init_layer(m, "glorot_uniform", bias=0.0)
    return net


@PROBLEMS.register
class Cifar103c3d(ImageClassifier):
    study_name = "cifar10_3c3d"
    dataset = "cifar10"
    standardise = True
    flip = True
    has_weight_decay = True
    train_eval_size = 10_000

    def build_model(self) -> nn.Module:
        return net_3c3d(10)
