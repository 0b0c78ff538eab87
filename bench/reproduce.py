"""``valley-reproduce [SELECTION] [OVERRIDES]``: the published study as a regression suite.

Takes published runs imported by ``valley-import-cv`` (default ``results/crowded_valley``), re-runs each with its
exact settings here (the JSON's full-precision hyperparameters, the schedule, batch size and epochs, and on
quadratic_deep the Hessian draw it was trained on), with a few seeds of the same draw (default 42..51, the published
seed always among them: TF's shuffle stream cannot be replayed in torch), and writes the agreement tables
``<results_dir>/agreement/runs.parquet`` (per published run) and ``cells.parquet`` (per published cell); the rule
and the statistics are in :mod:`bench.analysis.agreement`, and ``valley-report <results_dir>`` shows them.

Selection (each ``key=v1,v2``; all optional): ``problem=``, ``optimizer=``, ``schedule=``, ``budget=`` (oneshot,
medium = the published large_budget), ``seed=`` (published seeds), ``role=seeds|trials|all`` (the cells' seed runs,
the default; the tuning trials; both), ``run_id=`` (published run_ids). Overrides ``optimizer.KEY=v1,v2`` and
``problem.KEY=v1,v2`` re-run the same published runs under other settings, one *variant* per combination (e.g.
``optimizer.sync=replace,after optimizer.inner_step_count=frozen,advancing``: which Lookahead rule agrees with the
study; ``problem.hessian_draw=0``: ignore the draws); each variant's verdicts are kept apart (``variant`` column).

Training goes the normal way: the specs go to ``bench.execute.execute_many`` with the environment of
``bench.execute.env_from_config`` (``device=``, ``engine=``, ``workers=`` options), so records land in
``results_dir`` with the usual run_ids (a re-run of an already recorded spec trains nothing — e.g. our own tuning
trials and seeds at draw 0 — a killed reproduction resumes, cohorts apply). ``--launcher NAME`` hands the same runs
to ``bench.launch`` as the composed jobs of ``valley -m`` (``slurm``, ``local_gpus``, where the checkout has them);
``--print-commands`` prints those ``valley -m …`` lines instead (one per published run and variant, the same
run_ids). After a fire-and-forget launch, ``valley-reproduce --no-train`` (same selection) writes the tables from
the records.

Finding the cause of a disagreement: run the same selection under the candidate rules as variants and see which
agrees. On P1 the Hessian draw is matched first (a draw mismatch alone moves a final loss by ~6 units, ~100 seed
std). For Lookahead-RAdam (README, "Why one Lookahead-RAdam / cosine medium setting lands ~2 above the study"):
``optimizer.sync=replace,after optimizer.inner_step_count=frozen,advancing``, with ``role=trials`` for the trials
that decide each rule from one file.

Exit code: 0 when every selected run and cell agrees, 1 when something disagrees, is missing or is not
reproducible, 2 for bad input.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds

from bench import records
from bench.analysis import agreement as A

SELECT_KEYS = ("problem", "optimizer", "schedule", "budget", "seed", "role", "run_id")
ROLES = ("seeds", "trials", "all")
VARIANT_GROUPS = ("optimizer", "problem")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PUBLISHED_SOURCE = "crowded_valley"


class ReproduceError(ValueError):
    """Bad input; the message is one line."""


# ------------------------------------------------------------------------------------------------ arguments
@dataclass
class Request:
    selection: dict[str, list[str]] = field(default_factory=dict)
    variants: list[dict[str, dict[str, Any]]] = field(default_factory=lambda: [{}])
    seeds: list[int] = field(default_factory=lambda: list(range(42, 52)))


def _value(raw: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def parse_request(tokens: Sequence[str], n_seeds: int = 10, first_seed: int = 42) -> Request:
    """``key=v1,v2`` tokens → the selection and the variants (product of the override values)."""
    req = Request(seeds=list(range(first_seed, first_seed + n_seeds)))
    overrides: list[tuple[str, str, list[Any]]] = []
    for tok in tokens:
        if "=" not in tok:
            raise ReproduceError(f"expected key=value, got {tok!r}")
        key, value = tok.split("=", 1)
        values = [v for v in value.split(",") if v != ""]
        if not values:
            raise ReproduceError(f"no value for {key}")
        if "." in key and key.split(".", 1)[0] in VARIANT_GROUPS:
            group, sub = key.split(".", 1)
            overrides.append((group, sub, [_value(v) for v in values]))
        elif key in SELECT_KEYS:
            if key == "role" and any(v not in ROLES for v in values):
                raise ReproduceError(f"invalid role={value}: must be one of {', '.join(ROLES)}")
            req.selection[key] = values
        else:
            raise ReproduceError(f"unknown key {key!r}; valid: {', '.join(SELECT_KEYS)}, "
                                 f"{', '.join(g + '.<key>' for g in VARIANT_GROUPS)}")
    if overrides:
        req.variants = []
        for combo in itertools.product(*(vals for _, _, vals in overrides)):
            v: dict[str, dict[str, Any]] = {}
            for (group, sub, _), val in zip(overrides, combo):
                v.setdefault(group, {})[sub] = val
            req.variants.append(v)
    return req


def variant_label(variant: Mapping[str, Mapping[str, Any]]) -> str:
    if not variant:
        return "default"
    return ",".join(f"{g}.{k}={_plain(v)}" for g in VARIANT_GROUPS for k, v in sorted(variant.get(g, {}).items()))


def _plain(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------------------ published
@dataclass
class Published:
    """One selected published run and how to re-run it."""

    run_id: str
    problem: str
    optimizer: str
    schedule: str
    budget: str
    role: str  # seed | trial
    cell_id: str
    seed: int
    metric: str
    status: str
    value: float  # the study's number: final test metric, the epoch-0 value for a diverged run (its padding)
    hyperparameters: str
    source_path: str | None
    rerun: dict[str, Any] | None
    issue: str | None

    @property
    def draw(self) -> int | None:
        if self.rerun is None:
            return None
        d = self.rerun.get("problem_settings", {}).get("hessian_draw")
        return None if d is None else int(d)


def load_published(published_dir: str | Path, selection: Mapping[str, list[str]]) -> list[Published]:
    """The selected published runs, in cell order (seeds, then trials)."""
    root = Path(published_dir)
    src = ds.field("source") == PUBLISHED_SOURCE
    cells = records.read_table(root, "cells", records.CELLS_SCHEMA, src)
    if cells.empty:
        raise ReproduceError(f"no imported published cells under {root} (run valley-import-cv first)")
    for key in ("problem", "optimizer", "schedule", "budget"):
        if key in selection:
            cells = cells[cells[key].isin(selection[key])]
    roles = selection.get("role", ["seeds"])
    want_seeds = any(r in ("seeds", "all") for r in roles)
    want_trials = any(r in ("trials", "all") for r in roles)
    picked: dict[str, tuple[str, Any]] = {}
    for cell in cells.itertuples(index=False):
        if want_seeds:
            for rid in cell.run_ids:
                picked.setdefault(rid, ("seed", cell))
        if want_trials:
            for rid in cell.trial_run_ids:
                picked.setdefault(rid, ("trial", cell))
    if "run_id" in selection:
        picked = {r: v for r, v in picked.items() if r in set(selection["run_id"])}
    if not picked:
        return []
    runs = records.read_table(root, "runs", records.RUNS_SCHEMA, ds.field("run_id").isin(list(picked)))
    if "seed" in selection:
        runs = runs[runs["seed"].isin([int(s) for s in selection["seed"]])]
    diverged = runs.loc[runs["status"] == "diverged", "run_id"].tolist()
    epoch0 = _epoch0_test(root, runs[runs["run_id"].isin(diverged)])
    out = []
    order = {rid: i for i, rid in enumerate(picked)}
    for row in sorted(runs.to_dict("records"), key=lambda r: order[r["run_id"]]):
        role, cell = picked[row["run_id"]]
        metric = row["metric"]
        value = row[f"final_test_{metric}"]
        if row["status"] == "diverged":
            value = epoch0.get(row["run_id"], value)
        spec = json.loads(row["spec"] or "{}")
        rerun = spec.get("rerun")
        issue = None
        if rerun is None:
            issue = "imported without re-run settings: re-import it with this version of valley-import-cv"
        elif rerun.get("issues"):
            issue = "; ".join(rerun["issues"])
        out.append(Published(row["run_id"], row["problem"], row["optimizer"], row["schedule"], cell.budget, role,
                             cell.cell_id, int(row["seed"]), metric, row["status"],
                             float("nan") if value is None else float(value), row["hyperparameters"],
                             spec.get("source_path"), rerun, issue))
    return out


def _epoch0_test(results_dir: Path, runs: pd.DataFrame) -> dict[str, float]:
    if runs.empty:
        return {}
    from bench.analysis.curves import read_curves

    c = read_curves(results_dir, runs["run_id"], splits=("test",), epochs=(0,))
    metric = runs.set_index("run_id")["metric"]
    return {str(r): float(v) for r, m, v in zip(c["run_id"], c["metric"], c["value"]) if str(m) == metric[str(r)]}


# ------------------------------------------------------------------------------------------------ specs
def yaml_defaults(group: str, name: str) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` without its name: the defaults a ``valley`` command composes (a fresh copy)."""
    return dict(_yaml_defaults(group, name))


