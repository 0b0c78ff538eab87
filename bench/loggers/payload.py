"""What a valley run, an imported run or a cell looks like in W&B — one definition for the live logger and the
exporter, so that both write the same W&B run — and the ledger that makes a second export write nothing.

No wandb import here: these are plain dicts built from a run spec, a ``runs`` row, its curves, a ``cells`` row.

* **id** = our ``run_id`` (``cell-<cell_id>`` for a cell), **project** ``valley-<problem>`` (one per problem: W&B
  advises ≤ ~10k runs a project), **name** ``problem/optimizer/schedule/s42`` (a cell: ``…/<budget>``), **group**
  ``problem/optimizer/schedule`` (a cell shares it with its runs), **job_type** ``train`` | ``imported`` | ``cell``,
  **tags** ``role:trial|seed|single``, ``budget:<b>``, ``source:<s>`` and the user's.
* **config** = the run spec as a nested dict (hyperparameters under their published names) + ``run_id``,
  ``source``; **history** = one row per evaluated epoch (``train/loss``, ``valid/accuracy``, …, ``epoch`` as the
  step, ``lr_factor``, ``steps``); **summary** = the runs row's metrics and cost, ``status``, ``diverged``, and
  ``nonfinite`` (the keys whose value was NaN or ±inf: W&B turns them into null in a summary).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SPLITS = ("train", "valid", "test")
NAME_MAX, TAG_MAX, JOB_TYPE_MAX = 128, 64, 64
DEFAULT_PROJECT = "valley-{problem}"
LEDGER_NAME = "valley-ledger.jsonl"

SUMMARY_KEYS = (
    "status", "metric", "final_train_loss", "final_valid_loss", "final_test_loss", "final_train_accuracy",
    "final_valid_accuracy", "final_test_accuracy", "epochs_completed", "num_epochs", "best_valid_epoch",
    "best_valid_test_metric", "wall_time_s", "steps", "grad_evals", "num_parameters", "device", "engine",
    "precision", "deterministic", "resumes", "started_at", "finished_at", "protocol_version", "git_commit", "source",
)


# ------------------------------------------------------------------------------------------------ identity
def project_for(template: str | None, problem: str) -> str:
    """``valley-<problem>`` by default; ``{problem}`` in a user's template is replaced."""
    text = (template or DEFAULT_PROJECT).replace("{problem}", problem)
    return text[:128]


def run_name(problem: str, optimizer: str, schedule: str, seed: Any) -> str:
    return f"{problem}/{optimizer}/{schedule}/s{seed}"[:NAME_MAX]


def run_group(problem: str, optimizer: str, schedule: str) -> str:
    return f"{problem}/{optimizer}/{schedule}"[:NAME_MAX]


def cell_wandb_id(cell_id: str) -> str:
    return f"cell-{cell_id}"


def tags_for(labels: Mapping[str, Iterable[str]] | None, source: str, extra: Iterable[str] = ()) -> list[str]:
    """Sorted, unique, W&B-valid tags: ``role:…`` and ``budget:…`` from the sweep's labels, ``source:…``, the user's."""
    out = {f"source:{source}"}
    labels = labels or {}
    roles = list(labels.get("role") or [])
    for role in roles or ["single"]:
        out.add(f"role:{role}")
    for budget in labels.get("budget") or []:
        out.add(f"budget:{budget}")
    out.update(str(t) for t in extra)
    return sorted(t[:TAG_MAX] for t in out if t)


def check_tags(tags: Any) -> str | None:
    """One line for user tags W&B would reject (a list of 1–64-character strings), else None."""
    if not isinstance(tags, (list, tuple)):
        return f"invalid logger.tags={tags!r}: must be a list of strings, e.g. logger.tags=[baseline,v2]"
    for tag in tags:
        if not isinstance(tag, str) or not 1 <= len(tag) <= TAG_MAX or tag != tag.strip():
            return f"invalid logger.tags entry {tag!r}: tags are strings of 1-{TAG_MAX} characters"
    return None


# ------------------------------------------------------------------------------------------------ content
def plain(value: Any) -> Any:
    """JSON-able value: numpy scalars → Python, datetimes → ISO-8601 UTC, NaN/±inf kept (the caller decides)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            return plain(value.item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [plain(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    return str(value)


def _json_obj(text: Any) -> dict[str, Any]:
    if isinstance(text, Mapping):
        return dict(text)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def config_from_spec(spec_json: str, run_id: str, source: str = "valley") -> dict[str, Any]:
    """A valley run's W&B config: its canonical spec (the JSON whose hash is run_id) as a nested dict."""
    spec = _json_obj(spec_json)
    return {"run_id": run_id, "source": source, **{k: plain(v) for k, v in spec.items()}}


