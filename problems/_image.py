"""Shared plumbing of the six image problems: data on the device, per-batch transforms, softmax classification.

Data follow the DeepOBS TF pipelines (§1.9) through ``problems.datasets``: uint8 splits are moved to the device once,
each batch is an index gather, converted there (``/255`` for (F-)MNIST; the CIFAR/SVHN augmentation and per-image
standardisation for the others). Weight decay is the TF ``l2_regularizer`` on kernels (base class); problems whose
TF version has no regularizer reject a non-zero ``weight_decay`` (TF prints a warning and ignores it — a silent
no-op would put a misleading value in the run spec).

The data stream is DeepOBS's by default (base class for the shuffle and ``data_order``); each repair of a TF quirk
is a setting, recorded in the run's problem settings and so in its run_id:

* ``shuffle: tf_buffer`` (P2–P7) — TF's ``data.shuffle(buffer_size=20000)`` (every image data set's
  ``_make_dataset``), a sliding window over 40 000–50 000 records: early outputs come from the head of the input
  (MNIST's ``train_eval`` rows all come from its first 30 000 positions) and the dropped remainder from its tail.
  ``shuffle: uniform`` repairs it (a uniform permutation); ``shuffle_buffer`` (20 000) is TF's buffer size.
* ``split: resampled`` (P4 CIFAR-10, P7 SVHN) — ``_load_dataset`` feeds ``tf.random_shuffle(filenames)`` of the
  training files (CIFAR-10's five ``data_batch_*.bin``, SVHN's six converted binaries of 12 800 / 9 257 records)
  into one ``FixedLengthRecordDataset``; ``valid = data.take(V)`` and ``train = data.skip(V)`` (V = 10 000 /
  26 032) both wrap it, and so does ``train_eval``. ``tf.random_shuffle`` is a stateful graph op whose stream
  advances every time it runs, i.e. at every initialisation of train, train_eval or valid (one op shared by the
  three; ``test`` has its own over one file). So every initialisation reads the training files in a fresh order:
  each epoch trains on the N − V records after the head of a new order (over a run: on all of them), every
  evaluation's ``valid`` is the head of another order (usually overlapping what was trained on), and the input
  order of the buffer shuffle changes every epoch. Emulated by drawing the file order from the generator at every
  initialisation, whatever ``data_order`` — under ``repeat`` the *same* position permutation (base class) is
  applied to each initialisation's input, as TF's restarted shuffle stream did. ``split: fixed`` repairs the
  overlap: ``valid`` = the first V records in canonical file order (CIFAR-10 ``data_batch_1``, SVHN the head of
  ``train_32x32.mat``), never trained on, and training reads the remaining records — still as the files' pieces
  in a fresh order at every initialisation, as TF would with the validation records in files of their own.
* ``cifar100_offset_bug: true`` (P6) — DeepOBS's CIFAR-100 parser slices the image one byte early (§1.9);
  ``false`` parses correctly.

Single-file data sets (MNIST, Fashion-MNIST, CIFAR-100) have a fixed input order (``valid`` = the head of the file,
train the rest in file order), so under ``data_order=repeat`` their epochs are identical and gathered once.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from problems.base import SHUFFLES, Batch, Problem, Split, check_choice, check_int

EVAL_ROWS = 1024
"""Approximate rows per evaluation chunk; evaluation has no train-mode batch statistics, so chunking is free."""


SPLITS = ("resampled", "fixed")


def permuted_ranges(starts: Tensor, sizes: Tensor, perm: Tensor, total: int) -> Tensor:
    """The indices of the ranges ``[starts[p], starts[p] + sizes[p])`` for ``p`` in ``perm``, concatenated
    (``total`` = the sum of the sizes). Device tensors in, device tensor out: no host sync."""
    begin, size = starts[perm], sizes[perm]
    ends = size.cumsum(0)
    pos = torch.arange(total, device=starts.device)
    which = torch.searchsorted(ends, pos, right=True)
    return begin[which] + pos - (ends - size)[which]


class ImageProblem(Problem):
    dataset: ClassVar[str]              # problems.datasets name
    standardise: ClassVar[bool] = False  # CIFAR/SVHN pipeline (augmentation + per-image standardisation)
    flip: ClassVar[bool] = True          # random left-right flip in the augmentation (not for SVHN)
    has_weight_decay: ClassVar[bool] = False  # whether the TF problem has an L2 regularizer
    dataset_options: ClassVar[tuple[str, ...]] = ()  # problem settings passed on to ``datasets.load``
    split_setting: ClassVar[bool] = False  # P4, P7: ``split`` (the training files TF shuffles per initialisation)
    shuffle_settings = True

    def __init__(self, settings: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        type(self).check_settings(settings)
        super().__init__(settings, *args, **kwargs)
        self.split = str(self.settings.get("split", SPLITS[0])) if self.split_setting else "fixed"
        self._n_valid = 0
        self._pieces: tuple[Tensor, Tensor] | None = None  # (starts, sizes) of the input's pieces; None: one

    @classmethod
    def split_sizes(cls, settings: Mapping[str, Any]) -> dict[str, int]:
        from problems.datasets import build

        lay = build.layout(cls.dataset, settings.get("size", "full") if settings.get("size") in ("full", "smoke")
                           else "full")
        train = sum(lay.file_sizes()) - lay.valid
        train_eval = train if cls.train_eval_size is None else min(cls.train_eval_size, train)
        return {"train": train_eval, "valid": lay.valid, "test": lay.test}

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Reject settings the TF problem would not honour (called by ``bench.spec.make_spec``)."""
        from problems.datasets import OPTIONS

        if not cls.has_weight_decay and settings.get("weight_decay"):
            raise ValueError(f"invalid problem.weight_decay={settings['weight_decay']!r}: "
                             f"{cls.__module__.rsplit('.', 1)[-1]} has no L2 regularizer in DeepOBS; must be 0")
        check_choice(settings, "shuffle", SHUFFLES)
        check_int(settings, "shuffle_buffer", 1)
        if cls.split_setting:
            check_choice(settings, "split", SPLITS)
        for option in cls.dataset_options:
            check_choice(settings, option, OPTIONS[cls.dataset][option])

    def load_data(self) -> None:
        """The splits on the device. Multi-file data sets (CIFAR-10, SVHN) keep their whole training file(s) as
        ``data["pool"]`` in canonical file order, with ``valid`` / ``train`` as views of its head / rest."""
        from problems import datasets

        options = {key: self.settings[key] for key in self.dataset_options if key in self.settings}
        size = self.settings.get("size", "full")
        splits = datasets.load(self.dataset, self.data_dir, size=size, **options)
        files = datasets.train_file_sizes(self.dataset, size)
        (valid_x, valid_y), (train_x, train_y) = splits["valid"], splits["train"]
        self.data = {"test": Split(splits["test"][0].to(self.device), splits["test"][1].to(self.device))}
        self._n_valid = len(valid_x)
        if len(files) == 1:
            self.data["train"] = Split(train_x.to(self.device), train_y.to(self.device))
            self.data["valid"] = Split(valid_x.to(self.device), valid_y.to(self.device))
            self._pieces = None
            return
        if sum(files) != len(valid_x) + len(train_x):
            raise ValueError(f"{self.dataset}: the training files hold {sum(files)} records, the splits "
                             f"{len(valid_x) + len(train_x)}")
        pool = Split(torch.cat([valid_x, train_x]).to(self.device), torch.cat([valid_y, train_y]).to(self.device))
        v = self._n_valid
        self.data["pool"] = pool
        self.data["valid"] = Split(pool.x[:v], pool.y[:v])
        self.data["train"] = Split(pool.x[v:], pool.y[v:])
        ends = torch.tensor(files).cumsum(0)
        starts = ends - torch.tensor(files)
        if self.split == "fixed":  # the training records' pieces of each file, in ``data["train"]`` coordinates
            keep = ends > v
            starts, ends = starts[keep].clamp(min=v) - v, ends[keep] - v
        self._pieces = (starts.to(self.device), (ends - starts).to(self.device)) if len(starts) > 1 else None

    # ------------------------------------------------------------------------------------------ the data stream
    def _resampled(self) -> bool:
        return self.split == "resampled" and self._pieces is not None

    def train_source(self) -> Split:
        """The whole training file(s) when the split is re-drawn, else the training records (``train_size()`` is
        ``len(data["train"])`` = N − V either way)."""
        return self.data["pool"] if self._resampled() else self.data["train"]

    def input_order_is_fixed(self) -> bool:
        return self._pieces is None

    def _file_order(self) -> Tensor:
        """One run of ``tf.random_shuffle(filenames)``: the pieces in a new order, as record indices."""
        starts, sizes = self._pieces  # type: ignore[misc]
        perm = torch.randperm(starts.shape[0], generator=self.generator, device=self.device)
        total = len(self.train_source())
        return permuted_ranges(starts, sizes, perm, total)

    def input_order(self, stream: str) -> Tensor | None:
        if self._pieces is None:
            return None
        order = self._file_order()
        return order[self._n_valid:] if self.split == "resampled" else order

    def valid_rows(self) -> tuple[Split, Tensor | None]:
        if self._resampled():
            return self.data["pool"], self._file_order()[:self._n_valid]
        return self.data["valid"], None

    def stream_signature(self) -> dict[str, Any]:
        return {**super().stream_signature(), "split": self.split}

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
