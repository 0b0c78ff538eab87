"""``launcher=inline``: the sweep runs in this process (and its ``tuning.workers`` processes), phase by phase.

Jobs are grouped by results_dir and run environment (engine, device, workers, checkpoints, logger, ...); each
group's single runs and batchable cells go through ``bench.tuning.batch`` (phase 1: every run known up front, in
one batch, so cohorts form across cells; phase 2: the winners' re-runs), cells that need trials one at a time
(TPE/QMC/random samplers, pruning) through ``bench.tuning.runner``. A lone single run keeps its progress bar and
summary. A killed sweep is resumed by the same command: recorded runs are skipped and a run interrupted mid-way
continues from its last checkpoint.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from collections.abc import Mapping
from typing import Any

from bench.execute import RunEnv, env_from_config
from bench.spec import RunSpec, spec_from_config


def _env_key(env: RunEnv, cfg: Mapping[str, Any]) -> tuple:
    import json

    return (env.results_dir, env.device, env.data_dir, env.engine, env.workers, env.checkpoint, env.deterministic,
            json.dumps(cfg.get("logger"), sort_keys=True, default=str), cfg.get("save_params"),
            cfg.get("save_params_runs"))


def launch(cfgs: list[dict[str, Any]], *, multirun: bool) -> int:
    from bench.cli import fail
    from bench.tuning import progress
    from bench.tuning.batch import SweepRun, batchable, run_sweep
    from bench.tuning.cli import cell_of, plan_of_configs, where_of
    from bench.tuning.runner import run_cell
    from bench.tuning.cell import write_cell

    if not multirun and len(cfgs) == 1 and not cfgs[0].get("budget"):
        from bench.cli import run_from_config

        run_from_config(cfgs[0])
        return 0
    groups: dict[tuple, tuple[RunEnv, list[Any], list[RunSpec], list[dict[str, Any]]]] = {}
    for cfg in cfgs:
        try:
            env = env_from_config(cfg)
        except ValueError as err:
            fail(" ".join(str(err).split()))
        if cfg.get("budget"):
            if cfg.get("force"):
                fail("force=true re-runs single runs only; a cell always reuses its study and the recorded runs")
            item: Any = cell_of(cfg)
        else:
            from bench.spec import SpecError

            try:
                item = spec_from_config(cfg)
            except SpecError as err:
                fail(str(err))
        entry = groups.setdefault(_env_key(env, cfg), (env, [], [], []))
        (entry[2] if isinstance(item, RunSpec) else entry[1]).append(item)
        entry[3].append(cfg)
    check_storages([c for _, cells, _, _ in groups.values() for c in cells])
    plan = plan_of_configs(cfgs)
    tracker = progress.start_sweep(plan, show_live=all(bool(c.get("progress", True)) for c in cfgs))
    failed = 0
    try:
        for env, cells, singles, group_cfgs in groups.values():
            batch = [c for c in cells if batchable(c)]
            if batch or singles:
                force = any(bool(c.get("force")) for c in group_cfgs if not c.get("budget"))
                sweep = SweepRun(batch, env, singles=singles)
                if singles and force:
                    from bench.execute import execute_many

                    execute_many(singles, env, force=True, on_run=lambda o: tracker.run_done(o.run_id, True),
                                 say=_say, labels={s.run_id: {"role": ["single"]} for s in singles})
                    sweep.singles = []
                run_sweep(sweep, on_run=tracker.run_done, say=_say, on_cell=tracker.cell_done)
                for spec in singles:
                    rec = sweep.index.finished(spec.run_id)
                    failed += rec is None
            for cell in (c for c in cells if not batchable(c)):
                tracker.cell_started(cell)
                where = where_of(group_cfgs[0], cell)
                outcome = run_cell(cell, replace(where, observers=env.observers), on_run=tracker.run_done)
                write_cell(env.results_dir, outcome.row())
                tracker.cell_done(outcome)
    finally:
        progress.stop_sweep()
    print(tracker.summary(), flush=True)
    return 1 if tracker.cells_partial or failed else 0


def check_storages(cells: list[Any], timeout_s: float = 5.0) -> None:
    """One line and exit code 2, before anything is trained, when a tuning storage cannot be used."""
    from bench.cli import fail
    from bench.secrets import check_storage_reachable

    for storage in dict.fromkeys(c.tuning.storage for c in cells if c.budget.tuned):
        error = check_storage_reachable(storage, timeout_s)
        if error:
            fail(error)


def _say(line: str) -> None:
    print(f"valley: {line}", file=sys.stderr, flush=True)
