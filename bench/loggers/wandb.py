"""``logger=wandb``: every run live in Weights & Biases — without ever failing or slowing it.

The observer (``bench.observers`` hook) only *enqueues*: one writer thread per process does every wandb call, so
the training loop never waits for wandb (not for ``wandb-core``'s start, not for an online ``init`` on a node without
network, not for an upload). ``import wandb`` happens in that thread, and only with ``logger=wandb``.

* **Modes** ``logger.mode=offline`` (default: ``<dir>/wandb/offline-run-*``, upload later with ``valley-wandb
  sync``), ``online``, ``disabled`` (no observer at all: nothing imported, nothing written). Online first probes
  the server (a short HTTP request); an unreachable server, an ``init`` that fails or times out
  (``logger.init_timeout_s``), or any later W&B error becomes *one* warning and the process degrades
  online → offline → disabled. A run whose online ``init`` failed is written offline under the same id once no
  other run of the process is open (wandb-core keeps a failed stream's id; it is restarted first), so nothing is
  lost. Parquet stays the source of truth: ``valley-wandb export`` fills any gap.
* **Resume.** W&B id = ``run_id``, ``resume="allow"``: a resumed run continues the same W&B run. Each process
  segment is self-contained: a resumed run first re-logs the restored epochs (< ``start_epoch``, from the
  checkpoint's curves, bit-identical) and then its own, so its offline run is complete even when the previous
  segment died by SIGKILL before wandb flushed; the server drops steps it already has.
* **Stops.** ``on_stop`` (SIGTERM/USR2 turned into SystemExit, Ctrl-C, a data error, a pruned trial) finishes the
  W&B run at once (preempting runs are marked so) and waits for that, bounded; a run that raised gets its summary
  from the ``failed`` record that follows. At exit, the process waits (bounded) until every W&B run is finished.
* **Quiet.** No console capture, no system metrics, no git/metadata/requirements probes, ``silent``; the
  transaction log is flushed every ``logger.flush_s`` (wandb's default is 15 s); online uploads wait at most
  ``logger.finish_timeout_s`` at ``finish`` (the ``.wandb`` file keeps everything for ``valley-wandb sync``).

Many runs may be open at once in one process (cohorts, tuning workers): ``reinit="create_new"``. Every run written
is appended to the ledger (``payload.Ledger``) with its content fingerprint, so an export skips it.
"""
from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.loggers import payload
from bench.loggers.wandb_writer import (DRAIN_TIMEOUT, EXIT_HOOKS, MAX_BACKLOG, WandbSettings, Writer,
                                        atexit_on_top, writer)
from bench.secrets import redact

if TYPE_CHECKING:
    from bench.observers import EpochInfo, Labels, RunStart
    from bench.spec import RunSpec

MODES = ("offline", "online", "disabled")
DEFAULTS: dict[str, Any] = {"mode": "offline", "project": None, "entity": None, "dir": None, "tags": [],
                            "init_timeout_s": 20.0, "flush_s": 1.0, "finish_timeout_s": 30.0}
KEYS = ("name", *DEFAULTS)
# on_stop reasons after which no record follows (the run is going down or was stopped on purpose)
FINAL_STOPS = {"StopRun", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "DataError", "DataMissingError",
               "ChecksumError", "DataFormatError"}


