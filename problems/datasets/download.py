"""Fetch source files with retries and HTTP-Range resume, verify their MD5, place them atomically.

Why not ``torchvision.datasets.*(download=True)``: torchvision is not a dependency, it fetches the *python-pickle*
CIFAR archives (DeepOBS TF reads the *binary* ones, and the CIFAR-100 byte-offset quirk of §1.9 only exists in the
binary record layout) and it cannot resume a partial download. Here a download goes to ``<name>.part``; an
interrupted one is continued with ``Range: bytes=<size>-``; only a file whose MD5 matches is renamed to its final
name, so a corrupted or truncated file is never parsed. Without network the error says which file is missing,
where it comes from and where to put it by hand.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Sequence

from problems.datasets import parsers, sources
from problems.datasets.errors import ChecksumError, DataFormatError, DataMissingError
from problems.datasets.sources import RemoteFile

log = logging.getLogger("valley.data")

USER_AGENT = "valley-data/0.1 (+https://github.com/fsschneider/DeepOBS replication)"
CHUNK = 1 << 20

STRUCTURE_CHECKS: dict[str, Callable[[Path], None]] = {"cifar100_binary": parsers.check_cifar100_archive}
"""Structural checks used where the published MD5 is UNCONFIRMED: they read the whole archive (gzip verifies its
CRC-32 and length trailer, so truncation and bit flips are caught) and check members and record counts."""


class IncompleteDownload(OSError):
    """The connection ended before the announced number of bytes arrived (resumable)."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_range(header: str | None) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` → (START, TOTAL or None when ``*``)."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    if match is None:
        raise IncompleteDownload(f"unusable Content-Range header {header!r}")
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def fetch(url: str, part: Path, *, timeout: float = 60.0) -> None:
    """Download ``url`` into ``part``, continuing an existing partial file with an HTTP Range request.

    A server that ignores the Range header answers 200 with the whole body: the partial file is then rewritten from
    the start. 416 (range not satisfiable) means nothing lies beyond the partial file: it is complete or too long,
    which the MD5 check decides. Raises ``IncompleteDownload`` when fewer bytes arrive than announced.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return
        raise
    with response:
        if offset and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise IncompleteDownload(f"server resumed at byte {start}, expected {offset}")
            mode = "ab"
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
        with open(part, mode) as f:
            shutil.copyfileobj(response, f, CHUNK)
    size = part.stat().st_size
    if total is not None and size != total:
        raise IncompleteDownload(f"got {size} of {total} bytes")


def verify(remote: RemoteFile, path: Path) -> str:
    """Check ``path`` against the published MD5; return how it was verified, raise ``ChecksumError`` otherwise."""
    if remote.md5 is None:
        return "no published MD5 (content checked when parsed)"
    actual = md5sum(path)
    if actual == remote.md5:
        return "md5 ok" if remote.md5_confirmed else f"md5 ok (confirms the spec's UNCONFIRMED value {remote.md5})"
    if not remote.md5_confirmed and remote.structure is not None:
        try:
            STRUCTURE_CHECKS[remote.structure](path)
        except DataFormatError as err:
            raise ChecksumError(f"{path}: MD5 {actual} differs from the (unconfirmed) published {remote.md5} and the "
                                f"archive is broken: {err}") from None
        note = (f"md5 {actual} differs from the spec's UNCONFIRMED value {remote.md5}; "
                f"archive verified structurally (gzip CRC, members, record counts)")
        log.warning("%s: %s", path, note)
        return note
    raise ChecksumError(f"{path}: MD5 {actual} != published {remote.md5} (corrupted or truncated file); "
                        f"delete it and download again, or put a good copy there")


def _retryable_status(code: int) -> bool:
    return code >= 500 or code in (408, 429)


def download(remote: RemoteFile, dest: Path, *, retries: int = 3, backoff: float = 2.0, timeout: float = 60.0) -> str:
    """Download ``remote`` to ``dest`` (trying its URLs in order), verify, rename atomically; return the verdict.

    Per URL up to ``retries`` attempts with exponential back-off; each attempt resumes the ``.part`` file. A complete
    file with the wrong MD5 is deleted and fetched again from scratch (it counts as an attempt). Raises
    ``DataMissingError`` when no URL delivered, ``ChecksumError`` when every delivered copy was corrupt.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    checksum_error: ChecksumError | None = None
    for url in remote.urls:
        for attempt in range(retries):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                log.info("downloading %s from %s%s", remote.name, url,
                         f" (resuming at byte {part.stat().st_size})" if part.exists() else "")
                fetch(url, part, timeout=timeout)
            except urllib.error.HTTPError as err:
                failures.append(f"{url}: HTTP {err.code} {err.reason}")
                if _retryable_status(err.code):
                    continue
                break  # 403/404...: this URL will not work, try the next one
            except (OSError, HTTPException) as err:  # no network, timeout, reset, short read: retry (resuming)
                failures.append(f"{url}: {err}")
                if isinstance(getattr(err, "reason", None), socket.gaierror):
                    break  # the host name does not resolve (offline or host gone): retrying will not help
                continue
            try:
                verdict = verify(remote, part)
            except ChecksumError as err:
                checksum_error = err
                part.unlink(missing_ok=True)
                continue
            os.replace(part, dest)
            log.info("%s: %s", dest, verdict)
            return verdict
    if checksum_error is not None:
        raise ChecksumError(f"every downloaded copy of {remote.name} was corrupt; last: {checksum_error}")
    reason = failures[-1] if failures else "no URL"
    mirrors = f" (or {', '.join(remote.urls[1:])})" if len(remote.urls) > 1 else ""
    raise DataMissingError(f"{remote.name} is missing and could not be downloaded ({reason}); download it by hand "
                           f"from {remote.urls[0]}{mirrors} and save it as {dest}")


def ensure_files(remotes: Sequence[RemoteFile], raw_dir: Path, *, allow_download: bool = True,
                 **download_options: float) -> dict[str, str]:
    """Make every file of ``remotes`` present and verified in ``raw_dir``; return {file name: verdict}.

    A present file is verified (never silently replaced: a corrupt one raises ``ChecksumError`` naming it). A missing
    one is downloaded, or with ``allow_download=False`` reported by ``DataMissingError`` with its URL and target path.
    """
    verdicts: dict[str, str] = {}
    for remote in remotes:
        dest = raw_dir / remote.name
        if dest.exists():
            verdicts[remote.name] = verify(remote, dest)
        elif allow_download:
            verdicts[remote.name] = download(remote, dest, **download_options)  # type: ignore[arg-type]
        else:
            raise DataMissingError(f"{remote.name} is missing (downloads disabled); download it from "
                                   f"{remote.urls[0]} and save it as {dest}")
    return verdicts


def ensure_dataset(dataset: str, raw_dir: Path, *, allow_download: bool = True) -> dict[str, str]:
    """``ensure_files`` for the official files of ``dataset`` (§1.9)."""
    return ensure_files(sources.files(dataset), raw_dir, allow_download=allow_download)
