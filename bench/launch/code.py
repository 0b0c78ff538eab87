"""Which code a task runs: the code of its submission, never a mix of versions within one sweep.

At submission the code of this checkout (the packages ``bench``, ``problems``, ``optimizers`` and ``conf/``) is
fingerprinted — a hash of every file's path and bytes — together with the versions of the libraries that change
results (Python, torch, numpy, scipy, optuna, submitit, pandas, pyarrow) and the interpreter. ``code=snapshot``
(the default) copies those files into ``sweeps/<id>/code/<fingerprint>/`` and tasks run with that copy first on
``PYTHONPATH``, so editing or checking out another branch while a sweep runs changes nothing for it, requeued tasks
included. ``code=checkout`` runs this checkout in place. Either way a task starts by fingerprinting the code it
actually imported and the libraries it loaded; if they differ from the submission's, it refuses with one line
(``CodeChanged``) instead of running — a requeued task never silently mixes code versions.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

PACKAGES = ("bench", "problems", "optimizers", "conf")
LIBRARIES = ("torch", "numpy", "scipy", "optuna", "submitit", "pandas", "pyarrow")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis"}


class CodeChanged(RuntimeError):
    """The code or libraries a task would run differ from its submission's; the message is one line."""


def repo_root() -> Path:
    """The directory holding the imported ``bench`` package (a checkout, or a snapshot)."""
    import bench

    return Path(bench.__file__).resolve().parent.parent


def _files(root: Path) -> list[Path]:
    out = []
    for pkg in PACKAGES:
        base = root / pkg
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                    continue
                out.append(Path(dirpath) / name)
    return out


def fingerprint(root: Path | None = None) -> str:
    """Hash of the code's files (relative path + bytes), 16 hex digits."""
    root = (root or repo_root()).resolve()
    h = hashlib.sha256()
    for path in _files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def libraries() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def describe(mode: str) -> dict[str, Any]:
    """What a submission records about its code (see :func:`verify`)."""
    from bench.train import git_commit

    root = repo_root()
    return {"mode": mode, "fingerprint": fingerprint(root), "libraries": libraries(), "checkout": str(root),
            "git_commit": git_commit(), "python": sys.executable}


def snapshot(code: dict[str, Any], sweep_root: Path) -> Path:
    """Copy the checkout's code into the sweep (once per fingerprint); returns the snapshot's root."""
    target = sweep_root / "code" / code["fingerprint"]
    if (target / ".complete").exists():
        return target
    source = Path(code["checkout"])
    tmp = sweep_root / "code" / f".{code['fingerprint']}.{uuid.uuid4().hex}.tmp"
    try:
        for path in _files(source):
            dest = tmp / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        if fingerprint(tmp) != code["fingerprint"]:
            raise CodeChanged(f"the checkout {source} changed while it was being copied; submit again")
        (tmp / ".complete").write_text(code["fingerprint"] + "\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another submitter made the same snapshot meanwhile
            if not (target / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def code_root(code: dict[str, Any], sweep_root: Path) -> Path:
    """Where a task of this submission imports its code from."""
    if code["mode"] == "snapshot":
        return sweep_root / "code" / code["fingerprint"]
    return Path(code["checkout"])


def verify(code: dict[str, Any]) -> None:
    """Raise :class:`CodeChanged` (one line) unless this process runs the submission's code and libraries."""
    root = repo_root()
    found = fingerprint(root)
    if found != code["fingerprint"]:
        raise CodeChanged(f"code changed under this sweep: it was submitted with code {code['fingerprint']}, this task "
                          f"imports {root} whose code is {found}; restore it, or cancel and submit the sweep again "
                          "(valley-cancel, valley -m ...)")
    libs = libraries()
    changed = [f"{k} {v}->{libs.get(k)}" for k, v in code["libraries"].items() if libs.get(k) != v]
    if changed:
        raise CodeChanged(f"libraries changed under this sweep ({', '.join(changed)}); restore them, or cancel and "
                          "submit the sweep again")


def task_environment(code: dict[str, Any], sweep_root: Path) -> dict[str, str]:
    """Environment variables a task needs to import its submission's code (and record its commit)."""
    root = code_root(code, sweep_root)
    env = {"PYTHONPATH": str(root), "VALLEY_GIT_COMMIT": code.get("git_commit") or ""}
    return env
