"""Converted splits on disk: one ``torch.save`` file per (data set, size, parse options), written atomically.

A data set is parsed once; every later ``load`` reads only this file (uint8 images and int64 ids/labels: the full
SVHN cache is ~0.3 GB, loaded in well under a second from the page cache). Writes go to a unique temporary name and
are renamed into place, and conversion runs under an exclusive ``flock`` on the data set's directory, so parallel
runs of a sweep never read a half-written file nor download the same file twice.
"""
from __future__ import annotations

import fcntl
import logging
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from problems.datasets.build import Splits

log = logging.getLogger("valley.data")

CACHE_FORMAT = 1
"""Bumped when the stored layout or any parser/split rule changes, so stale caches are rebuilt, not reused."""


def cache_file(root: Path, key: str) -> Path:
    return root / "cache" / f"{key}-f{CACHE_FORMAT}.pt"


def read(path: Path) -> Splits | None:
    """The cached splits, or None when absent or unreadable (an unreadable cache is rebuilt, with a warning)."""
    if not path.exists():
        return None
    try:
        payload: dict[str, Any] = torch.load(path, weights_only=True)
        splits = payload["splits"]
        if payload.get("format") != CACHE_FORMAT or set(splits) != {"train", "valid", "test"}:
            raise ValueError("unexpected content")
    except Exception as err:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        log.warning("ignoring unreadable cache %s (%s); rebuilding", path, err)
        return None
    return {name: (x, y) for name, (x, y) in splits.items()}


def write(path: Path, splits: Splits, meta: dict[str, Any]) -> None:
    """Save atomically: a crash leaves either no cache or the complete one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        torch.save({"format": CACHE_FORMAT, "meta": meta, "splits": splits}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file under a temporary name and rename it into place (used for generated smoke files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``root`` (held while downloading / converting one data set)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
