"""``valley-import-cv PATH [--results-dir DIR]``: the published Crowded-Valley result tree → runs/curves/cells.

Reads a local copy of github.com/SirRob1997/Crowded-Valley---Results (§7.1 layout, §7.2 JSON, one file per run)
and writes the harness's three Parquet tables with ``source = crowded_valley``, so that ``valley-report
--compare-with`` can put the study next to a replication cell by cell.

Conversions (§7, §8):

* names: problems unchanged; optimizer folders → our plugin names (:data:`OPTIMIZER_NAMES`); schedules none →
  constant, ltr → trapezoidal; budgets oneshot → oneshot, large_budget → medium (the published tuning used 50
  samples, which is the harness's medium budget); hyperparameter names kept, ``use_locking`` dropped.
* the re-run (winner) setting of a large_budget optimizer folder is the setting folder holding seeds ≥ 43
  (§7.1); the tuning trials are the seed-42 runs of all setting folders, in the order of their file timestamps
  (the tuner ran the samples one after another; the sample index itself is not stored in the files [INFERRED]).
* divergence: DeepOBS pads the lists of an aborted run with the epoch-0 values (§0.1). A run whose lists end in
  such padding (every list from some epoch j ≥ 1 on equal to its epoch-0 value, minibatch losses too) is imported
  as ``diverged`` with its measured epochs 0..j−1 only — the harness's own representation (§8); the analysis can
  re-create the padding (``--diverged pad``).
* the duplicated ``minibatch_train_losses`` are not imported (only used to confirm padding).
* what it takes to re-run a run (``spec`` column, key ``rerun``; ``valley-reproduce`` builds our run spec from it):
  problem, optimizer, the hyperparameters of the JSON at full precision (the folder names are rounded to 10
  digits), the schedule, the seed, batch size and epochs, and on quadratic_deep the **Hessian draw** k the run was
  trained on (§1 P1: the study drew a fresh Hessian from one module-level ``RandomState(42)`` at every problem
  instantiation, so runs executed after others in one process used later draws). k is identified from the run's
  epoch-0 test *and* valid loss (θ = 1 before any step): draw k matches when both agree with the draw's values to a
  relative :data:`DRAW_RTOL` (the published float32 values are within ~2e-8 of ours; two of the first 300 draws
  are never closer than ~6e-4 jointly), searched over the first :data:`DRAWS_SEARCHED` draws. Matched: ``hessian_draw:
  k`` in ``problem_settings`` and in the re-run's settings; not matched: ``hessian_draw: null`` and the reason in
  ``rerun.issues``. TF-only flags with the value our implementation has (``use_locking``, ``use_nesterov``,
  ``nesterov``, ``amsbound``) are dropped; any other key our optimizer does not have, a flag with another value, or
  learning-rate factors that differ from our schedule's are listed in ``rerun.issues`` (such a run is reported as
  not reproducible instead of being re-run with other settings).

Streaming and idempotency: one optimizer folder (≤ ~60 files) is parsed at a time and written as one runs file and
one curves file named by a hash of the folder's relative path (chunks of ``--batch`` runs for larger folders), so
memory stays bounded and a re-import overwrites the same files. run_id = hash of the file's relative path;
cell_id = hash of the optimizer folder's relative path; cells are merged into ``cells/crowded_valley.parquet`` by
cell_id. Malformed files are skipped and listed.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.records import CELLS_SCHEMA, CURVES_SCHEMA, RUNS_SCHEMA, write_atomic

SOURCE = "crowded_valley"
OPTIMIZER_NAMES = {
    "GradientDescentOptimizer": "sgd", "MomentumOptimizer": "momentum", "NAGOptimizer": "nag",
    "AdamOptimizer": "adam", "AMSGrad": "amsgrad", "NadamOptimizer": "nadam", "RAdamOptimizer": "radam",
    "NDAdamOptimizer": "ndadam", "AdaBoundOptimizer": "adabound", "AMSBoundOptimizer": "amsbound",
    "AdagradOptimizer": "adagrad", "AdadeltaOptimizer": "adadelta", "RMSPropOptimizer": "rmsprop",
    "LookaheadOptimizerMBGDMomentum": "lookahead_momentum", "LookaheadOptimizerRAdam": "lookahead_radam",
}
SCHEDULE_NAMES = {"none": "constant", "cosine": "cosine", "cosine_wr": "cosine_wr", "ltr": "trapezoidal"}
BUDGET_NAMES = {"oneshot": "oneshot", "large_budget": "medium"}
ACCURACY_PROBLEMS = {"fmnist_2c2d", "cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164", "tolstoi_char_rnn"}
LOSS_PROBLEMS = {"quadratic_deep", "mnist_vae", "fmnist_vae"}
FILE_RE = re.compile(r"^random_seed__(\d+)__(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})\.json$")
SPLITS = ("train", "valid", "test")
RERUN_SEED = 43
FULL_SEEDS = 10
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DRAWS_SEARCHED = 300
DRAW_RTOL = 2e-6
# TF-only arguments of the study's optimizers and the value our implementation of each has (others: an issue).
TF_FLAGS: dict[str, dict[str, Any]] = {
    "momentum": {"use_nesterov": False}, "nag": {"use_nesterov": True},
    "lookahead_momentum": {"use_nesterov": False, "nesterov": False},
    "adabound": {"amsbound": False}, "amsbound": {"amsbound": True},
}


class Malformed(ValueError):
    """A result file that cannot be imported; the message says why."""


@dataclass
class Parsed:
    """One imported run: its runs row and its measured curve rows."""

    path: str                       # relative to the results root
    setting: str
    seed: int
    started: datetime
    row: dict[str, Any]
    curves: list[tuple[int, str, str, float]]
    published_test: float   # the file's last test-metric entry: the study's number (epoch-0 value if padded)


@dataclass
class ImportSummary:
    files: int = 0
    runs: int = 0
    diverged: int = 0
    cells: int = 0
    curve_rows: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def run_id(rel_path: str) -> str:
    """The imported run's id: a hash of its path relative to the results root (stable across machines)."""
    return _hash(f"{SOURCE}:run:{rel_path}")


