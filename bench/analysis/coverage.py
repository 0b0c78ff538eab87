"""What a results set is missing, so that a partial study yields a report that says so instead of failing.

The study's eight problems are expected (those without any data are listed as such); within the problems with data
the expected grid is optimizers seen × schedules seen × budgets seen: the report cannot know which optimizers a user
meant to run, but a cell present for one problem is expected for every problem.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.analysis.load import CELL_KEY, Results
from bench.analysis.names import BUDGETS, OPTIMIZERS, PROBLEMS, SCHEDULES, ordered
from bench.analysis.tables import FULL_SEEDS, sort_cells


@dataclass
class Coverage:
    problems_without_data: list[str]
    missing_cells: pd.DataFrame      # CELL_KEY rows expected but absent
    short_cells: pd.DataFrame        # cells with fewer than 10 finished seeds
    diverged_cells: pd.DataFrame     # cells whose seeds include diverged runs
    n_expected: int
    n_present: int
    notes: list[str]

    def lines(self) -> list[str]:
        """Plain-language summary, one line per kind of gap (empty when nothing is missing)."""
        out = list(self.notes)
        if self.problems_without_data:
            out.append(f"problems with no data: {', '.join(self.problems_without_data)}")
        if len(self.missing_cells):
            out.append(f"{len(self.missing_cells)} of {self.n_expected} expected cells are missing "
                       f"(listed in missing_cells.csv)")
        if len(self.short_cells):
            out.append(f"{len(self.short_cells)} cells have fewer than {FULL_SEEDS} finished seeds "
                       f"(marked †; listed in short_cells.csv)")
        if len(self.diverged_cells):
            n = int(self.diverged_cells["n_diverged"].sum())
            out.append(f"{len(self.diverged_cells)} cells include {n} diverged seed runs (marked ‡)")
        return out


def coverage(results: Results) -> Coverage:
    cells = results.cells
    present_problems = set(cells["problem"]) if not cells.empty else set()
    problems = ordered(set(PROBLEMS) | present_problems, PROBLEMS)
    without = [p for p in problems if p not in present_problems]
    if cells.empty:
        empty = pd.DataFrame(columns=CELL_KEY)
        return Coverage(without, empty, empty, empty, 0, 0, list(results.notes))
    # problems without any data are reported once as such, not as a block of missing cells
    grid = pd.MultiIndex.from_product([[p for p in problems if p in present_problems], ordered(cells["optimizer"], OPTIMIZERS),
                                       ordered(cells["schedule"], SCHEDULES), ordered(cells["budget"], BUDGETS)],
                                      names=CELL_KEY).to_frame(index=False)
    have = cells[CELL_KEY].drop_duplicates()
    merged = grid.merge(have, how="left", indicator=True)
    missing = sort_cells(merged.loc[merged["_merge"] == "left_only", CELL_KEY])
    short = sort_cells(cells.loc[cells["n_seeds"] < FULL_SEEDS, CELL_KEY + ["n_seeds", "n_listed"]])
    div = sort_cells(cells.loc[cells["n_diverged"] > 0, CELL_KEY + ["n_diverged", "n_seeds"]])
    return Coverage(without, missing, short, div, len(grid), len(have), list(results.notes))
