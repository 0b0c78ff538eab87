"""The DeepOBS run loop (§0.1): N+1 evaluations, epoch-wise learning-rate factors, divergence handling.

The training step never syncs with the host: divergence is detected from the per-epoch evaluation (a non-finite
gradient makes the parameters, and so the next evaluation, non-finite), and the one device→host transfer per epoch
is the evaluation result. A run knows nothing of tuning or studies.

Between epochs the loop may checkpoint (``bench.checkpoint``: model, optimizer, schedule, every RNG, the data
stream, the curves so far) and, given a checkpoint of the same spec, continues from it with bit-identical results.
Observers (``bench.observers``: loggers, parameter savers, progress bars, pruners) see the run at its epoch
boundaries; the loop shields the run from them. This is the ``single`` engine; ``bench.engine`` trains cohorts.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from bench import checkpoint as ckpt
from bench.observers import EpochInfo, RunStart, SafeObservers
from bench.precision import forward_context, run_numerics
from bench.schedules import SCHEDULES
from bench.spec import RunSpec
from optimizers import OPTIMIZERS, OptimizerSpec
from problems import PROBLEMS, Problem
from problems.base import Batch

SPLITS = ("train", "valid", "test")


class EpochObserver(Protocol):
    def __call__(self, epoch: int, metrics: dict[str, dict[str, float]]) -> None: ...


@dataclass
class RunResult:
    spec: RunSpec
    status: str
    curves: list[tuple[int, str, str, float]] = field(default_factory=list)
    steps: int = 0
    grad_evals: float = 0.0
    wall_time_s: float = 0.0
    num_parameters: int = 0
    device: str = "cpu"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    has_accuracy: bool = False
    engine: str = "single"
    deterministic: bool = False
    resumes: int = 0
    params_file: str | None = None

    def series(self, split: str, metric: str) -> list[float]:
        return [v for (_, s, m, v) in self.curves if s == split and m == metric]

    def record(self) -> dict[str, Any]:
        """The ``runs`` row of this result."""
        metric = "accuracy" if self.has_accuracy else "loss"
        final = {f"final_{s}_{m}": (self.series(s, m) or [None])[-1] for s in SPLITS for m in ("loss", "accuracy")}
        valid, test = self.series("valid", metric), self.series("test", metric)
        best_epoch, best_test = None, None
        finite = [(v, e) for e, v in enumerate(valid) if math.isfinite(v)]
        if finite:
            sign = -1.0 if self.has_accuracy else 1.0  # best value first, earliest epoch on ties
            best_epoch = min(finite, key=lambda ve: (sign * ve[0], ve[1]))[1]
            best_test = test[best_epoch]
        spec = self.spec
        return {
            "run_id": spec.run_id, "source": "valley", "problem": spec.problem, "optimizer": spec.optimizer,
            "hyperparameters": json.dumps(dict(spec.hyperparameters), sort_keys=True),
            "schedule": spec.schedule, "schedule_settings": json.dumps(dict(spec.schedule_settings), sort_keys=True),
            "seed": spec.seed, "data_order": spec.data_order,
            "problem_settings": json.dumps(dict(spec.problem_settings), sort_keys=True),
            "num_epochs": spec.num_epochs, "batch_size": spec.batch_size, "status": self.status, "error": self.error,
            "metric": metric, **final, "epochs_completed": max(len(valid) - 1, 0),
            "best_valid_epoch": best_epoch, "best_valid_test_metric": best_test,
            "wall_time_s": self.wall_time_s, "steps": self.steps, "grad_evals": self.grad_evals,
            "num_parameters": self.num_parameters, "device": self.device, "versions": json.dumps(versions()),
            "git_commit": git_commit(), "started_at": self.started_at, "finished_at": self.finished_at,
            "protocol_version": spec.protocol_version, "spec": spec.canonical(),
            "engine": self.engine, "precision": spec.precision, "deterministic": self.deterministic,
            "resumes": self.resumes, "params_file": self.params_file,
            "plugins": json.dumps({k: dict(v) for k, v in spec.plugins.items()}, sort_keys=True) if spec.plugins
            else None,
        }


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    pinned = os.environ.get("VALLEY_GIT_COMMIT")  # a launcher's task runs a snapshot of the submitted checkout
    if pinned is not None:
        return pinned or None
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ("-dirty" if dirty else "")) or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; a bad or unavailable device raises a one-line ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"invalid device={name!r}: must be auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"invalid device={name!r}: must be auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={name!r} is not available here ({torch.cuda.device_count()} CUDA devices); "
                         f"use device=cpu or device=auto")
    return device


class StepCounter:
    """Closure calls (gradient evaluations) of closure-driven optimizers; saved with a checkpoint."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        return self.calls


