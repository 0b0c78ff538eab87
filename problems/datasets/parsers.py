"""Parsers of the original file formats, returning numpy arrays in the harness layout (images uint8 NCHW).

Each parser reads exactly what DeepOBS's TF pipeline reads (§1.9) and rejects anything else with a
``DataFormatError`` naming the file: IDX gz (MNIST, Fashion-MNIST), the CIFAR *binary* archives (records of label
byte(s) + 3072 bytes channel-major R, G, B planes, rows top to bottom), the SVHN MATLAB v5 files and the Tolstoi
text. Nothing here decides splits (``build.py`` does).
"""
from __future__ import annotations

import collections
import gzip
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from problems.datasets.errors import DataFormatError

IMAGE_BYTES = 3 * 32 * 32
_READ_ERRORS = (OSError, EOFError, tarfile.TarError, zlib.error)


# ------------------------------------------------------------------------------------------------------- IDX (MNIST)
def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzip-compressed), e.g. ``train-images-idx3-ubyte.gz`` → array of its shape.

    Format (LeCun's page): magic = 0x00 0x00, type 0x08 (ubyte), number of dimensions; then each dimension as a
    big-endian uint32; then the data in C order.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except _READ_ERRORS as err:
        raise DataFormatError(f"{path}: not a readable gzip file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataFormatError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) != header + int(np.prod(shape)):
        raise DataFormatError(f"{path}: IDX header announces shape {shape} but holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_images(path: Path) -> np.ndarray:
    """IDX image file (N, 28, 28) → uint8 (N, 1, 28, 28)."""
    array = read_idx(path)
    if array.ndim != 3:
        raise DataFormatError(f"{path}: expected a 3-d IDX image file, got shape {array.shape}")
    return array[:, None, :, :]


def read_idx_labels(path: Path) -> np.ndarray:
    """IDX label file (N,) → int64 (N,)."""
    array = read_idx(path)
    if array.ndim != 1:
        raise DataFormatError(f"{path}: expected a 1-d IDX label file, got shape {array.shape}")
    return array.astype(np.int64)


# ----------------------------------------------------------------------------------------------------- CIFAR binary
def decode_records(raw: bytes, record_bytes: int, label_index: int, image_offset: int,
                   source: str) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-length CIFAR records → (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    The 3072 image bytes are channel-major ("depth major": 1024 R, 1024 G, 1024 B, each 32 rows of 32), which is
    already NCHW; DeepOBS transposes to HWC for TF, we keep CHW for PyTorch.
    """
    if len(raw) % record_bytes:
        raise DataFormatError(f"{source}: {len(raw)} bytes is not a whole number of {record_bytes}-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record_bytes)
    images = records[:, image_offset:image_offset + IMAGE_BYTES]
    if images.shape[1] != IMAGE_BYTES:
        raise DataFormatError(f"{source}: record too short for an image at byte offset {image_offset}")
    return images.reshape(-1, 3, 32, 32), records[:, label_index].astype(np.int64)


def _tar_members(path: Path, suffix: str) -> dict[str, bytes]:
    """Bytes of every ``*<suffix>`` member of a tar.gz, keyed by base name without the suffix."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                name = PurePosixPath(member.name).name
                if member.isfile() and name.endswith(suffix):
                    handle = archive.extractfile(member)
                    assert handle is not None
                    found[name[: -len(suffix)]] = handle.read()
    except _READ_ERRORS as err:
        raise DataFormatError(f"{path}: not a readable tar.gz archive ({err})") from None
    return found


def _require(members: dict[str, bytes], names: Sequence[str], path: Path) -> None:
    missing = [n for n in names if n not in members]
    if missing:
        raise DataFormatError(f"{path}: archive lacks {', '.join(n + '.bin' for n in missing)} "
                              f"(has {', '.join(sorted(members)) or 'no .bin member'})")


CIFAR10_MEMBERS = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def read_cifar10_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cifar-10-binary.tar.gz`` → {``data_batch_1`` … ``data_batch_5``, ``test_batch``: (images, labels)}.

    Record: 1 label byte (0–9) + 3072 image bytes.
    """
    members = _tar_members(path, ".bin")
    _require(members, CIFAR10_MEMBERS, path)
    return {name: decode_records(members[name], 1 + IMAGE_BYTES, 0, 1, f"{path}:{name}.bin")
            for name in CIFAR10_MEMBERS}


def read_cifar100_archive(path: Path, offset_bug: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cifar-100-binary.tar.gz`` → {``train``, ``test``: (images, fine labels)}.

    Record: coarse label byte, fine label byte, 3072 image bytes; the label is the fine one (byte 1), as DeepOBS.
    ``offset_bug=True`` reproduces DeepOBS's TF parser, which slices the image from byte 1 instead of 2 (§1.9): the
    first "pixel" is the fine-label byte, every later byte moves one position on (across channel boundaries) and the
    last blue pixel is dropped.
    """
    members = _tar_members(path, ".bin")
    _require(members, ("train", "test"), path)
    offset = 1 if offset_bug else 2
    return {name: decode_records(members[name], 2 + IMAGE_BYTES, 1, offset, f"{path}:{name}.bin")
            for name in ("train", "test")}


def check_cifar100_archive(path: Path, n_train: int = 50_000, n_test: int = 10_000) -> None:
    """Structural check used in place of the UNCONFIRMED CIFAR-100 MD5 (``download.verify``).

    Decompresses the whole file (gzip checks its CRC-32 and length trailer: truncation or corruption fails), then
    requires ``train.bin`` and ``test.bin`` with the published record counts and fine labels < 100.
    """
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except _READ_ERRORS as err:
        raise DataFormatError(f"{path}: gzip stream broken ({err})") from None
    members = _tar_members(path, ".bin")
    _require(members, ("train", "test"), path)
    for name, count in (("train", n_train), ("test", n_test)):
        if len(members[name]) != count * (2 + IMAGE_BYTES):
            raise DataFormatError(f"{path}: {name}.bin has {len(members[name])} bytes, "
                                  f"expected {count} records of {2 + IMAGE_BYTES}")
        fine = np.frombuffer(members[name], dtype=np.uint8).reshape(count, -1)[:, 1]
        if fine.max() >= 100:
            raise DataFormatError(f"{path}: {name}.bin has fine labels >= 100")


# -------------------------------------------------------------------------------------------------------- SVHN .mat
def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5) → (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    ``X`` is 32×32×3×N (row, column, channel, example); ``y`` is N×1 with digits 1–9 and **10 for the digit 0**,
    mapped to 0 as DeepOBS's ``_svhn_preprocess.py`` (and torchvision) do. Records stay in file order.
    """
    import scipy.io  # local: scipy's import is slow and only SVHN needs it

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except NotImplementedError:
        raise DataFormatError(f"{path}: MATLAB v7.3 (HDF5) file; the original SVHN files are MATLAB v5") from None
    except (ValueError, OSError, TypeError) as err:
        raise DataFormatError(f"{path}: not a readable MATLAB v5 file ({err})") from None
    if "X" not in mat or "y" not in mat:
        raise DataFormatError(f"{path}: lacks the variables X and y")
    x, y = mat["X"], mat["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataFormatError(f"{path}: X must be uint8 32x32x3xN, got {x.dtype} {x.shape}")
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    if labels.shape[0] != x.shape[3] or labels.min() < 1 or labels.max() > 10:
        raise DataFormatError(f"{path}: y must hold N={x.shape[3]} labels in 1..10")
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


# ---------------------------------------------------------------------------------------------------------- Tolstoi
def delete_lines(raw: bytes, deletions: Sequence[tuple[int, int]]) -> bytes:
    """``sed -i 'A,Bd'`` applied for each (A, B) in turn: lines are ``\\n``-terminated (a ``\\r`` stays in its line),
    1-based, inclusive; a range past the end deletes to the end, as sed does."""
    parts = raw.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    for first, last in deletions:
        del lines[first - 1:last]
    return b"".join(lines)


NEWLINES = ("keep", "universal")


def decode_text(raw: bytes, newlines: str = "keep") -> str:
    """Bytes → text, UTF-8 (a file that is not UTF-8 is a format error).

    ``newlines="keep"`` is what ``_tolstoi_preprocess.py`` reads: ``codecs.open(input_file, "r", encoding="utf-8")``
    always opens the file in binary mode (Python's ``codecs`` documentation: "no automatic conversion of '\\n' is
    done on reading"), so a ``\\r\\n`` line end stays two characters and ``\\r`` is in the vocabulary.
    ``"universal"`` translates ``\\r\\n`` and lone ``\\r`` to ``\\n`` (``open(path, "r")``; this harness's rule
    in protocol version 1).
    """
    if newlines not in NEWLINES:
        raise ValueError(f"invalid newlines={newlines!r}: must be one of {', '.join(NEWLINES)}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"Tolstoi text is not UTF-8 ({err})") from None
    return text if newlines == "keep" else text.replace("\r\n", "\n").replace("\r", "\n")


def char_vocabulary(text: str) -> list[str]:
    """Characters by decreasing frequency; equal counts keep the order of first occurrence in the text.

    This is what ``_tolstoi_preprocess.py`` (after char-rnn-tensorflow's ``TextLoader``) computes with
    ``sorted(collections.Counter(text).items(), key=lambda x: -x[1])``: on Python >= 3.7 a Counter iterates in
    first-insertion order and ``sorted`` is stable.
    """
    counts = collections.Counter(text)
    return [char for char, _ in sorted(counts.items(), key=lambda item: -item[1])]


def encode_chars(text: str, vocabulary: Sequence[str]) -> np.ndarray:
    """Text → int64 character ids (index in ``vocabulary``), via a code-point lookup table (no Python loop)."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_points = np.array([ord(c) for c in vocabulary], dtype=np.int64)
    table = np.full(int(max(vocab_points.max(initial=0), points.max(initial=0))) + 1, -1, dtype=np.int64)
    table[vocab_points] = np.arange(len(vocabulary))
    ids = table[points]
    if ids.size and ids.min() < 0:
        raise DataFormatError("text holds characters outside the vocabulary")
    return ids


SPLIT_RULES = ("ceil", "floor")


def train_size(n: int, rule: str = "ceil", test_size: float = 0.2) -> int:
    """Length of ``train.npy`` for ``n`` char ids. ``ceil`` is ``_tolstoi_preprocess.py`` verbatim,
    ``int(np.ceil((1.0 - test_size) * np.size(array)))``; ``floor`` is ``int(0.8 · n)`` (this harness's rule in
    protocol version 1). They differ by one char unless 0.8·n is an integer."""
    if rule not in SPLIT_RULES:
        raise ValueError(f"invalid split_rule={rule!r}: must be one of {', '.join(SPLIT_RULES)}")
    fraction = (1.0 - test_size) * n
    return int(np.ceil(fraction)) if rule == "ceil" else int(fraction)


def split_train_test(ids: np.ndarray, rule: str = "ceil") -> tuple[np.ndarray, np.ndarray]:
    """DeepOBS's 80/20 split of the id sequence into ``train.npy`` / ``test.npy``: the first ``train_size`` ids are
    train, the rest test."""
    cut = train_size(ids.shape[0], rule)
    return ids[:cut], ids[cut:]
