"""Real data for the DeepOBS problems: download, verify, parse, split and cache (protocol §1.9).

``load(dataset, data_dir, size, **options)`` is the one entry point the problems use. It returns CPU tensors
``{"train"|"valid"|"test": (x, y)}``: images uint8 NCHW with int64 labels, or for ``tolstoi`` an int64 1-D char-id
tensor and ``None``. Moving to the device, scaling and augmentation are the problem's job (``augment.py``).

Directory layout under the data directory (``data_dir`` argument, else ``$VALLEY_DATA``, else ``~/.cache/valley``)::

    <data_dir>/<dataset>/raw/<official file>      downloaded or put there by hand, MD5-verified
    <data_dir>/<dataset>/cache/<key>.pt           converted splits; later loads read only this
    <data_dir>/smoke/<dataset>/raw|cache/         size="smoke": generated small files in the original formats

This sub-package is infrastructure, not a problem plugin (it registers nothing).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from problems.datasets import build, cache, download, fake
from problems.datasets.build import Splits
from problems.datasets.errors import ChecksumError, DataError, DataFormatError, DataMissingError
from problems.datasets.sources import DATASETS

__all__ = ["DATASETS", "SIZES", "OPTIONS", "load", "train_file_sizes", "resolve_data_dir", "dataset_root",
           "ChecksumError", "DataError", "DataFormatError", "DataMissingError"]

SIZES = ("full", "smoke")
DEFAULT_DATA_DIR = "~/.cache/valley"

_COMMON_OPTIONS: dict[str, tuple[Any, ...]] = {"download": (True, False)}
OPTIONS: dict[str, dict[str, tuple[Any, ...]]] = {
    # name: (default, other valid values...); the default is what DeepOBS's TF code read (§1.9, §8)
    "cifar100": {"cifar100_offset_bug": (True, False)},
    "tolstoi": {"split_rule": ("ceil", "floor"), "newlines": ("keep", "universal")},
}
"""Parse options per data set (the first value is the default). They change the converted splits, so each value
has its own cache file: a boolean option adds its name to the cache key when true (the CIFAR-100 keys of protocol
version 1: ``splits`` = parsed correctly, ``splits-cifar100_offset_bug`` = shifted), a string option always adds
its value (Tolstoi: ``splits-ceil-keep``; version 1's floor / universal-newline cache was plain ``splits`` and is
never read again)."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir`` if given, else ``$VALLEY_DATA``, else ``~/.cache/valley`` (user-expanded)."""
    chosen = data_dir if data_dir is not None else os.environ.get("VALLEY_DATA") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def dataset_root(dataset: str, data_dir: str | Path | None = None, size: str = "full") -> Path:
    base = resolve_data_dir(data_dir)
    return base / dataset if size == "full" else base / "smoke" / dataset


def _options(dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    valid = {**_COMMON_OPTIONS, **OPTIONS.get(dataset, {})}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for dataset {dataset}; valid: {', '.join(valid)}")
    merged = {key: choices[0] for key, choices in valid.items()} | options
    for key, value in merged.items():
        choices = valid[key]
        if type(value) is not type(choices[0]) or value not in choices:
            raise ValueError(f"option {key} must be one of {', '.join(_show(c) for c in choices)}, got {value!r}")
    return merged


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cache_key(dataset: str, size: str, options: dict[str, Any]) -> str:
    parts = ["splits" if size == "full" else f"splits-smoke{fake.VERSION}"]
    for key in OPTIONS.get(dataset, {}):
        value = options[key]
        if isinstance(value, bool):
            parts += [key] if value else []
        else:
            parts.append(str(value))
    return "-".join(parts)


def train_file_sizes(dataset: str, size: str = "full") -> tuple[int, ...]:
    """Records per file of the training data as DeepOBS's TF pipeline reads them, in canonical order (``valid`` +
    ``train`` of ``load``): CIFAR-10 five, SVHN six converted binaries, one file for the other image sets."""
    if dataset not in DATASETS or dataset == "tolstoi":
        raise ValueError(f"no training files for dataset {dataset!r}")
    return build.layout(dataset, size).file_sizes()


def load(dataset: str, data_dir: str | Path | None = None, size: str = "full", **options: Any) -> Splits:
    """The train / valid / test splits of ``dataset`` (§1.9) as CPU tensors; built once, then read from the cache.

    Options: ``download`` (default true: fetch missing files; false: raise ``DataMissingError`` with URL and path);
    ``cifar100``: ``cifar100_offset_bug`` (default true: DeepOBS's one-byte image shift; false parses correctly);
    ``tolstoi``: ``split_rule`` (``ceil`` default, as ``_tolstoi_preprocess.py``; ``floor``) and ``newlines``
    (``keep`` default, as its ``codecs.open``; ``universal`` translates ``\\r\\n`` and ``\\r``).
    Raises ``DataMissingError`` / ``ChecksumError`` / ``DataFormatError`` with a one-line message.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    if size not in SIZES:
        raise ValueError(f"invalid size {size!r}; valid: {', '.join(SIZES)}")
    opts = _options(dataset, options)
    root = dataset_root(dataset, data_dir, size)
    path = cache.cache_file(root, _cache_key(dataset, size, opts))
    splits = cache.read(path)
    if splits is not None:
        return splits
    with cache.locked(root):
        splits = cache.read(path)  # another process may have built it while we waited for the lock
        if splits is not None:
            return splits
        raw = root / "raw"
        if size == "smoke":
            fake.ensure(dataset, raw)
            verdicts = {"generated": f"smoke v{fake.VERSION}"}
        else:
            verdicts = download.ensure_dataset(dataset, raw, allow_download=opts["download"])
        parse_options = {k: v for k, v in opts.items() if k in OPTIONS.get(dataset, {})}
        splits = build.build(dataset, raw, size, **parse_options)
        cache.write(path, splits, {"dataset": dataset, "size": size, "options": parse_options,
                                   "verified": verdicts})
    return splits