def make_step(problem: Problem, model: nn.Module, optimizer: torch.optim.Optimizer, spec_cls: type[OptimizerSpec],
              precision: str = "fp32") -> tuple[Callable[[Batch], None], StepCounter]:
    """The training step for this optimizer, and a counter of closure calls (gradient evaluations).

    Closure-driven optimizers (L-BFGS, SAM, ...) get a closure that recomputes loss and gradients on the batch;
    ``closure(sampled=True)`` backpropagates the loss on targets sampled from the model's own predictive
    distribution instead (Sophia-G's Gauss–Newton–Bartlett estimate, ``Problem.sampled_loss``).
    ``create_graph`` optimizers (Hessian-vector products) get a differentiable backward. This is the only place
    the run loop knows such optimizers exist.
    """
    create_graph = spec_cls.create_graph
    counter = StepCounter()
    device = next(iter(model.parameters())).device

    def loss_of(batch: Batch, sampled: bool = False) -> Tensor:
        with forward_context(precision, device):
            return problem.sampled_loss(model, batch) if sampled else problem.compute(model, batch, training=True)[0]

    if spec_cls.needs_closure:
        def step(batch: Batch) -> None:
            def closure(sampled: bool = False) -> torch.Tensor:
                counter.calls += 1
                optimizer.zero_grad(set_to_none=True)
                loss = loss_of(batch, sampled)
                loss.backward(create_graph=create_graph)
                return loss
            optimizer.step(closure)
    else:
        def step(batch: Batch) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_of(batch).backward(create_graph=create_graph)
            optimizer.step()
    if create_graph and device.type == "cuda":
        plain_step = step

        def step(batch: Batch) -> None:  # noqa: F811 - cuDNN's RNN backward has no double backward (P8 + Sophia-H)
            with torch.backends.cudnn.flags(enabled=False):
                plain_step(batch)
    return step, counter


@torch.no_grad()
def evaluate(problem: Problem, model: nn.Module, precision: str = "fp32") -> dict[str, dict[str, float]]:
    """Loss (incl. L2) and accuracy on train-eval, valid and test: row-weighted means, one host sync."""
    model.eval()
    device = next(iter(model.parameters())).device
    per_split = []
    with forward_context(precision, device):
        for split in SPLITS:
            problem.reset_state()
            parts, rows = [], []
            for batch in problem.eval_batches(split):
                loss, acc = problem.compute(model, batch, training=False)
                parts.append(loss.float() if acc is None else torch.stack([loss.float(), acc.float()]))
                rows.append(batch[0].shape[0])
            if len(parts) == 1:
                per_split.append(parts[0])
            else:
                weights = torch.tensor(rows, dtype=parts[0].dtype, device=parts[0].device) / sum(rows)
                per_split.append(torch.tensordot(weights, torch.stack(parts), dims=1))
    values = torch.stack(per_split).tolist()
    out: dict[str, dict[str, float]] = {}
    for split, value in zip(SPLITS, values):
        out[split] = {"loss": value[0], "accuracy": value[1]} if problem.has_accuracy else {"loss": value}
    return out


def flat_parameters(model: nn.Module) -> Tensor:
    """All trainable parameters as one flat vector (a detached copy), in ``model.parameters()`` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).clone()


def float_buffers(model: nn.Module) -> dict[str, Tensor]:
    """The model's floating-point buffers by name (batch-norm running statistics, ...), detached copies."""
    return {name: b.detach().clone() for name, b in model.named_buffers() if b.is_floating_point()}


