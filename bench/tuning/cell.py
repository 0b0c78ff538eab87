"""A cell (problem + settings, optimizer, schedule, budget): its identity, its run specs, selection, its table row.

Selection follows DeepOBS ``rerun_setting(mode='final')`` (§4): rank the samples by the validation metric at the
final epoch (accuracy descending, else loss ascending) and take rank 1; ``selection=best`` ranks by the best epoch's
validation metric instead. Ties go to the earliest sample. A diverged run is *padded* with its epoch-0 values, as
the DeepOBS runner does (``_abort_routine``), for both the selection and the reported test metric
(``diverged=exclude``: it never wins and is left out of the mean). The reported number is the mean and population
std (ddof=0, DeepOBS ``aggregate_runs``) over the seeds of the final-epoch test metric (§4, §8).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bench import PROTOCOL_VERSION, records
from bench.spec import RunSpec, make_spec, spec_from_config
from bench.tuning.settings import (
    Budget,
    TuningError,
    TuningSettings,
    budget_from_config,
    tuning_from_config,
)
from optimizers import OPTIMIZERS
from optimizers.base import LogUniform, RandInt, study_samples
from problems import PROBLEMS


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Cell:
    """Everything that determines a cell's runs and its reported number (paths and devices are not part of it)."""

    problem: str
    problem_settings: Mapping[str, Any]
    optimizer: str
    defaults: Mapping[str, Any]  # validated YAML hyperparameters; the tuned ones are replaced by each sample
    schedule: str
    schedule_settings: Mapping[str, Any]
    data_order: str
    budget: Budget
    tuning: TuningSettings
    precision: str = "fp32"
    arithmetic: str = "exact"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Cell:
        """The cell of a composed config; raises SpecError / TuningError with one line."""
        base = spec_from_config(cfg)
        budget = budget_from_config(cfg)
        cell = cls(problem=base.problem, problem_settings=dict(base.problem_settings), optimizer=base.optimizer,
                   defaults=dict(base.hyperparameters), schedule=base.schedule,
                   schedule_settings=dict(base.schedule_settings), data_order=base.data_order, budget=budget,
                   tuning=tuning_from_config(cfg), precision=base.precision,
                   arithmetic=base.arithmetic)
        if budget.tuned and not cell.search_space:
            raise TuningError(f"optimizer {cell.optimizer} has no tuned hyperparameters; use budget=oneshot")
        return cell

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def metric(self) -> str:
        return "accuracy" if PROBLEMS.get(self.problem).has_accuracy else "loss"

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    @property
    def search_space(self) -> dict[str, LogUniform | RandInt]:
        return OPTIMIZERS.get(self.optimizer).search_space()

    @property
    def fixed_hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.defaults.items() if k not in self.search_space}

    @property
    def label(self) -> str:
        """The ``budget`` column: the budget's name, suffixed when the search is beyond the study."""
        if not self.budget.tuned or not self.tuning.beyond_study:
            return self.budget.name
        extra = [self.tuning.sampler] + ([self.tuning.pruner] if self.tuning.pruner != "none" else [])
        return f"{self.budget.name}+{'+'.join(extra)}"

    @property
    def title(self) -> str:
        return f"{self.problem} · {self.optimizer} · {self.schedule} · {self.label}"

    # -------------------------------------------------------------------------------------------------- identity
    def _base_identity(self) -> dict[str, Any]:
        return {"problem": self.problem, "problem_settings": dict(self.problem_settings),
                "optimizer": self.optimizer, "schedule": self.schedule,
                "schedule_settings": dict(self.schedule_settings), "data_order": self.data_order,
                "precision": self.precision, "arithmetic": self.arithmetic, "protocol_version": PROTOCOL_VERSION,
                **self._plugin_identity()}

    def _plugin_identity(self) -> dict[str, Any]:
        """A plugin's name and source hash (a changed plugin is a new study); nothing for built-ins."""
        from bench import plugins

        refs = plugins.refs_of({"problem": self.problem, "optimizer": self.optimizer, "schedule": self.schedule})
        return {"plugins": {k: {"name": v["name"], "sha256": v["sha256"]} for k, v in refs.items()}} if refs else {}

    def study_identity(self) -> dict[str, Any]:
        """What the study's trials depend on: not the budget, the selection or the re-run seeds (shared by all)."""
        return {**self._base_identity(), "fixed_hyperparameters": self.fixed_hyperparameters,
                "tuning_seed": self.tuning.tuning_seed, "sampler": self.tuning.sampler,
                "sampler_seed": self.tuning.sampler_seed, "pruner": self.tuning.pruner}

    @property
    def study_name(self) -> str:
        suffix = "" if not self.tuning.beyond_study else f".{self.tuning.sampler}.{self.tuning.pruner}"
        return f"{self.problem}.{self.optimizer}.{self.schedule}{suffix}-{_digest(self.study_identity(), 12)}"

    def cell_identity(self) -> dict[str, Any]:
        ident = {**self._base_identity(), "hyperparameters": dict(self.defaults), "budget": self.budget.name,
                 "samples": self.budget.samples, "seeds": list(self.tuning.seeds), "diverged": self.tuning.diverged}
        if self.budget.tuned:
            ident.update(selection=self.tuning.selection, sampler=self.tuning.sampler,
                         sampler_seed=self.tuning.sampler_seed, pruner=self.tuning.pruner)
        return ident

    @property
    def cell_id(self) -> str:
        return _digest(self.cell_identity(), 20)

    # ------------------------------------------------------------------------------------------------------ runs
    def spec(self, tuned: Mapping[str, Any], seed: int) -> RunSpec:
        """The run spec of ``tuned`` hyperparameters over the YAML defaults, with ``seed``."""
        return make_spec(self.problem, self.optimizer, {**self.defaults, **tuned}, schedule=self.schedule,
                         seed=seed, problem_settings=self.problem_settings, schedule_settings=self.schedule_settings,
                         data_order=self.data_order, precision=self.precision,
                         arithmetic=self.arithmetic)

    def oneshot_specs(self) -> list[RunSpec]:
        return [self.spec({}, s) for s in self.tuning.seeds]

    def stream(self, n: int) -> list[dict[str, Any]]:
        """The first n samples of the study's sampler (§2.1): the same for every problem, schedule and budget."""
        return _stream(self.optimizer, self.tuning.sampler_seed, n)

    def trial_spec(self, tuned: Mapping[str, Any]) -> RunSpec:
        return self.spec(tuned, self.tuning.tuning_seed)

    def rerun_specs(self, tuned: Mapping[str, Any]) -> list[RunSpec]:
        return [self.spec(tuned, s) for s in self.tuning.rerun_seeds]


