"""Reading W&B runs back from their ``.wandb`` files (offline or online run folders), without a server.

wandb 0.30+ has no Python reader of its transaction log (``wandb.sdk.internal.datastore`` is gone), so this drives
``wandb leet inspect PATH --json`` (one JSON record a line) and folds the records into what the server would show:
config, history (one dict per step, ``_``-keys dropped, ``"NaN"``/``"Infinity"`` back to floats), summary (the last
value of each key after every update/remove), tags, name, group, job type, exit code. Used by the tests and by
``valley-wandb verify``.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
RUN_DIR = re.compile(r"^(offline-run|run)-(\d{8}_\d{6})-(?P<id>[A-Za-z0-9_\-]+)$")


def _value(v: Any) -> Any:
    if isinstance(v, str) and v in _SPECIAL:
        return _SPECIAL[v]
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def records(path: str | Path, timeout: float = 120) -> list[dict[str, Any]]:
    """The records of one run (a ``.wandb`` file or a run folder), as ``wandb leet inspect --json`` prints them."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", str(path), "--json"], capture_output=True,
                         text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"wandb leet inspect {path} failed: {(out.stderr or out.stdout).strip()[:300]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip().startswith("{")]


def _set_nested(target: dict[str, Any], key: str, nested: list[str] | None, value: Any) -> None:
    path = list(nested) if nested else [key]
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def fold(recs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Fold a run's records into ``{id, project, name, group, job_type, tags, config, history, summary, exit_code}``."""
    run: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "exit_code": None, "tags": []}
    for rec in recs:
        kind = rec.get("type")
        body = rec.get(kind) or {}
        if kind == "run":
            run.update(id=body.get("run_id"), project=body.get("project"), entity=body.get("entity"),
                       name=body.get("display_name"), group=body.get("run_group"), job_type=body.get("job_type"),
                       tags=list(body.get("tags") or []), resumed=bool(body.get("resume")))
            run["config"].update(_value((body.get("config") or {}).get("update") or {}))
        elif kind == "config":
            run["config"].update(_value(body.get("update") or {}))
            for key in body.get("remove") or []:
                run["config"].pop(key if isinstance(key, str) else key.get("key"), None)
        elif kind == "history":
            item = _value(body.get("item") or {})
            row = {k: v for k, v in item.items() if not k.startswith("_")}
            row["_step"] = (body.get("step") or {}).get("num", item.get("_step"))
            run["history"].append(row)
        elif kind == "summary":
            for key, value in (body.get("update") or {}).items():
                run["summary"][key] = _value(value)
            for key in body.get("remove") or []:
                run["summary"].pop(key if isinstance(key, str) else key.get("key"), None)
        elif kind == "exit":
            run["exit_code"] = body.get("exit_code", 0)
    run["config"].pop("_wandb", None)
    run["summary"] = {k: v for k, v in run["summary"].items() if not k.startswith("_")}
    return run


def read_run(path: str | Path) -> dict[str, Any]:
    """One run folder (or ``.wandb`` file) folded: see :func:`fold`."""
    return fold(records(path))


def run_dirs(wandb_dir: str | Path, include_online: bool = True) -> dict[str, list[Path]]:
    """W&B id → its run folders under ``wandb_dir`` (``offline-run-*`` and, optionally, online ``run-*``), oldest
    first; ``latest-run`` links are skipped."""
    out: dict[str, list[Path]] = {}
    root = Path(wandb_dir)
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        m = RUN_DIR.match(p.name)
        if not m or p.is_symlink() or not p.is_dir():
            continue
        if m.group(1) == "run" and not include_online:
            continue
        if not any(p.glob("*.wandb")):
            continue
        out.setdefault(m.group("id"), []).append(p)
    for dirs in out.values():
        dirs.sort(key=lambda p: RUN_DIR.match(p.name).group(2))  # type: ignore[union-attr]
    return out


def read_many(paths: Iterable[str | Path], workers: int = 4) -> list[dict[str, Any]]:
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths) or 1))) as pool:
        return list(pool.map(read_run, paths))