def find_root(path: str | Path) -> Path:
    """The folder holding the budget folders: PATH itself or PATH/results (a clone of the repository)."""
    p = Path(path)
    for cand in (p, p / "results"):
        if cand.is_dir() and any((cand / b).is_dir() for b in BUDGET_NAMES):
            return cand
    raise FileNotFoundError(f"no {' or '.join(BUDGET_NAMES)} folder under {p} or {p / 'results'}")


def _subdirs(path: Path) -> list[Path]:
    return sorted((Path(e.path) for e in os.scandir(path) if e.is_dir()), key=lambda q: q.name)


def _numbers(value: Any, name: str, length: int) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise Malformed(f"{name}: expected a list of {length} numbers (num_epochs + 1), got {got}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise Malformed(f"{name}: non-numeric entry {v!r}")
        out.append(float(v))
    return out


def _measured(series: dict[tuple[str, str], list[float]], minibatch: Any) -> int:
    """Number of measured evaluations: N+1 for a completed run, j for a run padded from epoch j on (§0.1),
    or the index of the first non-finite evaluation."""
    n = len(next(iter(series.values())))
    for j in range(n):
        if any(not math.isfinite(vals[j]) for vals in series.values()):
            return j
    j = n
    while j > 1 and all(vals[j - 1] == vals[0] for vals in series.values()):
        j -= 1
    if j == n:
        return n
    # padding confirmed by the minibatch losses (padded with their first value as well), when present
    if isinstance(minibatch, list) and minibatch and minibatch[-1] != minibatch[0]:
        return n
    return j


def _metric(problem: str, has_acc: bool) -> str:
    if problem in ACCURACY_PROBLEMS:
        if not has_acc:
            raise Malformed(f"no accuracy lists for {problem}, whose comparison metric is the test accuracy")
        return "accuracy"
    if problem in LOSS_PROBLEMS:
        return "loss"
    return "accuracy" if has_acc else "loss"


# ------------------------------------------------------------------------------------------- P1 Hessian draws
def _draw_stream(n: int):
    """Hessians 0..n-1 of P1's module-level ``RandomState(42)`` stream, in order (one pass; ``hessian(k)`` of
    :mod:`problems.quadratic_deep` rebuilds the stream from the start for each k)."""
    from problems.quadratic_deep import DIM, _random_rotation

    rng = np.random.RandomState(42)
    for _ in range(n):
        eig = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
        rot = _random_rotation(DIM, rng)
        yield np.matmul(np.transpose(rot), np.matmul(np.diag(eig), rot))


@functools.lru_cache(maxsize=4)
def draw_losses(n: int = DRAWS_SEARCHED, batch_size: int = 128) -> np.ndarray:
    """(n, 2) array: the epoch-0 test and valid loss of θ = 1 under Hessian draws 0..n-1 (~4 ms per draw).

    DeepOBS evaluates the first ``1000 // batch_size`` batches, so the mean of 0.5 (1 − x)ᵀ H (1 − x) over the first
    ``(1000 // batch_size) · batch_size`` rows, H cast to float32 as TF held it; = 0.5 tr(H S) with S the rows'
    second-moment matrix.
    """
    from problems.quadratic_deep import SIZE, dataset

    rows = (SIZE // batch_size) * batch_size
    moments = []
    for split in ("test", "valid"):
        d = 1.0 - dataset(split)[:rows].astype(np.float64)
        moments.append(d.T @ d / rows)
    out = np.empty((n, 2))
    for k, h in enumerate(_draw_stream(n)):
        h32 = h.astype(np.float32).astype(np.float64)
        out[k] = [0.5 * float(np.sum(h32 * m)) for m in moments]
    return out


@dataclass
class DrawMatch:
    draw: int | None
    searched: int
    issue: str | None = None  # why no draw was recorded


def identify_draw(test0: float, valid0: float | None, *, batch_size: int = 128,
                  searched: int = DRAWS_SEARCHED) -> DrawMatch:
    """The Hessian draw k whose epoch-0 test (and valid) loss equals the run's, to a relative :data:`DRAW_RTOL`."""
    if not math.isfinite(test0) or (valid0 is not None and not math.isfinite(valid0)):
        return DrawMatch(None, 0, "epoch-0 loss is not finite")
    table = draw_losses(searched, batch_size)
    err = np.abs(table[:, 0] - test0) / abs(test0)
    if valid0 is not None:
        err = np.maximum(err, np.abs(table[:, 1] - valid0) / abs(valid0))
    hits = np.flatnonzero(err <= DRAW_RTOL)
    if len(hits) == 1:
        return DrawMatch(int(hits[0]), searched)
    if len(hits) > 1:
        return DrawMatch(None, searched, f"epoch-0 losses match several Hessian draws ({hits.tolist()})")
    best = int(np.argmin(err))
    return DrawMatch(None, searched, f"no Hessian draw among the first {searched} matches the epoch-0 test/valid "
                                     f"loss {test0!r}/{valid0!r} (nearest: draw {best}, relative difference "
                                     f"{err[best]:.2e})")


# ------------------------------------------------------------------------------------------------- re-run
@functools.lru_cache(maxsize=64)
def _yaml_keys(group: str, name: str) -> tuple[str, ...]:
    import yaml

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        return ()
    return tuple(k for k in (yaml.safe_load(path.read_text()) or {}) if k != "name")


def _factors(training: dict[str, Any], n_epochs: int) -> tuple[list[float] | None, str | None]:
    """The published epoch factors f_1..f_N (None for a constant law: ``[]``/``null`` fields), or an issue."""
    epochs, factors = training.get("lr_sched_epochs"), training.get("lr_sched_factors")
    if not epochs and not factors:
        return None, None
    if not isinstance(epochs, list) or not isinstance(factors, list) or len(epochs) != len(factors):
        return None, "training_params: lr_sched_epochs / lr_sched_factors are not two lists of one length"
    try:
        by_epoch = {int(e): float(f) for e, f in zip(epochs, factors)}
    except (TypeError, ValueError):
        return None, "training_params: non-numeric learning-rate schedule entries"
    out, current = [], 1.0  # DeepOBS make_lr_schedule: a factor holds until the next listed epoch
    for e in range(1, n_epochs + 1):
        current = by_epoch.get(e, current)
        out.append(current)
    return out, None


def _schedule_issue(schedule: str, factors: list[float] | None, n_epochs: int) -> str | None:
    """Whether our law ``schedule`` (defaults) gives the published factors f_1..f_N (to 1e-9)."""
    from bench.schedules import SCHEDULES

    cls = SCHEDULES.get(schedule)
    ours = cls(num_epochs=max(n_epochs, 1), steps_per_epoch=1, **cls.canonical_settings({})).epoch_factors()[1:]
    theirs = factors if factors is not None else [1.0] * n_epochs
    if len(theirs) != len(ours[:n_epochs]) or any(abs(a - b) > 1e-9 for a, b in zip(theirs, ours)):
        bad = next((e + 1 for e, (a, b) in enumerate(zip(theirs, ours)) if abs(a - b) > 1e-9), None)
        return (f"the published learning-rate factors differ from our {schedule} schedule's"
                + (f" (epoch {bad}: {theirs[bad - 1]!r} vs {ours[bad - 1]!r})" if bad else ""))
    return None


def rerun_settings(problem: str, optimizer: str, schedule: str, seed: int, hp: dict[str, Any], n_epochs: int,
                   batch_size: Any, l2_reg: Any, training: dict[str, Any], draw: DrawMatch | None) -> dict[str, Any]:
    """What ``valley-reproduce`` needs to re-run a published run: overrides over our YAML defaults, and the issues
    that make an exact re-run impossible (empty: reproducible)."""
    issues: list[str] = []
    ours = set(_yaml_keys("optimizer", optimizer))
    flags = TF_FLAGS.get(optimizer, {})
    mapped = {}
    for key, value in hp.items():
        if key == "use_locking":
            continue
        if key in flags:
            if value != flags[key]:
                issues.append(f"{key}={value!r}: our {optimizer} implements {key}={flags[key]!r}")
            continue
        if key not in ours:
            issues.append(f"hyperparameter {key}={value!r} is not one of our {optimizer}'s")
            continue
        mapped[key] = value
    settings: dict[str, Any] = {"batch_size": batch_size, "num_epochs": n_epochs}
    if l2_reg is not None:
        settings["weight_decay"] = l2_reg
    if draw is not None:
        settings["hessian_draw"] = draw.draw
        if draw.issue:
            issues.append(draw.issue)
    factors, issue = _factors(training, n_epochs)
    issue = issue or _schedule_issue(schedule, factors, n_epochs)
    if issue:
        issues.append(issue)
    return {"problem": problem, "optimizer": optimizer, "hyperparameters": mapped, "schedule": schedule,
            "seed": seed, "problem_settings": settings, "data_order": "repeat", "issues": issues}


def parse(file: Path, rel: str, problem: str, optimizer: str, schedule: str, setting: str) -> Parsed:
    """Parse and convert one result file; raise :class:`Malformed` with the reason."""
    m = FILE_RE.match(file.name)
    if m is None:
        raise Malformed("file name is not random_seed__<seed>__<YYYY-MM-DD-HH-MM-SS>.json")
    seed = int(m.group(1))
    started = datetime.strptime(m.group(2), "%Y-%m-%d-%H-%M-%S").replace(tzinfo=timezone.utc)
    try:
        with open(file, "rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as err:
        raise Malformed(f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise Malformed("top level is not a JSON object")
    for key in ("testproblem", "num_epochs", "random_seed", "train_losses", "valid_losses", "test_losses"):
        if key not in data:
            raise Malformed(f"missing key {key!r}")
    if data["testproblem"] != problem:
        raise Malformed(f"testproblem {data['testproblem']!r} does not match folder {problem!r}")
    if data["random_seed"] != seed:
        raise Malformed(f"random_seed {data['random_seed']!r} does not match the file name's seed {seed}")
    n_epochs = data["num_epochs"]
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 0:
        raise Malformed(f"num_epochs {n_epochs!r} is not a non-negative integer")
    hp = data.get("optimizer_hyperparams", {})
    if not isinstance(hp, dict):
        raise Malformed("optimizer_hyperparams is not an object")
    acc_keys = [f"{s}_accuracies" for s in SPLITS]
    present = [k in data for k in acc_keys]
    if any(present) and not all(present):
        raise Malformed("only some of the accuracy lists are present")
    metrics = ("loss", "accuracy") if all(present) else ("loss",)
    series = {(s, mt): _numbers(data[f"{s}_{'losses' if mt == 'loss' else 'accuracies'}"], f"{s}_{mt}",
                                n_epochs + 1) for s in SPLITS for mt in metrics}
    metric = _metric(problem, all(present))
    measured = _measured(series, data.get("minibatch_train_losses"))
    curves = [(e, s, mt, vals[e]) for (s, mt), vals in series.items() for e in range(measured)]
    last = measured - 1
    diverged = measured < n_epochs + 1
    final = {f"final_{s}_{mt}": (series[(s, mt)][last] if (s, mt) in series and last >= 0 else None)
             for s in SPLITS for mt in ("loss", "accuracy")}
    best_epoch, best_test = _best_valid(series, metric, measured)
    rid = run_id(rel)
    training = data.get("training_params") or {}
    if not isinstance(training, dict):
        raise Malformed("training_params is not an object")
    draw = None
    if problem == "quadratic_deep":
        valid0 = series[("valid", "loss")][0]
        bs = data.get("batch_size") if isinstance(data.get("batch_size"), int) else 128
        draw = identify_draw(series[("test", "loss")][0], valid0, batch_size=bs)
    l2_reg = data.get("l2_reg", data.get("weight_decay"))
    rerun = rerun_settings(problem, optimizer, schedule, seed, hp, n_epochs, data.get("batch_size"), l2_reg,
                           training, draw)
    problem_settings = {"batch_size": data.get("batch_size"), "num_epochs": n_epochs, "l2_reg": l2_reg}
    if draw is not None:
        problem_settings["hessian_draw"] = draw.draw
    row = {
        "run_id": rid, "source": SOURCE, "problem": problem, "optimizer": optimizer,
        "hyperparameters": json.dumps({k: v for k, v in hp.items() if k != "use_locking"}, sort_keys=True),
        "schedule": schedule, "schedule_settings": json.dumps({"granularity": "epoch", **training}, sort_keys=True),
        "seed": seed, "data_order": "repeat",
        "problem_settings": json.dumps(problem_settings, sort_keys=True),
        "num_epochs": n_epochs, "batch_size": data.get("batch_size") if isinstance(data.get("batch_size"), int)
        else None,
        "status": "diverged" if diverged else "completed",
        "error": (f"diverged in epoch {last}: the study padded epochs {measured}..{n_epochs} with epoch-0 values"
                  if diverged else None),
        "metric": metric, **final, "epochs_completed": max(last, 0), "best_valid_epoch": best_epoch,
        "best_valid_test_metric": best_test, "wall_time_s": None, "steps": None, "grad_evals": None,
        "num_parameters": None, "device": None,
        "versions": json.dumps({"deepobs": "TensorFlow 1.x back-end (published Crowded-Valley results)"}),
        "git_commit": None, "started_at": started, "finished_at": None, "protocol_version": SOURCE,
        "spec": json.dumps({"source_path": rel, "optimizer_folder": data.get("optimizer_name"),
                            "setting": setting, "rerun": rerun,
                            **({"hessian_draw": {"draw": draw.draw, "searched": draw.searched}} if draw else {})},
                           sort_keys=True, allow_nan=True),
    }
    return Parsed(rel, setting, seed, started, row, curves, series[("test", metric)][-1])


def _best_valid(series: dict, metric: str, measured: int) -> tuple[int | None, float | None]:
    valid = series[("valid", metric)][:measured]
    if not valid:
        return None, None
    sign = -1.0 if metric == "accuracy" else 1.0
    epoch = min(range(len(valid)), key=lambda e: (sign * valid[e], e))
    return epoch, series[("test", metric)][epoch]


# --------------------------------------------------------------------------------------------------- groups
@dataclass
class Group:
    """One optimizer folder: results/<budget>/<schedule>/<problem>/<OptimizerFolder>/."""

    path: Path
    rel: str
    budget: str
    schedule: str
    problem: str
    optimizer: str


def groups(root: Path, report: ImportSummary) -> Iterator[Group]:
    for bdir in _subdirs(root):
        if bdir.name not in BUDGET_NAMES:
            report.skipped.append((bdir.name + "/", f"unknown budget folder (known: {', '.join(BUDGET_NAMES)})"))
            continue
        for sdir in _subdirs(bdir):
            if sdir.name not in SCHEDULE_NAMES:
                report.skipped.append((f"{bdir.name}/{sdir.name}/", "unknown schedule folder"))
                continue
            for pdir in _subdirs(sdir):
                for odir in _subdirs(pdir):
                    rel = odir.relative_to(root).as_posix()
                    if odir.name not in OPTIMIZER_NAMES:
                        report.skipped.append((rel + "/", "unknown optimizer folder"))
                        continue
                    yield Group(odir, rel, BUDGET_NAMES[bdir.name], SCHEDULE_NAMES[sdir.name], pdir.name,
                                OPTIMIZER_NAMES[odir.name])


def parse_group(g: Group, root: Path, report: ImportSummary) -> list[Parsed]:
    out = []
    for setting in _subdirs(g.path):
        for file in sorted(setting.glob("*.json")):
            rel = file.relative_to(root).as_posix()
            report.files += 1
            try:
                out.append(parse(file, rel, g.problem, g.optimizer, g.schedule, setting.name))
            except Malformed as err:
                report.skipped.append((rel, str(err)))
    return out


def _published_stats(runs: list[Parsed]) -> tuple[float | None, float | None]:
    """Mean and population std of the published final test metric (padded epoch-0 value for diverged runs): the
    study's own numbers; the analysis recomputes them with its divergence rule."""
    arr = np.array([r.published_test for r in runs], dtype=float)
    if arr.size == 0:
        return None, None
    return float(arr.mean()), float(arr.std(ddof=0))


def make_cell(g: Group, runs: list[Parsed]) -> dict[str, Any] | None:
    if not runs:
        return None
    metric = runs[0].row["metric"]
    by_setting: dict[str, list[Parsed]] = {}
    for r in runs:
        by_setting.setdefault(r.setting, []).append(r)
    rerun = sorted(s for s, rs in by_setting.items() if any(r.seed >= RERUN_SEED for r in rs))
    if g.budget == "oneshot":
        winner = rerun[0] if rerun else max(by_setting, key=lambda s: (len(by_setting[s]), s))
        trials: list[Parsed] = []
        sample = -1
    else:
        trials = sorted((r for r in runs if r.seed == 42), key=lambda r: (r.started, r.setting))
        if rerun:
            winner = rerun[0]
        elif trials:  # no re-runs published: DeepOBS's rule on the trials (final validation metric, earlier on ties)
            sign = -1.0 if metric == "accuracy" else 1.0
            ranked = sorted(range(len(trials)), key=lambda i: (
                sign * trials[i].row[f"final_valid_{metric}"] if trials[i].row["status"] == "completed" else math.inf,
                i))
            winner = trials[ranked[0]].setting
        else:
            return None
        sample = next((i for i, r in enumerate(trials) if r.setting == winner), -1)
    seeds = sorted(by_setting[winner], key=lambda r: r.seed)
    rows = [r.row for r in seeds]
    mean, std = _published_stats(seeds)
    hp = rows[0]["hyperparameters"]
    latest = max(r.started for r in runs)
    return {
        "cell_id": _cell_id(g), "source": SOURCE, "problem": g.problem,
        "optimizer": g.optimizer, "schedule": g.schedule, "budget": g.budget,
        "num_samples": len(trials) if g.budget != "oneshot" else 0, "selection": "final", "metric": metric,
        "winner_sample": sample, "winner_hyperparameters": hp, "trial_run_ids": [r.row["run_id"] for r in trials],
        "run_ids": [r["run_id"] for r in rows], "seeds": [r["seed"] for r in rows], "n_seeds": len(rows),
        "n_diverged": sum(r["status"] == "diverged" for r in rows), "test_mean": mean, "test_std": std,
        "status": "complete" if len(rows) >= FULL_SEEDS and len(set(r["seed"] for r in rows)) >= FULL_SEEDS
        else "partial",
        "updated_at": latest,
    }


def _write_group(results_dir: Path, g: Group, runs: list[Parsed], batch: int) -> int:
    """Write the group's runs and curves (chunks of ``batch`` runs); return the curve rows written."""
    stem = f"cv-{_hash(f'{SOURCE}:group:{g.rel}')}"
    for sub in ("runs", "curves"):
        for old in (results_dir / sub).glob(f"{stem}-*.parquet"):
            old.unlink()
    rows_written = 0
    for i in range(0, len(runs), batch):
        chunk = runs[i:i + batch]
        curve_rows = [(r.row["run_id"], *c) for r in chunk for c in r.curves]
        curves = pa.table({
            "run_id": pa.array([c[0] for c in curve_rows], pa.string()),
            "epoch": pa.array([c[1] for c in curve_rows], pa.int32()),
            "split": pa.array([c[2] for c in curve_rows], pa.string()),
            "metric": pa.array([c[3] for c in curve_rows], pa.string()),
            "value": pa.array([c[4] for c in curve_rows], pa.float64()),
        }, schema=CURVES_SCHEMA)
        runs_table = pa.Table.from_pylist([{k: r.row.get(k) for k in RUNS_SCHEMA.names} for r in chunk],
                                          schema=RUNS_SCHEMA)
        name = f"{stem}-{i // batch:03d}.parquet"
        write_atomic(curves, results_dir / "curves" / name)   # curves first, as bench/records.py does
        write_atomic(runs_table, results_dir / "runs" / name)
        rows_written += curves.num_rows
    return rows_written


def _cell_id(g: Group) -> str:
    return _hash(f"{SOURCE}:cell:{g.rel}")


def _merge_cells(results_dir: Path, cells: list[dict[str, Any]], gone: set[str]) -> None:
    """Replace the cells with the same cell_id (and drop ``gone`` ones: folders that no longer yield a run)."""
    path = results_dir / "cells" / f"{SOURCE}.parquet"
    new = pa.Table.from_pylist(cells, schema=CELLS_SCHEMA)
    if path.exists():
        old = pq.read_table(path, schema=CELLS_SCHEMA)
        fresh = set(new.column("cell_id").to_pylist()) | gone
        keep = pa.array([c not in fresh for c in old.column("cell_id").to_pylist()], pa.bool_())
        new = pa.concat_tables([old.filter(keep), new])
    write_atomic(new, path)


def import_tree(path: str | Path, results_dir: str | Path, *, batch: int = 200) -> ImportSummary:
    """Import the published tree under ``path`` into ``results_dir``; return counts and the skipped files."""
    root = find_root(path)
    out = Path(results_dir)
    report = ImportSummary()
    cells = []
    gone: set[str] = set()
    for g in groups(root, report):
        runs = parse_group(g, root, report)
        report.curve_rows += _write_group(out, g, runs, batch)  # also removes this folder's files of a former import
        report.runs += len(runs)
        report.diverged += sum(r.row["status"] == "diverged" for r in runs)
        cell = make_cell(g, runs)
        if cell is None:
            gone.add(_cell_id(g))
        else:
            cells.append(cell)
    if cells or gone:
        _merge_cells(out, cells, gone)
    report.cells = len(cells)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="valley-import-cv", description="Convert a local copy of the published "
                                "Crowded-Valley result tree into runs/curves/cells Parquet tables.")
    p.add_argument("path", help="local copy of the published results (the repository or its results/ folder)")
    p.add_argument("--results-dir", default="results/crowded_valley",
                   help="where to write runs/curves/cells (default: results/crowded_valley, kept apart from the "
                        "harness's own results so the report can compare them with --compare-with)")
    p.add_argument("--batch", type=int, default=200, help="runs per Parquet file (bounded memory)")
    args = p.parse_args(argv)
    try:
        rep = import_tree(args.path, args.results_dir, batch=args.batch)
    except FileNotFoundError as err:
        print(f"valley-import-cv: error: {err}", file=sys.stderr)
        return 2
    print(f"valley-import-cv: {rep.files} files → {rep.runs} runs ({rep.diverged} diverged), {rep.cells} cells, "
          f"{rep.curve_rows} curve rows in {args.results_dir}")
    if rep.skipped:
        print(f"skipped {len(rep.skipped)}:", file=sys.stderr)
        for rel, why in rep.skipped:
            print(f"  {rel}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