def config_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B config of any runs row: the spec for valley runs; the row's identity columns for imported runs."""
    source = record.get("source") or "valley"
    if source == "valley" and record.get("spec"):
        return config_from_spec(record["spec"], record["run_id"], source)
    cfg = {"run_id": record["run_id"], "source": source, "problem": record.get("problem"),
           "optimizer": record.get("optimizer"), "hyperparameters": _json_obj(record.get("hyperparameters")),
           "schedule": record.get("schedule"), "schedule_settings": _json_obj(record.get("schedule_settings")),
           "seed": plain(record.get("seed")), "data_order": record.get("data_order"),
           "problem_settings": _json_obj(record.get("problem_settings")),
           "protocol_version": record.get("protocol_version")}
    origin = _json_obj(record.get("spec"))
    if origin:
        cfg["origin"] = plain(origin)
    return cfg


def _finite_or_none(key: str, value: Any, nonfinite: list[str]) -> Any:
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        nonfinite.append(key)
        return None
    return value


def summary_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B summary of a runs row: its metrics and cost under the row's column names, ``status``, ``diverged``
    and ``nonfinite`` (the keys that were NaN/±inf, which W&B would show as null)."""
    from bench.secrets import redact

    nonfinite: list[str] = []
    out = {k: _finite_or_none(k, record.get(k), nonfinite) for k in SUMMARY_KEYS}
    out["diverged"] = record.get("status") == "diverged"
    if record.get("error"):
        out["error"] = redact(str(record["error"]).strip().splitlines()[0])[:500]
    out["nonfinite"] = nonfinite
    return out


def _step_of(epoch: int, steps_per_epoch: int | None) -> int | None:
    return None if steps_per_epoch is None else epoch * steps_per_epoch


def history_rows(curves: Iterable[Sequence[Any]], lr_factors: Mapping[int, float | None] | None = None,
                 steps_per_epoch: int | None = None) -> list[dict[str, Any]]:
    """One row per evaluated epoch from long-format curves ``(epoch, split, metric, value)``, in epoch order."""
    rows: dict[int, dict[str, Any]] = {}
    for epoch, split, metric, value in curves:
        epoch = int(epoch)
        rows.setdefault(epoch, {"epoch": epoch})[f"{split}/{metric}"] = float(value)
    out = []
    for epoch in sorted(rows):
        row = rows[epoch]
        factor = (lr_factors or {}).get(epoch)
        if factor is not None:
            row["lr_factor"] = float(factor)
        steps = _step_of(epoch, steps_per_epoch)
        if steps is not None:
            row["steps"] = steps
        out.append(row)
    return out


def epoch_row(epoch: int, metrics: Mapping[str, Mapping[str, float]], lr_factor: float | None,
              steps: int | None) -> dict[str, Any]:
    """The live logger's history row of one evaluated epoch (the same keys as :func:`history_rows`)."""
    row: dict[str, Any] = {"epoch": int(epoch)}
    for split in SPLITS:
        for metric, value in (metrics.get(split) or {}).items():
            row[f"{split}/{metric}"] = float(value)
    if lr_factor is not None:
        row["lr_factor"] = float(lr_factor)
    if steps is not None:
        row["steps"] = int(steps)
    return row


def steps_per_epoch(record: Mapping[str, Any]) -> int | None:
    done, steps = record.get("epochs_completed"), record.get("steps")
    if not done or steps is None or isinstance(done, float) and math.isnan(done):
        return None
    return int(steps) // int(done)


def lr_factors(record: Mapping[str, Any], curves: Sequence[Sequence[Any]]) -> dict[int, float | None]:
    """The schedule's factor per training epoch, replayed exactly as the run loop computed it (``plateau`` sees the
    validation metric); empty when the schedule cannot be rebuilt (an imported run's)."""
    try:
        from bench.schedules import SCHEDULES

        settings = _json_obj(record.get("schedule_settings"))
        num_epochs = int(record["num_epochs"])
        spe = steps_per_epoch(record) or 1
        schedule = SCHEDULES.get(record["schedule"])(num_epochs, spe, **settings)
        higher = record.get("metric") == "accuracy"
        metric = "accuracy" if higher else "loss"
        valid: dict[int, float] = {}
        finite: dict[int, bool] = {}
        for e, s, m, v in curves:
            e = int(e)
            if s == "valid" and m == metric:
                valid[e] = float(v)
            if m == "loss":
                finite[e] = finite.get(e, True) and math.isfinite(float(v))
        per_step = getattr(schedule, "granularity", "epoch") == "step"
        last = max(valid) if valid else -1
        out: dict[int, float | None] = {}
        for epoch in range(0, last + 1):
            if epoch == num_epochs or not finite.get(epoch, False):
                break
            schedule.observe(epoch, valid[epoch], higher)
            out[epoch] = schedule.factor(epoch, 0) if per_step else schedule.factor(epoch)
        return out
    except Exception:  # noqa: BLE001 - an unknown or foreign schedule: no factors
        return {}


