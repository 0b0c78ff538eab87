"""The ``launcher`` config block of ``slurm`` and ``local_gpus``, validated (one line per bad value), and the
resources a task of each problem asks for: the problem's ``resources:`` defaults (``conf/problem/*.yaml``) under
the launcher's overrides.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.launch import LaunchError

CODE_MODES = ("snapshot", "checkout")

SLURM_KEYS = ("name", "partition", "cpu_partition", "account", "qos", "time", "gpus", "cpus", "mem_gb", "constraint",
              "sbatch", "setup", "max_running", "max_requeues", "signal_delay_s", "max_array_size", "task_minutes",
              "max_runs_per_task", "finalize_time", "code", "python", "hold")
LOCAL_KEYS = ("name", "gpus", "per_gpu", "slots", "task_minutes", "max_runs_per_task", "code", "python")
RESOURCE_KEYS = ("gpus", "cpus", "mem_gb", "time")
DEFAULT_RESOURCES = {"gpus": 0, "cpus": 1, "mem_gb": 4, "time": 60}


def _int(key: str, value: Any, minimum: int, *, what: str = "an integer") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LaunchError(f"invalid launcher.{key}={value!r}: must be {what} >= {minimum}")
    return value


def _minutes(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LaunchError(f"invalid {key}={value!r}: must be an integer number of minutes >= 1 (e.g. 90 for 1h30)")
    return value


def _opt_str(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
        raise LaunchError(f"invalid launcher.{key}={value!r}: must be a name (or null)")
    return str(value)


def _unknown(block: Mapping[str, Any], valid: tuple[str, ...], name: str) -> None:
    bad = sorted(set(block) - set(valid))
    if bad:
        raise LaunchError(f"unknown setting 'launcher.{bad[0]}' for launcher {name}; valid: "
                          + ", ".join(k for k in valid if k != "name"))


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    cpu_partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem_gb: float | None = None
    constraint: str | None = None
    sbatch: tuple[tuple[str, str], ...] = ()
    setup: tuple[str, ...] = ()
    max_running: int = 64
    max_requeues: int = 3
    signal_delay_s: int = 120
    max_array_size: int | None = None
    task_minutes: float | None = None
    max_runs_per_task: int | None = None
    finalize_time: int = 30
    code: str = "snapshot"
    python: str | None = None
    hold: bool = False

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["sbatch"] = dict(self.sbatch)
        d["setup"] = list(self.setup)
        return d


@dataclass(frozen=True)
class LocalSettings:
    gpus: tuple[int, ...] | None = None  # None: every visible GPU
    per_gpu: int = 1
    slots: int = 1
    task_minutes: float | None = None
    max_runs_per_task: int | None = None
    code: str = "snapshot"
    python: str | None = None

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["gpus"] = None if self.gpus is None else list(self.gpus)
        return d


def _common(block: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    code = block.get("code", "snapshot")
    if code not in CODE_MODES:
        raise LaunchError(f"invalid launcher.code={code!r}: must be one of {', '.join(CODE_MODES)}")
    out["code"] = code
    minutes = block.get("task_minutes")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0):
        raise LaunchError(f"invalid launcher.task_minutes={minutes!r}: must be a number of minutes > 0 (or null: auto)")
    out["task_minutes"] = None if minutes is None else float(minutes)
    runs = block.get("max_runs_per_task")
    out["max_runs_per_task"] = None if runs is None else _int("max_runs_per_task", runs, 1)
    out["python"] = _opt_str("python", block.get("python"))
    return out


def slurm_settings(block: Mapping[str, Any]) -> SlurmSettings:
    block = dict(block or {})
    _unknown(block, SLURM_KEYS, "slurm")
    out = _common(block)
    for key in ("partition", "cpu_partition", "account", "qos", "constraint"):
        out[key] = _opt_str(key, block.get(key))
    if block.get("time") is not None:
        out["time"] = _minutes("launcher.time", block["time"])
    for key in ("gpus", "cpus"):
        if block.get(key) is not None:
            out[key] = _int(key, block[key], 0 if key == "gpus" else 1)
    mem = block.get("mem_gb")
    if mem is not None:
        if isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0:
            raise LaunchError(f"invalid launcher.mem_gb={mem!r}: must be a number of GB > 0 (or null)")
        out["mem_gb"] = float(mem)
    extra = block.get("sbatch") or {}
    if not isinstance(extra, Mapping):
        raise LaunchError(f"invalid launcher.sbatch={extra!r}: must be a mapping of sbatch flags, e.g. "
                          "'launcher.sbatch={exclude: node1, mail-type: END}'")
    out["sbatch"] = tuple(sorted((str(k).lstrip("-"), "" if v is None or v is True else str(v))
                                 for k, v in extra.items()))
    setup = block.get("setup") or []
    if isinstance(setup, str):
        setup = [setup]
    if not isinstance(setup, (list, tuple)) or not all(isinstance(s, str) for s in setup):
        raise LaunchError(f"invalid launcher.setup={setup!r}: must be a list of shell lines, e.g. "
                          "'launcher.setup=[\"module load cuda\"]'")
    out["setup"] = tuple(setup)
    out["max_running"] = _int("max_running", block.get("max_running", 64), 1)
    out["max_requeues"] = _int("max_requeues", block.get("max_requeues", 3), 0)
    out["signal_delay_s"] = _int("signal_delay_s", block.get("signal_delay_s", 120), 1)
    if block.get("max_array_size") is not None:
        out["max_array_size"] = _int("max_array_size", block["max_array_size"], 1)
    out["finalize_time"] = _minutes("launcher.finalize_time", block.get("finalize_time", 30))
    hold = block.get("hold", False)
    if not isinstance(hold, bool):
        raise LaunchError(f"invalid launcher.hold={hold!r}: must be true or false")
    out["hold"] = hold
    return SlurmSettings(**out)


def local_settings(block: Mapping[str, Any]) -> LocalSettings:
    block = dict(block or {})
    _unknown(block, LOCAL_KEYS, "local_gpus")
    out = _common(block)
    gpus = block.get("gpus")
    if gpus is not None:
        if isinstance(gpus, int) and not isinstance(gpus, bool):
            gpus = [gpus]
        if not isinstance(gpus, (list, tuple)) or any(isinstance(g, bool) or not isinstance(g, int) or g < 0
                                                      for g in gpus) or len(set(gpus)) != len(gpus):
            raise LaunchError(f"invalid launcher.gpus={gpus!r}: must be a list of distinct GPU indices, e.g. [0,1] "
                              "([] = CPU slots, null = every visible GPU)")
        out["gpus"] = tuple(gpus)
    out["per_gpu"] = _int("per_gpu", block.get("per_gpu", 1), 1)
    out["slots"] = _int("slots", block.get("slots", 1), 1)
    return LocalSettings(**out)


# --------------------------------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class Resources:
    """What one task of a resource class asks the cluster for (a class = one set of sbatch flags)."""

    partition: str | None
    time: int  # minutes
    gpus: int
    cpus: int
    mem_gb: float | None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: tuple[tuple[str, str], ...] = ()
    setup: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def as_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "time": self.time, "gpus": self.gpus, "cpus": self.cpus,
                "mem_gb": self.mem_gb, "account": self.account, "qos": self.qos, "constraint": self.constraint,
                "sbatch": [list(x) for x in self.sbatch], "setup": list(self.setup)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Resources:
        return cls(partition=d.get("partition"), time=int(d["time"]), gpus=int(d["gpus"]), cpus=int(d["cpus"]),
                   mem_gb=d.get("mem_gb"), account=d.get("account"), qos=d.get("qos"),
                   constraint=d.get("constraint"), sbatch=tuple(tuple(x) for x in d.get("sbatch", ())),
                   setup=tuple(d.get("setup", ())))

    def device(self, cfg_device: str) -> str:
        """The device a task of this class trains on (``auto`` resolves to cuda exactly when it has a GPU)."""
        if cfg_device == "auto":
            return "cuda" if self.gpus > 0 else "cpu"
        return cfg_device


def problem_resources(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The problem's ``resources:`` block (defaults for missing keys), validated."""
    problem = cfg.get("problem") or {}
    block = dict(problem.get("resources") or {})
    bad = sorted(set(block) - set(RESOURCE_KEYS))
    if bad:
        raise LaunchError(f"unknown setting 'problem.resources.{bad[0]}'; valid: "
                          + ", ".join(f"problem.resources.{k}" for k in RESOURCE_KEYS))
    out = {**DEFAULT_RESOURCES, **{k: v for k, v in block.items() if v is not None}}
    out["time"] = _minutes("problem.resources.time", out["time"])
    for key, minimum in (("gpus", 0), ("cpus", 1)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise LaunchError(f"invalid problem.resources.{key}={value!r}: must be an integer >= {minimum}")
    return out


def resources_for(cfg: Mapping[str, Any], s: SlurmSettings) -> Resources:
    base = problem_resources(cfg)
    gpus = s.gpus if s.gpus is not None else base["gpus"]
    partition = s.partition if gpus > 0 else (s.cpu_partition or s.partition)
    return Resources(partition=partition, time=s.time if s.time is not None else base["time"], gpus=gpus,
                     cpus=s.cpus if s.cpus is not None else base["cpus"],
                     mem_gb=s.mem_gb if s.mem_gb is not None else base["mem_gb"], account=s.account, qos=s.qos,
                     constraint=s.constraint, sbatch=s.sbatch, setup=s.setup)


def finalize_resources(s: SlurmSettings) -> Resources:
    return Resources(partition=s.cpu_partition or s.partition, time=s.finalize_time, gpus=0, cpus=1, mem_gb=4,
                     account=s.account, qos=s.qos, constraint=None, sbatch=s.sbatch, setup=s.setup)
