"""P4 cifar10_3c3d: three conv + three dense layers on CIFAR-10 (§1 P4, TF ``_3c3d.py``).

Conv kernels Keras ``glorot_normal`` (truncated normal), dense kernels ``glorot_uniform``, biases 0; max-pools 3×3/2
'same' with TF's bottom/right padding (28 → 14 pads (0, 1)); L2 (default 0.002) on all six kernels.
``train_eval_size`` 10 000 (DeepOBS ``cifar10``); data augmented and standardised by the CIFAR pipeline.

Data stream (DeepOBS ``datasets/cifar10.py``; mechanics in ``problems._image`` and ``problems.base``): the five
``data_batch_*.bin`` go through ``tf.random_shuffle(filenames)`` at every initialisation — ``split: resampled``:
every training epoch reads the 40 000 records after the first file of a fresh file order, every evaluation's
``valid`` is the first file of another one, and over a run all 50 000 are trained on; ``split: fixed`` holds
``data_batch_1`` out (the other four files still in a fresh order per initialisation). Then TF's
``shuffle(buffer_size=20000)`` (``shuffle: tf_buffer``; ``uniform`` repairs it), 312 batches of 128 (64 records
dropped). Under ``data_order=repeat`` (§0.1b) the buffer shuffle's position permutation is the run's one and is
applied to each initialisation's new file order; the file order itself is fresh at every initialisation, as TF's
stateful ``random_shuffle`` op was.
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
    split_setting = True  # five data_batch_*.bin, shuffled by tf.random_shuffle at every initialisation
    train_eval_size = 10_000

    def build_model(self) -> nn.Module:
        return net_3c3d(10)
