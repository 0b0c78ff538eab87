"""Writers of the original file formats, and the deterministic ``size="smoke"`` data sets built with them.

Smoke data are small files in *exactly* the formats of the real downloads (IDX gz, CIFAR binary tar.gz, SVHN MATLAB
v5, plain text), so a smoke run exercises the same parse → split → cache path as a full one. Images are
class-dependent templates plus noise (a model can fit them, so smoke curves go down); labels cycle through all
classes. The writers are also what the tests use to build files of known content.
"""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Mapping

import numpy as np

from problems.datasets import build
from problems.datasets.cache import write_bytes_atomic

VERSION = 2
"""Bump when generated content changes: the marker and the cache key carry it, so old smoke data are replaced.
2: the Tolstoi text has CRLF line ends (as Project Gutenberg's) and 20 003 chars, so 0.8·n is not an integer."""

_SEEDS = {"mnist": 1, "fmnist": 2, "cifar10": 3, "cifar100": 4, "svhn": 5, "tolstoi": 6}


# ------------------------------------------------------------------------------------------------------ writers
def idx_bytes(array: np.ndarray) -> bytes:
    """Unsigned-byte IDX encoding of ``array`` (magic 0x0000 08 ndim, big-endian uint32 dims, C-order data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    write_bytes_atomic(path, gzip.compress(idx_bytes(array), mtime=0))


def _tar_gz(members: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def cifar_records(images: np.ndarray, *labels: np.ndarray) -> bytes:
    """Records of ``labels`` bytes followed by the 3072 channel-major bytes of each NCHW image."""
    n = images.shape[0]
    columns = [np.asarray(label, dtype=np.uint8).reshape(n, 1) for label in labels]
    return np.concatenate([*columns, np.ascontiguousarray(images, dtype=np.uint8).reshape(n, -1)], axis=1).tobytes()


def write_cifar10_archive(path: Path, batches: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """``cifar-10-binary.tar.gz`` layout: ``cifar-10-batches-bin/<name>.bin`` per (images, labels) batch."""
    members = {f"cifar-10-batches-bin/{name}.bin": cifar_records(x, y) for name, (x, y) in batches.items()}
    members["cifar-10-batches-bin/batches.meta.txt"] = b"".join(f"class{i}\n".encode() for i in range(10))
    write_bytes_atomic(path, _tar_gz(members))


def write_cifar100_archive(path: Path, parts: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """``cifar-100-binary.tar.gz`` layout: ``cifar-100-binary/{train,test}.bin`` of (images, coarse, fine)."""
    members = {f"cifar-100-binary/{name}.bin": cifar_records(x, coarse, fine)
               for name, (x, coarse, fine) in parts.items()}
    members["cifar-100-binary/fine_label_names.txt"] = b"".join(f"fine{i}\n".encode() for i in range(100))
    write_bytes_atomic(path, _tar_gz(members))


def write_svhn_mat(path: Path, images: np.ndarray, svhn_labels: np.ndarray) -> None:
    """SVHN ``.mat`` (MATLAB v5): X = 32×32×3×N uint8 from NCHW images, y = N×1 with SVHN labels (10 = digit 0)."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"X": np.asarray(images, dtype=np.uint8).transpose(2, 3, 1, 0),
                              "y": np.asarray(svhn_labels, dtype=np.uint8).reshape(-1, 1)}, format="5")
    write_bytes_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------------- contents
