"""A submitted sweep on disk: ``results_dir/sweeps/<sweep_id>/``, the one place every launcher and task reads.

The sweep id is a content hash of what the sweep computes — its cells (``cell_id``) and single runs (``run_id``) —
not of how it is launched (launcher, max_running, workers, device), so the same command maps to the same sweep and a
re-submission only adds what is missing. Layout::

    sweep.json                  id, results_dir, the command, counts, when it was first submitted
    configs/<digest>.json       the composed job configs (plain dicts; launcher blocks removed), content-addressed
    code/<fingerprint>/         the code snapshot tasks run (bench, problems, optimizers, conf) + its manifest
    rounds/<n>.json             a submission round: backend, launcher settings, configs and code it uses, its units
    rounds/<n>.jobs.jsonl       what went to the cluster for round n (array / job ids per unit), one line per sbatch
    tasks/<unit>.json           the unit's latest state (running / done / failed / stopped / requeued) and log path
    tasks/<unit>.starts         one line per start of the unit (attempts, requeues)
    slurm/<cluster instance>/   submitit's folder (pickles, logs), one per cluster instance (job ids restart at 1)
    local/                      the local supervisor's pid, log and worker logs
    .lock                       flock: submissions, finalisers and the cells table are serialised per sweep

Every file is written to a hidden temp file and renamed into place; the append-only files get one short line per
write (atomic with O_APPEND).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SWEEPS = "sweeps"
ACTIVE = ("pending", "running")  # unit states whose runs must not be queued again


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:n]


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def append_line(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(obj, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line (a kill mid-write): ignored
    return out


def now() -> float:
    return time.time()


@dataclass
class Unit:
    """A work unit: what one array task (or one local slot) runs.

    ``kind``: ``runs`` (``run_ids`` of one phase of one env group, trained through ``SweepRun.run``), ``cell`` (a
    cell whose trials must run one at a time, e.g. TPE or pruning: the whole cell), ``finalize`` (phase 2 and the
    cells table). ``cells`` are the config indices the unit's runs come from (every cell that contains one of them,
    so the task rebuilds the same items with the same labels).
    """

    id: str
    kind: str  # runs | cell | finalize
    phase: int  # 1 | 2 for runs; 0 otherwise
    group: int  # the env group (configs with one run environment)
    cells: list[int]
    run_ids: list[str] = field(default_factory=list)
    resources: str = ""  # the resource class key (rounds/<n>.json: resources)
    predicted_s: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Unit:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class UnitState:
    """What a backend knows of a unit: pending | running | done | failed | lost (| retried, in reports)."""

    state: str
    job: str | None = None  # the cluster job (123_4, 125) or local:<pid>
    detail: str = ""  # SLURM state, exit code, marker reason
    error: str | None = None
    log: str | None = None


class SweepDir:
    """One sweep's directory (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, results_dir: str | Path, sweep_id: str) -> SweepDir:
        return cls(Path(results_dir) / SWEEPS / sweep_id)

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def results_dir(self) -> Path:
        return self.root.parent.parent

    def exists(self) -> bool:
        return (self.root / "sweep.json").exists()

    # ------------------------------------------------------------------------------------------ sweep + configs
    def meta(self) -> dict[str, Any]:
        return read_json(self.root / "sweep.json", {}) or {}

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        write_json(self.root / "sweep.json", dict(meta))

    def save_configs(self, cfgs: Sequence[Mapping[str, Any]]) -> str:
        key = digest(list(cfgs), 20)
        path = self.root / "configs" / f"{key}.json"
        if not path.exists():
            write_json(path, list(cfgs))
        return key

    def configs(self, key: str) -> list[dict[str, Any]]:
        data = read_json(self.root / "configs" / f"{key}.json")
        if data is None:
            raise FileNotFoundError(f"sweep {self.id}: configs {key} are missing under {self.root / 'configs'}")
        return data

    # ------------------------------------------------------------------------------------------------- rounds
    def rounds(self) -> list[dict[str, Any]]:
        out = []
        directory = self.root / "rounds"
        for path in sorted(directory.glob("[0-9]*.json")) if directory.is_dir() else []:
            data = read_json(path)
            if isinstance(data, dict):
                data["jobs"] = read_lines(path.with_suffix(".jobs.jsonl"))
                out.append(data)
        return sorted(out, key=lambda r: r["round"])

    def next_round(self) -> int:
        directory = self.root / "rounds"
        numbers = [int(p.stem) for p in directory.glob("[0-9]*.json")] if directory.is_dir() else []
        return max(numbers, default=0) + 1

    def write_round(self, number: int, data: Mapping[str, Any]) -> None:
        write_json(self.root / "rounds" / f"{number:04d}.json", {**data, "round": number})

    def round(self, number: int) -> dict[str, Any]:
        data = read_json(self.root / "rounds" / f"{number:04d}.json")
        if data is None:
            raise FileNotFoundError(f"sweep {self.id}: round {number} is missing")
        data["jobs"] = read_lines(self.root / "rounds" / f"{number:04d}.jobs.jsonl")
        return data

    def add_jobs(self, number: int, entry: Mapping[str, Any]) -> None:
        append_line(self.root / "rounds" / f"{number:04d}.jobs.jsonl", dict(entry))

    def units(self) -> dict[str, tuple[Unit, dict[str, Any]]]:
        """Every unit of every round: unit id -> (unit, its round)."""
        out = {}
        for rnd in self.rounds():
            for u in rnd.get("units", []):
                out[u["id"]] = (Unit.from_dict(u), rnd)
        return out

    # ------------------------------------------------------------------------------------------------ markers
    def marker_path(self, unit_id: str) -> Path:
        return self.root / "tasks" / f"{unit_id}.json"

    def marker(self, unit_id: str) -> dict[str, Any] | None:
        return read_json(self.marker_path(unit_id))

    def markers(self) -> dict[str, dict[str, Any]]:
        directory = self.root / "tasks"
        out = {}
        for path in directory.glob("*.json") if directory.is_dir() else []:
            if path.name.startswith("."):
                continue
            data = read_json(path)
            if isinstance(data, dict):
                out[path.stem] = data
        return out

    def set_marker(self, unit_id: str, state: str, **info: Any) -> dict[str, Any]:
        old = self.marker(unit_id) or {}
        marker = {**old, **info, "state": state, "updated_at": now()}
        write_json(self.marker_path(unit_id), marker)
        return marker

    def starts(self, unit_id: str) -> list[dict[str, Any]]:
        return read_lines(self.root / "tasks" / f"{unit_id}.starts")

    def add_start(self, unit_id: str, entry: Mapping[str, Any]) -> None:
        append_line(self.root / "tasks" / f"{unit_id}.starts", dict(entry))

    # ----------------------------------------------------------------------------------------------- the lock
    @contextmanager
    def lock(self, timeout_s: float = 600.0) -> Iterator[None]:
        """Exclusive per-sweep lock (flock on ``.lock``): one submitter / finaliser / cells writer at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"sweep {self.id}: another submitter holds {self.root / '.lock'}")
                    time.sleep(0.2)
            yield
        finally:
            os.close(fd)  # releases the lock


def sweeps_under(results_dir: str | Path) -> list[SweepDir]:
    root = Path(results_dir) / SWEEPS
    found = [SweepDir(p) for p in sorted(root.iterdir())] if root.is_dir() else []
    return sorted((s for s in found if s.exists()), key=lambda s: s.meta().get("created_at", 0))


def find_sweep(target: str, results_dir: str | Path | None = None) -> list[SweepDir]:
    """Sweeps named by ``target``: a sweep directory, a results directory (all its sweeps), or a sweep id (or a
    unique prefix) under ``results_dir`` (default ``results``)."""
    path = Path(target)
    if (path / "sweep.json").exists():
        return [SweepDir(path)]
    if (path / SWEEPS).is_dir() and results_dir is None:
        return sweeps_under(path)
    base = Path(results_dir) if results_dir is not None else Path("results")
    matches = [s for s in sweeps_under(base) if s.id.startswith(target)]
    return matches


def proc_start(pid: int) -> int | None:
    """The process's start time (clock ticks after boot): a pid plus this names one process, never a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(info: Mapping[str, Any] | None) -> bool:
    """Whether the process a marker / pid file names is still that process (same host, pid and start time)."""
    if not info or info.get("host") != socket.gethostname() or not info.get("pid"):
        return False
    pid = int(info["pid"])
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    if fields[0] == "Z":
        return False
    return info.get("pid_start") in (None, int(fields[19]))


def host_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": proc_start(os.getpid())}


def as_dict(unit: Unit) -> dict[str, Any]:
    return asdict(unit)


def unique(seq: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(seq))