_STREAMS: dict[tuple[str, int], list[dict[str, Any]]] = {}


def _stream(optimizer: str, seed: int, n: int) -> list[dict[str, Any]]:
    """Cached study samples: the first n of a longer draw are the n-sample draw (one RandomState, drawn in order)."""
    have = _STREAMS.get((optimizer, seed), [])
    if len(have) < n:
        have = _STREAMS[(optimizer, seed)] = study_samples(OPTIMIZERS.get(optimizer), n, seed=seed)
    return [dict(s) for s in have[:n]]


# -------------------------------------------------------------------------------------------------- run outcomes
@dataclass(frozen=True)
class RunView:
    """A finished run as the cell sees it: its metric at the final, initial and best-validation epochs."""

    run_id: str
    seed: int
    status: str  # completed | diverged
    valid_final: float
    test_final: float
    valid_initial: float | None = None  # epoch 0, read only where needed (diverged runs)
    test_initial: float | None = None
    valid_best: float | None = None  # at the best validation epoch (selection=best)

    def valid_score(self, selection: str, diverged: str, higher_is_better: bool) -> float:
        """Higher is better; -inf for a run that must not win."""
        if self.status == "diverged" and diverged == "exclude":
            return -math.inf
        if selection == "best":
            value = self.valid_best
        else:
            value = self.valid_initial if self.status == "diverged" else self.valid_final
        if value is None or not math.isfinite(value):
            return -math.inf
        return value if higher_is_better else -value

    def test_value(self, diverged: str) -> float | None:
        """The run's reported final test metric (None: left out of the mean)."""
        if self.status == "diverged":
            return self.test_initial if diverged == "pad" else None
        return self.test_final


def curves_needed(record: Mapping[str, Any], need_best: bool = False) -> bool:
    """Whether :func:`run_view` reads the run's curve (diverged runs, or ``need_best``)."""
    return record["status"] == "diverged" or need_best


def curve_values(frame: Any) -> dict[str, dict[tuple[str, int, str], float]]:
    """run_id → {(metric, epoch, split): value} of a curves frame (``records.read_curves``), for :func:`run_view`."""
    out: dict[str, dict[tuple[str, int, str], float]] = {}
    for run_id, epoch, split, metric, value in zip(frame.run_id, frame.epoch, frame.split, frame.metric, frame.value):
        out.setdefault(run_id, {})[(metric, int(epoch), split)] = value
    return out


