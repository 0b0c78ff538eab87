"""``python -m bench.analysis.benchmark``: time ``valley-report`` on a synthetic results set of the study's size.

Default size: 15 optimizers × 8 problems × 4 schedules × (10 one-shot + 75 trials + 3 × 9 re-runs) = 53,760 runs
with per-epoch curves at the published epoch counts (~42 M curve rows). The report runs in a child process, so its
wall time and peak resident memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``) are its own. Goal: ≤ 60 s and
≤ 4 GB. Prints; asserts nothing.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.analysis.curves import count_rows
from bench.analysis.synthetic import SyntheticConfig, generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.analysis.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=None, help="where to write the synthetic results (default: a temp dir, removed)")
    p.add_argument("--optimizers", type=int, default=15)
    p.add_argument("--trials", type=int, default=75)
    p.add_argument("--epoch-scale", type=float, default=1.0)
    p.add_argument("--reuse", action="store_true", help="reuse an existing synthetic set in --dir")
    p.add_argument("--diverged", choices=("worst", "pad"), default="worst")
    args = p.parse_args(argv)
    tmp = None
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="valley-bench-"))
    if args.dir is None:
        tmp = root
    try:
        if not (args.reuse and (root / "runs").is_dir()):
            shutil.rmtree(root / "runs", ignore_errors=True)
            shutil.rmtree(root / "curves", ignore_errors=True)
            shutil.rmtree(root / "cells", ignore_errors=True)
            t0 = time.perf_counter()
            cfg = SyntheticConfig(n_optimizers=args.optimizers, n_trials=args.trials, epoch_scale=args.epoch_scale,
                                  share_reruns=False)
            counts = generate(root, cfg)
            print(f"generated {counts['runs']:,} runs, {counts['curve_rows']:,} curve rows, {counts['cells']:,} "
                  f"cells in {time.perf_counter() - t0:.1f} s under {root}")
        else:
            print(f"reusing {root}: {count_rows(root):,} curve rows")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.report.cli", str(root), "--diverged", args.diverged,
                               "--timings"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_gb = usage.ru_maxrss / 1024 ** 2  # Linux reports KiB
        print(proc.stdout.strip())
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        print(f"valley-report: wall {wall:.1f} s (CPU user+sys {usage.ru_utime + usage.ru_stime:.1f} s), "
              f"peak RSS {peak_gb:.2f} GB (goal ≤ 60 s, ≤ 4 GB)")
        return 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