def class_images(n: int, channels: int, side: int, classes: int, rng: np.random.Generator,
                 templates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 NCHW images (0.6 · class template + 0.4 · noise) and int64 labels cycling through the classes."""
    if templates is None:
        templates = rng.integers(0, 256, size=(classes, channels, side, side)).astype(np.float64)
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    noise = rng.integers(0, 256, size=(n, channels, side, side))
    return (0.6 * templates[labels] + 0.4 * noise).astype(np.uint8), labels


_WORDS = ("the of and to a in he that was his it with had not at her she as on him for but is said all by be you "
          "they from which were prince what so this pierre there one would have me natasha who been their when "
          "an or could them no if now only andrew count more princess face my up out into about will said rostov "
          "eyes went french man than how again room moscow war peace army emperor old little time").split()


def smoke_text(n_chars: int, rng: np.random.Generator, newline: str = "\n") -> str:
    """Exactly ``n_chars`` of pseudo-prose: Zipf-distributed words, capitalised sentences, lines of ≤ 70 chars
    ended by ``newline``."""
    weights = 1.0 / np.arange(1, len(_WORDS) + 1)
    pieces: list[str] = []
    line, total, start = 0, 0, True
    while total < n_chars:
        word = _WORDS[rng.choice(len(_WORDS), p=weights / weights.sum())]
        word = word.capitalize() if start else word
        end = rng.choice(["", "", "", "", ",", ".", ";", "?", "!"])
        start = end in (".", "?", "!")
        token = word + end
        sep = newline if line + len(token) > 70 else " "
        line = 0 if sep == newline else line + len(token) + 1
        pieces.append(token + sep)
        total += len(token) + len(sep)
    return "".join(pieces)[:n_chars]


# --------------------------------------------------------------------------------------------------- smoke files
def generate(dataset: str, raw: Path) -> None:
    """Write the smoke files of ``dataset`` into ``raw``, with the record counts of ``build.SMOKE``."""
    lay = build.SMOKE[dataset]
    rng = np.random.default_rng(_SEEDS[dataset])
    if dataset in ("mnist", "fmnist"):
        templates = rng.integers(0, 256, size=(10, 1, 28, 28)).astype(np.float64)
        for prefix, n in (("train", lay.train_file), ("t10k", lay.test)):
            x, y = class_images(n, 1, 28, 10, rng, templates)
            write_idx_gz(raw / f"{prefix}-images-idx3-ubyte.gz", x[:, 0])
            write_idx_gz(raw / f"{prefix}-labels-idx1-ubyte.gz", y)
    elif dataset == "cifar10":
        templates = rng.integers(0, 256, size=(10, 3, 32, 32)).astype(np.float64)
        per_file = lay.train_file // 5
        batches = {f"data_batch_{i}": class_images(per_file, 3, 32, 10, rng, templates) for i in range(1, 6)}
        batches["test_batch"] = class_images(lay.test, 3, 32, 10, rng, templates)
        write_cifar10_archive(raw / "cifar-10-binary.tar.gz", batches)
    elif dataset == "cifar100":
        templates = rng.integers(0, 256, size=(100, 3, 32, 32)).astype(np.float64)
        parts = {}
        for name, n in (("train", lay.train_file), ("test", lay.test)):
            x, fine = class_images(n, 3, 32, 100, rng, templates)
            parts[name] = (x, fine // 5, fine)
        write_cifar100_archive(raw / "cifar-100-binary.tar.gz", parts)
    elif dataset == "svhn":
        templates = rng.integers(0, 256, size=(10, 3, 32, 32)).astype(np.float64)
        for name, n in (("train", lay.train_file), ("test", lay.test)):
            x, y = class_images(n, 3, 32, 10, rng, templates)
            write_svhn_mat(raw / f"{name}_32x32.mat", x, np.where(y == 0, 10, y))
    elif dataset == "tolstoi":
        assert lay.train_file is not None
        header = "".join(f"Smoke header line {i} (removed like the Gutenberg header)\r\n" for i in (1, 2, 3))
        text = smoke_text(lay.train_file + lay.test, rng, newline="\r\n")
        write_bytes_atomic(raw / "war-and-peace.txt", (header + text).encode("utf-8"))
    else:
        raise ValueError(f"no smoke generator for {dataset!r}")


def ensure(dataset: str, raw: Path) -> None:
    """Generate the smoke files once (a version marker records completion; the caller holds the data-set lock)."""
    marker = raw / f".smoke-v{VERSION}"
    if marker.exists():
        return
    raw.mkdir(parents=True, exist_ok=True)
    generate(dataset, raw)
    marker.touch()
