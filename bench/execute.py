"""Run a spec once: find its record (skip), or train it and write the record. The unit every sweep is made of."""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import records
from bench.spec import RunSpec
from bench.train import EpochObserver, RunResult, train
from problems.datasets.errors import DataError


@dataclass
class Outcome:
    run_id: str
    record: dict[str, Any]
    skipped: bool  # the record existed and nothing was trained
    path: Path


def execute(spec: RunSpec, results_dir: str | Path, *, device: str = "auto", data_dir: str | Path | None = None,
            force: bool = False, on_epoch: EpochObserver | None = None) -> Outcome:
    """Train ``spec`` unless a finished record of it exists; write curves then the runs row, atomically.

    A run that raises is recorded as ``failed`` (with the error) so a sweep can carry on and report it; failed runs
    are retried by the next invocation. A missing or corrupt data set is not a failed run but a broken environment:
    it propagates and nothing is written. A kill leaves no visible partial file (records writes temp + rename).
    """
    path = Path(results_dir) / "runs" / f"{spec.run_id}.parquet"
    if not force:
        existing = records.find_run(results_dir, spec.run_id)
        if existing is not None and existing["status"] in records.FINISHED:
            return Outcome(spec.run_id, existing, True, path)
    started = datetime.now(timezone.utc)
    try:
        result = train(spec, device=device, data_dir=data_dir, on_epoch=on_epoch)
    except (KeyboardInterrupt, SystemExit, DataError):
        raise
    except Exception as err:  # noqa: BLE001 - recorded, then the caller decides
        result = RunResult(spec=spec, status="failed", started_at=started, finished_at=datetime.now(timezone.utc),
                           error=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=20)}")
    record = result.record()
    records.write_run(results_dir, record, result.curves)
    return Outcome(spec.run_id, record, False, path)
