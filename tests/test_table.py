"""valley-table: mean ± std (ddof 0) over seeds from the runs table, and the cells view."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.execute import execute
from bench.spec import make_spec
from bench.table import cell_table, main, summarize
from tests.conftest import ADAM_DEFAULTS, P1_SETTINGS


def test_summarize_runs_over_seeds(tmp_path, capsys) -> None:
    finals = []
    for seed in (42, 43, 44):
        spec = make_spec("quadratic_deep", "adam", ADAM_DEFAULTS, seed=seed,
                         problem_settings={**P1_SETTINGS, "num_epochs": 2})
        finals.append(execute(spec, tmp_path, device="cpu").record["final_test_loss"])
    from bench.records import read_runs
    table = summarize(read_runs(tmp_path))
    assert len(table) == 1 and table.seeds[0] == 3 and table.diverged[0] == 0
    assert np.isclose(table["mean"][0], np.mean(finals)) and np.isclose(table["std"][0], np.std(finals, ddof=0))
    main([str(tmp_path)])
    assert f"{np.mean(finals):.4f}" in capsys.readouterr().out


def test_cell_table_orders_study_optimizers_and_marks_short_cells() -> None:
    cells = pd.DataFrame({
        "optimizer": ["adam", "sgd", "adam"], "schedule": ["constant"] * 3, "budget": ["oneshot", "oneshot", "small"],
        "test_mean": [1.0, 2.0, 0.5], "test_std": [0.1, 0.2, 0.05], "n_seeds": [10, 10, 4],
    })
    wide = cell_table(cells)
    assert list(wide.index) == ["sgd", "adam"]
    assert wide.loc["adam", ("constant", "small")] == "0.5 ± 0.05 (n=4)"
    assert wide.loc["sgd", ("constant", "oneshot")] == "2 ± 0.2"
