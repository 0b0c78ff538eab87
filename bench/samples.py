"""``valley-samples OPTIMIZER [N]``: the first N random-search samples of an optimizer, as the study drew them.

The values come from :func:`optimizers.base.study_samples` (seed 42, the study's order and distributions, §2.1), so
sample i printed here is sample i of the published ``large_budget`` folders and of this harness's budgets. Floats are
printed as ``%.10e``, the precision of the published folder names.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.registry import UnknownNameError
from optimizers import OPTIMIZERS
from optimizers.base import study_samples


def format_value(value: Any) -> str:
    return f"{value:.10e}" if isinstance(value, float) else str(value)


def title(name: str, n: int, seed: int = 42) -> str:
    spec = OPTIMIZERS.get(name)
    return f"{name} ({spec.study_name or 'not in the study'}): study samples 0..{n - 1}, seed {seed}"


def samples_table(name: str, n: int, seed: int = 42) -> Table:
    """A table with one row per sample: index, then each tuned hyperparameter in sampling order."""
    spec = OPTIMIZERS.get(name)
    space = spec.search_space()
    table = Table()
    table.add_column("sample", justify="right", no_wrap=True)
    for hp in space:
        table.add_column(hp, justify="right", no_wrap=True)
    for i, sample in enumerate(study_samples(spec, n, seed=seed)):
        table.add_row(str(i), *(format_value(sample[hp]) for hp in space))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="valley-samples", description=__doc__.splitlines()[0])
    parser.add_argument("optimizer", help="optimizer config name, e.g. adam")
    parser.add_argument("n", nargs="?", type=int, default=10, help="number of samples (default 10)")
    parser.add_argument("--seed", type=int, default=42, help="sampler seed (the study: 42)")
    args = parser.parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)
    if args.n < 1:
        err.print(f"error: n must be >= 1, got {args.n}", markup=False)
        return 2
    try:
        spec = OPTIMIZERS.get(args.optimizer)
    except UnknownNameError as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    if not spec.search_space():
        err.print(f"error: optimizer {args.optimizer} has no tuned hyperparameters", markup=False)
        return 2
    out = Console()
    if not out.is_terminal:  # piped or captured: never wrap or truncate the numbers
        out = Console(width=max(out.width, 200))
    out.print(title(args.optimizer, args.n, seed=args.seed), markup=False)
    out.print(samples_table(args.optimizer, args.n, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