# ------------------------------------------------------------------------------------------------ cells
CELL_CONFIG_KEYS = ("cell_id", "source", "problem", "optimizer", "schedule", "budget", "num_samples", "selection",
                    "metric", "tuner", "winner_sample")
CELL_SUMMARY_KEYS = ("test_mean", "test_std", "n_seeds", "n_diverged", "status", "pruned_trials", "saved_epochs",
                     "updated_at")


def cell_config(cell: Mapping[str, Any]) -> dict[str, Any]:
    cfg = {k: plain(cell.get(k)) for k in CELL_CONFIG_KEYS}
    cfg["winner_hyperparameters"] = plain(_json_obj(cell.get("winner_hyperparameters")))
    cfg["seeds"] = plain(cell.get("seeds")) or []
    return cfg


def cell_summary(cell: Mapping[str, Any]) -> dict[str, Any]:
    nonfinite: list[str] = []
    out = {k: _finite_or_none(k, cell.get(k), nonfinite) for k in CELL_SUMMARY_KEYS}
    out["nonfinite"] = nonfinite
    return out


def cell_trials(cell: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The cell's trials (and the winner's seed runs) as table columns and rows: one row per run, sample order."""
    metric = cell.get("metric") or "loss"
    trial_ids = list(plain(cell.get("trial_run_ids")) or [])
    seed_ids = list(plain(cell.get("run_ids")) or [])
    hp_names: list[str] = []
    for rid in trial_ids + seed_ids:
        for name in sorted(_json_obj((runs.get(rid) or {}).get("hyperparameters"))):
            if name not in hp_names:
                hp_names.append(name)
    columns = ["role", "sample", "run_id", "seed", "status", f"final_valid_{metric}", f"final_test_{metric}",
               *hp_names]
    rows = []
    for role, ids in (("trial", trial_ids), ("seed", seed_ids)):
        for i, rid in enumerate(ids):
            rec = runs.get(rid) or {}
            hp = _json_obj(rec.get("hyperparameters"))
            vals = [_table_value(rec.get(f"final_valid_{metric}")), _table_value(rec.get(f"final_test_{metric}"))]
            rows.append([role, i if role == "trial" else None, rid, plain(rec.get("seed")), rec.get("status"), *vals,
                         *[_table_value(hp.get(n)) for n in hp_names]])
    return columns, rows


def _table_value(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


# ------------------------------------------------------------------------------------------------ fingerprints
def _canon(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, float):
        return repr(value)  # NaN, inf and -0.0 distinguished, exact
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    return value


def fingerprint(**parts: Any) -> str:
    """A content hash of what a W&B run holds (config, summary, history or table); tags are compared apart."""
    return hashlib.sha256(json.dumps(_canon(parts), sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:24]


def curves_digest(curves: Iterable[Sequence[Any]]) -> list[Any]:
    return sorted([int(e), str(s), str(m), repr(float(v))] for e, s, m, v in curves)


def run_fingerprint(record: Mapping[str, Any], curves: Iterable[Sequence[Any]]) -> str:
    return fingerprint(kind="run", config=config_from_record(record), summary=summary_from_record(record),
                       curves=curves_digest(curves))


# ------------------------------------------------------------------------------------------------ the ledger
class Ledger:
    """``<wandb dir>/valley-ledger.jsonl``: one line per W&B run written (live or exported) or uploaded.

    Append-only under ``flock`` (many processes of a sweep append at once; a killed writer leaves at most one
    unterminated last line, which readers skip). The latest line of a key wins. A line: ``key`` (project/id), ``id``,
    ``project``, ``entity``, ``kind`` (run | cell), ``fp`` (content fingerprint), ``tags``, ``mode`` (offline |
    online), ``dir`` (the run's folder, relative to the ledger), ``by`` (live | export | sync), ``complete``
    (every epoch written), ``synced``, ``at``.
    """

    def __init__(self, wandb_dir: str | Path) -> None:
        self.dir = Path(wandb_dir)
        self.path = self.dir / LEDGER_NAME

    @staticmethod
    def key(project: str, entity: str | None, wandb_id: str) -> str:
        return f"{entity or ''}/{project}/{wandb_id}"

    def append(self, entries: Iterable[Mapping[str, Any]]) -> None:
        lines = "".join(json.dumps({**e, "at": e.get("at") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                   sort_keys=True) + "\n" for e in entries)
        if not lines:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as fh:  # a torn last line (killed writer) gets its newline first
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        os.write(fd, b"\n")
            os.write(fd, lines.encode())
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def latest(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return out
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and "key" in entry:
                    out[entry["key"]] = {**out.get(entry["key"], {}), **entry}
        return out

    def relative(self, path: str | Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.dir.resolve()))
        except ValueError:
            return str(Path(path).resolve())

    def absolute(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.dir / p
