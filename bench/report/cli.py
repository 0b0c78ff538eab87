"""``valley-report [results_dir] [--out DIR] [--compare-with DIR] [--diverged worst|pad]``.

Writes ``<results_dir>/report/`` (index.html, report.md, figures/, tables/) from the Parquet tables alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.analysis.load import DIVERGED_MODES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="valley-report", description="Write <results_dir>/report/ (index.html, "
                                "report.md, figures/, tables/) from the Parquet tables alone.")
    p.add_argument("results_dir", nargs="?", default="results", help="results directory (default: results)")
    p.add_argument("--out", default=None, help="report directory (default: <results_dir>/report)")
    p.add_argument("--compare-with", default=None, metavar="DIR",
                   help="a second results set shown side by side, cell by cell (e.g. the imported published runs)")
    p.add_argument("--diverged", choices=DIVERGED_MODES, default="worst",
                   help="diverged runs count as the worst outcome of their problem (default) or, as in the study, "
                        "as their epoch-0 values (pad)")
    p.add_argument("--selection", choices=("final", "best"), default="final",
                   help="which tuned cells to report when both exist: winners chosen by the final-epoch (study) or "
                        "best-epoch validation metric")
    p.add_argument("--source", default=None, help="analyse only rows of this source (valley, crowded_valley, ...)")
    p.add_argument("--compare-source", default=None, help="source filter for --compare-with")
    p.add_argument("--timings", action="store_true", help="print the seconds spent per report section")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    root = Path(args.results_dir)
    if not root.is_dir():
        print(f"valley-report: error: results directory {root} does not exist", file=sys.stderr)
        return 2
    if args.compare_with is not None and not Path(args.compare_with).is_dir():
        print(f"valley-report: error: --compare-with {args.compare_with} does not exist", file=sys.stderr)
        return 2
    from bench.analysis.report import LAST_TIMINGS, build

    t0 = time.perf_counter()
    index = build(root, args.out, compare_with=args.compare_with, diverged=args.diverged, source=args.source,
                  compare_source=args.compare_source, selection=args.selection)
    print(f"valley-report: wrote {index} ({time.perf_counter() - t0:.1f} s)")
    if args.timings:
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in LAST_TIMINGS.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