# ----------------------------------------------------------------------------------------------- configuration
def _number(key: str, value: Any, minimum: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        return f"invalid logger.{key}={value!r}: must be a number >= {minimum:g}"
    return None


def check_value(key: str, value: Any) -> str | None:
    """One line for a bad ``logger.<key>`` value of the wandb logger, else None."""
    if key not in DEFAULTS and key != "name":
        return f"unknown setting 'logger.{key}' for logger wandb; valid: {', '.join('logger.' + k for k in DEFAULTS)}"
    if key == "name":
        return None if value == "wandb" else f"invalid logger.name={value!r} for the wandb logger"
    if key == "mode":
        return None if value in MODES else f"unknown logger.mode {value!r}; valid: {', '.join(MODES)}"
    if key in ("project", "entity", "dir"):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            return f"invalid logger.{key}={value!r}: must be a non-empty string (or null: the default)"
        if key == "project" and isinstance(value, str) and any(c in value for c in "/\\#?%:"):
            return f"invalid logger.project={value!r}: W&B project names cannot contain / \\ # ? % :"
        if key == "entity" and isinstance(value, str) and any(c in value for c in "/\\#?%: "):
            return f"invalid logger.entity={value!r}: not a W&B entity name"
        return None
    if key == "tags":
        return payload.check_tags(value)
    if key in ("init_timeout_s", "finish_timeout_s"):
        return _number(key, value, 1)
    if key == "flush_s":
        return _number(key, value, 0.05)
    return None


def check_block(block: Mapping[str, Any]) -> str | None:
    """One line for the first problem of a composed ``logger`` block (unknown key, bad mode, bad tags, …), or None."""
    if not isinstance(block, Mapping):
        return "logger must be chosen from conf/logger (logger=none|wandb)"
    for key, value in block.items():
        error = check_value(str(key), value)
        if error:
            return error
    return None


def check_override(key: str, value: str) -> str | None:
    """One line for a bad ``logger.<key>=…`` command-line override (every value of a sweep), else None."""
    import yaml

    sub = key.lstrip("+~").partition(".")[2]
    raws = [value] if sub == "tags" or value.strip().startswith("[") else [v for v in value.split(",")]
    for raw in raws:
        try:
            parsed = yaml.safe_load(raw)
        except yaml.YAMLError:
            parsed = raw
        if sub == "tags" and isinstance(parsed, str):
            parsed = [parsed]
        error = check_value(sub, parsed)
        if error:
            return error
    return None


def settings_from_block(block: Mapping[str, Any], cfg: Mapping[str, Any] | None = None) -> WandbSettings:
    """Validate ``block`` (raises a one-line ValueError) and resolve its defaults against the composed config."""
    error = check_block(block)
    if error:
        raise ValueError(error)
    values = {**DEFAULTS, **{k: v for k, v in block.items() if k != "name"}}
    results_dir = str((cfg or {}).get("results_dir", "results"))
    return WandbSettings(mode=values["mode"], project=values["project"], entity=values["entity"],
                         dir=str(Path(values["dir"] or results_dir).expanduser().absolute()),
                         tags=tuple(values["tags"] or ()), init_timeout_s=float(values["init_timeout_s"]),
                         flush_s=float(values["flush_s"]), finish_timeout_s=float(values["finish_timeout_s"]))


@dataclass(frozen=True)
class WandbFactory:
    """Picklable per-run observer factory (``bench.observers.ObserverFactory``)."""

    settings: WandbSettings

    def __call__(self, spec: RunSpec, labels: Labels) -> list[Any]:
        if self.settings.mode == "disabled":
            return []
        return [WandbObserver(self.settings, spec, labels)]


def factory_from_config(block: Mapping[str, Any], cfg: Mapping[str, Any]) -> WandbFactory:
    """The ``logger=wandb`` factory of a composed config; a bad block raises a one-line ValueError."""
    return WandbFactory(settings_from_block(block, cfg))


# ----------------------------------------------------------------------------------------------- the writer process
class Remote:
    """The live logger's writer in a child process (``python -m bench.loggers.wandb_serve``): the training process
    only pickles small tuples onto a pipe from a sender thread, so wandb's Python work (~1 ms a history row) never
    takes the training loop's GIL or time. The child finishes every open W&B run when the pipe closes — also when
    this process is killed — and prints its own one-line warnings on the shared stderr."""

    def __init__(self) -> None:
        import subprocess

        import bench

        self.pid = os.getpid()
        root = str(Path(bench.__file__).resolve().parent.parent)
        env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.loggers.wandb_serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True)
        self.q: queue.Queue[bytes | None] = queue.Queue()
        self.acks: dict[int, threading.Event] = {}  # barrier / drain replies
        self.done: dict[int, threading.Event] = {}  # runs finished (or given up) by the child
        self.alive = True
        self.warned: set[str] = set()
        self._next = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._send_loop, name="valley-wandb-send", daemon=True).start()
        threading.Thread(target=self._recv_loop, name="valley-wandb-recv", daemon=True).start()

    def _put(self, msg: tuple[Any, ...]) -> None:
        import pickle

        if self.alive:
            self.q.put(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def _send_loop(self) -> None:
        import struct

        out = self.proc.stdin
        while True:
            data = self.q.get()
            try:
                if data is None:
                    out.close()
                    return
                out.write(struct.pack("<I", len(data)) + data)
                if self.q.empty():
                    out.flush()
            except (OSError, ValueError):
                self._died()
                return

    def _recv_loop(self) -> None:
        import pickle
        import struct

        inp = self.proc.stdout
        while True:
            head = inp.read(4)
            if len(head) < 4:
                self._died()
                return
            kind, key = pickle.loads(inp.read(struct.unpack("<I", head)[0]))
            event = (self.acks if kind == "ack" else self.done).pop(key, None)
            if event is not None:
                event.set()

    def _died(self) -> None:
        if self.alive:
            self.alive = False
            for event in [*self.acks.values(), *self.done.values()]:
                event.set()
            if not getattr(self, "closing", False):
                self.warn("child", "the W&B writer process stopped; runs are no longer logged to W&B (fill W&B "
                                   "later with valley-wandb export)")

    def _event(self) -> tuple[int, threading.Event]:
        with self._lock:
            self._next += 1
            key = self._next
        event = self.acks[key] = threading.Event()
        return key, event

    def warn(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            print(f"valley: warning: {redact(' '.join(str(message).split()))[:400]}", file=sys.stderr, flush=True)

    def start(self, hid: int, settings: WandbSettings, init: dict[str, Any]) -> None:
        self.done[hid] = threading.Event()  # set when the child reports the run done
        self._put(("start", hid, settings, init))

    def send(self, kind: str, hid: int, *args: Any) -> None:
        if kind == "log" and self.q.qsize() > MAX_BACKLOG:
            self._put(("lossy", hid))
            self.warn("backlog", f"W&B falls behind ({MAX_BACKLOG} operations queued); history rows are dropped "
                                 "(fill W&B later with valley-wandb export)")
            return
        self._put((kind, hid, *args))

    def barrier(self, timeout: float) -> bool:
        key, event = self._event()
        self._put(("barrier", key))
        return event.wait(timeout) and self.alive

    def wait_done(self, hid: int, timeout: float) -> bool:
        event = self.done.get(hid)
        return event is None or event.wait(timeout)

    def drain(self, timeout: float) -> bool:
        if not self.alive:
            return False
        key, event = self._event()
        self._put(("drain", key))
        ok = event.wait(timeout) and self.alive
        if not ok:
            self.warn("drain", f"W&B: gave up waiting after {timeout:.0f} s at exit; some W&B runs may be incomplete "
                               "(fill them with valley-wandb export)")
        return ok

    def close(self, timeout: float) -> None:
        self.closing = True
        self.q.put(None)
        try:
            self.proc.wait(timeout)
        except Exception:  # noqa: BLE001
            self.proc.kill()


_CLIENT: Remote | Writer | None = None  # what live observers talk to
_LOCK = threading.Lock()
_HID = [0]
_WARNED: set[str] = set()
_STOP_DEADLINE: list[float | None] = [None]  # going down (SIGTERM, ...): all stopping runs share ~10 s


def client() -> Remote | Writer:
    """What live observers talk to: the child-process writer (or, if it cannot start or died, the in-process one)."""
    global _CLIENT
    with _LOCK:
        if _CLIENT is None or _CLIENT.pid != os.getpid() or not getattr(_CLIENT, "alive", True):
            died = _CLIENT is not None and _CLIENT.pid == os.getpid()
            _CLIENT = None
            if os.environ.get("VALLEY_WANDB_INPROCESS") != "1" and not died:
                try:
                    _CLIENT = Remote()
                except Exception as err:  # noqa: BLE001
                    print(f"valley: warning: W&B writer process not started ({type(err).__name__}: {err}); W&B "
                          "runs are written in this process", file=sys.stderr)
    if _CLIENT is None:
        _CLIENT = writer()
    atexit_on_top()
    return _CLIENT


def next_hid() -> int:
    with _LOCK:
        _HID[0] += 1
        return _HID[0]


def _close_remote() -> None:
    if isinstance(_CLIENT, Remote) and _CLIENT.pid == os.getpid():
        _CLIENT.drain(DRAIN_TIMEOUT[0])
        _CLIENT.close(10.0)


EXIT_HOOKS.append(_close_remote)


def drain(timeout: float = 120.0) -> bool:
    """Wait until every W&B run of this process (live or exported) is finished; False on timeout."""
    from bench.loggers import wandb_writer

    ok = True
    if isinstance(_CLIENT, Remote) and _CLIENT.pid == os.getpid() and _CLIENT.alive:
        ok = _CLIENT.drain(timeout) and ok
    local = wandb_writer._WRITER
    if local is not None and local.pid == os.getpid():
        ok = local.drain(timeout) and ok
    return ok


def _note_timeouts(s: WandbSettings) -> None:
    need = (s.init_timeout_s + 10.0 if s.mode == "online" else 0.0) + s.finish_timeout_s + 10.0
    DRAIN_TIMEOUT[0] = max(DRAIN_TIMEOUT[0], need)


# ----------------------------------------------------------------------------------------------- the observer
class WandbObserver:
    """One run's W&B observer (``bench.observers.RunObserver``). Every method only enqueues and never raises."""

    def __init__(self, settings: WandbSettings, spec: RunSpec, labels: Labels | None) -> None:
        self.settings, self.spec = settings, spec
        self.labels = {k: list(v) for k, v in (labels or {}).items()}
        self.hid: int | None = None
        self.sink: Remote | Writer | None = None
        self.start_epoch = 0
        self.curves: list[tuple[int, str, str, float]] = []
        self.restored: list[tuple[int, str, str, float]] = []
        self.backfill_pending = False
        self.last_epoch: int | None = None
        self.ended = False

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - a logger never fails a run
            try:
                if type(err).__name__ not in _WARNED:
                    _WARNED.add(type(err).__name__)
                    print(f"valley: warning: W&B logger error ({type(err).__name__}: {redact(str(err))[:200]}); the "
                          "run continues", file=sys.stderr)
            except Exception:  # noqa: BLE001
                pass

    def on_start(self, start: RunStart) -> None:
        self._guard(lambda: self._start(start))

    def _start(self, start: RunStart) -> None:
        spec, s = self.spec, self.settings
        _note_timeouts(s)
        self.start_epoch = int(start.start_epoch)
        if self.start_epoch > 0:
            self.restored = [tuple(c) for c in start.curves if int(c[0]) < self.start_epoch]  # type: ignore[misc]
            self.curves = list(self.restored)
            self.backfill_pending = bool(self.restored)
        init = {"id": spec.run_id, "project": s.project_for(spec.problem), "entity": s.entity,
                "name": payload.run_name(spec.problem, spec.optimizer, spec.schedule, spec.seed),
                "group": payload.run_group(spec.problem, spec.optimizer, spec.schedule), "job_type": "train",
                "tags": payload.tags_for(self.labels, "valley", s.tags),
                "config": payload.config_from_spec(spec.canonical(), spec.run_id)}
        self.sink, self.hid = client(), next_hid()
        self.sink.start(self.hid, s, init)

    def _backfill(self, steps_per_epoch: int | None) -> None:
        """Re-log the epochs restored from the checkpoint, so this segment's W&B run is complete by itself."""
        self.backfill_pending = False
        spec = self.spec
        metric = "accuracy" if any(m == "accuracy" for _, _, m, _ in self.restored) else "loss"
        fake = {"schedule": spec.schedule, "schedule_settings": dict(spec.schedule_settings),
                "num_epochs": spec.num_epochs, "metric": metric, "epochs_completed": 1, "steps": steps_per_epoch}
        factors = payload.lr_factors(fake, self.restored)
        for row in payload.history_rows(self.restored, factors, steps_per_epoch):
            self.sink.send("log", self.hid, row, row["epoch"])

    def on_epoch(self, epoch: int, metrics: Any, info: EpochInfo) -> None:
        self._guard(lambda: self._epoch(epoch, metrics, info))

    def _epoch(self, epoch: int, metrics: Any, info: EpochInfo) -> None:
        if self.hid is None or epoch < self.start_epoch or self.ended:
            return
        if self.backfill_pending:
            self._backfill(info.steps // epoch if epoch > 0 and info.steps is not None else None)
        for split, values in metrics.items():
            self.curves.extend((epoch, split, m, v) for m, v in values.items())
        self.last_epoch = epoch
        self.sink.send("log", self.hid, payload.epoch_row(epoch, metrics, info.lr_factor, info.steps), epoch)

    def on_checkpoint(self, epoch: int) -> None:
        # Nothing to wait for: rows are already on their way in order, wandb-core flushes its file every flush_s,
        # the writer process finishes the run if this one dies, and a resumed segment re-logs the restored epochs.
        pass

    def on_end(self, record: Mapping[str, Any]) -> None:
        self._guard(lambda: self._end(record))

    def _end(self, record: Mapping[str, Any]) -> None:
        if self.hid is None or self.ended:
            return
        self.ended = True
        if self.backfill_pending:
            self._backfill(payload.steps_per_epoch(record))
        rec = dict(record)
        self.sink.send("summary", self.hid, payload.summary_from_record(rec))
        self.sink.send("finish", self.hid, 1 if rec.get("status") == "failed" else 0, ("live", rec, list(self.curves)))

    def on_stop(self, reason: str) -> None:
        try:
            self._stop(reason)
        except Exception:  # noqa: BLE001 - never raise from a run that is going down
            pass

    def _stop(self, reason: str) -> None:
        if self.hid is None or self.ended:
            return
        if reason not in FINAL_STOPS:  # a run that raised: its failed record follows (on_end)
            self.sink.send("soft_stop", self.hid, reason)
            return
        self.ended = True
        pruned = reason == "StopRun"
        if reason == "SystemExit":
            self.sink.send("preempt", self.hid)
        self.sink.send("summary", self.hid, {"status": "pruned" if pruned else "stopped", "stop_reason": reason,
                                             "last_epoch": self.last_epoch})
        self.sink.send("finish", self.hid, 0 if pruned else 1, None)
        if not pruned:  # the process is going down: let the W&B run close, within one shared deadline
            with _LOCK:
                if _STOP_DEADLINE[0] is None:
                    _STOP_DEADLINE[0] = time.monotonic() + min(10.0, self.settings.finish_timeout_s + 2.0)
                left = _STOP_DEADLINE[0] - time.monotonic()
            if left > 0:
                self.sink.wait_done(self.hid, left)