@lru_cache(maxsize=None)
def _yaml_defaults(group: str, name: str) -> dict[str, Any]:
    import yaml

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise ReproduceError(f"no {group} config {name!r} in {CONF_DIR / group}")
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("name", None)
    return data


def rerun_parts(pub: Published, variant: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The make_spec arguments of a published run's re-run (any seed), the variant's overrides applied."""
    r = pub.rerun or {}
    hp = {**yaml_defaults("optimizer", r["optimizer"]), **r["hyperparameters"], **variant.get("optimizer", {})}
    ps = {**yaml_defaults("problem", r["problem"]), **r["problem_settings"], **variant.get("problem", {})}
    return {"problem": r["problem"], "optimizer": r["optimizer"], "hyperparameters": hp, "schedule": r["schedule"],
            "problem_settings": ps, "schedule_settings": yaml_defaults("schedule", r["schedule"]),
            "data_order": r.get("data_order", "repeat")}


def seeds_for(pub: Published, seeds: Sequence[int]) -> list[int]:
    """Our seeds for one published run: ``seeds``, with the published seed added when it is not among them."""
    return list(seeds) if pub.seed in seeds else [*seeds, pub.seed]


@dataclass
class Plan:
    """Per (published run, variant): our run_ids by seed, or why there are none."""

    published: list[Published]
    variants: list[dict[str, dict[str, Any]]]
    ours: dict[tuple[str, str], dict[int, str]]
    issues: dict[tuple[str, str], str]
    specs: list[Any]
    parts: dict[tuple[str, str], dict[str, Any]]


def plan(published: Sequence[Published], variants: Sequence[Mapping[str, Mapping[str, Any]]],
         seeds: Sequence[int]) -> Plan:
    from bench.spec import SpecError, make_spec

    ours: dict[tuple[str, str], dict[int, str]] = {}
    issues: dict[tuple[str, str], str] = {}
    parts_by: dict[tuple[str, str], dict[str, Any]] = {}
    specs: dict[str, Any] = {}
    for pub in published:
        for variant in variants:
            key = (pub.run_id, variant_label(variant))
            if pub.issue is not None:
                issues[key] = pub.issue
                continue
            try:
                parts = rerun_parts(pub, variant)
                by_seed = {}
                for seed in seeds_for(pub, seeds):
                    spec = make_spec(parts["problem"], parts["optimizer"], parts["hyperparameters"],
                                     schedule=parts["schedule"], seed=seed, problem_settings=parts["problem_settings"],
                                     schedule_settings=parts["schedule_settings"], data_order=parts["data_order"])
                    by_seed[seed] = spec.run_id
                    specs.setdefault(spec.run_id, spec)
            except (SpecError, ReproduceError, KeyError) as err:
                issues[key] = f"cannot build our run spec: {err}"
                continue
            ours[key] = by_seed
            parts_by[key] = parts
    return Plan(list(published), [dict(v) for v in variants], ours, issues, list(specs.values()), parts_by)


# ------------------------------------------------------------------------------------------------ commands
def override_lists(p: Plan, results_dir: str) -> list[list[str]]:
    """One ``valley -m`` override list per (published run, variant): the same specs, for any launcher (values that
    equal the YAML defaults are left out; floats at full precision)."""
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for (rid, label), parts in p.parts.items():
        seeds = sorted(p.ours[(rid, label)])
        hp_default = yaml_defaults("optimizer", parts["optimizer"])
        ps_default = yaml_defaults("problem", parts["problem"])
        args = [f"problem={parts['problem']}"]
        args += [f"problem.{k}={_plain(v)}" for k, v in parts["problem_settings"].items() if ps_default.get(k) != v
                 or type(ps_default.get(k)) is not type(v)]
        args += [f"optimizer={parts['optimizer']}"]
        args += [f"optimizer.{k}={_plain(v)}" for k, v in parts["hyperparameters"].items()
                 if hp_default.get(k) != v or type(hp_default.get(k)) is not type(v)]
        args += [f"schedule={parts['schedule']}", "seed=" + ",".join(map(str, seeds)), f"results_dir={results_dir}"]
        if tuple(args) not in seen:
            seen.add(tuple(args))
            out.append(args)
    return out


def commands(p: Plan, results_dir: str) -> list[str]:
    return ["valley -m " + " ".join(args) for args in override_lists(p, results_dir)]


def launch_plan(p: Plan, results_dir: str, launcher: str, extra: Sequence[str] = ()) -> int:
    """Train the plan's specs through ``bench.launch`` (``launcher=inline|slurm|local_gpus``): the composed jobs of
    :func:`override_lists`, as ``valley -m`` would launch them."""
    from bench.launch import launch
    from bench.tuning.sweep import compose_jobs, expand

    jobs: list[list[str]] = []
    for args in override_lists(p, results_dir):
        jobs += expand([*args, f"launcher={launcher}", *extra], True)
    return launch(compose_jobs(jobs), multirun=True)


# ------------------------------------------------------------------------------------------------ agreement
def _our_records(results_dir: str | Path, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(dict.fromkeys(run_ids))
    if not ids or not (Path(results_dir) / "runs").is_dir():
        return {}
    frame = records.read_table(results_dir, "runs", records.RUNS_SCHEMA, ds.field("run_id").isin(ids))
    return {r["run_id"]: r for r in frame.to_dict("records") if r["status"] in records.FINISHED}


def agreement_tables(p: Plan, results_dir: str | Path, *, z_tol: float = A.Z_TOLERANCE,
                     floor_rel: float = A.FLOOR_REL, alpha: float = A.ALPHA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The agreement rows (per published run and variant, per cell and variant) from the records."""
    recs = _our_records(results_dir, (r for by in p.ours.values() for r in by.values()))
    div = pd.DataFrame([{"run_id": r, "metric": rec["metric"]} for r, rec in recs.items()
                        if rec["status"] == "diverged"], columns=["run_id", "metric"])
    epoch0 = _epoch0_test(Path(results_dir), div)
    rows = []
    mirrored: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for pub in p.published:
        for variant in p.variants:
            label = variant_label(variant)
            key = (pub.run_id, label)
            base = {"published_run_id": pub.run_id, "variant": label, "problem": pub.problem,
                    "optimizer": pub.optimizer, "schedule": pub.schedule, "budget": pub.budget, "role": pub.role,
                    "seed": pub.seed, "hessian_draw": pub.draw, "metric": pub.metric,
                    "hyperparameters": pub.hyperparameters, "theirs": pub.value, "their_status": pub.status,
                    "source_path": pub.source_path}
            if key in p.issues:
                rows.append({**base, "our_n": 0, "our_n_diverged": 0, "verdict": "not_reproducible",
                             "reason": p.issues[key], "our_run_ids": [], "our_seeds": []})
                continue
            by_seed = p.ours[key]
            found = {s: recs[r] for s, r in by_seed.items() if r in recs}
            vals = [_final(rec, epoch0) for rec in found.values()]
            res = A.run_agreement(pub.value, pub.status == "diverged", [v for v, _ in vals], [d for _, d in vals],
                                  z_tol=z_tol, floor_rel=floor_rel)
            if len(found) < len(by_seed) and res["verdict"] != "missing":
                res["reason"] += f" ({len(by_seed) - len(found)} of our {len(by_seed)} seeds not recorded yet)"
            rows.append({**base, **res, "our_run_ids": [by_seed[s] for s in sorted(found)],
                         "our_seeds": sorted(found)})
            if pub.role == "seed":
                mine = recs.get(by_seed.get(pub.seed, ""))
                mirrored.setdefault((pub.cell_id, label), []).append(
                    (pub.value, _final(mine, epoch0, padded=True)[0] if mine is not None else math.nan, pub.draw))
    runs = pd.DataFrame(rows).reindex(columns=A.RUN_COLUMNS)
    cells = []
    info = {(pub.cell_id, variant_label(v)): pub for pub in p.published for v in p.variants if pub.role == "seed"}
    for (cell_id, label), pairs in mirrored.items():
        pub = info[(cell_id, label)]
        sub = runs[(runs["variant"] == label) & runs["published_run_id"].isin(
            [q.run_id for q in p.published if q.cell_id == cell_id and q.role == "seed"])]
        draws = {d for _, _, d in pairs}
        res = A.cell_agreement([t for t, _, _ in pairs], [o for _, o, _ in pairs], by_pairs=len(draws) > 1,
                               alpha=alpha, floor_rel=floor_rel)
        cells.append({"variant": label, "problem": pub.problem, "optimizer": pub.optimizer, "schedule": pub.schedule,
                      "budget": pub.budget, "metric": pub.metric, **res,
                      "runs_agree": int((sub["verdict"] == "agree").sum()),
                      "runs_disagree": int((sub["verdict"] == "disagree").sum())})
    return runs, pd.DataFrame(cells).reindex(columns=A.CELL_COLUMNS)


def _final(rec: Mapping[str, Any], epoch0: Mapping[str, float], padded: bool = False) -> tuple[float, bool]:
    """(final test metric, diverged); ``padded``: a diverged run counts with its epoch-0 value (the study's)."""
    diverged = rec["status"] == "diverged"
    value = rec[f"final_test_{rec['metric']}"]
    value = math.nan if value is None else float(value)
    if diverged and padded:
        value = epoch0.get(rec["run_id"], math.nan)
    return value, diverged or not math.isfinite(value)


def write_tables(results_dir: str | Path, runs: pd.DataFrame, cells: pd.DataFrame) -> tuple[Path, Path]:
    """Merge into ``<results_dir>/agreement/`` (rows of the same key replaced), atomically."""
    import pyarrow as pa

    old_runs, old_cells = A.read(results_dir)
    runs = A.merge(old_runs, runs, A.RUN_KEY)
    cells = A.merge(old_cells, cells, A.CELL_KEY)
    now = datetime.now(timezone.utc)
    rp, cp = A.paths(results_dir)
    for frame, path in ((runs, rp), (cells, cp)):
        frame = frame.copy()
        if "updated_at" not in frame:
            frame["updated_at"] = now
        frame["updated_at"] = frame["updated_at"].fillna(now)
        records.write_atomic(pa.Table.from_pandas(frame, preserve_index=False), path)
    return rp, cp


# ------------------------------------------------------------------------------------------------ main
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="valley-reproduce", description="Re-run imported published runs with their "
                                "exact settings and report agreement run by run and cell by cell.",
                                epilog="SELECTION: problem= optimizer= schedule= budget= seed= role=seeds|trials|all "
                                       "run_id=  (comma lists); OVERRIDES: optimizer.KEY=v1,v2 problem.KEY=v1,v2 "
                                       "(one variant per combination)")
    p.add_argument("tokens", nargs="*", metavar="key=value", help="selection and overrides")
    p.add_argument("--published", default="results/crowded_valley",
                   help="the imported published runs (valley-import-cv's results dir; default results/crowded_valley)")
    p.add_argument("--results-dir", default="results", help="where our re-runs and the agreement tables go")
    p.add_argument("--seeds", type=int, default=10, help="our seeds per published run: 42, 43, … (default 10; the "
                                                         "published seed is always added)")
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", default="single", help="single | cohort | cohort_fast | auto (bench.engine)")
    p.add_argument("--workers", type=int, default=1, help="training processes")
    p.add_argument("--launcher", default=None, help="train through bench.launch with this launcher (inline, slurm, "
                                                    "local_gpus) instead of execute_many in this process")
    p.add_argument("--z", type=float, default=A.Z_TOLERANCE, help="tolerance in our seed std (default 3)")
    p.add_argument("--floor", type=float, default=A.FLOOR_REL, help="relative floor of the tolerance (default 1e-3)")
    p.add_argument("--alpha", type=float, default=A.ALPHA, help="cell test level (default 0.01)")
    p.add_argument("--dry-run", action="store_true", help="print what would be trained and exit")
    p.add_argument("--no-train", action="store_true", help="write the tables from what is recorded; train nothing")
    p.add_argument("--print-commands", action="store_true", help="print one `valley -m` line per published run "
                                                                 "and variant (the same run_ids) and exit")
    p.add_argument("--show", type=int, default=15, help="disagreements printed (default 15)")
    return p


