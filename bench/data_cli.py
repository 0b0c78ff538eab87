"""``valley-data``: fetch, verify and convert the DeepOBS data sets, or report what is present.

    valley-data download [DATASET ...]   fetch missing files (resuming partial ones), verify MD5s, build the caches
    valley-data status [DATASET ...]     per file: present / verified / missing (with its URL); per data set: cache
    --data-dir DIR                       default: $VALLEY_DATA, else ~/.cache/valley
    --size smoke                         the generated small data sets instead of the real ones

No DATASET means all six. Errors are one line each (``valley-data: error: ...``). Exit codes: 0 success (for
``status``: every listed data set is ready to load), 1 a data set failed or is not ready, 2 bad command line.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from problems import datasets
from problems.datasets import download, fake, sources
from problems.datasets.errors import DataError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valley-data", description="Download and check the DeepOBS data sets.")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $VALLEY_DATA or ~/.cache/valley)")
    parser.add_argument("--size", choices=datasets.SIZES, default="full", help="full data or generated smoke data")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("download", "fetch, verify and convert"), ("status", "show what is present and valid")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("datasets", nargs="*", metavar="DATASET",
                         help=f"any of {', '.join(sources.DATASETS)} (default: all)")
    return parser


def _download(names: Sequence[str], data_dir: str | None, size: str) -> int:
    failed = 0
    for name in names:
        try:
            splits = datasets.load(name, data_dir, size=size)
        except DataError as err:
            print(f"valley-data: error: {name}: {err}", file=sys.stderr)
            failed += 1
            continue
        counts = ", ".join(f"{split} {len(x)}" for split, (x, _) in splits.items())
        print(f"{name}: ready ({counts}) in {datasets.dataset_root(name, data_dir, size)}")
    return 1 if failed else 0


def _file_status(remote: sources.RemoteFile, raw: Path) -> tuple[bool, str]:
    path = raw / remote.name
    if path.exists():
        try:
            return True, download.verify(remote, path)
        except DataError as err:
            return False, f"INVALID: {err}"
    part = path.with_name(path.name + ".part")
    if part.exists():
        return False, f"partial download ({part.stat().st_size} bytes; `valley-data download` resumes it)"
    return False, f"missing (from {remote.urls[0]})"


def _status(names: Sequence[str], data_dir: str | None, size: str) -> int:
    not_ready = 0
    for name in names:
        root = datasets.dataset_root(name, data_dir, size)
        caches = sorted(p.name for p in (root / "cache").glob("*.pt")) if (root / "cache").is_dir() else []
        print(f"{name}  ({root})")
        raw_ok = True
        if size == "smoke":
            generated = (root / "raw" / f".smoke-v{fake.VERSION}").exists()
            raw_ok = generated
            print(f"  raw/        {'generated' if generated else 'not generated yet (made on first load)'}")
        else:
            for remote in sources.files(name):
                ok, text = _file_status(remote, root / "raw")
                raw_ok &= ok
                print(f"  raw/{remote.name:<28} {text}")
        print(f"  cache/      {', '.join(caches) if caches else 'none'}")
        not_ready += not (raw_ok or caches)
    return 1 if not_ready else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.datasets if name not in sources.DATASETS]
    if unknown:
        parser.error(f"unknown dataset {', '.join(unknown)}; valid: {', '.join(sources.DATASETS)}")
    logging.basicConfig(level=logging.INFO, format="valley-data: %(message)s", stream=sys.stderr)
    names = args.datasets or list(sources.DATASETS)
    if args.command == "download":
        return _download(names, args.data_dir, args.size)
    return _status(names, args.data_dir, args.size)


if __name__ == "__main__":
    sys.exit(main())
