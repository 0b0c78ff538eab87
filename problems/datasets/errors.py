"""Errors of the data layer. Each message is one line a user can act on (what, where, what to do)."""
from __future__ import annotations


class DataError(RuntimeError):
    """Base class: anything that prevents a data set from being loaded."""


class DataMissingError(DataError):
    """A source file is absent and could not be downloaded (no network, host gone, download disabled)."""


class ChecksumError(DataError):
    """A file's MD5 differs from the published one: corrupted or truncated, never parsed."""


class DataFormatError(DataError):
    """A file has the right name but not the structure of the original format (wrong magic, sizes, members)."""