def _say(text: str) -> None:
    print(f"valley-reproduce: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.seeds < 1:
            raise ReproduceError(f"--seeds must be >= 1, got {args.seeds}")
        req = parse_request(args.tokens, n_seeds=args.seeds)
        if not Path(args.published).is_dir():
            raise ReproduceError(f"published results {args.published} do not exist (valley-import-cv PATH "
                                 f"--results-dir {args.published})")
        published = load_published(args.published, req.selection)
    except ReproduceError as err:
        print(f"valley-reproduce: error: {err}", file=sys.stderr)
        return 2
    if not published:
        print("valley-reproduce: error: the selection matches no published run", file=sys.stderr)
        return 2
    p = plan(published, req.variants, req.seeds)
    if args.print_commands:
        for line in commands(p, args.results_dir):
            print(line)
        return 0
    todo, done = records_pending(p, args.results_dir)
    n_cells = len({(q.cell_id) for q in published})
    print(f"valley-reproduce: {len(published)} published runs ({n_cells} cells) × {len(p.variants)} variant(s): "
          f"{len(p.specs)} runs of ours ({done} recorded, {todo} to train), "
          f"{len(p.issues)} not reproducible", flush=True)
    if args.dry_run:
        for key, why in list(p.issues.items())[:args.show]:
            print(f"  not reproducible: {key[0]} [{key[1]}]: {why}")
        return 0
    if not args.no_train and todo and args.launcher is not None:
        from bench.launch import LaunchError

        extra = [f"device={args.device}", f"engine={args.engine}", f"tuning.workers={args.workers}"]
        try:
            launch_plan(p, args.results_dir, args.launcher, extra)
        except LaunchError as err:
            print(f"valley-reproduce: error: {err}", file=sys.stderr)
            return 2
        todo = records_pending(p, args.results_dir)[0]
        if todo:  # a fire-and-forget launcher: the tables follow with --no-train once its jobs are done
            print(f"valley-reproduce: {todo} runs not recorded yet; run again with --no-train when the launched "
                  f"jobs are done", flush=True)
    elif not args.no_train and todo:
        from bench.execute import env_from_config, execute_many

        try:
            env = env_from_config({"results_dir": args.results_dir, "device": args.device, "engine": args.engine,
                                   "tuning": {"workers": args.workers}})
        except ValueError as err:
            print(f"valley-reproduce: error: {err}", file=sys.stderr)
            return 2
        t0, count = time.perf_counter(), [0]

        def on_run(outcome: Any) -> None:
            if not outcome.skipped:
                count[0] += 1
                if count[0] % max(1, todo // 20) == 0 or count[0] == todo:
                    rate = count[0] / max(time.perf_counter() - t0, 1e-9)
                    print(f"  trained {count[0]}/{todo} ({rate:.2f} runs/s)", flush=True)

        from problems.datasets.errors import DataError

        try:
            execute_many(p.specs, env, on_run=on_run, say=_say)
        except DataError as err:
            print(f"valley-reproduce: error: {str(err).splitlines()[0]}", file=sys.stderr)
            return 1
    runs, cells = agreement_tables(p, args.results_dir, z_tol=args.z, floor_rel=args.floor, alpha=args.alpha)
    rp, _ = write_tables(args.results_dir, runs, cells)
    print(report_text(runs, cells, args.show))
    print(f"valley-reproduce: agreement tables in {rp.parent} (valley-report {args.results_dir} shows them)")
    bad = (runs["verdict"] != "agree").any() or (len(cells) and (cells["verdict"] != "agree").any())
    return 1 if bad else 0


def records_pending(p: Plan, results_dir: str) -> tuple[int, int]:
    from bench.execute import pending

    todo, done = pending(p.specs, results_dir)
    return len(todo), len(done)


def report_text(runs: pd.DataFrame, cells: pd.DataFrame, show: int = 15) -> str:
    lines = [A.summary_line(runs, cells)]
    bad_cells = A.ordered_rows(cells[cells["verdict"] != "agree"], "difference") if len(cells) else cells
    for r in bad_cells.head(show).itertuples(index=False):
        lines.append(f"  cell {r.verdict}: {r.problem} · {r.optimizer} · {r.schedule} · {r.budget} [{r.variant}]: "
                     f"theirs {r.their_mean:.6g} ± {r.their_std:.3g} (n={r.n_theirs}), ours {r.our_mean:.6g} ± "
                     f"{r.our_std:.3g} (n={r.n_ours}); {r.reason}")
    bad = A.ordered_rows(runs[runs["verdict"] != "agree"], "z")
    for r in bad.head(show).itertuples(index=False):
        draw = "" if r.hessian_draw is None or pd.isna(r.hessian_draw) else f", draw {int(r.hessian_draw)}"
        lines.append(f"  run {r.verdict}: {r.problem} · {r.optimizer} · {r.schedule} · {r.budget} · {r.role} run, seed "
                     f"{r.seed}{draw} [{r.variant}]: theirs {r.theirs:.6g}, ours {r.our_mean:.6g} ± "
                     f"{r.our_std:.3g} (n={r.our_n}); {r.reason}")
    if len(bad) > show:
        lines.append(f"  … {len(bad) - show} more in the table")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
