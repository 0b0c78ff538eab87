"""``save_params=none|final|trajectory``: keep a run's parameters next to its records, for landscapes.

A parameter saver is a run observer (``bench.observers``): at the evaluated epochs it is asked to keep it copies the
run's flattened parameters (``EpochInfo.flat_params``, the order of ``model.parameters()``) and its floating-point
buffers (batch-norm running statistics; ``EpochInfo.named_buffers``) to the host. It never changes what a run
computes, so it is not part of the run spec or run_id (``bench.spec``) — the same spec with or without a saver has
the same curves and record, except ``params_file``.

Which epochs (``snapshot_epochs``): ``final`` keeps the last evaluated epoch only (epoch N, or the epoch a diverged
run stopped at); ``trajectory`` keeps epochs 0, k, 2k, … and the last one, with k = ceil(N / 100), so a run keeps at
most 101 snapshots (100 epochs: all 101; P6's 350: every 4th, 89).

Files. While the run trains, rows stream to ``params/.partial/<run_id>.bin`` (raw float32, one row per snapshot),
with ``<run_id>.json`` listing the epochs written and ``<run_id>.buffers.pt`` the buffers, so neither the host's
memory nor a kill costs the snapshots: a run resumed from a checkpoint at epoch e keeps the rows before e and
appends from there. When the run finishes, just before its record is written (``bench.execute`` asks each observer
for ``saved_params_file()``), the rows become ``params/<run_id>.pt`` (a hidden temp file renamed into place), and
the record's ``params_file`` is that path relative to results_dir — so a record that names a file always has it.
The file is a ``torch.save`` dict, loadable lazily (``torch.load(..., mmap=True)``)::

    format "valley-params/1", run_id, mode, every (k), num_epochs, status (completed | diverged), origin (run |
    retrain), epochs (int64 [S]), params (float32 [S, P]), buffers {name: [S, *shape]} (those that changed),
    constant_buffers {name: tensor} (those that never did: P1's Hessian, the LSTM's forget bias), missing (epochs
    planned but not saved, e.g. a resume without the partial rows), matches_record / max_curve_diff (retrain only)

``save_params_runs=seeds`` keeps parameters only of runs labelled ``seed`` (a cell's seed runs: the one-shot seeds
and the winner's re-runs 43..51) or ``single``; tuning trials (seed 42, the winner's included: it is not known
while trials train) get none. A recorded run without parameters — such a trial, or anything trained before — is
re-trained by :func:`retrain` (``valley-landscape`` does it on demand): the same spec, deterministic, with a saver;
its curves are compared with the recorded ones, and only when they are identical does the runs row get the file
(the row rewritten loose, every other field unchanged). Otherwise the file is kept with ``matches_record=False``
and the largest difference, and the landscape says so.

Removal: there is no command that deletes runs; a re-run of the same spec (``force=true``) overwrites the file,
and ``valley-landscape prune`` removes files no runs row references (and stale partial files).
"""
from __future__ import annotations

import json
import math
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("none", "final", "trajectory")
RUN_CHOICES = ("all", "seeds")
MAX_SNAPSHOTS = 100
FORMAT = "valley-params/1"
PARAMS_DIR = "params"
PARTIAL_DIR = ".partial"


def snapshot_every(num_epochs: int) -> int:
    """k: the trajectory keeps every k-th epoch, so at most ``MAX_SNAPSHOTS`` + 1 snapshots per run."""
    return max(1, math.ceil(num_epochs / MAX_SNAPSHOTS))


def snapshot_epochs(num_epochs: int, mode: str) -> list[int]:
    """The epochs a completed run of ``num_epochs`` keeps (a diverged run adds the epoch it stopped at)."""
    if mode == "none":
        return []
    if mode == "final":
        return [num_epochs]
    k = snapshot_every(num_epochs)
    return sorted(set(range(0, num_epochs + 1, k)) | {num_epochs})


def params_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / PARAMS_DIR / f"{run_id}.pt"


def relative_params_file(run_id: str) -> str:
    return f"{PARAMS_DIR}/{run_id}.pt"


def _partial(results_dir: str | Path, run_id: str, suffix: str) -> Path:
    return Path(results_dir) / PARAMS_DIR / PARTIAL_DIR / f"{run_id}{suffix}"


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _torch_save_atomic(obj: Any, path: Path) -> None:
    import torch

    from bench.records import write_file_atomic

    write_file_atomic(path, lambda tmp: torch.save(obj, tmp))