def train(spec: RunSpec, *, device: str | torch.device = "cpu", data_dir: str | Path | None = None,
          on_epoch: EpochObserver | None = None, observers: Any = (),
          checkpoints: ckpt.CheckpointStore | None = None, deterministic: bool = False) -> RunResult:
    """Run one spec end to end and return its result (records are written by the caller).

    ``on_epoch`` is a harness callback (progress, pruning: its :class:`~bench.observers.StopRun` stops the run);
    ``observers`` are shielded (one that fails is dropped with a warning). With ``checkpoints`` the run continues
    from a checkpoint of the same spec if there is one, and checkpoints itself when the store's policy says so.
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    watchers = SafeObservers(observers, strict=[on_epoch] if on_epoch is not None else [])
    with run_numerics(spec.precision, deterministic):
        try:
            return _train(spec, dev, data_dir, watchers, checkpoints, deterministic)
        except BaseException as err:  # noqa: BLE001 - observers learn that the run went down, then it propagates
            watchers.on_stop(type(err).__name__)
            raise


def _train(spec: RunSpec, dev: torch.device, data_dir: str | Path | None, watchers: SafeObservers,
           checkpoints: ckpt.CheckpointStore | None, deterministic: bool) -> RunResult:
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    if spec.plugins:
        from bench import plugins

        plugins.ensure(spec.plugins)  # a worker process or a cluster task loads the spec's plugins itself
    torch.manual_seed(spec.seed)
    problem = PROBLEMS.get(spec.problem)(spec.problem_settings, spec.seed, dev, spec.data_order, data_dir)
    problem.load_data()
    model = problem.build_model().to(dev)
    opt_cls = OPTIMIZERS.get(spec.optimizer)
    optimizer = opt_cls.build(model.parameters(), spec.hyperparameters)
    opt_cls.prepare(optimizer, problem)
    schedule = SCHEDULES.get(spec.schedule)(spec.num_epochs, problem.steps_per_epoch(), **spec.schedule_settings)
    step, counter = make_step(problem, model, optimizer, opt_cls, spec.precision)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    per_step = schedule.granularity == "step"

    def set_factor(f: float) -> None:
        for g, lr in zip(optimizer.param_groups, base_lrs):
            g["lr"] = lr * f

    result = RunResult(spec=spec, status="completed", num_parameters=problem.num_parameters(model), device=str(dev),
                       started_at=started, has_accuracy=problem.has_accuracy, deterministic=deterministic)
    identity = spec.canonical()
    start_epoch, elapsed_before = 0, 0.0
    saved = checkpoints.load(spec.run_id, identity) if checkpoints is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        problem.load_state_dict(saved["problem"])
        ckpt.set_rng_state(saved["rng"])
        result.curves = list(saved["curves"])
        result.steps, counter.calls = saved["steps"], saved["closure_calls"]
        result.started_at = saved["started_at"]
        result.resumes = saved["resumes"] + 1
        start_epoch, elapsed_before = saved["next_epoch"], saved["wall_time_s"]
    watchers.on_start(RunStart(spec=spec, start_epoch=start_epoch, num_parameters=result.num_parameters,
                               device=str(dev), resumes=result.resumes, curves=list(result.curves)))
    metric = "accuracy" if problem.has_accuracy else "loss"
    last_saved_epoch, last_saved_at = start_epoch, time.monotonic()
    for epoch in range(start_epoch, spec.num_epochs + 1):
        metrics = evaluate(problem, model, spec.precision)
        for split, values in metrics.items():
            result.curves.extend((epoch, split, m, v) for m, v in values.items())
        diverged = not all(math.isfinite(metrics[s]["loss"]) for s in SPLITS)
        last = diverged or epoch == spec.num_epochs
        if not last:
            schedule.observe(epoch, metrics["valid"][metric], problem.has_accuracy)
        factor = None if last else (schedule.factor(epoch) if not per_step else schedule.factor(epoch, 0))
        if watchers:
            watchers.on_epoch(epoch, metrics, EpochInfo(lr_factor=factor, steps=result.steps,
                                                        flat_params=lambda: flat_parameters(model),
                                                        named_buffers=lambda: float_buffers(model)))
        if diverged:
            result.status = "diverged"
            break
        if last:
            break
        opt_cls.on_epoch(optimizer, epoch, spec.num_epochs)
        if not per_step:
            set_factor(schedule.factor(epoch))
        model.train()
        problem.reset_state()
        for i, batch in enumerate(problem.train_batches(epoch)):
            if per_step:
                set_factor(schedule.factor(epoch, i))
            step(batch)
        result.steps += problem.steps_per_epoch()
        if checkpoints is not None and checkpoints.policy.due(epoch + 1 - last_saved_epoch,
                                                              time.monotonic() - last_saved_at):
            checkpoints.save(spec.run_id, identity, {
                "next_epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "problem": problem.state_dict(), "rng": ckpt.rng_state(),
                "curves": result.curves, "steps": result.steps, "closure_calls": counter.calls,
                "wall_time_s": elapsed_before + time.perf_counter() - t0, "started_at": result.started_at,
                "resumes": result.resumes})
            last_saved_epoch, last_saved_at = epoch + 1, time.monotonic()
            watchers.on_checkpoint(epoch + 1)
    result.grad_evals = opt_cls.grad_evals(spec.hyperparameters, result.steps, counter.calls)
    result.wall_time_s = elapsed_before + time.perf_counter() - t0
    result.finished_at = datetime.now(timezone.utc)
    return result
