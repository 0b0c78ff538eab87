"""``valley-landscape``: loss landscapes, trajectories, sharpness and interpolations of recorded runs.

    valley-landscape compute RESULTS [selection] [--what slice1d,slice2d,trajectory,sharpness,interpolation]
    valley-landscape figures RESULTS          redraw results_dir/landscape/figures/ from the Parquet tables
    valley-landscape prune RESULTS            remove parameter files no runs row references
    valley-landscape bench [--problems ...]   time a 25 × 25 slice per problem (smoke data, model at init)

Selection (any combination; every selected run must be finished): ``--run ID`` (repeatable; a unique prefix
will do), ``--cell ID`` (a tuned or one-shot cell: its winner's seed runs), or filters ``--problem``,
``--optimizer`` (repeatable), ``--schedule``, ``--budget``, ``--seed`` — with ``--budget`` the filters pick cells,
without it runs. ``--seeds first`` (default) takes one seed run per cell (the first with saved parameters, else the
first), ``--seeds all`` every one. A run without saved parameters is re-trained with a saver (``--retrain auto``,
the default: the same spec, deterministic, its curves checked against the record; ``never`` skips it).

Outputs: Parquet under ``RESULTS/landscape/`` (``bench.landscape.store``), figures (PNG + SVG) under
``RESULTS/landscape/figures/``, a summary on stdout; ``valley-report RESULTS`` adds a landscape section.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

WHAT = ("slice1d", "slice2d", "trajectory", "sharpness", "interpolation")
MAX_PAIRS = 15


def say(line: str) -> None:
    print(f"valley-landscape: {line}", file=sys.stderr, flush=True)


def fail(line: str, code: int = 2) -> None:
    print(f"valley-landscape: error: {line}", file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------- arguments
def _add_settings(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("landscape settings")
    g.add_argument("--grid", type=int, default=25, help="2-D slice points per axis (default 25)")
    g.add_argument("--points-1d", type=int, default=51, help="1-D slice points (default 51)")
    g.add_argument("--span", type=float, default=1.0, help="slice coordinates in [-span, span] (default 1)")
    g.add_argument("--normalisation", choices=("auto", "filter", "layer", "unit"), default="auto",
                   help="direction normalisation: filter (Li et al.; auto where the model has kernels), layer, "
                        "unit (auto for P1, whose only parameter is a vector)")
    g.add_argument("--one-d", choices=("zero", "filter"), default="zero",
                   help="1-D tensors (biases, batch-norm γ/β) in filter/layer directions: zero (Li et al.'s "
                        "ignore=biasbn, default) or scaled as one filter")
    g.add_argument("--direction-seed", type=int, default=0, help="seed of the random directions (default 0)")
    g.add_argument("--splits", default="train,test", help="evaluated splits (default train,test; train = train-eval)")
    g.add_argument("--rows", type=int, default=None, help="evaluated rows per split (default: all the run loop uses)")
    g.add_argument("--batching", choices=("auto", "vmap", "loop"), default="auto",
                   help="points per forward pass: vmap (batched) or loop; auto = vmap on CUDA and for P1")
    g.add_argument("--points-per-pass", type=int, default=None, help="grid points per vmapped pass")
    g.add_argument("--pca-grid", type=int, default=25, help="trajectory-plane grid points per axis (default 25)")
    g.add_argument("--method", choices=("lanczos", "power"), default="lanczos", help="eigenvalue method")
    g.add_argument("--lanczos-steps", type=int, default=30,
                   help="Lanczos iterations (Hessian-vector products) per estimate (default 30)")
    g.add_argument("--power-iterations", type=int, default=100)
    g.add_argument("--top-k", type=int, default=3, help="top eigenvalues kept (Lanczos)")
    g.add_argument("--hessian-rows", type=int, default=None, help="train-eval rows of the Hessian (default: all)")
    g.add_argument("--sharpness-snapshots", type=int, default=50,
                   help="snapshots along the trajectory with a sharpness estimate (default 50, evenly spread)")
    g.add_argument("--interp-points", type=int, default=31)
    g.add_argument("--device", default="cpu", help="auto | cpu | cuda[:N] (default cpu)")
    g.add_argument("--data-dir", default=None, help="data directory (default: $VALLEY_DATA or ~/.cache/valley)")


def settings_of(args: argparse.Namespace) -> Any:
    from bench.landscape.analyses import Settings

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    bad = [s for s in splits if s not in ("train", "valid", "test")]
    if bad or not splits:
        fail(f"invalid --splits {args.splits!r}: choose from train, valid, test")
    if "train" not in splits:
        splits = ("train", *splits)  # the Hessian and the centre check use train-eval
    for name in ("grid", "points_1d", "pca_grid", "interp_points", "lanczos_steps", "power_iterations", "top_k",
                 "sharpness_snapshots"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1")
    if args.span <= 0:
        fail("--span must be > 0")
    return Settings(grid=args.grid, points_1d=args.points_1d, span=args.span, normalisation=args.normalisation,
                    one_d=args.one_d, direction_seed=args.direction_seed, splits=splits, rows=args.rows,
                    batching=args.batching, points_per_pass=args.points_per_pass, pca_grid=args.pca_grid,
                    method=args.method, lanczos_steps=args.lanczos_steps, power_iterations=args.power_iterations,
                    top_k=args.top_k, hessian_rows=args.hessian_rows, sharpness_snapshots=args.sharpness_snapshots,
                    interp_points=args.interp_points)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="valley-landscape", description="Loss landscapes, trajectories, sharpness and "
                                "interpolations of recorded runs (protocol §9, Li et al. 2018).")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compute", help="compute landscapes of selected runs (Parquet + figures)")
    c.add_argument("results_dir")
    s = c.add_argument_group("selection")
    s.add_argument("--run", action="append", default=[], help="a run_id (or unique prefix); repeatable")
    s.add_argument("--cell", action="append", default=[], help="a cell_id (or unique prefix): its seed runs")
    s.add_argument("--problem", default=None)
    s.add_argument("--optimizer", action="append", default=[])
    s.add_argument("--schedule", default=None)
    s.add_argument("--budget", default=None, help="with filters: select cells of this budget")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--seeds", default="first", help="per cell: first (default), all, or a comma list of seeds")
    c.add_argument("--what", default=",".join(WHAT), help=f"comma list of {', '.join(WHAT)} (default: all)")
    c.add_argument("--pairs", choices=("all", "none"), default="all",
                   help=f"interpolations between the selected runs of one problem (all pairs, at most {MAX_PAIRS})")
    c.add_argument("--retrain", choices=("auto", "never"), default="auto",
                   help="re-train selected runs that have no saved parameters (default auto)")
    c.add_argument("--force", action="store_true", help="recompute analyses already stored")
    c.add_argument("--no-figures", action="store_true")
    _add_settings(c)
    f = sub.add_parser("figures", help="redraw RESULTS/landscape/figures from the Parquet tables")
    f.add_argument("results_dir")
    r = sub.add_parser("prune", help="remove parameter files no runs row references")
    r.add_argument("results_dir")
    r.add_argument("--dry-run", action="store_true")
    b = sub.add_parser("bench", help="time a 2-D slice per problem (smoke data, the model at its initialisation)")
    b.add_argument("--problems", default="all", help="comma list (default: the eight problems)")
    b.add_argument("--size", choices=("smoke", "full"), default="smoke")
    b.add_argument("--grid", type=int, default=25)
    b.add_argument("--batching", default="auto", help="comma list of auto, vmap, loop (default auto)")
    b.add_argument("--points-per-pass", type=int, default=None)
    b.add_argument("--rows", type=int, default=None)
    b.add_argument("--device", default="cpu")
    b.add_argument("--data-dir", default=None)
    b.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    b.add_argument("--out", default=None, help="also write the table as CSV here")
    return p


# ---------------------------------------------------------------------------------------------- selection
def _unique(ids: list[str], wanted: str, what: str) -> str:
    hits = [i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
    if not hits:
        fail(f"no {what} {wanted!r} in the results")
    if len(hits) > 1:
        fail(f"{what} prefix {wanted!r} is ambiguous ({len(hits)} matches)")
    return hits[0]


def select(results_dir: Path, args: argparse.Namespace) -> list[tuple[dict[str, Any], str | None]]:
    """The selected runs' records, each with the budgets of the cells that list it (comma-joined) or None."""
    import pandas as pd

    from bench import records
    from bench.landscape import saver

    runs = records.read_runs(results_dir)
    if runs.empty:
        fail(f"no runs recorded under {results_dir}")
    cells = records.read_table(results_dir, "cells", records.CELLS_SCHEMA)
    by_id = {str(r["run_id"]): r for r in runs.to_dict("records")}
    budgets: dict[str, list[str]] = {}
    for c in cells.to_dict("records"):
        for rid in list(c["run_ids"] if c["run_ids"] is not None else []):
            budgets.setdefault(str(rid), [])
            if c["budget"] not in budgets[str(rid)]:
                budgets[str(rid)].append(c["budget"])
    chosen: list[str] = []
    for wanted in args.run:
        chosen.append(_unique(list(by_id), wanted, "run"))
    cell_rows: list[dict[str, Any]] = []
    if args.cell:
        ids = [str(c) for c in cells["cell_id"]]
        for wanted in args.cell:
            cid = _unique(ids, wanted, "cell")
            cell_rows.append(cells[cells["cell_id"] == cid].iloc[0].to_dict())
    filters = any(v is not None for v in (args.problem, args.schedule, args.seed, args.budget)) or args.optimizer
    if filters and args.budget is not None:
        c = cells[cells["budget"] == args.budget]
        if args.problem:
            c = c[c["problem"] == args.problem]
        if args.optimizer:
            c = c[c["optimizer"].isin(args.optimizer)]
        if args.schedule:
            c = c[c["schedule"] == args.schedule]
        if c.empty:
            fail("no cell matches the filters")
        cell_rows += c.to_dict("records")
    elif filters:
        r = runs
        if args.problem:
            r = r[r["problem"] == args.problem]
        if args.optimizer:
            r = r[r["optimizer"].isin(args.optimizer)]
        if args.schedule:
            r = r[r["schedule"] == args.schedule]
        if args.seed is not None:
            r = r[r["seed"] == args.seed]
        if r.empty:
            fail("no run matches the filters")
        chosen += [str(x) for x in r["run_id"]]
    for c in cell_rows:
        run_ids = [str(x) for x in (c["run_ids"] if c["run_ids"] is not None else [])]
        seeds = [int(s) for s in (c["seeds"] if c["seeds"] is not None else [])]
        present = [(rid, s) for rid, s in zip(run_ids, seeds or [None] * len(run_ids)) if rid in by_id]
        if args.seed is not None:
            present = [(rid, s) for rid, s in present if s == args.seed]
        if not present:
            say(f"cell {c['cell_id']} ({c['problem']} · {c['optimizer']} · {c['budget']}): no recorded seed run")
            continue
        if args.seeds == "all":
            chosen += [rid for rid, _ in present]
        elif args.seeds == "first":
            with_params = [rid for rid, _ in present if saver.find(results_dir, by_id[rid]) is not None]
            chosen.append(with_params[0] if with_params else present[0][0])
        else:
            try:
                wanted = {int(x) for x in args.seeds.split(",")}
            except ValueError:
                fail(f"invalid --seeds {args.seeds!r}: first, all or a comma list of seeds")
            chosen += [rid for rid, s in present if s in wanted]
    if not (args.run or args.cell or filters):
        fail("select runs: --run, --cell, or filters (--problem, --optimizer, --schedule, --budget, --seed)")
    out, seen = [], set()
    for rid in chosen:
        if rid in seen:
            continue
        seen.add(rid)
        rec = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in by_id[rid].items()}
        if rec["status"] != "completed":
            say(f"skipping {rid}: status {rec['status']} (a landscape needs a completed run)")
            continue
        out.append((rec, ",".join(budgets.get(rid, [])) or None))
    if not out:
        fail("nothing to do: no completed run selected")
    return out


