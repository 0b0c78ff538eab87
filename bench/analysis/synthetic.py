"""A synthetic results set with the structure of the full study, for the report's tests and its benchmark.

Structure (all scaled by :class:`SyntheticConfig`): problems × optimizers × schedules; per (problem, optimizer,
schedule) one random-search stream of ``n_trials`` samples (seed 42), nested budgets small/medium/large = the first
1/3, 2/3, 3/3 of it, each budget's winner (final validation metric, diverged trials last) re-run with seeds 43..51;
one-shot cells of the defaults with seeds 42..51; per-epoch curves (N+1 evaluations of train/valid/test, losses and,
where the problem has one, accuracies); diverged runs stop at a random epoch with a non-finite loss, as the run loop
records them. Quality depends on the distance of the sampled log-learning-rate from an optimum that differs per
problem and optimizer, so winners differ across problems (a "crowded valley").

Tables are written in large multi-row Parquet files (one runs file and a few curves files per problem), which is
what makes generating tens of millions of curve rows take seconds instead of the hours per-run files would.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.analysis.names import BUDGETS, OPTIMIZERS, PROBLEM_METRIC, PROBLEMS, SCHEDULES
from bench.records import CELLS_SCHEMA, CURVES_SCHEMA, RUNS_SCHEMA, write_atomic

EPOCHS = {"quadratic_deep": 100, "mnist_vae": 50, "fmnist_2c2d": 100, "cifar10_3c3d": 100, "fmnist_vae": 100,
          "cifar100_allcnnc": 350, "svhn_wrn164": 160, "tolstoi_char_rnn": 200}
# (epoch-0 value, best reachable value, seed noise std) of the comparison metric, roughly the published magnitudes.
PROFILE = {"quadratic_deep": (353.4, 87.0, 0.4), "mnist_vae": (230.0, 26.5, 0.3), "fmnist_2c2d": (0.1, 0.925, 0.002),
           "cifar10_3c3d": (0.1, 0.845, 0.004), "fmnist_vae": (280.0, 23.5, 0.3),
           "cifar100_allcnnc": (0.01, 0.57, 0.006), "svhn_wrn164": (0.19, 0.96, 0.003),
           "tolstoi_char_rnn": (0.16, 0.62, 0.003)}
SEEDS = tuple(range(42, 52))


@dataclass(frozen=True)
class SyntheticConfig:
    n_problems: int = 8
    n_optimizers: int = 16
    n_schedules: int = 4
    budgets: tuple[str, ...] = BUDGETS
    n_trials: int = 75            # samples of the largest budget; small/medium take the first 1/3, 2/3
    n_seeds: int = 10
    epoch_scale: float = 1.0      # num_epochs = max(2, round(published N × epoch_scale))
    share_reruns: bool = True     # False: re-runs per budget even when two budgets pick the same sample (the
    #                               study's count 15 × 8 × 4 × (10 + 75 + 3·9) = 53,760)
    source: str = "synthetic"
    seed: int = 0
    runs_per_file: int = 2500

    def budget_samples(self) -> dict[str, int]:
        n = self.n_trials
        sizes = {"oneshot": 0, "small": max(1, n // 3), "medium": max(1, 2 * n // 3), "large": n}
        return {b: sizes[b] for b in self.budgets}


def _rid(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:20]


@dataclass
class _Runs:
    """Column arrays of the runs of one problem (built with numpy, converted to Arrow once)."""

    run_id: list[str]
    optimizer: list[str]
    schedule: list[str]
    seed: list[int]
    lr: list[float]
    quality: list[float]
    diverge_at: list[int]   # epoch of the first non-finite evaluation (-1: completed)


class _Drawer:
    """Draws runs of one problem: quality from the log-lr's distance to a per-optimizer optimum, divergence when
    the learning rate is too large for the optimizer."""

    def __init__(self, cfg: SyntheticConfig, problem: str, opts: list[str], scheds: list[str],
                 rng: np.random.Generator) -> None:
        self.cfg, self.problem, self.opts, self.scheds, self.rng = cfg, problem, opts, scheds, rng
        self.n_epochs = max(2, round(EPOCHS[problem] * cfg.epoch_scale))
        self.skill = rng.uniform(0.8, 1.0, len(opts))
        self.best_lr = rng.uniform(-3.3, -1.2, len(opts))
        self.sched_gain = rng.uniform(0.0, 0.05, len(scheds))
        self.div_margin = rng.uniform(0.9, 1.6, len(opts))

    def add(self, runs: _Runs, oi: int, si: int, lr_exp: float, extra: float, seed: int, run_id: str) -> None:
        gap = lr_exp - self.best_lr[oi]
        q = self.skill[oi] * extra * float(np.exp(-gap ** 2 / (2 * 0.55 ** 2))) + self.sched_gain[si] * extra
        diverged = gap > self.div_margin[oi] + 0.15 * self.rng.standard_normal()
        runs.run_id.append(run_id)
        runs.optimizer.append(self.opts[oi])
        runs.schedule.append(self.scheds[si])
        runs.seed.append(seed)
        runs.lr.append(10.0 ** lr_exp)
        runs.quality.append(min(q, 1.0))
        runs.diverge_at.append(int(self.rng.integers(1, self.n_epochs + 1)) if diverged else -1)


def _empty_runs() -> _Runs:
    return _Runs([], [], [], [], [], [], [])


def _final_valid(problem: str, series: dict, last: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """Final validation metric as selection sees it: diverged runs last."""
    metric = PROBLEM_METRIC[problem]
    v = series[("valid", metric)][np.arange(len(last)), last]
    worst = -np.inf if metric == "accuracy" else np.inf
    return np.where(diverged | ~np.isfinite(v), worst, v)


def _problem(cfg: SyntheticConfig, problem: str, opts: list[str], scheds: list[str], rng: np.random.Generator,
             lr_samples: np.ndarray, other: np.ndarray) -> tuple[int, _Runs, dict, np.ndarray, list[dict]]:
    """Every run of one problem (trials and one-shot first, then the winners' re-runs), their curves and cells."""
    from bench.analysis.stats import rank_order

    d = _Drawer(cfg, problem, opts, scheds, rng)
    budgets = cfg.budget_samples()
    tuned = cfg.n_trials > 0 and any(b != "oneshot" for b in budgets)
    first = _empty_runs()
    for oi, opt in enumerate(opts):
        default_lr = -3.0 if oi % 3 else -2.0
        for si, sched in enumerate(scheds):
            key = (cfg.source, problem, opt, sched)
            for i in range(cfg.n_trials if tuned else 0):
                d.add(first, oi, si, lr_samples[oi, i], other[oi, i], 42, _rid(*key, "trial", i))
            if "oneshot" in budgets:
                for s in SEEDS[: cfg.n_seeds]:
                    d.add(first, oi, si, default_lr, 0.93, s, _rid(*key, "oneshot", s))
    series, last = _curves(problem, d.n_epochs, first, rng)
    valid = _final_valid(problem, series, last, np.asarray(first.diverge_at) >= 0)
    index = {r: i for i, r in enumerate(first.run_id)}
    higher = PROBLEM_METRIC[problem] == "accuracy"
    cells: list[dict] = []
    second = _empty_runs()
    seen: set[str] = set()
    for oi, opt in enumerate(opts):
        default_lr = -3.0 if oi % 3 else -2.0
        for si, sched in enumerate(scheds):
            key = (cfg.source, problem, opt, sched)
            trial_ids = [_rid(*key, "trial", i) for i in range(cfg.n_trials if tuned else 0)]
            for budget, n in budgets.items():
                if budget == "oneshot":
                    ids = [_rid(*key, "oneshot", s) for s in SEEDS[: cfg.n_seeds]]
                    cells.append(_cell(cfg, key[1:], budget, 0, -1, {"learning_rate": 10.0 ** default_lr}, [], ids))
                    continue
                win = int(rank_order(valid[[index[r] for r in trial_ids[:n]]], higher)[0])
                tag = "rerun" if cfg.share_reruns else f"rerun-{budget}"
                ids = [trial_ids[win]] + [_rid(*key, tag, win, s) for s in SEEDS[1: cfg.n_seeds]]
                for s, r in zip(SEEDS[1:], ids[1:]):
                    if r not in seen:
                        seen.add(r)
                        d.add(second, oi, si, lr_samples[oi, win], other[oi, win], s, r)
                cells.append(_cell(cfg, key[1:], budget, n, win, {"learning_rate": float(10.0 ** lr_samples[oi, win])},
                                   trial_ids[:n], ids))
    if second.run_id:
        series2, last2 = _curves(problem, d.n_epochs, second, rng)
        series = {k: np.concatenate([series[k], series2[k]]) for k in series}
        last = np.concatenate([last, last2])
        for f in first.__dataclass_fields__:
            getattr(first, f).extend(getattr(second, f))
    return d.n_epochs, first, series, last, cells


def _cell(cfg: SyntheticConfig, key: tuple[str, str, str], budget: str, n: int, win: int, hp: dict,
          trial_ids: list[str], ids: list[str]) -> dict:
    problem, opt, sched = key
    return {"cell_id": _rid(cfg.source, *key, budget, "cell"), "source": cfg.source, "problem": problem,
            "optimizer": opt, "schedule": sched, "budget": budget, "num_samples": n, "selection": "final",
            "metric": PROBLEM_METRIC[problem], "winner_sample": win, "winner_hyperparameters": json.dumps(hp),
            "trial_run_ids": trial_ids, "run_ids": ids, "seeds": list(SEEDS[: len(ids)]), "n_seeds": len(ids),
            "n_diverged": 0, "test_mean": None, "test_std": None, "status": "complete",
            "updated_at": datetime(2024, 1, 1, tzinfo=timezone.utc)}


def _curves(problem: str, n_epochs: int, runs: _Runs, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Per-epoch values of every series: {(split, metric): (runs, epochs+1) array}, NaN after divergence."""
    start, best, noise = PROFILE[problem]
    metric = PROBLEM_METRIC[problem]
    q = np.asarray(runs.quality)[:, None]
    n = len(runs.run_id)
    epochs = np.arange(n_epochs + 1)[None, :]
    progress = 1.0 - np.exp(-epochs * 5.0 / n_epochs)
    seed_off = noise * rng.standard_normal((n, 1))
    out: dict[tuple[str, str], np.ndarray] = {}
    for split, gap in (("train", -0.03), ("valid", 0.0), ("test", 0.005)):
        jitter = 0.2 * noise * rng.standard_normal((n, n_epochs + 1))
        if metric == "accuracy":
            final = start + (best - start) * np.clip(q, 0, 1) ** 0.8 - gap * (best - start) * 0.2
            acc = start + (final - start) * progress + seed_off + jitter
            out[(split, "accuracy")] = np.clip(acc, 0.0, 1.0)
            loss_final = -np.log(np.clip(final, 1e-3, 0.999)) * 1.5
            out[(split, "loss")] = (np.log(1.0 / max(start, 1e-3)) + (loss_final - np.log(1.0 / max(start, 1e-3)))
                                    * progress + 0.01 * rng.standard_normal((n, n_epochs + 1)))
        else:
            final = best + (start - best) * (1.0 - np.clip(q, 0, 1)) ** 1.3 * (1 + gap)
            out[(split, "loss")] = start + (final - start) * progress + seed_off + jitter
    div = np.asarray(runs.diverge_at)
    for arr in out.values():
        cut = (div[:, None] >= 0) & (epochs > div[:, None])
        arr[cut] = np.nan
        arr[(div >= 0), div[div >= 0]] = np.nan  # the non-finite evaluation that stopped the run
    if metric == "accuracy":  # a NaN network predicts one class: chance accuracy at the stopping evaluation
        for split in ("train", "valid", "test"):
            arr = out[(split, "accuracy")]
            arr[(div >= 0), div[div >= 0]] = start
    return out, np.where(div >= 0, div, n_epochs)


def _runs_table(cfg: SyntheticConfig, problem: str, n_epochs: int, runs: _Runs, series: dict, last: np.ndarray,
                rng: np.random.Generator) -> pa.Table:
    n = len(runs.run_id)
    rows = np.arange(n)
    metric = PROBLEM_METRIC[problem]
    div = np.asarray(runs.diverge_at) >= 0

    def final(split: str, m: str) -> np.ndarray | None:
        arr = series.get((split, m))
        return None if arr is None else arr[rows, last]

    valid_metric = series[("valid", metric)]
    best_epoch = np.where(np.all(np.isnan(valid_metric), axis=1), 0,
                          (np.nanargmax if metric == "accuracy" else np.nanargmin)(
                              np.where(np.isnan(valid_metric), np.inf if metric == "loss" else -np.inf, valid_metric),
                              axis=1))
    settings = json.dumps({"batch_size": 128, "num_epochs": n_epochs, "weight_decay": 0.0})
    steps = (last - div.astype(int) + 0) * 100
    wall = steps * 0.002 * (1 + 0.1 * rng.standard_normal(n)).clip(0.5)
    cols = {
        "run_id": runs.run_id, "source": [cfg.source] * n, "problem": [problem] * n, "optimizer": runs.optimizer,
        "hyperparameters": [json.dumps({"learning_rate": lr}) for lr in runs.lr], "schedule": runs.schedule,
        "schedule_settings": ['{"granularity": "epoch"}'] * n, "seed": runs.seed, "data_order": ["repeat"] * n,
        "problem_settings": [settings] * n, "num_epochs": [n_epochs] * n, "batch_size": [128] * n,
        "status": np.where(div, "diverged", "completed").tolist(), "metric": [metric] * n,
        "final_train_loss": final("train", "loss"), "final_valid_loss": final("valid", "loss"),
        "final_test_loss": final("test", "loss"), "final_train_accuracy": final("train", "accuracy"),
        "final_valid_accuracy": final("valid", "accuracy"), "final_test_accuracy": final("test", "accuracy"),
        "epochs_completed": last, "best_valid_epoch": best_epoch,
        "best_valid_test_metric": series[("test", metric)][rows, best_epoch], "wall_time_s": wall,
        "steps": steps, "grad_evals": steps.astype(float), "num_parameters": [1000] * n, "device": ["cpu"] * n,
        "versions": ["{}"] * n, "protocol_version": ["1"] * n, "spec": ["{}"] * n,
    }
    arrays = [pa.array(cols[f.name], type=f.type) if cols.get(f.name) is not None else pa.nulls(n, f.type)
              for f in RUNS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=RUNS_SCHEMA)


def _curves_tables(run_ids: list[str], series: dict, per_file: int):
    """Long-format curve tables in chunks of ``per_file`` runs; NaN cells after a divergence are dropped."""
    keys = sorted(series)
    n, e = series[keys[0]].shape
    for lo in range(0, n, per_file):
        hi = min(n, lo + per_file)
        block = np.stack([series[k][lo:hi] for k in keys], axis=2)       # (runs, epochs, series)
        first_nan = np.argmax(np.isnan(block[:, :, keys.index(("valid", "loss"))]), axis=1)
        has_nan = np.isnan(block[:, :, keys.index(("valid", "loss"))]).any(axis=1)
        epoch_idx = np.arange(e)[None, :]
        keep = ~has_nan[:, None] | (epoch_idx <= first_nan[:, None])
        r, ep = np.nonzero(keep)
        m = len(keys)
        values = block[r, ep].reshape(-1)
        run_idx = np.repeat(r, m).astype(np.int32)
        ser_idx = np.tile(np.arange(m, dtype=np.int32), len(r))
        dict_ids = pa.array(run_ids[lo:hi])
        splits = pa.array([k[0] for k in keys])
        metrics = pa.array([k[1] for k in keys])
        table = pa.table({
            "run_id": pa.DictionaryArray.from_arrays(pa.array(run_idx), dict_ids).cast(pa.string()),
            "epoch": pa.array(np.repeat(ep, m).astype(np.int32)),
            "split": pa.DictionaryArray.from_arrays(pa.array(ser_idx), splits).cast(pa.string()),
            "metric": pa.DictionaryArray.from_arrays(pa.array(ser_idx), metrics).cast(pa.string()),
            "value": pa.array(values, from_pandas=False),
        }, schema=CURVES_SCHEMA)
        yield lo, table


def generate(results_dir: str | Path, config: SyntheticConfig = SyntheticConfig()) -> dict[str, int]:
    """Write a synthetic results set under ``results_dir``; return counts (runs, curve_rows, cells)."""
    root = Path(results_dir)
    rng = np.random.default_rng(config.seed)
    problems = list(PROBLEMS[: config.n_problems])
    opts = list(OPTIMIZERS[: config.n_optimizers])
    scheds = list(SCHEDULES[: config.n_schedules])
    # one sample stream per optimizer, shared by every problem and schedule (§2.1)
    lr_samples = rng.uniform(-4.0, 0.0, (len(opts), max(config.n_trials, 1)))
    other = rng.uniform(0.85, 1.0, (len(opts), max(config.n_trials, 1)))
    counts = {"runs": 0, "curve_rows": 0, "cells": 0}
    all_cells: list[dict] = []
    for problem in problems:
        n_epochs, runs, series, last, cells = _problem(config, problem, opts, scheds, rng, lr_samples, other)
        table = _runs_table(config, problem, n_epochs, runs, series, last, rng)
        for lo, curves in _curves_tables(runs.run_id, series, config.runs_per_file):
            write_atomic(curves, root / "curves" / f"{config.source}-{problem}-{lo:06d}.parquet")
            counts["curve_rows"] += curves.num_rows
        write_atomic(table, root / "runs" / f"{config.source}-{problem}.parquet")
        counts["runs"] += table.num_rows
        all_cells.extend(cells)
    cells_table = pa.Table.from_pylist(all_cells, schema=CELLS_SCHEMA)
    write_atomic(cells_table, root / "cells" / f"{config.source}.parquet")
    counts["cells"] = cells_table.num_rows
    return counts
