"""Shared plumbing of the six image problems: data on the device, per-batch transforms, softmax classification.

Data follow the DeepOBS TF pipelines (§1.9) through ``problems.datasets``: uint8 splits are moved to the device once,
each batch is an index gather, converted there (``/255`` for (F-)MNIST; the CIFAR/SVHN augmentation and per-image
standardisation for the others). Weight decay is the TF ``l2_regularizer`` on kernels (base class); problems whose
TF version has no regularizer reject a non-zero ``weight_decay`` (TF prints a warning and ignores it — a silent
no-op would put a misleading value in the run spec).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from problems.base import Batch, Problem, Split

EVAL_ROWS = 1024
"""Approximate rows per evaluation chunk; evaluation has no train-mode batch statistics, so chunking is free."""


class ImageProblem(Problem):
    dataset: ClassVar[str]              # problems.datasets name
    standardise: ClassVar[bool] = False  # CIFAR/SVHN pipeline (augmentation + per-image standardisation)
    flip: ClassVar[bool] = True          # random left-right flip in the augmentation (not for SVHN)
    has_weight_decay: ClassVar[bool] = False  # whether the TF problem has an L2 regularizer
    dataset_flags: ClassVar[tuple[str, ...]] = ()  # boolean problem settings passed on to ``datasets.load``

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Reject settings the TF problem would not honour (called by ``bench.spec.make_spec``)."""
        if not cls.has_weight_decay and settings.get("weight_decay"):
            raise ValueError(f"invalid problem.weight_decay={settings['weight_decay']!r}: "
                             f"{cls.__module__.rsplit('.', 1)[-1]} has no L2 regularizer in DeepOBS; must be 0")
        for flag in cls.dataset_flags:
            if not isinstance(settings.get(flag, False), bool):
                raise ValueError(f"invalid problem.{flag}={settings[flag]!r}: must be true or false")

    def load_data(self) -> None:
        from problems import datasets

        options = {flag: bool(self.settings[flag]) for flag in self.dataset_flags if flag in self.settings}
        splits = datasets.load(self.dataset, self.data_dir, size=self.settings.get("size", "full"), **options)
        self.data = {name: Split(x.to(self.device), y.to(self.device)) for name, (x, y) in splits.items()}

    def transform(self, batch: Batch, augment: bool) -> Batch:
        x, y = batch
        if self.standardise:
            from problems.datasets.augment import image_pipeline

            return image_pipeline(x, self.generator, augment=augment, flip=self.flip), y
        return x.float().div(255.0), y

    def eval_batch_size(self) -> int:
        """A multiple of the batch size near ``EVAL_ROWS``: no batch statistics in eval, draws are per example."""
        return self.batch_size * max(1, EVAL_ROWS // self.batch_size)


class ImageClassifier(ImageProblem):
    """Softmax cross-entropy (``softmax_cross_entropy_with_logits_v2`` on one-hot labels) + L2; accuracy."""

    has_accuracy = True

    def compute(self, model: nn.Module, batch: Batch, training: bool) -> tuple[Tensor, Tensor | None]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y) + self.regularizer(model)
        accuracy = None if training else (logits.argmax(dim=1) == y).float().mean()
        return loss, accuracy

    def sampled_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Cross-entropy on labels drawn from the model's softmax (Gumbel-max: exact, and no host sync)."""
        logits = model(batch[0])
        return F.cross_entropy(logits, sample_categorical(logits.detach()))


def sample_categorical(logits: Tensor) -> Tensor:
    """One draw per row of ``softmax(logits)`` along the last axis, via argmax(logits + Gumbel noise).

    ``torch.distributions.Categorical`` validates its argument on the host by default; Gumbel-max stays on device.
    """
    u = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny, max=1.0 - torch.finfo(logits.dtype).eps)
    return (logits - torch.log(-torch.log(u))).argmax(dim=-1)
