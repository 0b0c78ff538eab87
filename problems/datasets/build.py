"""Raw files → the train / valid / test splits of §1.9, as CPU tensors (images uint8 NCHW, labels int64).

Splits as stored (``valid`` is the head of the training file(s) in file order, ``train`` the rest):

* MNIST, Fashion-MNIST: valid = first 10 000 records of the 60 000-record training file, train = the other 50 000.
* CIFAR-10: valid = ``data_batch_1`` (10 000), train = ``data_batch_2`` … ``_5`` in that order (40 000).
* CIFAR-100: valid = first 10 000 records of ``train.bin``, train = the other 40 000 (fine labels).
* SVHN: valid = first 26 032 records of ``train_32x32.mat`` in file order, train = the remaining 47 225.
* Tolstoi: ``war-and-peace.txt`` minus the ``sed`` line ranges (= DeepOBS's ``input.txt``) → ids (vocabulary by
  frequency) → first ``ceil(0.8·n)`` ids train.npy, the rest test.npy; valid = first 653 237 ids of train.npy,
  train = the rest.

``valid`` followed by ``train`` is therefore always the whole training file(s) in canonical file order, and
``Layout.files`` gives the record counts of the files DeepOBS's TF pipeline reads: CIFAR-10's five
``data_batch_*.bin``; SVHN's six ``data_batch_0..5.bin`` that ``_svhn_preprocess.py`` writes from
``train_32x32.mat`` in its order (five of 12 800 records and one of 9 257). For these two data sets TF's pipeline
does not use the stored split: it shuffles the file names with ``tf.random_shuffle`` at every iterator
initialisation and takes ``valid`` from the head of that order — the problems re-draw the split from the whole
training file(s) (``problem.split``, ``problems/_image.py``); the stored split is the fixed one.

``size="smoke"`` files have the same formats with fewer records (``SMOKE``); the split rules are the same with the
validation head and the files scaled down.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from problems.datasets import parsers, sources
from problems.datasets.errors import DataFormatError

log = logging.getLogger("valley.data")

Splits = dict[str, tuple[torch.Tensor, torch.Tensor | None]]

TOLSTOI_VOCAB_SIZE = 83  # DeepOBS tolstoi_char_rnn's vocab_size (§1 P8)


@dataclass(frozen=True)
class Layout:
    """Record counts of one data set at one size; used to generate smoke files and to check the real ones."""

    train_file: int | None  # records in the training file(s); None where not fixed (Tolstoi: derived from the text)
    test: int
    valid: int  # head of the training file used for validation
    files: tuple[int, ...] = ()  # records per file TF reads the training data from, in canonical order; () = one

    def file_sizes(self) -> tuple[int, ...]:
        """Records per training file in canonical order (one entry for the single-file data sets)."""
        if self.files:
            return self.files
        assert self.train_file is not None
        return (self.train_file,)


def converted_files(n: int, per_file: int) -> tuple[int, ...]:
    """Record counts of the CIFAR-style binaries ``_svhn_preprocess.py`` writes from ``n`` records: a new file
    every ``per_file`` records (``if i > 0 and i % 12800 == 0``), the last one holding the remainder."""
    return (per_file,) * (n // per_file) + ((n % per_file,) if n % per_file else ())


SVHN_RECORDS_PER_FILE = 12_800
SMOKE_SVHN_RECORDS_PER_FILE = 160


FULL: dict[str, Layout] = {
    "mnist": Layout(60_000, 10_000, 10_000),
    "fmnist": Layout(60_000, 10_000, 10_000),
    "cifar10": Layout(50_000, 10_000, 10_000, (10_000,) * 5),
    "cifar100": Layout(50_000, 10_000, 10_000),
    "svhn": Layout(73_257, 26_032, 26_032, converted_files(73_257, SVHN_RECORDS_PER_FILE)),
    "tolstoi": Layout(None, 653_237, 653_237),
}

SMOKE: dict[str, Layout] = {
    # train = train_file - valid: >= 3 batches of the largest batch size using the data set (64/128/128/256/128/50x50)
    "mnist": Layout(768, 256, 256),
    "fmnist": Layout(768, 256, 256),
    "cifar10": Layout(1280, 256, 256, (256,) * 5),  # five files of 256, valid = data_batch_1
    "cifar100": Layout(1024, 256, 256),
    # converted like the real file: four binaries of 160 and one of 128; valid = one file and 96 records of the next
    "svhn": Layout(768, 256, 256, converted_files(768, SMOKE_SVHN_RECORDS_PER_FILE)),
    # 20 003 chars of text → ceil(0.8·n) = 16 003 / 4 000 (floor would give 16 002); train 12 003 = 4 batches
    "tolstoi": Layout(16_003, 4_000, 4_000),
}

TOLSTOI_SMOKE_DELETIONS: tuple[tuple[int, int], ...] = ((1, 3),)
"""The smoke text carries a 3-line fake header in place of Gutenberg's, removed like ``sed -i '1,3d'``."""


