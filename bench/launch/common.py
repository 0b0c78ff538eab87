"""What ``launcher=slurm`` and ``launcher=local_gpus`` share before anything is dispatched: the configs made
self-contained (absolute paths, no launcher block), the sweep's model and directory, its code, and the checks that
must pass before anything is submitted (one line each, exit code 2).
"""
from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.launch import LaunchError
from bench.launch.sweepdir import SweepDir, now
from bench.launch.work import SweepModel

NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")
STORAGE_TIMEOUT_S = 20.0


def say(line: str) -> None:
    print(f"valley: {line}", file=sys.stderr, flush=True)


def warn(line: str) -> None:
    print(f"valley: warning: {line}", file=sys.stderr, flush=True)


def launcher_block(cfgs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    blocks = {json.dumps(c.get("launcher") or {}, sort_keys=True, default=str) for c in cfgs}
    if len(blocks) != 1:
        raise LaunchError("the jobs of one sweep must share their launcher settings (do not sweep launcher.*)")
    return json.loads(blocks.pop())


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def normalise(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A config a task on another machine (another working directory) reads the same way: absolute results, data
    and journal paths; without the launcher block (how it is launched is not what it computes)."""
    out = {k: v for k, v in cfg.items() if k != "launcher"}
    if out.get("force"):
        raise LaunchError("force=true re-runs recorded runs in this process only; with a cluster launcher delete the "
                          "records to re-run, or use launcher=inline force=true")
    out["results_dir"] = _absolute(str(out.get("results_dir", "results")))
    if out.get("data_dir"):
        out["data_dir"] = _absolute(str(out["data_dir"]))
    tuning = dict(out.get("tuning") or {})
    storage = tuning.get("storage")
    if isinstance(storage, str) and storage and "://" not in storage:
        tuning["storage"] = _absolute(storage)
    if tuning:
        out["tuning"] = tuning
    out["progress"] = False
    out["dry_run"] = False
    return out


@dataclass
class Prepared:
    cfgs: list[dict[str, Any]]
    model: SweepModel
    sweep: SweepDir
    cfg_key: str
    code: dict[str, Any]


def prepare(cfgs: Sequence[Mapping[str, Any]], *, backend: str, code_mode: str, shared_fs: bool) -> Prepared:
    """Normalise, model, check and persist a sweep (nothing is dispatched here)."""
    from bench.launch import code as code_mod

    normal = [normalise(c) for c in cfgs]
    model = SweepModel(normal)
    if len(model.results_dirs) != 1:
        raise LaunchError(f"launcher={backend} needs one results_dir per sweep, got "
                          f"{', '.join(model.results_dirs)}")
    results_dir = model.results_dirs[0]
    if shared_fs:
        for what, path in [("results_dir", results_dir)] + [
                ("tuning.storage", c.tuning.storage) for c in model.cells.values() if "://" not in c.tuning.storage]:
            if _node_local(path):
                warn(f"{what} {path} is on a node-local filesystem: compute nodes of a cluster cannot share it "
                     "(fine on a single-node cluster; use a shared filesystem otherwise)")
                break
    check_storages(model)
    sweep = SweepDir.of(results_dir, model.sweep_id())
    try:
        sweep.root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LaunchError(f"cannot create {sweep.root}: {err.strerror}") from None
    meta = sweep.meta()
    if not meta:
        sweep.write_meta({"id": sweep.id, "results_dir": results_dir, "created_at": now(),
                          "command": " ".join(sys.argv[1:]), "cells": len(model.cells),
                          "singles": len(model.singles), "identities": len(model.identities())})
    cfg_key = sweep.save_configs(normal)
    code = code_mod.describe(code_mode)
    if code_mode == "snapshot":
        code_mod.snapshot(code, sweep.root)
    return Prepared(normal, model, sweep, cfg_key, code)


def _node_local(path: str) -> bool:
    p = Path(path).resolve()
    if any(str(p) == d or str(p).startswith(d + "/") for d in NODE_LOCAL):
        return True
    return _fs_type(p) in ("tmpfs", "ramfs")


def _fs_type(path: Path) -> str | None:
    best, kind = "", None
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and (str(path) == parts[1] or str(path).startswith(parts[1].rstrip("/") + "/")):
                if len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        return None
    return kind


def check_storages(model: SweepModel) -> None:
    """Every tuned cell's Optuna storage answers (a journal that can be written, a database that accepts us)."""
    storages = {(c.tuning.storage, c.tuning.journal_lock) for c in model.cells.values() if c.budget.tuned}
    for storage, lock in sorted(storages):
        error = _with_timeout(lambda: _probe(storage, lock), STORAGE_TIMEOUT_S)
        if error:
            shown = _redact(storage)
            raise LaunchError(f"tuning storage {shown} is not reachable: {error}")


def _probe(storage: str, lock: str) -> None:
    import optuna

    from bench.tuning.study import open_storage

    if "://" not in storage:
        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"{path.parent} is not writable")
    optuna.get_all_study_names(open_storage(storage, lock))


def _with_timeout(fn: Callable[[], None], timeout_s: float) -> str | None:
    box: dict[str, BaseException | None] = {"err": None}

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - reported as one line
            box["err"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return f"no answer in {timeout_s:.0f} s"
    err = box["err"]
    if err is None:
        return None
    text = " ".join(str(err).split())
    first = text.split(" (Background on this error")[0]
    return f"{type(err).__name__}: {first[:200]}"


def _redact(url: str) -> str:
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return url


def print_sweep_head(prep: Any, summary: Any, cells_complete: tuple[int, int] | None) -> None:
    """The first lines both cluster launchers print: the sweep, and when nothing went out, why."""
    print(f"sweep {prep.sweep.id}: {len(prep.model.cells)} cells"
          + (f", {len(prep.model.singles)} single runs" if prep.model.singles else ""), flush=True)
    if summary.empty:
        complete, total = cells_complete or (0, 0)
        print(f"nothing to submit: every run is recorded, queued or running ({summary.recorded} recorded, "
              f"{summary.skipped_active} queued or running); cells table: {complete}/{total} complete")


def phases_line(summary: Any) -> str:
    return ", ".join(f"phase {p}: {n}" for p, n in sorted(summary.by_phase.items())) or "cells one at a time"


def status_hint(sweep: SweepDir) -> list[str]:
    where = sweep.root
    return [f"follow: valley-status {where}",
            f"retry:  valley-status {where} --retry failed   (or lost)",
            f"cancel: valley-cancel {where}"]
