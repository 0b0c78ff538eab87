"""Worker processes for ``tuning.workers=N``: one pool per sweep, reused by every cell of a Hydra multirun.

Processes are *spawned* (not forked: the coordinator may hold threads, an Optuna storage connection and torch's
thread pool, none of which survive a fork safely). Each worker uses ``cores // N`` torch threads so that N workers
do not oversubscribe the machine, and exits as soon as its parent is gone — a coordinator killed with SIGKILL leaves
no orphan training runs behind (their RUNNING trials are then redone by the next invocation).
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_POOL: ProcessPoolExecutor | None = None
_SIZE = 0


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _init_worker(parent: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:  # Linux: the kernel kills us with the parent; the watcher thread covers the rest
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def get_pool(workers: int) -> ProcessPoolExecutor:
    """The shared pool with ``workers`` processes (re-created if the size changes)."""
    global _POOL, _SIZE
    if _POOL is not None and _SIZE != workers:
        shutdown()
    if _POOL is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
        _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_init_worker, initargs=(os.getpid(), threads))
        _SIZE = workers
    return _POOL


def shutdown() -> None:
    global _POOL, _SIZE
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
    _POOL, _SIZE = None, 0


atexit.register(shutdown)