class ParamSaver:
    """The run observer that keeps one run's parameters (see the module docstring)."""

    def __init__(self, results_dir: str | Path, run_id: str, num_epochs: int, mode: str, *,
                 origin: str = "run") -> None:
        if mode not in MODES or mode == "none":
            raise ValueError(f"invalid save_params={mode!r}: must be one of final, trajectory")
        self.results_dir = Path(results_dir)
        self.run_id = run_id
        self.num_epochs = int(num_epochs)
        self.mode = mode
        self.origin = origin
        self.planned = set(snapshot_epochs(self.num_epochs, mode))
        self.bin = _partial(results_dir, run_id, ".bin")
        self.index = _partial(results_dir, run_id, ".json")
        self.buffers_file = _partial(results_dir, run_id, ".buffers.pt")
        self.epochs: list[int] = []
        self.size: int | None = None  # parameters per row
        self.buffers: dict[str, list[Any]] = {}  # name -> one tensor per snapshot (None where not given)
        self.last_epoch: int | None = None  # the last evaluated epoch the run reached (the file's last row)
        self.ended = False  # saw the run's last evaluated epoch
        self.status = "completed"
        self.missing: list[int] = []

    # ------------------------------------------------------------------------------------------ the observer
    def on_start(self, start: Any) -> None:
        self.bin.parent.mkdir(parents=True, exist_ok=True)
        resume_at = int(getattr(start, "start_epoch", 0) or 0)
        kept: list[int] = []
        if resume_at > 0:
            kept = self._resume(resume_at)
        if not kept:
            self._reset()
        if resume_at > 0:
            self.missing = [e for e in sorted(self.planned) if e < resume_at and e not in kept]

    def _reset(self) -> None:
        self.epochs, self.size, self.buffers = [], None, {}
        for path in (self.bin, self.index, self.buffers_file):
            path.unlink(missing_ok=True)

    def _resume(self, resume_at: int) -> list[int]:
        """Keep the partial rows of epochs before ``resume_at`` (the checkpoint's next epoch); [] if unusable."""
        import torch

        try:
            meta = json.loads(self.index.read_text())
            size = int(meta["size"])
            epochs = [int(e) for e in meta["epochs"]]
            buffers = torch.load(self.buffers_file, weights_only=True) if self.buffers_file.exists() else {}
        except (OSError, ValueError, KeyError, RuntimeError):
            return []
        keep = [e for e in epochs if e < resume_at]
        need = len(keep) * size * 4
        if meta.get("run_id") != self.run_id or meta.get("mode") != self.mode or self.bin.stat().st_size < need:
            return []
        with open(self.bin, "r+b") as fh:
            fh.truncate(need)
        self.epochs, self.size = keep, size
        # The buffers file is rewritten only when a buffer changes: an unchanged one repeats its last value.
        self.buffers = {name: (list(values) + [values[-1]] * len(keep))[:len(keep)]
                        for name, values in buffers.items() if values}
        self._write_index()
        return keep

    def on_epoch(self, epoch: int, metrics: Mapping[str, Any], info: Any) -> None:
        import torch

        last = getattr(info, "lr_factor", 0.0) is None  # the loop's last evaluated epoch (N, or a divergence)
        if last:
            self.ended = True
            self.last_epoch = epoch
            if not all(math.isfinite(float(v.get("loss", math.nan))) for v in metrics.values()):
                self.status = "diverged"
        if epoch not in self.planned and not last:
            return
        if self.epochs and self.epochs[-1] >= epoch:
            return  # already kept (cannot happen in one process; a resume truncates to before its first epoch)
        flat = info.flat_params().detach().to("cpu", copy=True).float().contiguous()
        if self.size is None:
            self.size = int(flat.numel())
        elif flat.numel() != self.size:
            raise ValueError(f"parameter count changed from {self.size} to {flat.numel()}")
        with open(self.bin, "ab") as fh:
            fh.write(flat.numpy().tobytes())
        named = getattr(info, "named_buffers", None)
        current = named() if callable(named) else {}
        n_before = len(self.epochs)
        changed = False
        for name, value in current.items():
            values = self.buffers.setdefault(name, [None] * n_before)
            value = value.detach().to("cpu", copy=True)
            previous = values[-1] if values else None
            if previous is not None and previous.shape == value.shape and torch.equal(previous, value):
                values.append(previous)  # the same object: torch.save stores an unchanged buffer once
            else:
                values.append(value)
                changed = True
        for name, values in self.buffers.items():
            if len(values) == n_before:
                values.append(None)
        self.epochs.append(int(epoch))
        if changed:
            self._save_buffers()
        self._write_index()

    def _write_index(self) -> None:
        _write_json_atomic(self.index, {"run_id": self.run_id, "mode": self.mode, "size": self.size,
                                        "epochs": self.epochs})

    def _save_buffers(self) -> None:
        _torch_save_atomic(self.buffers, self.buffers_file)

    def on_stop(self, reason: str) -> None:
        """A kill or Ctrl-C keeps the partial rows for the resumed run; a failure or a pruned run drops them."""
        if reason not in ("KeyboardInterrupt", "SystemExit"):
            self._reset()

    def on_end(self, record: Mapping[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------------------------------ the file
    def saved_params_file(self) -> str | None:
        """Write ``params/<run_id>.pt`` from the partial rows (called once the run finished, before its record is
        written) and return its path relative to results_dir; None when the run never reached its end."""
        if not self.ended or not self.epochs or self.size is None:
            return None
        blob = self.assemble()
        _torch_save_atomic(blob, params_path(self.results_dir, self.run_id))
        for path in (self.bin, self.index, self.buffers_file):
            path.unlink(missing_ok=True)
        return relative_params_file(self.run_id)

    def assemble(self, **extra: Any) -> dict[str, Any]:
        import torch

        rows = len(self.epochs)
        params = torch.from_file(str(self.bin), shared=False, size=rows * self.size, dtype=torch.float32)
        varying, constant = {}, {}
        for name, values in self.buffers.items():
            if any(v is None for v in values):
                continue  # not given at every snapshot (a resume without the partial buffers): not trusted
            if all(v is values[0] or torch.equal(values[0], v) for v in values[1:]):
                constant[name] = values[0]
            else:
                varying[name] = torch.stack(values)
        return {"format": FORMAT, "run_id": self.run_id, "mode": self.mode, "every": snapshot_every(self.num_epochs),
                "num_epochs": self.num_epochs, "status": self.status, "origin": self.origin,
                "epochs": torch.tensor(self.epochs, dtype=torch.int64), "params": params.view(rows, self.size),
                "buffers": varying, "constant_buffers": constant, "missing": list(self.missing),
                "matches_record": None, "max_curve_diff": None, **extra}


# ---------------------------------------------------------------------------------------------- the factory
@dataclass(frozen=True)
class SaverFactory:
    """Per-run parameter savers (an ``ObserverFactory``: picklable, called once per run with its sweep labels)."""

    results_dir: str
    mode: str
    runs: str = "all"

    def __call__(self, spec: Any, labels: Mapping[str, Any]) -> list[Any]:
        if self.mode == "none":
            return []
        roles = set((labels or {}).get("role") or [])
        if self.runs == "seeds" and roles and not roles & {"seed", "single"}:
            return []
        return [ParamSaver(self.results_dir, spec.run_id, spec.num_epochs, self.mode)]


def check_settings(mode: Any, runs: Any) -> None:
    """One-line ValueError for a bad ``save_params`` / ``save_params_runs``."""
    if mode not in MODES:
        raise ValueError(f"invalid save_params={mode!r}: must be one of {', '.join(MODES)}")
    if runs not in RUN_CHOICES:
        raise ValueError(f"invalid save_params_runs={runs!r}: must be one of {', '.join(RUN_CHOICES)}")


def saver_factory(cfg: Mapping[str, Any]) -> SaverFactory | None:
    """The composed config's parameter saver (None for ``save_params=none``); ValueError for a bad value."""
    mode = cfg.get("save_params", "none") or "none"
    runs = cfg.get("save_params_runs", "all") or "all"
    check_settings(mode, runs)
    if mode == "none":
        return None
    return SaverFactory(str(cfg.get("results_dir", "results")), mode, runs)


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class SavedParams:
    """A run's saved parameters: ``params`` [S, P] (float32, memory-mapped), the snapshots' epochs, buffers."""

    path: Path
    run_id: str
    mode: str
    epochs: list[int]
    params: Any  # torch.Tensor [S, P]
    buffers: dict[str, Any]
    constant_buffers: dict[str, Any]
    status: str
    origin: str
    matches_record: bool | None
    max_curve_diff: float | None
    missing: list[int]

    @property
    def final(self) -> Any:
        return self.params[-1]

    def buffers_at(self, index: int) -> dict[str, Any]:
        """The buffers of snapshot ``index`` (constant ones included)."""
        return {**self.constant_buffers, **{k: v[index] for k, v in self.buffers.items()}}


def load(path: str | Path) -> SavedParams:
    import torch

    blob = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a valley parameter file ({FORMAT})")
    return SavedParams(Path(path), blob["run_id"], blob["mode"], [int(e) for e in blob["epochs"].tolist()],
                       blob["params"], dict(blob["buffers"]), dict(blob["constant_buffers"]), blob["status"],
                       blob["origin"], blob.get("matches_record"), blob.get("max_curve_diff"),
                       list(blob.get("missing") or []))


def find(results_dir: str | Path, record: Mapping[str, Any]) -> Path | None:
    """The parameter file of a run: its record's ``params_file``, else a re-trained ``params/<run_id>.pt``."""
    named = record.get("params_file")
    if isinstance(named, str) and named:  # null (None, or NaN from pandas) when the run kept none
        path = Path(results_dir) / named
        if path.exists():
            return path
    path = params_path(results_dir, record["run_id"])
    return path if path.exists() else None


# ---------------------------------------------------------------------------------------------- re-training
def retrain(results_dir: str | Path, record: Mapping[str, Any], *, device: str = "cpu",
            data_dir: str | Path | None = None, mode: str = "trajectory",
            say: Any = None) -> Path:
    """Re-train a recorded run with a saver (deterministic: the same spec, the same curves) and keep its file.

    The new curves are compared with the recorded ones value by value. Identical: the runs row gets the file in
    ``params_file`` (rewritten loose, all else unchanged). Different (another device, a non-deterministic kernel):
    the file says ``matches_record=False`` with the largest absolute difference, and the row is left alone.
    """
    import torch  # noqa: F401 - training

    from bench import records
    from bench.spec import RunSpec
    from bench.train import train

    spec = spec_of(record)
    if not isinstance(spec, RunSpec):
        raise ValueError(f"run {record['run_id']}: no spec to re-train")
    saver = ParamSaver(results_dir, spec.run_id, spec.num_epochs, mode, origin="retrain")
    if say is not None:
        say(f"re-training {spec.run_id} ({spec.problem} · {spec.optimizer} · seed {spec.seed}) to keep its "
            f"parameters ({mode})")
    result = train(spec, device=device, data_dir=data_dir, observers=[saver])
    recorded = records.read_curves(results_dir, [spec.run_id])
    old = {(int(e), str(s), str(m)): float(v) for e, s, m, v in
           zip(recorded.epoch, recorded.split, recorded.metric, recorded.value)}
    new = {(int(e), s, m): float(v) for e, s, m, v in result.curves}
    diffs = [abs(new[k] - old[k]) if k in new and k in old else math.inf for k in set(old) | set(new)]
    both_nan = [k for k in set(old) & set(new) if math.isnan(old[k]) and math.isnan(new[k])]
    diffs = [d for d in diffs if not math.isnan(d)] if both_nan else diffs
    max_diff = max(diffs, default=0.0)
    matches = bool(old) and max_diff == 0.0 and result.status == record.get("status")
    if not saver.ended:
        raise RuntimeError(f"re-training {spec.run_id} did not reach its last epoch")
    blob = saver.assemble(matches_record=matches, max_curve_diff=float(max_diff))
    path = params_path(results_dir, spec.run_id)
    _torch_save_atomic(blob, path)
    for p in (saver.bin, saver.index, saver.buffers_file):
        p.unlink(missing_ok=True)
    if matches:
        row = records.find_run(results_dir, spec.run_id)
        if row is not None and row.get("params_file") != relative_params_file(spec.run_id):
            row = {**row, "params_file": relative_params_file(spec.run_id)}
            records.write_run(results_dir, row, [(int(e), str(s), str(m), float(v)) for e, s, m, v in
                                                 zip(recorded.epoch, recorded.split, recorded.metric,
                                                     recorded.value)])
    elif say is not None:
        say(f"warning: the re-trained curves of {spec.run_id} differ from the record (max |Δ| = {max_diff:.3g}); "
            f"the landscape uses the re-trained parameters and says so")
    return path


def spec_of(record: Mapping[str, Any]) -> Any:
    """The RunSpec of a runs row (from its canonical ``spec`` JSON); its run_id must be the record's."""
    from bench.spec import RunSpec

    raw = json.loads(record["spec"])
    spec = RunSpec(**raw)
    if spec.run_id != record["run_id"]:
        raise ValueError(f"run {record['run_id']}: its spec hashes to {spec.run_id} (another protocol version?)")
    return spec


# ---------------------------------------------------------------------------------------------- pruning
def prune(results_dir: str | Path, *, dry_run: bool = False) -> list[Path]:
    """Remove parameter files that no runs row references (nor a re-train produced for a recorded run), and
    partial rows of runs that have a record. Returns what was (or would be) removed."""
    from bench import records

    root = Path(results_dir) / PARAMS_DIR
    if not root.is_dir():
        return []
    runs = records.read_runs(results_dir)
    known = set(runs["run_id"].astype(str)) if len(runs) else set()
    named = {str(p) for p in runs["params_file"].dropna()} if len(runs) else set()
    gone: list[Path] = []
    for path in sorted(root.glob("*.pt")):
        rel = f"{PARAMS_DIR}/{path.name}"
        if rel not in named and path.stem not in known:
            gone.append(path)
    partial = root / PARTIAL_DIR
    if partial.is_dir():
        for path in sorted(partial.iterdir()):
            run_id = path.name.split(".", 1)[0]
            rec = records.find_run(results_dir, run_id) if run_id in known else None
            if rec is not None and rec["status"] in records.FINISHED:
                gone.append(path)
    if not dry_run:
        for path in gone:
            path.unlink(missing_ok=True)
    return gone


def warn(message: str) -> None:
    print(f"valley: warning: {message}", file=sys.stderr)