def layout(dataset: str, size: str) -> Layout:
    return (FULL if size == "full" else SMOKE)[dataset]


def _tensor(array: np.ndarray) -> torch.Tensor:
    """An owning, contiguous copy: a view would make ``torch.save`` store the whole parent buffer per split."""
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def _head_split(x: np.ndarray, y: np.ndarray, n_valid: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    return (x[n_valid:], y[n_valid:]), (x[:n_valid], y[:n_valid])


def _expect(count: int, expected: int | None, what: str) -> None:
    if expected is not None and count != expected:
        raise DataFormatError(f"{what} has {count} records, expected {expected}")


def _as_splits(train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
               test: tuple[np.ndarray, np.ndarray]) -> Splits:
    return {name: (_tensor(x), _tensor(y)) for name, (x, y) in (("train", train), ("valid", valid), ("test", test))}


def build_mnist(raw: Path, lay: Layout) -> Splits:
    """MNIST and Fashion-MNIST share the IDX layout and the split rule."""
    x = parsers.read_idx_images(raw / "train-images-idx3-ubyte.gz")
    y = parsers.read_idx_labels(raw / "train-labels-idx1-ubyte.gz")
    x_test = parsers.read_idx_images(raw / "t10k-images-idx3-ubyte.gz")
    y_test = parsers.read_idx_labels(raw / "t10k-labels-idx1-ubyte.gz")
    _expect(x.shape[0], lay.train_file, "train-images-idx3-ubyte.gz")
    _expect(y.shape[0], x.shape[0], "train-labels-idx1-ubyte.gz")
    _expect(x_test.shape[0], lay.test, "t10k-images-idx3-ubyte.gz")
    _expect(y_test.shape[0], x_test.shape[0], "t10k-labels-idx1-ubyte.gz")
    return _as_splits(*_head_split(x, y, lay.valid), (x_test, y_test))


def build_cifar10(raw: Path, lay: Layout) -> Splits:
    batches = parsers.read_cifar10_archive(raw / "cifar-10-binary.tar.gz")
    train_names = ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
    for name, count in zip(("data_batch_1", *train_names), lay.file_sizes()):
        _expect(batches[name][0].shape[0], count, f"{name}.bin")
    _expect(batches["data_batch_1"][0].shape[0], lay.valid, "data_batch_1.bin")
    _expect(batches["test_batch"][0].shape[0], lay.test, "test_batch.bin")
    train = tuple(np.concatenate([batches[n][i] for n in train_names]) for i in (0, 1))
    return _as_splits(train, batches["data_batch_1"], batches["test_batch"])  # type: ignore[arg-type]


def build_cifar100(raw: Path, lay: Layout, offset_bug: bool = True) -> Splits:
    parts = parsers.read_cifar100_archive(raw / "cifar-100-binary.tar.gz", offset_bug=offset_bug)
    x, y = parts["train"]
    _expect(x.shape[0], lay.train_file, "train.bin")
    _expect(parts["test"][0].shape[0], lay.test, "test.bin")
    return _as_splits(*_head_split(x, y, lay.valid), parts["test"])


def build_svhn(raw: Path, lay: Layout) -> Splits:
    x, y = parsers.read_svhn_mat(raw / "train_32x32.mat")
    x_test, y_test = parsers.read_svhn_mat(raw / "test_32x32.mat")
    _expect(x.shape[0], lay.train_file, "train_32x32.mat")
    _expect(x_test.shape[0], lay.test, "test_32x32.mat")
    return _as_splits(*_head_split(x, y, lay.valid), (x_test, y_test))


def build_tolstoi(raw: Path, lay: Layout, full: bool, split_rule: str = "ceil", newlines: str = "keep") -> Splits:
    """Text → ids, as ``_tolstoi_preprocess.py`` by default (``codecs.open``: no newline translation; train =
    the first ``ceil(0.8·n)`` ids); ``split_rule="floor"`` / ``newlines="universal"`` are this harness's protocol-1
    rules. The file itself is checked on DeepOBS's reading (vocabulary 83 and test 653 237 chars in full size, the
    generated length in smoke size) whatever the options: no MD5 is published for the text, so this is what detects
    a wrong or truncated copy."""
    deletions = sources.TOLSTOI_DELETIONS if full else TOLSTOI_SMOKE_DELETIONS
    data = parsers.delete_lines((raw / "war-and-peace.txt").read_bytes(), deletions)
    deepobs_text = parsers.decode_text(data, newlines="keep")
    n_test = len(deepobs_text) - parsers.train_size(len(deepobs_text), "ceil")
    if full:
        vocabulary_size = len(set(deepobs_text))
        if vocabulary_size != TOLSTOI_VOCAB_SIZE or abs(n_test - lay.test) > 1:
            raise DataFormatError(
                f"war-and-peace.txt does not reproduce DeepOBS's Tolstoi data: vocabulary {vocabulary_size} "
                f"(expected {TOLSTOI_VOCAB_SIZE}), test {n_test} chars (expected {lay.test}); wrong or "
                f"truncated copy of {sources.TOLSTOI_URL}")
        if n_test != lay.test:
            log.warning("Tolstoi test split has %d chars, DeepOBS %d", n_test, lay.test)
    else:
        assert lay.train_file is not None
        _expect(len(deepobs_text), lay.train_file + lay.test, "smoke war-and-peace.txt (chars)")
    text = deepobs_text if newlines == "keep" else parsers.decode_text(data, newlines=newlines)
    vocabulary = parsers.char_vocabulary(text)
    train_file, test = parsers.split_train_test(parsers.encode_chars(text, vocabulary), split_rule)
    return {"train": (_tensor(train_file[lay.valid:]), None), "valid": (_tensor(train_file[:lay.valid]), None),
            "test": (_tensor(test), None)}


def build(dataset: str, raw: Path, size: str, *, cifar100_offset_bug: bool = True, split_rule: str = "ceil",
          newlines: str = "keep") -> Splits:
    """Parse the raw files of ``dataset`` in ``raw`` and cut the splits of §1.9 for ``size`` (full | smoke).

    Defaults are what DeepOBS's TF code read: CIFAR-100 with its one-byte image offset, Tolstoi split at
    ``ceil(0.8·n)`` without newline translation.
    """
    lay = layout(dataset, size)
    if dataset in ("mnist", "fmnist"):
        return build_mnist(raw, lay)
    if dataset == "cifar10":
        return build_cifar10(raw, lay)
    if dataset == "cifar100":
        return build_cifar100(raw, lay, offset_bug=cifar100_offset_bug)
    if dataset == "svhn":
        return build_svhn(raw, lay)
    if dataset == "tolstoi":
        return build_tolstoi(raw, lay, full=size == "full", split_rule=split_rule, newlines=newlines)
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(sources.DATASETS)}")
