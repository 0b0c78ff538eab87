"""The W&B writer: the one place where wandb is imported and called (in the live logger's child process, or in
``valley-wandb export``). Light imports only (no torch): the child process starts fast and takes no CPU from
training. Operations are applied in order by one thread; errors degrade the process online → offline → disabled
with one warning each; runs whose online ``init`` failed are written offline under the same id once no run is
open (wandb-core is restarted first, as it keeps a failed stream's id)."""
from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loggers import payload
from bench.secrets import redact

MAX_BACKLOG = 200_000  # queued operations; beyond this, history rows are dropped (the ledger marks the run incomplete)


@dataclass(frozen=True)
class WandbSettings:
    """The validated ``logger`` block (plain data: it travels to tuning workers)."""

    mode: str = "offline"
    project: str | None = None  # None: valley-<problem>; "{problem}" is replaced
    entity: str | None = None
    dir: str = "results"  # wandb writes <dir>/wandb/; its cache and staging dirs are <dir>/wandb/.cache, .data
    tags: tuple[str, ...] = ()
    init_timeout_s: float = 20.0
    flush_s: float = 1.0
    finish_timeout_s: float = 30.0

    @property
    def wandb_dir(self) -> Path:
        return Path(self.dir) / "wandb"

    def project_for(self, problem: str) -> str:
        return payload.project_for(self.project, problem)


# ----------------------------------------------------------------------------------------------- the writer
@dataclass
class RunHandle:
    """One W&B run as the writer sees it. ``ops`` are kept until finish, to write the run again elsewhere."""

    settings: WandbSettings
    init: dict[str, Any]  # wandb.init keyword arguments (id, project, entity, name, group, job_type, tags, config)
    ops: list[tuple[Any, ...]] = field(default_factory=list)
    run: Any = None
    state: str = "new"  # new | open | deferred | finished | dead
    mode: str | None = None
    poisoned: bool = False  # its id is held by a failed online stream of this process's wandb-core
    lossy: bool = False
    soft_stop: str | None = None


