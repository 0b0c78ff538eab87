"""Optuna studies: storages, the study's samples as enqueued trials, workers, stale RUNNING trials.

One study per (problem + settings, optimizer, schedule, search): its trials are the samples, in order. With the
study's sampler (§2.1) sample i is enqueued with its exact values and ``user_attrs['sample'] = i``; workers only
pop enqueued trials (``enqueue_trial`` + ``ask``/``tell``; not the Hydra Optuna sweeper, which pins optuna<3 and
runs batch-synchronously). With TPE/QMC/random (beyond the study) workers ``ask`` the sampler for new trials and
sample i is the trial numbered i. Any number of workers, in any number of processes or machines, can share a study:

* a sample is trained by whoever pops its trial; a popped trial whose sample already has another RUNNING/finished
  trial (a double enqueue by two coordinators) is failed as a duplicate without training;
* a crashed worker leaves a RUNNING trial: it is failed and its sample re-enqueued when its owner process is gone
  (same machine: pid + start time) or its heartbeat is older than ``stale_after_s`` (another machine);
* the redone trial finds the run's record if it was written (``bench.execute`` skips it), so a redo costs nothing.

Trial attributes: ``sample``, ``worker``, ``heartbeat``, then ``run_id``, ``status`` (completed | diverged | failed |
pruned), ``valid`` and ``test`` (final-epoch metrics) and ``result`` (the rest); the trial value is the final
validation metric with DeepOBS's epoch-0 padding for diverged runs (what the study ranked by).
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from bench import records
from bench.execute import execute
from bench.observers import StopRun
from bench.tuning.cell import Cell, RunView, TrialResult, run_view
from bench.tuning.settings import TuningSettings
from optimizers.base import LogUniform, RandInt

optuna.logging.set_verbosity(optuna.logging.WARNING)

LIVE = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
FINAL = (TrialState.COMPLETE, TrialState.PRUNED)


# ----------------------------------------------------------------------------------------------------- storages
class FlockLock:
    """Journal lock on ``fcntl.flock``: the kernel releases it when its holder dies, even by SIGKILL.

    Optuna's own file locks (symlink / O_EXCL) survive a killed holder and make every later writer wait their
    30 s grace period; a kill mid-append can also leave a line without its newline, which Optuna would later
    concatenate with the next record into an unreadable line. So after acquiring, an unterminated tail is cut
    (no writer can be active while we hold the lock; readers never applied an unterminated line).
    """

    def __init__(self, journal: str) -> None:
        self._journal = journal
        self._lock_path = journal + ".flock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        _repair_tail(self._journal)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _repair_tail(path: str) -> None:
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= (1 << 20) else None)
        if keep is None:
            raise RuntimeError(f"journal {path}: unterminated record longer than 1 MiB")
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def is_database_url(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str, journal_lock: str = "flock") -> BaseStorage:
    """A journal file path (the default), or an SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``)."""
    if is_database_url(storage):
        from bench.secrets import storage_url

        url = storage_url(storage)  # the password from $VALLEY_STORAGE_PASSWORD / password_file=; never shown
        if url.startswith("postgresql://") and not _has_module("psycopg2") and _has_module("psycopg"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]  # psycopg 3 is what pyproject installs
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    from optuna.storages.journal import (
        JournalFileBackend,
        JournalFileOpenLock,
        JournalFileSymlinkLock,
        JournalStorage,
    )

    path = Path(storage).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=True)
    # One storage object per journal file and process: opening replays the whole log (tens of thousands of lines
    # for a sweep), while a kept storage only reads what other writers appended since. Keyed by inode, so a
    # journal that was replaced is opened afresh.
    stat = path.stat()
    key = (str(path), stat.st_dev, stat.st_ino, journal_lock)
    cached = _JOURNALS.get(key)
    if cached is None:
        locks = {"flock": FlockLock, "open": JournalFileOpenLock, "symlink": JournalFileSymlinkLock}
        cached = _JOURNALS[key] = JournalStorage(JournalFileBackend(str(path), lock_obj=locks[journal_lock](str(path))))
    return cached


_JOURNALS: dict[tuple[str, int, int, str], BaseStorage] = {}


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def distributions(space: Mapping[str, LogUniform | RandInt]) -> dict[str, BaseDistribution]:
    """Optuna's view of the study's space: ``10**U(a, b)`` is log-uniform on [10^a, 10^b]; randint(l, h) is l..h-1."""
    out: dict[str, BaseDistribution] = {}
    for name, dist in space.items():
        if isinstance(dist, LogUniform):
            out[name] = FloatDistribution(10.0 ** dist.low_exp, 10.0 ** dist.high_exp, log=True)
        else:
            out[name] = IntDistribution(dist.low, dist.high - 1)
    return out


def make_sampler(settings: TuningSettings, n_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler asked for *new* trials; with ``study`` every trial is enqueued, so it is never consulted.

    A seeded sampler restarts its random stream whenever it is built (every invocation, every worker), which would
    propose the same values again after a resume; so TPE and random are re-seeded from (seed, trials so far) before
    each new trial. QMC is left alone: it derives its position in the sequence from the study itself.
    """
    seed = settings.sampler_seed
    if settings.sampler != "qmc":
        seed = (seed * 1_000_003 + n_trials) % 2**32
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if settings.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(settings: TuningSettings, num_epochs: int) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, num_epochs // 10))
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(num_epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(cell: Cell, *, create: bool) -> optuna.Study:
    """Load the cell's study; with ``create``, create it first (once; a lost creation race just loads it)."""
    storage = open_storage(cell.tuning.storage, cell.tuning.journal_lock)
    kwargs: dict[str, Any] = {"study_name": cell.study_name, "storage": storage, "sampler": make_sampler(cell.tuning),
                              "pruner": make_pruner(cell.tuning, int(cell.problem_settings["num_epochs"]))}
    if not create:
        return optuna.load_study(**kwargs)
    try:
        study = optuna.create_study(direction="maximize" if cell.higher_is_better else "minimize", **kwargs)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kwargs)
    except Exception as err:  # a concurrent creator won the INSERT race (IntegrityError / UniqueViolation)
        if "unique" not in str(err).lower() and "integrity" not in type(err).__name__.lower():
            raise
        study = optuna.load_study(**kwargs)
    identity = cell.study_identity()
    if study.user_attrs != identity:  # written after creation: completed here if a kill came in between
        for key, value in identity.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
    return study