# ---------------------------------------------------------------------------------------------- compute
def compute(args: argparse.Namespace) -> int:
    from bench.landscape import analyses, saver, store

    root = Path(args.results_dir)
    if not root.is_dir():
        fail(f"results directory {root} does not exist")
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    bad = [w for w in what if w not in WHAT]
    if bad:
        fail(f"invalid --what {bad[0]!r}; valid: {', '.join(WHAT)}")
    settings = settings_of(args)
    from bench.train import resolve_device

    try:
        device = str(resolve_device(args.device))
    except ValueError as err:
        fail(str(err))
    selected = select(root, args)
    contexts: list[analyses.RunContext] = []
    for rec, budget in selected:
        path = saver.find(root, rec)
        if path is None:
            if args.retrain == "never":
                say(f"skipping {rec['run_id']}: no saved parameters (save_params) and --retrain never")
                continue
            try:
                path = saver.retrain(root, rec, device=device, data_dir=args.data_dir, say=say)
            except Exception as err:  # noqa: BLE001 - one line, then the other runs
                say(f"skipping {rec['run_id']}: re-training failed ({type(err).__name__}: {err})")
                continue
        saved = saver.load(path)
        contexts.append(analyses.RunContext(root, rec, saved, device=device, data_dir=args.data_dir, budget=budget,
                                            settings=settings))
    if not contexts:
        fail("nothing to do: no selected run has parameters")
    t0 = time.perf_counter()
    for ctx in contexts:
        say(f"{ctx.label} ({ctx.record['problem']}, run {ctx.run_id}, {len(ctx.saved.epochs)} snapshot"
            f"{'s' if len(ctx.saved.epochs) != 1 else ''}, {ctx.saved.origin})")
        for kind in what:
            if kind == "interpolation":
                continue
            t1 = time.perf_counter()
            try:
                if kind in ("slice1d", "slice2d"):
                    aid = analyses.run_slice(ctx, 1 if kind == "slice1d" else 2, force=args.force)
                elif kind == "trajectory":
                    aid = analyses.run_trajectory(ctx, force=args.force)
                    if aid is None:
                        say(f"  trajectory: skipped ({len(ctx.saved.epochs)} snapshots; save_params=trajectory "
                            f"keeps them)")
                        continue
                else:
                    aid = analyses.run_sharpness(ctx, force=args.force, say=say)
            except (ValueError, RuntimeError) as err:
                say(f"  {kind}: failed ({type(err).__name__}: {' '.join(str(err).split())[:200]})")
                continue
            say(f"  {kind}: {aid} ({time.perf_counter() - t1:.1f} s)")
    if "interpolation" in what and args.pairs == "all":
        from bench.analysis.names import OPTIMIZERS

        rank = {o: i for i, o in enumerate(OPTIMIZERS)}
        contexts.sort(key=lambda c: (rank.get(c.record["optimizer"], len(rank)), c.label))
        pairs = [(a, b) for a, b in itertools.combinations(contexts, 2) if analyses.same_architecture(a, b) is None]
        if len(pairs) > MAX_PAIRS:
            say(f"interpolation: {len(pairs)} pairs, the first {MAX_PAIRS} computed")
            pairs = pairs[:MAX_PAIRS]
        for a, b in pairs:
            t1 = time.perf_counter()
            aid = analyses.run_interpolation(a, b, force=args.force)
            say(f"interpolation {a.label} → {b.label}: {aid} ({time.perf_counter() - t1:.1f} s)")
    say(f"done in {time.perf_counter() - t0:.1f} s; tables under {store.root(root)}")
    if not args.no_figures:
        draw(root)
    print_summary(root, [c.run_id for c in contexts])
    return 0