class Writer:
    """Owns every wandb object of a process and applies operations in order in one thread; degrades on error.

    The API is by handle id (``start``, ``send``, ``barrier``, ``wait_done``, ``drain``) so that the same calls work
    in-process (the exporter) and through :class:`Remote` (the live logger's child process). ``on_done(hid, ok)``
    is called once a run is finished (ok) or given up.
    """

    def __init__(self, on_done: Callable[[int, bool], None] | None = None) -> None:
        self.pid = os.getpid()
        self.q: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.floor = "online"  # the best mode still allowed in this process: online > offline > disabled
        self.warned: set[str] = set()
        self.handles: dict[int, RunHandle] = {}
        self.open: dict[int, RunHandle] = {}
        self.deferred: list[RunHandle] = []
        self.done: dict[int, threading.Event] = {}
        self.on_done = on_done
        self.wandb: Any = None
        self.probe: tuple[float, str | None] | None = None
        self.thread = threading.Thread(target=self._loop, name="valley-wandb", daemon=True)
        self.thread.start()

    # --------------------------------------------------------------------------------------- the calling side
    def start(self, hid: int, settings: WandbSettings, init: dict[str, Any]) -> None:
        self.done[hid] = threading.Event()
        self.q.put(("start", hid, settings, init))

    def send(self, kind: str, hid: int, *args: Any) -> None:
        if kind == "log" and self.q.qsize() > MAX_BACKLOG:
            self.q.put(("lossy", hid))
            self.warn("backlog", f"W&B falls behind ({MAX_BACKLOG} operations queued); history rows are dropped "
                                 "(fill W&B later with valley-wandb export)")
            return
        self.q.put((kind, hid, *args))

    def barrier(self, timeout: float) -> bool:
        event = threading.Event()
        self.q.put(("barrier", event))
        return event.wait(timeout)

    def wait_done(self, hid: int, timeout: float) -> bool:
        event = self.done.get(hid)
        return event is None or event.wait(timeout)

    def drain(self, timeout: float) -> bool:
        """Finish every W&B run (runs never ended are closed as stopped), bounded by ``timeout``."""
        event = threading.Event()
        self.q.put(("drain", event))
        ok = event.wait(timeout)
        if not ok:
            self.warn("drain", f"W&B: gave up waiting after {timeout:.0f} s; some W&B runs may be incomplete "
                               "(fill them with valley-wandb export)")
        return ok

    def warn(self, key: str, message: str) -> None:
        if key in self.warned:
            return
        self.warned.add(key)
        print(f"valley: warning: {redact(' '.join(str(message).split()))[:400]}", file=sys.stderr, flush=True)

    # --------------------------------------------------------------------------------------- the thread
    def _loop(self) -> None:
        while True:
            op = self.q.get()
            try:
                self._dispatch(op)
            except Exception as err:  # noqa: BLE001 - the writer never dies
                self.warn("internal", f"W&B writer error ({type(err).__name__}: {err}); W&B logging continues")
            if not self.open and self.deferred and op[0] in ("start", "finish", "drain", "barrier"):
                self._reopen_deferred()
            if op[0] == "drain":
                self._drain_rest()
            if op[0] in ("barrier", "drain"):
                op[1].set()

    def _dispatch(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind in ("barrier", "drain"):
            return
        if kind == "start":
            handle = self.handles[op[1]] = RunHandle(settings=op[2], init=dict(op[3]))
            self._open(handle)
            return
        handle = self.handles.get(op[1])
        if handle is None:
            return
        if kind == "lossy":
            handle.lossy = True
            return
        self._apply(handle, op)

    def _apply(self, handle: RunHandle, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if handle.state in ("finished", "dead"):
            return
        handle.ops.append(op)
        if handle.state == "deferred":
            if kind == "finish" and self.floor == "disabled":
                self._kill(handle)
            return
        self._do(handle, op)

    def _do(self, handle: RunHandle, op: tuple[Any, ...]) -> None:
        kind = op[0]
        try:
            if kind == "log":
                handle.run.log(op[2], step=op[3], commit=True)
            elif kind == "summary":
                handle.run.summary.update(op[2])
            elif kind == "table":
                table = self.wandb.Table(columns=list(op[3]), data=[list(r) for r in op[4]])
                handle.run.log({op[2]: table}, commit=True)
            elif kind == "preempt":
                handle.run.mark_preempting()
            elif kind == "soft_stop":
                handle.soft_stop = op[2]
            elif kind == "finish":
                self._finish(handle, op[2], op[3])
        except Exception as err:  # noqa: BLE001 - degrade, keep the run's operations to write it elsewhere
            self._failed(handle, err)

    def _settings(self, mode: str, s: WandbSettings) -> Any:
        return self.wandb.Settings(
            console="off", x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True, disable_git=True,
            disable_code=True, save_code=False, x_save_requirements=False, disable_job_creation=True, silent=True,
            show_info=False, show_warnings=False, label_disable=True, init_timeout=s.init_timeout_s,
            finish_timeout=s.finish_timeout_s if mode == "online" else 0.0, finish_timeout_raises=mode == "online",
            x_transaction_log_flush_interval=s.flush_s)

    def _import(self, s: WandbSettings) -> bool:
        if self.wandb is not None:
            return True
        base = s.wandb_dir
        os.environ.pop("WANDB_SERVICE", None)  # inherited from a parent process: use a wandb-core of our own
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        os.environ.setdefault("WANDB_CACHE_DIR", str(base / ".cache"))
        os.environ.setdefault("WANDB_DATA_DIR", str(base / ".data"))
        os.environ.setdefault("WANDB_ARTIFACT_DIR", str(base / ".artifacts"))
        try:
            import wandb
        except Exception as err:  # noqa: BLE001 - not installed or broken
            self.floor = "disabled"
            self.warn("import", f"W&B unavailable ({type(err).__name__}: {err}); runs are not logged to W&B "
                                "(pip install wandb; fill W&B later with valley-wandb export)")
            return False
        try:  # wandb's own product analytics would POST to the server (and hang at exit without network)
            from wandb.analytics.opentelemetry import opentelemetry_proxy

            opentelemetry_proxy.disable()
        except Exception:  # noqa: BLE001 - another wandb version
            pass
        self.wandb = wandb
        return True

    def _probe(self, timeout: float) -> str | None:
        """Why the W&B server cannot be reached (one short HTTP request, cached for 5 minutes), or None."""
        now = time.monotonic()
        if self.probe is not None and now - self.probe[0] < 300:
            return self.probe[1]
        import urllib.error
        import urllib.request

        base = os.environ.get("WANDB_BASE_URL")
        if not base:
            try:  # wandb's own resolution: settings files (`wandb login --host`), then its default
                from wandb.sdk import wandb_setup

                base = str(wandb_setup.singleton().settings.base_url)
            except Exception:  # noqa: BLE001
                base = str(self.wandb.Settings().base_url)
        base = base.rstrip("/")
        why = None
        try:
            with urllib.request.urlopen(urllib.request.Request(base + "/healthz", method="GET"), timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered
        except Exception as err:  # noqa: BLE001 - refused, no route, DNS, timeout, TLS, ...
            reason = getattr(err, "reason", err)
            why = f"{base} unreachable ({'timed out' if isinstance(reason, TimeoutError) else reason})"
        self.probe = (now, why)
        return why

    def _open(self, handle: RunHandle) -> None:
        s = handle.settings
        if self.floor == "disabled" or not self._import(s):
            self._kill(handle)
            return
        mode = "online" if s.mode == "online" and self.floor == "online" else "offline"
        if mode == "online":
            why = self._probe(min(5.0, s.init_timeout_s))
            if why is not None:
                self._lower("offline", "online", f"W&B online mode: {why}; runs are logged offline (upload them "
                                                 "later with valley-wandb sync)")
                mode = "offline"
        try:
            s.wandb_dir.mkdir(parents=True, exist_ok=True)
            _wait_for_a_fresh_run_dir(s.wandb_dir, str(handle.init.get("id", "")))
            handle.run = self.wandb.init(**handle.init, dir=s.dir, mode=mode, resume="allow", reinit="create_new",
                                         settings=self._settings(mode, s))
        except Exception as err:  # noqa: BLE001
            if mode == "online":
                self._lower("offline", "online", f"W&B online init failed ({type(err).__name__}: {err}); runs are "
                                                 "logged offline (upload them later with valley-wandb sync)")
                handle.poisoned = True
                self._defer(handle)
            else:
                self._lower("disabled", "offline", f"W&B failed ({type(err).__name__}: {err}); W&B logging is off "
                                                   "for this process (fill W&B later with valley-wandb export)")
                self._kill(handle)
            return
        handle.state, handle.mode = "open", mode
        self.open[id(handle)] = handle
        if self is _WRITER:
            atexit_on_top()  # after wandb-core's own exit hook (registered at its start), so that ours runs first

    def _lower(self, floor: str, key: str, message: str) -> None:
        order = {"online": 2, "offline": 1, "disabled": 0}
        if order[floor] < order[self.floor]:
            self.floor = floor
        self.warn(key, message)

    def _defer(self, handle: RunHandle) -> None:
        self.open.pop(id(handle), None)
        handle.run, handle.state = None, "deferred"
        if self.floor == "disabled":
            self._kill(handle)
        elif handle not in self.deferred:
            self.deferred.append(handle)

    def _release(self, handle: RunHandle, ok: bool) -> None:
        for hid, h in list(self.handles.items()):
            if h is handle:
                del self.handles[hid]
                event = self.done.pop(hid, None)
                if event is not None:
                    event.set()
                if self.on_done is not None:
                    self.on_done(hid, ok)

    def _kill(self, handle: RunHandle) -> None:
        self.open.pop(id(handle), None)
        if handle in self.deferred:
            self.deferred.remove(handle)
        handle.run, handle.state, handle.ops = None, "dead", []
        self._release(handle, False)

    def _failed(self, handle: RunHandle, err: BaseException) -> None:
        """A W&B call of an open run raised: lower the floor, write the run again (from its operations) elsewhere."""
        if handle.mode == "online":
            self._lower("offline", "online", f"W&B online logging failed ({type(err).__name__}: {err}); runs are "
                                             "logged offline (upload them later with valley-wandb sync)")
            handle.poisoned = True
        else:
            self._lower("disabled", "offline", f"W&B failed ({type(err).__name__}: {err}); W&B logging is off for "
                                               "this process (fill W&B later with valley-wandb export)")
        try:
            handle.run.finish(exit_code=1)
        except Exception:  # noqa: BLE001
            pass
        self._defer(handle)

    def _reopen_deferred(self) -> None:
        """Write deferred runs offline (a quiet moment: no run open). wandb-core keeps the id of a failed online
        stream, so it is restarted first."""
        if self.floor == "disabled":
            for handle in list(self.deferred):
                self._kill(handle)
            return
        if any(h.poisoned for h in self.deferred):
            try:
                self.wandb.teardown()
            except Exception:  # noqa: BLE001
                pass
        for handle in list(self.deferred):
            self.deferred.remove(handle)
            ops, handle.ops, handle.poisoned = handle.ops, [], False
            self._open(handle)
            for op in ops:
                self._apply(handle, op)

    def _finish(self, handle: RunHandle, exit_code: int, entry: Any) -> None:
        mode, run = handle.mode, handle.run
        run_dir = getattr(getattr(run, "settings", None), "sync_dir", None)
        timed_out = False
        try:
            run.finish(exit_code=exit_code)
        except TimeoutError:
            timed_out = True  # online upload incomplete: the .wandb file has everything (valley-wandb sync)
            self.warn("finish", f"W&B upload did not finish within {handle.settings.finish_timeout_s:g} s; the data "
                                "is kept locally (upload it with valley-wandb sync)")
        self.open.pop(id(handle), None)
        handle.state, handle.run, handle.ops = "finished", None, []
        if entry is not None:
            try:
                if isinstance(entry, tuple) and entry[0] == "live":  # computed here, off the training process
                    _, record, curves = entry
                    init = handle.init
                    entry = {"key": payload.Ledger.key(init["project"], init["entity"], init["id"]), "id": init["id"],
                             "project": init["project"], "entity": init["entity"], "kind": "run",
                             "fp": payload.run_fingerprint(record, curves), "tags": init["tags"], "by": "live"}
                ledger = payload.Ledger(handle.settings.wandb_dir)
                ledger.append([{**entry, "mode": mode, "dir": ledger.relative(run_dir) if run_dir else None,
                                "complete": not handle.lossy, "synced": mode == "online" and not timed_out}])
            except Exception as err:  # noqa: BLE001
                self.warn("ledger", f"W&B ledger not written ({type(err).__name__}: {err}); a later export "
                                    "re-writes these runs")
        self._release(handle, True)

    def _drain_rest(self) -> None:
        for handle in list(self.open.values()):
            summary = {"status": "stopped", "stop_reason": handle.soft_stop or "process exit"}
            self._do(handle, ("summary", 0, summary))
            if handle.state == "open":
                self._do(handle, ("finish", 0, 1, None))
        if self.deferred:
            self._reopen_deferred()
            for handle in list(self.open.values()):
                if handle.state == "open":
                    self._do(handle, ("finish", 0, 1, None))


_WRITER: Writer | None = None
_LOCK = threading.Lock()
DRAIN_TIMEOUT = [60.0]
EXIT_HOOKS: list[Callable[[], None]] = []  # run first at exit (the live logger's child process: drain, close)


def writer() -> Writer:
    """This process's in-process writer (a new one after a fork)."""
    global _WRITER
    with _LOCK:
        if _WRITER is None or _WRITER.pid != os.getpid():
            _WRITER = Writer()
        return _WRITER


_ATEXIT_LOCK = threading.Lock()


def atexit_on_top() -> None:
    """(Re-)register the exit drain as the newest exit hook: atexit runs hooks newest first, and wandb registers its
    service teardown when wandb-core starts (possibly after our first registration)."""
    with _ATEXIT_LOCK:
        atexit.unregister(_drain_at_exit)
        atexit.register(_drain_at_exit)


def _drain_at_exit() -> None:
    for hook in EXIT_HOOKS:
        try:
            hook()
        except Exception:  # noqa: BLE001
            pass
    if _WRITER is not None and _WRITER.pid == os.getpid():
        _WRITER.drain(DRAIN_TIMEOUT[0])


def _wait_for_a_fresh_run_dir(wandb_dir: Path, run_id: str) -> None:
    """W&B names a run's directory ``<mode>-run-<YYYYmmdd_HHMMSS>-<id>``: a segment resumed in the same second as the
    previous one ended would write into (and truncate) that segment's files. Wait for the next second instead."""
    while run_id:
        stamp = time.strftime("%Y%m%d_%H%M%S")
        if not any((wandb_dir / f"{mode}-run-{stamp}-{run_id}").exists() for mode in ("offline", "run")):
            return
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
