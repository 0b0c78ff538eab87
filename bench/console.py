"""What a person sees while one run trains: a progress bar per epoch and a one-screen summary at the end."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench.execute import env_from_config, execute
from bench.spec import RunSpec

console = Console(stderr=True)


def run_single(spec: RunSpec, cfg: dict[str, Any]) -> str:
    """Execute one spec with a live progress bar; print the summary; return the run's status."""
    results_dir = cfg.get("results_dir", "results")
    label = f"{spec.problem} · {spec.optimizer} · {spec.schedule} · seed {spec.seed}"
    show = bool(cfg.get("progress", True)) and console.is_terminal
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=console, disable=not show, transient=True) as progress:
        task = progress.add_task(label, total=spec.num_epochs, info="")

        def on_epoch(epoch: int, metrics: dict[str, dict[str, float]]) -> None:
            info = f"valid loss {metrics['valid']['loss']:.4g}"
            if "accuracy" in metrics["valid"]:
                info += f" acc {metrics['valid']['accuracy']:.3f}"
            progress.update(task, completed=epoch, info=info)

        env = env_from_config(cfg)
        outcome = execute(spec, results_dir, device=env.device, data_dir=env.data_dir,
                          force=bool(cfg.get("force", False)), on_epoch=on_epoch if show else None,
                          observers=env.observers_for(spec, {"role": ["single"]}), checkpoints=env.checkpoints(),
                          deterministic=env.deterministic)
    print_summary(outcome.record, outcome.skipped, Path(results_dir))
    return outcome.record["status"]


def print_summary(rec: dict[str, Any], skipped: bool, results_dir: Path) -> None:
    out = Console(file=sys.stdout, width=max(Console(file=sys.stdout).width, 120), soft_wrap=True)
    title = f"{rec['problem']} · {rec['optimizer']} · {rec['schedule']} · seed {rec['seed']} — {rec['status']}"
    if skipped:
        title += " (already recorded; force=true re-runs)"
    out.print(f"[bold]{title}[/bold]")
    table = Table()
    table.add_column("split")
    table.add_column("loss", justify="right")
    has_acc = rec.get("final_test_accuracy") is not None
    if has_acc:
        table.add_column("accuracy", justify="right")
    for split in ("train", "valid", "test"):
        row = [split, _fmt(rec.get(f"final_{split}_loss"))]
        if has_acc:
            row.append(_fmt(rec.get(f"final_{split}_accuracy")))
        table.add_row(*row)
    out.print(table)
    steps, wall = rec.get("steps") or 0, rec.get("wall_time_s") or 0.0
    rate = f"{steps / wall:,.3g} steps/s" if wall > 0 else "n/a"
    out.print(f"epochs {rec.get('epochs_completed')}/{rec.get('num_epochs')} · steps {steps} · wall {wall:.2f} s · "
              f"{rate} · grad evals {rec.get('grad_evals'):g} · device {rec.get('device')}")
    if rec.get("best_valid_epoch") is not None:
        out.print(f"best validation at epoch {rec['best_valid_epoch']}: test {rec['metric']} "
                  f"{_fmt(rec['best_valid_test_metric'])}")
    if rec.get("error"):
        out.print(f"[red]error:[/red] {rec['error'].splitlines()[0]}")
    out.print(f"run_id {rec['run_id']} → {results_dir / 'runs' / (rec['run_id'] + '.parquet')} (+ curves/)")


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.6g}"