# ------------------------------------------------------------------------------------------- trial bookkeeping
def sample_of(t: FrozenTrial) -> int | None:
    s = t.user_attrs.get("sample")
    return int(s) if s is not None else None


def _retired(t: FrozenTrial) -> bool:
    """A failed trial that never owned its sample (a duplicate or a spurious ask)."""
    return t.state == TrialState.FAIL and (t.user_attrs.get("duplicate") or t.user_attrs.get("spurious"))


def samples_in_use(trials: list[FrozenTrial]) -> set[int]:
    """Sample indices that exist in the study (with a redo path if failed): new sampler trials get the next ones."""
    out = set()
    for t in trials:
        s = sample_of(t)
        if s is None or _retired(t):
            continue
        if t.state == TrialState.FAIL and not t.params:
            continue  # failed before its values were drawn: nothing to redo
        out.add(s)
    return out


def first_samples(trials: list[FrozenTrial], cell: Cell, n: int) -> list[int]:
    """The sample indices of the budget: 0..n-1 for the study's sampler, else the n first trials' samples."""
    if cell.tuning.sampler == "study":
        return list(range(n))
    return sorted(samples_in_use(trials))[:n]


def by_sample(trials: list[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
    out: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        s = sample_of(t)
        if s is not None:
            out.setdefault(s, []).append(t)
    return out


def final_trial(group: list[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in group if t.state in FINAL]
    return min(done, key=lambda t: t.number) if done else None


# ------------------------------------------------------------------------------------------------ worker identity
def _proc_start(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])  # field 22: start time (clock ticks after boot)
    except (OSError, IndexError, ValueError):
        return None


def _machine() -> str:
    """Host + kernel boot + pid namespace: two processes with equal values can see each other's pids."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "|".join(parts)


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    identity = {"machine": _machine(), "pid": pid, "start": _proc_start(pid), "token": uuid.uuid4().hex[:12]}
    tag = os.environ.get("VALLEY_WORKER_TAG")  # a launcher's task (sweep:unit): it can tell its dead claims apart
    if tag:
        identity["tag"] = tag
    return identity


UNCLAIMED_GRACE_S = 30.0  # a worker names itself on a trial milliseconds after popping it


def owner_alive(t: FrozenTrial, stale_after_s: float, now: float | None = None) -> bool:
    """Whether a RUNNING trial's worker may still be working on it.

    Same machine: exactly (is the owner's pid alive, with the same start time?). Another machine: its heartbeat is
    younger than ``stale_after_s``. No owner recorded (killed between popping the trial and naming itself): alive
    only for a short grace period.
    """
    info = t.user_attrs.get("worker")
    if isinstance(info, Mapping) and info.get("machine") == _machine() and info.get("start") is not None:
        return _proc_start(int(info["pid"])) == info["start"]
    now = time.time() if now is None else now
    last = t.user_attrs.get("heartbeat")
    started = t.datetime_start.timestamp() if t.datetime_start else now
    limit = stale_after_s if isinstance(info, Mapping) else min(stale_after_s, UNCLAIMED_GRACE_S)
    return now - max(float(last or 0.0), started) < limit


def sweep_stale(study: optuna.Study, settings: TuningSettings) -> list[int]:
    """Fail RUNNING trials whose worker is gone; return their numbers (their samples are then re-enqueued)."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if owner_alive(t, settings.stale_after_s):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "stale", True)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # its owner finished it in the meantime
    return failed


def enqueue_missing(study: optuna.Study, cell: Cell, n: int, *, retry_failed_runs: bool) -> int:
    """Make sure each of the budget's samples has a trial that is waiting, running or final; return how many were
    enqueued. Samples whose runs raised are retried only with ``retry_failed_runs`` (once per invocation)."""
    trials = study.get_trials(deepcopy=False)
    groups = by_sample(trials)
    if cell.tuning.sampler == "study":
        wanted = {i: p for i, p in enumerate(cell.stream(n))}
    else:  # redo failed samples of the budget with their own values
        wanted = {}
        for s in first_samples(trials, cell, n):
            failed = [t for t in groups.get(s, []) if t.state == TrialState.FAIL and t.params]
            if failed:
                wanted[s] = dict(failed[0].params)
    count = 0
    for s, params in wanted.items():
        group = groups.get(s, [])
        if any(t.state in LIVE or t.state == TrialState.WAITING for t in group):
            continue
        if not retry_failed_runs and any(t.user_attrs.get("status") == "failed" for t in group):
            continue
        study.enqueue_trial(params, user_attrs={"sample": s})
        count += 1
    return count


# ---------------------------------------------------------------------------------------------------- a worker
class _Pruned(StopRun):
    """Raised from the epoch observer to stop a pruned run (a StopRun: ``execute`` records nothing)."""


class _Heartbeat:
    """Writes ``heartbeat`` on the trial every ``interval`` seconds while its run trains."""

    def __init__(self, study: optuna.Study, trial_id: int, interval: float) -> None:
        self._study, self._trial_id, self._interval = study, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # finished meanwhile, or a storage hiccup: the next beat retries
                self._study._storage.set_trial_user_attr(self._trial_id, "heartbeat", time.time())


@dataclass
class WorkReport:
    trained: list[str] = field(default_factory=list)  # run_ids trained by this worker
    recorded: list[str] = field(default_factory=list)  # run_ids that were already recorded
    failed: list[str] = field(default_factory=list)
    pruned: int = 0
    duplicates: int = 0

    def merge(self, other: WorkReport) -> None:
        self.trained += other.trained
        self.recorded += other.recorded
        self.failed += other.failed
        self.pruned += other.pruned
        self.duplicates += other.duplicates


def _has_work(trials: list[FrozenTrial], cell: Cell, n: int) -> bool:
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if cell.tuning.sampler == "study":
        return any((sample_of(t) or 0) < n for t in waiting)
    return bool(waiting) or len(samples_in_use(trials)) < n


def work(cell: Cell, n: int, results_dir: str, *, device: str = "auto", data_dir: str | None = None,
         study: optuna.Study | None = None, on_run: Callable[[str, bool], None] | None = None,
         observers: Any = None) -> WorkReport:
    """Pop and train trials of the cell's study until its first ``n`` samples have all been handed out."""
    study = study or open_study(cell, create=False)
    dists = distributions(cell.search_space)
    report = WorkReport()
    while _has_work(trials := study.get_trials(deepcopy=False), cell, n):
        if cell.tuning.sampler in ("tpe", "random"):
            study.sampler = make_sampler(cell.tuning, len(trials))
        trial = study.ask()
        if sample_of(trial) is None:
            if cell.tuning.sampler == "study":  # lost the race for the last waiting trial: ask() made a new one
                trial.set_user_attr("spurious", True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("sample", trial.number)
        _run_trial(study, trial, cell, dists, results_dir, device, data_dir, report, on_run, observers)
    return report


def _sample(trial: Trial) -> int:
    return int(trial.user_attrs["sample"])


def _duplicate(study: optuna.Study, trial: Trial, sample: int) -> bool:
    return any(t.number != trial.number and sample_of(t) == sample and t.state in LIVE
               for t in study.get_trials(deepcopy=False))


def _run_trial(study: optuna.Study, trial: Trial, cell: Cell, dists: dict[str, BaseDistribution], results_dir: str,
               device: str, data_dir: str | None, report: WorkReport,
               on_run: Callable[[str, bool], None] | None, observers: Any = None) -> None:
    trial.set_user_attr("worker", worker_identity())
    sample = _sample(trial)
    if _duplicate(study, trial, sample):
        trial.set_user_attr("duplicate", True)
        study.tell(trial, state=TrialState.FAIL)
        report.duplicates += 1
        return
    tuned = {name: _suggest(trial, name, d) for name, d in dists.items()}
    spec = cell.trial_spec(tuned)
    observer = _pruning_observer(trial, cell) if cell.tuning.pruner != "none" else None
    with _Heartbeat(study, trial._trial_id, cell.tuning.heartbeat_s):
        labels = {"role": ["trial"], "budget": [cell.label]}
        outcome = execute(spec, results_dir, device=device, data_dir=data_dir, on_epoch=observer,
                          observers=observers(spec, labels) if observers is not None else ())
    if outcome.record is None:  # pruned
        epoch = int(outcome.stopped_at or 0)
        trial.set_user_attr("run_id", spec.run_id)
        trial.set_user_attr("status", "pruned")
        trial.set_user_attr("result", {"epochs_trained": epoch, "saved_epochs": spec.num_epochs - epoch})
        _tell(study, trial, state=TrialState.PRUNED)
        report.pruned += 1
        return
    rec = outcome.record
    (report.recorded if outcome.skipped else report.trained).append(spec.run_id)
    trial.set_user_attr("run_id", spec.run_id)
    trial.set_user_attr("status", rec["status"])
    if rec["status"] not in records.FINISHED:
        report.failed.append(spec.run_id)
        trial.set_user_attr("result", {"error": (rec.get("error") or "").splitlines()[:1]})
        _tell(study, trial, state=TrialState.FAIL)
    else:
        view = run_view(results_dir, rec, need_best=True)
        trial.set_user_attr("valid", view.valid_final)
        trial.set_user_attr("test", view.test_final)
        trial.set_user_attr("result", {"valid_best": view.valid_best, "valid_initial": view.valid_initial,
                                       "test_initial": view.test_initial, "best_valid_epoch": view_epoch(rec),
                                       "wall_time_s": rec.get("wall_time_s")})
        _tell(study, trial, values=study_value(view, cell))
    if on_run is not None:
        on_run(spec.run_id, not outcome.skipped)


def view_epoch(rec: Mapping[str, Any]) -> int | None:
    e = rec.get("best_valid_epoch")
    return None if e is None or (isinstance(e, float) and math.isnan(e)) else int(e)


def _tell(study: optuna.Study, trial: Trial, **kwargs: Any) -> None:
    try:
        study.tell(trial, **kwargs)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # failed as stale meanwhile; its sample is redone and finds the record


def study_value(view: RunView, cell: Cell) -> float:
    """The trial value: the final validation metric, diverged runs padded with epoch 0 (DeepOBS); never NaN."""
    value = view.valid_initial if view.status == "diverged" else view.valid_final
    if value is None or not math.isfinite(value):
        return -math.inf if cell.higher_is_better else math.inf
    return float(value)


def _suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def _pruning_observer(trial: Trial, cell: Cell) -> Callable[[int, dict[str, dict[str, float]]], None]:
    metric = cell.metric

    def observe(epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        value = metrics["valid"].get(metric)
        if epoch == 0 or value is None or not math.isfinite(value):
            return
        trial.report(value, epoch)
        if epoch < int(cell.problem_settings["num_epochs"]) and trial.should_prune():
            raise _Pruned(epoch)

    return observe


# ----------------------------------------------------------------------------------------------------- results
def trial_results(study: optuna.Study, cell: Cell, n: int,
                  results_dir: str) -> tuple[list[int], dict[int, FrozenTrial], list[TrialResult]]:
    """The budget's samples, the final trial of each (where there is one), and the finished runs among them."""
    trials = study.get_trials(deepcopy=False)
    samples = first_samples(trials, cell, n)
    groups = by_sample(trials)
    finals = {s: t for s in samples if (t := final_trial(groups.get(s, []))) is not None}
    results = []
    for s, t in finals.items():
        if t.state != TrialState.COMPLETE:
            continue
        rec = records.find_run(results_dir, t.user_attrs["run_id"])
        if rec is None or rec["status"] not in records.FINISHED:
            continue  # the record went missing: not counted (the plan will show it as to do)
        results.append(TrialResult(sample=s, tuned=dict(t.params),
                                   view=run_view(results_dir, rec, need_best=cell.tuning.selection == "best")))
    return samples, finals, results