def run_view(results_dir: str | Path, record: Mapping[str, Any], *, need_best: bool = False,
             curves: Mapping[str, Mapping[tuple[str, int, str], float]] | None = None) -> RunView:
    """Summarise a finished runs record; the curves file is read only for diverged runs or ``need_best`` (from
    ``curves``, :func:`curve_values` of many runs read at once, when given)."""
    metric = record["metric"]
    view: dict[str, Any] = {"run_id": record["run_id"], "seed": int(record["seed"]), "status": record["status"],
                            "valid_final": _num(record[f"final_valid_{metric}"]),
                            "test_final": _num(record[f"final_test_{metric}"])}
    if curves_needed(record, need_best):
        if curves is None:
            curves = curve_values(records.read_curves(results_dir, [record["run_id"]]))
        curve = {(e, sp): v for (m, e, sp), v in curves.get(record["run_id"], {}).items() if m == metric}
        view.update(valid_initial=curve.get((0, "valid")), test_initial=curve.get((0, "test")))
        best = record.get("best_valid_epoch")
        if best is not None and not _is_nan(best):
            view["valid_best"] = curve.get((int(best), "valid"))
    return RunView(**view)


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


# ------------------------------------------------------------------------------------------------------ selection
@dataclass(frozen=True)
class TrialResult:
    """A finished tuning trial: its sample index, its tuned hyperparameters and its seed-42 run."""

    sample: int
    tuned: Mapping[str, Any]
    view: RunView


def select(trials: Sequence[TrialResult], cell: Cell) -> TrialResult | None:
    """The winner: best validation score under the cell's selection rule; earliest sample on ties."""
    if not trials:
        return None
    t = cell.tuning
    return max(sorted(trials, key=lambda r: r.sample),
               key=lambda r: r.view.valid_score(t.selection, t.diverged, cell.higher_is_better))


# ------------------------------------------------------------------------------------------------- the cells table
@dataclass
class CellOutcome:
    cell: Cell
    winner: TrialResult | None
    trial_run_ids: list[str]
    seeds: list[RunView]  # the winner's finished runs, seed order
    complete: bool
    pruned: int = 0
    saved_epochs: int = 0

    def test_values(self) -> list[float]:
        values = [v.test_value(self.cell.tuning.diverged) for v in self.seeds]
        return [v for v in values if v is not None]

    def row(self) -> dict[str, Any]:
        """The CELLS_SCHEMA row (keys beyond the schema are kept for columns the table may gain)."""
        cell, tests = self.cell, self.test_values()
        arr = np.asarray(tests, dtype=np.float64)
        winner_hp = dict(cell.defaults) if not cell.budget.tuned else (
            {**cell.defaults, **self.winner.tuned} if self.winner else None)
        return {
            "cell_id": cell.cell_id, "source": "valley", "problem": cell.problem, "optimizer": cell.optimizer,
            "schedule": cell.schedule, "budget": cell.label, "num_samples": cell.budget.samples,
            "selection": cell.tuning.selection if cell.budget.tuned else "final", "metric": cell.metric,
            "winner_sample": self.winner.sample if self.winner else -1,
            "winner_hyperparameters": None if winner_hp is None else json.dumps(winner_hp, sort_keys=True),
            "trial_run_ids": self.trial_run_ids, "run_ids": [v.run_id for v in self.seeds],
            "seeds": [v.seed for v in self.seeds], "n_seeds": len(self.seeds),
            "n_diverged": sum(v.status == "diverged" for v in self.seeds),
            "test_mean": float(arr.mean()) if arr.size else None,
            "test_std": float(arr.std(ddof=0)) if arr.size else None,
            "status": "complete" if self.complete else "partial",
            "updated_at": datetime.now(UTC),
            # beyond CELLS_SCHEMA (see the report): the search behind the cell and what pruning saved
            "tuner": f"{cell.tuning.sampler}+{cell.tuning.pruner}" if cell.budget.tuned else "oneshot",
            "pruned_trials": self.pruned, "saved_epochs": self.saved_epochs,
        }


def write_cell(results_dir: str | Path, row: Mapping[str, Any]) -> Path:
    """``cells/<cell_id>.parquet``, written atomically (temp file + rename) like the runs table."""
    path = Path(results_dir) / "cells" / f"{row['cell_id']}.parquet"
    table = pa.Table.from_pylist([{k: row.get(k) for k in records.CELLS_SCHEMA.names}], schema=records.CELLS_SCHEMA)
    records.write_atomic(table, path)
    return path


def read_cells(results_dir: str | Path) -> pd.DataFrame:
    """Every cell row (explicit schema)."""
    return records.read_table(results_dir, "cells", records.CELLS_SCHEMA)
