"""P6 cifar100_allcnnc: All-CNN-C (Springenberg et al. 2015) on CIFAR-100 (§1 P6, TF ``cifar100_allcnnc.py``).

Every conv has a ReLU — the last 1×1 conv to 100 channels too, since DeepOBS' conv helper always applies one — and
the logits are the spatial mean of that ReLU output. Kernels Keras ``glorot_normal``, biases ``constant(0.1)``,
L2 (default 0.0005) on the nine kernels; stride-2 'same' convs pad TF's way ((0, 1) on 32 and on 16). Dropout 0.2
on the input and 0.5 after each stride-2 conv, in training only. ``train_eval_size`` 10 000 (DeepOBS ``cifar100``).

Data stream (DeepOBS ``datasets/cifar100.py``): one ``train.bin``, so ``tf.random_shuffle`` of its one file name
changes nothing: valid = its first 10 000 records, train = the other 40 000 in file order, through TF's
``shuffle(buffer_size=20000)`` (``shuffle: tf_buffer``; ``uniform`` repairs it) — under ``data_order=repeat``
the same 156 batches of 256 every epoch (§0.1b). Images are read as DeepOBS's parser does, one byte early
(``cifar100_offset_bug: true``: ``tf.slice(record, [label_bytes], [image_bytes])`` with ``label_bytes`` 1 and a
2-byte label; train, valid and test alike); ``false`` repairs it.
"""
from __future__ import annotations

from torch import nn

from problems._image import ImageClassifier
from problems._layers import Conv2d, SpatialMean, init_layer
from problems.base import PROBLEMS

BIAS = 0.1


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: str = "same") -> list[nn.Module]:
    return [init_layer(Conv2d(c_in, c_out, kernel, stride, padding), "glorot_normal", bias=BIAS), nn.ReLU()]


def all_cnn_c(num_outputs: int = 100) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(0.2),
        *_conv(3, 96, 3), *_conv(96, 96, 3), *_conv(96, 96, 3, stride=2),          # 32 → 16
        nn.Dropout(0.5),
        *_conv(96, 192, 3), *_conv(192, 192, 3), *_conv(192, 192, 3, stride=2),    # 16 → 8
        nn.Dropout(0.5),
        *_conv(192, 192, 3, padding="valid"),                                      # 8 → 6
        *_conv(192, 192, 1), *_conv(192, num_outputs, 1),
        SpatialMean(),
    )


@PROBLEMS.register
class Cifar100Allcnnc(ImageClassifier):
    study_name = "cifar100_allcnnc"
    dataset = "cifar100"
    standardise = True
    flip = True
    has_weight_decay = True
    dataset_options = ("cifar100_offset_bug",)  # §8: DeepOBS' one-byte image shift by default, false repairs it
    train_eval_size = 10_000

    def build_model(self) -> nn.Module:
        return all_cnn_c(100)
