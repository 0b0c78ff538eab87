"""``valley-wandb``: W&B runs from the Parquet records (export), uploads of offline runs (sync), and a check that
the W&B runs on disk say what the Parquet records say (verify).

``export`` writes one W&B run per valley run (job_type ``train``), per imported published run (``imported``) and per
cell (``cell``: the cell's identity as config, mean/std of the test metric and divergences as summary, its trials
and seed runs as a table, so that a parallel-coordinates panel compares cells). Runs look exactly as the live
logger writes them (``bench.loggers.payload``); tags ``role:…``/``budget:…`` come from the cells table. The ledger
(``<dir>/wandb/valley-ledger.jsonl``, shared with the live logger) holds each W&B run's content fingerprint: a
second export writes nothing, a changed record (a forced re-run, a new cell that reuses a run) is written again.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench import records
from bench.loggers import payload

SELECT_KEYS = ("problem", "optimizer", "schedule", "budget", "source", "seed", "status", "kind", "run_id")
KINDS = ("run", "imported", "cell")


# ------------------------------------------------------------------------------------------- reading Parquet
def read_rows(results_dir: str | Path, table: str, schema: pa.Schema) -> list[dict[str, Any]]:
    """Every row of a table as Python values (None and NaN kept apart), each key once: a loose file (named after its
    run_id / cell_id) shadows packed rows; among packed files the first by name owns a key (``bench.records``)."""
    directory = Path(results_dir) / table
    if not directory.is_dir():
        return []
    key = "cell_id" if "cell_id" in schema.names else "run_id"
    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))
    loose = [p for p in files if records.LOOSE_NAME.fullmatch(p.stem)]
    packed = [p for p in files if not records.LOOSE_NAME.fullmatch(p.stem)]
    out: dict[str, dict[str, Any]] = {}
    for path in loose:
        for row in pq.read_table(path, schema=schema).to_pylist():
            out[row[key]] = row
    shadowed = set(out)
    for path in packed:
        for row in pq.read_table(path, schema=schema).to_pylist():
            if row[key] not in shadowed and row[key] not in out:
                out[row[key]] = row
    return list(out.values())


def curves_of(results_dir: str | Path, run_ids: Sequence[str]) -> dict[str, list[tuple[int, str, str, float]]]:
    out: dict[str, list[tuple[int, str, str, float]]] = {r: [] for r in run_ids}
    if not run_ids:
        return out
    df = records.read_curves(results_dir, run_ids)
    for rid, epoch, split, metric, value in zip(df["run_id"], df["epoch"], df["split"], df["metric"], df["value"]):
        out.setdefault(rid, []).append((int(epoch), str(split), str(metric), float(value)))
    return out


def cell_labels(cells: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """run_id → {"role": {trial, seed}, "budget": {...}} from the cells that hold the run."""
    out: dict[str, dict[str, set[str]]] = {}
    for cell in cells:
        for role, ids in (("trial", cell.get("trial_run_ids")), ("seed", cell.get("run_ids"))):
            for rid in ids or []:
                entry = out.setdefault(rid, {"role": set(), "budget": set()})
                entry["role"].add(role)
                if cell.get("budget"):
                    entry["budget"].add(str(cell["budget"]))
    return out


# ------------------------------------------------------------------------------------------- selection
def parse_select(items: Sequence[str] | None) -> dict[str, set[str]]:
    """``["problem=a,b", "budget=small"]`` → {"problem": {"a", "b"}, "budget": {"small"}}; ValueError on bad keys."""
    out: dict[str, set[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in SELECT_KEYS or not value:
            raise ValueError(f"invalid --select {item!r}: use KEY=VALUE[,VALUE...] with KEY one of "
                             f"{', '.join(SELECT_KEYS)}")
        if key == "kind" and not set(value.split(",")) <= set(KINDS):
            raise ValueError(f"invalid --select {item!r}: kind is one of {', '.join(KINDS)}")
        out.setdefault(key, set()).update(v.strip() for v in value.split(","))
    return out


def _matches(select: Mapping[str, set[str]], values: Mapping[str, Any], budgets: set[str]) -> bool:
    for key, wanted in select.items():
        if key == "budget":
            if not budgets & wanted:
                return False
        elif str(values.get(key)) not in wanted:
            return False
    return True


# ------------------------------------------------------------------------------------------- the items
@dataclass
class Item:
    kind: str  # run | imported | cell
    init: dict[str, Any]
    fp: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    table: tuple[list[str], list[list[Any]]] | None = None
    exit_code: int = 0

    @property
    def key(self) -> str:
        return payload.Ledger.key(self.init["project"], self.init["entity"], self.init["id"])


def run_item(record: Mapping[str, Any], curves: Sequence[tuple[int, str, str, float]],
             labels: Mapping[str, Iterable[str]] | None, project: str | None, entity: str | None,
             extra_tags: Sequence[str] = ()) -> Item:
    source = record.get("source") or "valley"
    kind = "run" if source == "valley" else "imported"
    problem = record["problem"]
    init = {"id": record["run_id"], "project": payload.project_for(project, problem), "entity": entity,
            "name": payload.run_name(problem, record["optimizer"], record["schedule"], record["seed"]),
            "group": payload.run_group(problem, record["optimizer"], record["schedule"]),
            "job_type": "train" if kind == "run" else "imported",
            "tags": payload.tags_for(labels, source, extra_tags), "config": payload.config_from_record(record)}
    rows = payload.history_rows(curves, payload.lr_factors(record, curves) if kind == "run" else {},
                                payload.steps_per_epoch(record))
    return Item(kind=kind, init=init, fp=payload.run_fingerprint(record, curves), rows=rows,
                summary=payload.summary_from_record(record), exit_code=1 if record.get("status") == "failed" else 0)


def cell_item(cell: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], project: str | None,
              entity: str | None, extra_tags: Sequence[str] = ()) -> Item:
    source = cell.get("source") or "valley"
    problem, optimizer, schedule, budget = cell["problem"], cell["optimizer"], cell["schedule"], cell["budget"]
    tags = sorted({f"source:{source}", f"budget:{budget}", "kind:cell", *extra_tags})
    init = {"id": payload.cell_wandb_id(cell["cell_id"]), "project": payload.project_for(project, problem),
            "entity": entity, "name": f"{problem}/{optimizer}/{schedule}/{budget}"[:payload.NAME_MAX],
            "group": payload.run_group(problem, optimizer, schedule), "job_type": "cell", "tags": tags,
            "config": payload.cell_config(cell)}
    columns, rows = payload.cell_trials(cell, runs)
    summary = payload.cell_summary(cell)
    fp = payload.fingerprint(kind="cell", config=init["config"], summary=summary, table=[columns, rows])
    return Item(kind="cell", init=init, fp=fp, summary=summary, table=(columns, rows))


def merge_tags(derived: Sequence[str], previous: Sequence[str]) -> list[str]:
    """The union of two tag sets, where ``role:single`` (nothing known) yields to any known role."""
    tags = set(derived) | set(previous)
    if any(t.startswith("role:") and t != "role:single" for t in tags):
        tags.discard("role:single")
    return sorted(tags)


@dataclass
class Plan:
    items: list[Item]  # to write
    unchanged: int
    new: int
    changed: int
    by_kind: dict[str, int]


def plan_export(results_dir: str | Path, wandb_dir: str | Path, *, select: Mapping[str, set[str]] | None = None,
                project: str | None = None, entity: str | None = None, extra_tags: Sequence[str] = (),
                force: bool = False, kinds: Sequence[str] = KINDS) -> Plan:
    """What an export would write: every selected record whose W&B run is missing from the ledger or differs."""
    select = dict(select or {})
    wanted_kinds = set(select.pop("kind", set()) or kinds)
    runs = read_rows(results_dir, "runs", records.RUNS_SCHEMA)
    cells = read_rows(results_dir, "cells", records.CELLS_SCHEMA)
    labels = cell_labels(cells)
    ledger = payload.Ledger(wandb_dir).latest()
    by_id = {r["run_id"]: r for r in runs}
    chosen = []
    for rec in runs:
        kind = "run" if (rec.get("source") or "valley") == "valley" else "imported"
        lab = labels.get(rec["run_id"], {})
        if kind in wanted_kinds and _matches(select, {**rec, "kind": kind}, set(lab.get("budget", ()))):
            chosen.append(rec)
    items: list[Item] = []
    unchanged = new = changed = 0

    led = payload.Ledger(wandb_dir)

    def consider(item: Item) -> None:
        nonlocal unchanged, new, changed
        prev = ledger.get(item.key)
        if prev is not None and not prev.get("synced") and prev.get("mode") == "offline" and (
                not prev.get("dir") or not led.absolute(prev["dir"]).is_dir()):
            prev = None  # written offline, never uploaded, and its folder is gone: write it again
        if prev is None:
            new += 1
        else:  # tags only grow: what the live logger knew (a sweep's labels) stays when no cell says more
            tags = merge_tags(item.init["tags"], prev.get("tags") or [])
            item.init["tags"] = tags
            if not force and prev.get("fp") == item.fp and tags == sorted(prev.get("tags") or []) \
                    and prev.get("complete", True):
                unchanged += 1
                return
            changed += 1
        items.append(item)

    batch = 2000
    for i in range(0, len(chosen), batch):
        part = chosen[i:i + batch]
        curves = curves_of(results_dir, [r["run_id"] for r in part])
        for rec in part:
            lab = labels.get(rec["run_id"])
            consider(run_item(rec, curves.get(rec["run_id"], []), {k: sorted(v) for k, v in lab.items()} if lab else
                              None, project, entity, extra_tags))
    if "cell" in wanted_kinds:
        for cell in cells:
            values = {**cell, "kind": "cell", "seed": None, "status": cell.get("status")}
            if _matches({k: v for k, v in select.items() if k not in ("seed", "run_id")}, values,
                        {str(cell.get("budget"))}):
                consider(cell_item(cell, by_id, project, entity, extra_tags))
    by_kind: dict[str, int] = {}
    for item in items:
        by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
    return Plan(items=items, unchanged=unchanged, new=new, changed=changed, by_kind=by_kind)


def write_items(items: Sequence[Item], settings: Any, *, progress: bool = False) -> int:
    """Write the items with this process's W&B writer (the live logger's: same fallbacks, same ledger)."""
    from bench.loggers.wandb import next_hid, writer

    w = writer()
    done: list[int] = []
    w.on_done = lambda hid, ok: done.append(hid) if ok else None
    t0 = time.monotonic()
    for n, item in enumerate(items, 1):
        hid = next_hid()
        w.start(hid, settings, dict(item.init))
        for row in item.rows:
            w.send("log", hid, row, row["epoch"])
        if item.table is not None:
            w.send("table", hid, "trials", item.table[0], item.table[1])
        w.send("summary", hid, item.summary)
        i = item.init
        entry = {"key": item.key, "id": i["id"], "project": i["project"], "entity": i["entity"],
                 "kind": "cell" if item.kind == "cell" else "run", "fp": item.fp, "tags": i["tags"], "by": "export"}
        w.send("finish", hid, item.exit_code, entry)
        if n % 25 == 0:
            w.barrier(3600)  # bounded memory: at most ~25 runs queued
            if progress:
                rate = n / max(time.monotonic() - t0, 1e-9)
                print(f"\rexported {n}/{len(items)} W&B runs ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)
    w.drain(3600)
    w.on_done = None
    if progress and len(items) >= 25:
        print(file=sys.stderr)
    return len(done)


# ------------------------------------------------------------------------------------------- verification
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def compare_run(folded: Mapping[str, Any], record: Mapping[str, Any],
                curves: Sequence[tuple[int, str, str, float]]) -> list[str]:
    """How a W&B run read back (``wandb_read.fold``) differs from its Parquet row and curves (NaN-aware); [] = same."""
    diffs = []
    config = payload.config_from_record(record)
    if folded.get("config") != json.loads(json.dumps(config)):
        diffs.append("config differs")
    expected = payload.summary_from_record(record)
    got = folded.get("summary") or {}
    for key, value in expected.items():
        if not _same(got.get(key), value) and not (value is None and key not in got):
            diffs.append(f"summary {key}: {got.get(key)!r} != {value!r}")
    for key in expected["nonfinite"]:
        v = record.get(key)
        if not (isinstance(v, float) and not math.isfinite(v)):
            diffs.append(f"summary nonfinite {key}: Parquet value {v!r} is finite")
    want: dict[int, dict[str, float]] = {}
    for epoch, split, metric, value in curves:
        want.setdefault(int(epoch), {})[f"{split}/{metric}"] = float(value)
    got_rows: dict[int, dict[str, Any]] = {}
    for row in folded.get("history") or []:
        if "epoch" in row:
            got_rows[int(row["epoch"])] = row
    if sorted(got_rows) != sorted(want):
        diffs.append(f"history epochs {sorted(got_rows)[:3]}..{len(got_rows)} != {sorted(want)[:3]}..{len(want)}")
    for epoch, metrics in want.items():
        row = got_rows.get(epoch, {})
        for key, value in metrics.items():
            if not _same(row.get(key), value):
                diffs.append(f"history epoch {epoch} {key}: {row.get(key)!r} != {value!r}")
                break
    return diffs


# ------------------------------------------------------------------------------------------- sync
def sync(wandb_dir: str | Path, *, timeout_s: float, dry_run: bool = False, everything: bool = False,
         chunk: int = 100) -> tuple[int, int, str]:
    """``wandb sync`` of the offline runs the ledger lists as not uploaded (``everything``: every run folder under
    ``wandb_dir``), in chunks, within ``timeout_s`` overall. Returns (uploaded, pending, one-line message)."""
    from bench.loggers.wandb_read import run_dirs

    ledger = payload.Ledger(wandb_dir)
    latest = ledger.latest()
    todo: list[tuple[str | None, Path]] = []
    if everything:
        synced = {e.get("dir") for e in latest.values() if e.get("synced")}
        for dirs in run_dirs(wandb_dir, include_online=False).values():
            todo += [(None, d) for d in dirs if ledger.relative(d) not in synced]
    else:
        for key, entry in latest.items():
            if entry.get("synced") or not entry.get("dir"):
                continue
            path = ledger.absolute(entry["dir"])
            if path.is_dir():
                todo.append((key, path))
    if not todo:
        return 0, 0, "nothing to upload"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    deadline = time.monotonic() + timeout_s
    uploaded, names = 0, []
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        left = deadline - time.monotonic()
        if left <= 1:
            break
        cmd = [sys.executable, "-m", "wandb", "sync", "--include-online", *(["--dry-run"] if dry_run else ["--yes"]),
               *[str(p) for _, p in part]]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return uploaded, len(todo) - uploaded, (
                f"wandb sync timed out after {timeout_s:g} s (server unreachable?); {uploaded} of {len(todo)} runs "
                f"uploaded, the rest stay offline under {wandb_dir}: run valley-wandb sync again")
        if dry_run:
            sys.stdout.write(out)
            continue
        if proc.returncode != 0:
            last = [line for line in out.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
            return uploaded, len(todo) - uploaded, (f"wandb sync failed (exit {proc.returncode}): {last[0][:300]}; "
                                                    f"{uploaded} of {len(todo)} runs uploaded")
        ledger.append([{"key": key, "synced": True, "by": "sync"} if key else
                       {"key": f"dir:{ledger.relative(p)}", "dir": ledger.relative(p), "synced": True, "by": "sync"}
                       for key, p in part])
        uploaded += len(part)
        names += [p.name.split("-", 3 if p.name.startswith("offline-run-") else 2)[-1] for _, p in part]
    if dry_run:
        return 0, len(todo), f"dry run: {len(todo)} runs would be uploaded"
    pending = len(todo) - uploaded
    tail = f"; {pending} left (time limit): run valley-wandb sync again" if pending else ""
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return uploaded, pending, f"uploaded {uploaded} runs ({shown}){tail}"


# ------------------------------------------------------------------------------------------- the command
def _settings(args: argparse.Namespace) -> Any:
    from bench.loggers.wandb import WandbSettings

    return WandbSettings(mode=args.mode, project=args.project, entity=args.entity,
                         dir=str(Path(args.dir or args.results_dir).expanduser().absolute()),
                         tags=tuple(args.tags or ()), init_timeout_s=args.init_timeout_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="valley-wandb", description="W&B runs from valley's Parquet records.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write W&B runs (valley runs, imported runs, cells) from the Parquet records")
    ex.add_argument("results_dir", nargs="?", default="results")
    ex.add_argument("--select", nargs="+", action="extend", metavar="KEY=VALUE",
                    help=f"only these records ({', '.join(SELECT_KEYS)}; comma = or)")
    ex.add_argument("--mode", choices=("offline", "online"), default="offline")
    ex.add_argument("--dry-run", action="store_true", help="say what would be written; write nothing")
    ex.add_argument("--force", action="store_true", help="write every selected record, even if unchanged")
    ex.add_argument("--project", default=None, help="project name; {problem} is replaced (default valley-{problem})")
    ex.add_argument("--entity", default=None)
    ex.add_argument("--dir", default=None, help="where wandb/ goes (default: results_dir)")
    ex.add_argument("--tags", nargs="+", default=[], help="extra tags")
    ex.add_argument("--init-timeout-s", type=float, default=20.0)
    sy = sub.add_parser("sync", help="upload offline W&B runs (wandb sync, bounded in time)")
    sy.add_argument("results_dir", nargs="?", default="results")
    sy.add_argument("--dir", default=None, help="where wandb/ is (default: results_dir)")
    sy.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole upload (default 600)")
    sy.add_argument("--dry-run", action="store_true")
    sy.add_argument("--all", action="store_true", help="every offline run folder, not only those in the ledger")
    ve = sub.add_parser("verify", help="compare the W&B runs on disk with the Parquet records")
    ve.add_argument("results_dir", nargs="?", default="results")
    ve.add_argument("--dir", default=None)
    args = parser.parse_args(argv)
    wandb_dir = Path(args.dir or args.results_dir) / "wandb"
    if args.command == "export":
        try:
            select = parse_select(args.select)
            err = next((payload.check_tags([t]) for t in args.tags if payload.check_tags([t])), None)
            if err:
                raise ValueError(err)
        except ValueError as e:
            parser.exit(2, f"valley-wandb: error: {e}\n")
        t0 = time.monotonic()
        plan = plan_export(args.results_dir, wandb_dir, select=select, project=args.project, entity=args.entity,
                           extra_tags=args.tags, force=args.force)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(plan.by_kind.items())) or "nothing"
        head = (f"{len(plan.items)} W&B runs to write ({kinds}; {plan.new} new, {plan.changed} changed), "
                f"{plan.unchanged} unchanged")
        if args.dry_run:
            print(f"dry run: {head}; nothing written")
            return
        if not plan.items:
            print(f"{head}: nothing to write")
            return
        written = write_items(plan.items, _settings(args), progress=sys.stderr.isatty())
        dt = time.monotonic() - t0
        print(f"wrote {written} of {len(plan.items)} W&B runs ({kinds}) in {dt:.1f} s under {wandb_dir} "
              f"({args.mode}); {plan.unchanged} unchanged"
              + ("; upload: valley-wandb sync " + args.results_dir if args.mode == "offline" else ""))
        if written < len(plan.items):
            sys.exit(1)
    elif args.command == "sync":
        uploaded, pending, message = sync(wandb_dir, timeout_s=args.timeout, dry_run=args.dry_run,
                                          everything=args.all)
        print(message)
        if pending and not args.dry_run:
            sys.exit(1)
    else:
        from bench.loggers.wandb_read import read_many, run_dirs

        runs = {r["run_id"]: r for r in read_rows(args.results_dir, "runs", records.RUNS_SCHEMA)}
        dirs = run_dirs(wandb_dir)
        ids = [i for i in runs if i in dirs]
        curves = curves_of(args.results_dir, ids)
        folded = read_many([dirs[i][-1] for i in ids])
        bad = 0
        for rid, run in zip(ids, folded):
            diffs = compare_run(run, runs[rid], curves.get(rid, []))
            if diffs:
                bad += 1
                print(f"{rid}: {'; '.join(diffs[:3])}")
        missing = len(runs) - len(ids)
        print(f"{len(ids) - bad} of {len(ids)} W&B runs match their Parquet records; {missing} records have no W&B "
              f"run under {wandb_dir}")
        if bad:
            sys.exit(1)


if __name__ == "__main__":
    main()