def draw(root: Path) -> list[tuple[str, str, str]]:
    from bench.landscape import figures, store

    tables = {t: store.read(root, t) for t in store.TABLES}
    out = store.root(root) / "figures"
    drawn = figures.all_figures(tables["analyses"], tables["grids"], tables["trajectories"], tables["sharpness"],
                                out)
    say(f"{len(drawn)} figures under {out}")
    return drawn


def print_summary(root: Path, run_ids: list[str]) -> None:
    from bench.analysis.landscape import summary_table

    table = summary_table(root, run_ids)
    if table.empty:
        return
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))


# ---------------------------------------------------------------------------------------------- bench
def bench(args: argparse.Namespace) -> int:
    """A 2-D ``grid`` × ``grid`` slice per problem at its initialisation, train-eval + test; a table of seconds."""
    import pandas as pd
    import torch
    import yaml

    from bench.analysis.names import PROBLEMS
    from bench.landscape import directions
    from bench.landscape.surface import Surface
    from bench.spec import make_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    conf = Path(__file__).resolve().parents[2] / "conf"
    names = list(PROBLEMS) if args.problems == "all" else [p.strip() for p in args.problems.split(",")]
    batchings = [b.strip() for b in args.batching.split(",") if b.strip()]
    hp = yaml.safe_load((conf / "optimizer" / "sgd.yaml").read_text())
    hp.pop("name")
    rows = []
    for name in names:
        settings = yaml.safe_load((conf / "problem" / f"{name}.yaml").read_text())
        settings.pop("name")
        settings["size"] = args.size
        spec = make_spec(name, "sgd", hp, problem_settings=settings)
        for batching in batchings:
            t_setup = time.perf_counter()
            surf = Surface.from_spec(spec, device=args.device, data_dir=args.data_dir, rows=args.rows,
                                     batching=batching, points_per_pass=args.points_per_pass)
            theta = surf.flat()
            d = directions.directions(surf.layout, theta, 2, 0)
            axis = torch.linspace(-1, 1, args.grid, dtype=torch.float64)
            coefs = torch.cartesian_prod(axis, axis)
            setup = time.perf_counter() - t_setup
            if surf.device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            surf.evaluate_affine(theta, d, coefs, ("train", "test"))
            if surf.device.type == "cuda":
                torch.cuda.synchronize()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = {"problem": name, "size": args.size, "parameters": surf.size, "rows_train": surf.rows["train"],
                   "rows_test": surf.rows["test"], "batching": surf.batching
                   + (f" ({surf.points_per_pass}/pass)" if surf.batching == "vmap" else ""),
                   "points": int(coefs.shape[0]), "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
                   "points_per_s": round(coefs.shape[0] / seconds, 2), "setup_s": round(setup, 2),
                   "device": str(surf.device), "threads": torch.get_num_threads()}
            rows.append(row)
            say(f"{name} [{row['batching']}]: {args.grid}×{args.grid} in {seconds:.1f} s")
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "compute":
        return compute(args)
    if args.command == "figures":
        root = Path(args.results_dir)
        if not root.is_dir():
            fail(f"results directory {root} does not exist")
        draw(root)
        return 0
    if args.command == "prune":
        from bench.landscape import saver

        gone = saver.prune(args.results_dir, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
        print(f"valley-landscape: {verb} {len(gone)} file{'s' if len(gone) != 1 else ''}")
        for p in gone:
            print(f"  {p}")
        return 0
    if args.command == "bench":
        return bench(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
