"""Where each DeepOBS data set comes from: official files, mirrors, published MD5s (protocol §1.9).

The file list is DeepOBS's ``deepobs_prepare_data.sh`` (TF back-end: the *binary* CIFAR archives, the SVHN ``.mat``
files, the MNIST IDX files, the Tolstoi text). MD5s are the published ones quoted in §1.9 (torchvision resource
lists and the CIFAR download page); none is computed here. Where a host is gone the mirror comes first and the
original URL is kept as the fallback so the provenance stays visible.
"""
from __future__ import annotations

from dataclasses import dataclass

DATASETS: tuple[str, ...] = ("mnist", "fmnist", "cifar10", "cifar100", "svhn", "tolstoi")


@dataclass(frozen=True)
class RemoteFile:
    """One source file: its name on disk, URLs tried in order, and its MD5.

    ``md5_confirmed=False`` marks a value the spec flags as UNCONFIRMED: a mismatch is then not proof of corruption,
    so the downloader falls back to a structural check of the archive (``structure``, see ``download.py``) and says
    which of the two verified the file. ``md5=None``: nothing published (Tolstoi); the content is checked after
    parsing instead (vocabulary size and split lengths of DeepOBS).
    """

    name: str
    urls: tuple[str, ...]
    md5: str | None
    md5_confirmed: bool = True
    structure: str | None = None  # name of a structural check in download.STRUCTURE_CHECKS


_MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST_ORIGINAL = "http://yann.lecun.com/exdb/mnist/"  # DeepOBS's URL; the host now refuses automated downloads
_FMNIST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _mnist(name: str, md5: str) -> RemoteFile:
    return RemoteFile(name, (_MNIST_MIRROR + name, _MNIST_ORIGINAL + name), md5)


TOLSTOI_URL = "https://github.com/AllenDowney/fluent-python-notebooks/raw/master/attic/sequences/war-and-peace.txt"
TOLSTOI_ORIGINAL_URL = "http://www.gutenberg.org/files/2600/2600-0.txt"
"""Project Gutenberg's War and Peace. Not downloaded: the current Gutenberg edition has a different header and
licence block, so DeepOBS's ``sed`` line numbers (``TOLSTOI_DELETIONS``) only fit the AllenDowney copy."""

TOLSTOI_DELETIONS: tuple[tuple[int, int], ...] = ((1, 29), (5, 775), (63850, 64207))
"""``sed -i '1,29d'; sed -i '5,775d'; sed -i '63850,64207d'`` of deepobs_prepare_data.sh, applied in sequence (each
range counts lines of the previous result; 1-based, inclusive)."""

SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (
        _mnist("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        _mnist("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        _mnist("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        _mnist("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    "fmnist": (
        RemoteFile("train-images-idx3-ubyte.gz", (_FMNIST + "train-images-idx3-ubyte.gz",),
                   "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        RemoteFile("train-labels-idx1-ubyte.gz", (_FMNIST + "train-labels-idx1-ubyte.gz",),
                   "25c81989df183df01b3e8a0aad5dffbe"),
        RemoteFile("t10k-images-idx3-ubyte.gz", (_FMNIST + "t10k-images-idx3-ubyte.gz",),
                   "bef4ecab320f06d8554ea6380940ec79"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", (_FMNIST + "t10k-labels-idx1-ubyte.gz",),
                   "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    "cifar10": (
        RemoteFile("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                   "c32a1d4ab5d03f1284b67883e8d87530"),
    ),
    "cifar100": (
        # §1.9: only the prefix 03b5dce01913d6 was seen in code; the full value is UNCONFIRMED.
        RemoteFile("cifar-100-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
                   "03b5dce01913d631647c71ecec9e9cb8", md5_confirmed=False, structure="cifar100_binary"),
    ),
    "svhn": (
        RemoteFile("train_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                   "e26dedcc434d2e4c54c9b2d4a06d8373"),
        RemoteFile("test_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                   "eb5a983be6a315427106f1b164d9cef3"),
    ),
    "tolstoi": (RemoteFile("war-and-peace.txt", (TOLSTOI_URL,), None),),
}


def files(dataset: str) -> tuple[RemoteFile, ...]:
    """The source files of ``dataset``; ``ValueError`` naming the valid data sets otherwise."""
    if dataset not in SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    return SOURCES[dataset]
