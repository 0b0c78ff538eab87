"""The cohort engine: a tuning cell's trials — same problem, seed, data order, so the same initial weights, batches,
augmentation and dropout draws — trained as one program (``bench.engine`` dispatches; see the README, "Cohorts").

Layout: every parameter stacked along a leading trial dimension (M, *shape); each optimizer's trials are one
contiguous row range updated by its batched rule (``OptimizerSpec.cohort_rule``, ``optimizers._cohort``); one
shared batch per step; one device→host transfer per epoch (the evaluation) for all trials. Programs:

* ``quadratic.QuadraticExact`` — P1, the single run's per-example maths on stacked operands: bit-identical on the
  CPU; ``quadratic.QuadraticFast`` — P1's closed form (``engine=cohort_fast``, ``arithmetic=reordered``).
* ``neural.NeuralLoop`` — P2–P8 on the CPU: per trial the single run's forward and backward (the global RNG forked
  per pass, so each trial draws the single run's dropout and VAE noise), the update batched: bit-identical.
* ``neural.NeuralVmap`` — P2–P7 on a GPU: ``torch.func`` (``functional_call`` + ``vmap(randomness='same')``, batch
  norm with stacked running statistics) for the forward and backward; ``neural.CharRNNBatched`` — P8 with a batched
  LSTM (``aten::lstm`` has no vmap rule). Not bit-identical to single runs (other kernels); tolerance in the README.

The interface the dispatcher calls: :func:`unsupported`, :func:`cohort_key`, :func:`max_cohort`,
:func:`checkpoint_key`, :func:`train_cohort`; :func:`check` validates a ``cohort_fast`` spec before anything runs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import torch

from bench import checkpoint as ckpt
from bench.observers import SafeObservers, StopRun
from bench.precision import run_numerics
from bench.spec import RunSpec
from bench.train import RunResult, resolve_device
from optimizers import OPTIMIZERS
from problems import PROBLEMS

ENGINES = ("cohort", "cohort_fast", "auto")
MODES = ("exact", "fast", "loop", "vmap")

CPU_NEURAL_NOTE = ("on the CPU a cohort of a neural problem trains no faster than its trials one after another "
                   "(each trial's forward pass is its own; vmapped convolutions are slower still); engine=cohort "
                   "trains it as one anyway")


def _kind(problem: str) -> str | None:
    """quadratic | image | char_rnn for the DeepOBS problems (and subclasses of them); None for others."""
    from problems._vae import VAEProblem
    from problems.cifar10_3c3d import Cifar103c3d
    from problems.cifar100_allcnnc import Cifar100Allcnnc
    from problems.fmnist_2c2d import Fmnist2c2d
    from problems.quadratic_deep import QuadraticDeep
    from problems.svhn_wrn164 import SvhnWrn164
    from problems.tolstoi_char_rnn import TolstoiCharRnn

    try:
        cls = PROBLEMS.get(problem)
    except Exception:  # noqa: BLE001 - an unknown name is the spec's business, not ours
        return None
    if issubclass(cls, QuadraticDeep):
        return "quadratic"
    if issubclass(cls, TolstoiCharRnn):
        return "char_rnn"
    if issubclass(cls, (VAEProblem, Cifar103c3d, Cifar100Allcnnc, Fmnist2c2d, SvhnWrn164)):
        return "image"
    return None


def random_forward(problem: str) -> bool:
    """Whether a forward pass draws from the global RNG (dropout, the VAE's noise): then a trial's passes per step
    decide its random stream, so SAM (two passes) cannot share a cohort with one-pass optimizers."""
    from problems._vae import VAEProblem
    from problems.cifar100_allcnnc import Cifar100Allcnnc
    from problems.tolstoi_char_rnn import TolstoiCharRnn

    cls = PROBLEMS.get(problem)
    deterministic = _kind(problem) == "quadratic" or not issubclass(cls, (VAEProblem, Cifar100Allcnnc,
                                                                           TolstoiCharRnn))
    return not deterministic


def _device(device: str | torch.device) -> torch.device:
    return resolve_device(device) if isinstance(device, str) else device


def unsupported(spec: RunSpec, engine: str, device: str | torch.device) -> str | None:
    """Why ``spec`` cannot train in a cohort under ``engine`` (cohort | cohort_fast | auto); None when it can."""
    if engine not in ENGINES:
        raise ValueError(f"unknown cohort engine {engine!r}; valid: {', '.join(ENGINES)}")
    kind = _kind(spec.problem)
    if kind is None:
        return f"problem {spec.problem} has no cohort form"
    fast = engine == "cohort_fast" or spec.arithmetic == "reordered"
    if fast and kind != "quadratic":
        return f"{spec.problem} has no reordered (cohort_fast) path; only quadratic_deep has one"
    opt = OPTIMIZERS.get(spec.optimizer)
    why = opt.cohort_unsupported(spec.hyperparameters)
    if why is not None:
        return why
    if kind == "quadratic" and spec.precision == "bf16":
        return "bf16 autocast changes P1's kernels; P1 cohorts reproduce fp32 and tf32"
    if engine == "auto" and kind != "quadratic" and _device(device).type == "cpu":
        return CPU_NEURAL_NOTE
    return None


def check(spec: RunSpec) -> str | None:
    """A one-line reason why a ``cohort_fast`` spec (``arithmetic=reordered``) cannot train at all; None if it can.

    Device-independent: meant for validating ``valley engine=cohort_fast ...`` before anything is written."""
    if spec.arithmetic != "reordered":
        return None
    return unsupported(spec, "cohort_fast", "cpu")


def cohort_key(spec: RunSpec, device: str | torch.device) -> Hashable:
    """Equal keys = one shared data stream: problem and settings, seed, data order, precision, arithmetic, device,
    protocol; and, where the forward pass is random, the forward passes per step (SAM: 2)."""
    passes = None
    if random_forward(spec.problem):
        rule = OPTIMIZERS.get(spec.optimizer).cohort_rule
        passes = int(getattr(rule, "passes", 1))
    dev = _device(device)
    return (spec.problem, json.dumps(dict(spec.problem_settings), sort_keys=True), spec.seed, spec.data_order,
            spec.precision, spec.arithmetic, spec.protocol_version, f"{dev.type}:{dev.index or 0}", passes)


# Rough activation floats kept per example for the backward pass (full-size inputs), for max_cohort's estimate.
_ACTIVATIONS = {"quadratic_deep": 400, "mnist_vae": 110_000, "fmnist_vae": 110_000, "fmnist_2c2d": 80_000,
                "cifar10_3c3d": 180_000, "cifar100_allcnnc": 1_000_000, "svhn_wrn164": 2_000_000,
                "tolstoi_char_rnn": 12_000}
_PARAMS = {"quadratic_deep": 100, "mnist_vae": 10_151_489, "fmnist_vae": 10_151_489, "fmnist_2c2d": 3_274_634,
           "cifar10_3c3d": 895_210, "cifar100_allcnnc": 1_387_108, "svhn_wrn164": 2_748_890,
           "tolstoi_char_rnn": 284_499}


def max_cohort(spec: RunSpec, device: str | torch.device) -> int:
    """Most trials per program: P1 10,000 (CPU) / 100,000 (GPU); neural problems from a memory estimate
    (parameters, gradients and optimizer state per trial; activations too where the trials run batched, on a GPU),
    within half the device's memory; on the CPU at most 64 (a CPU cohort runs its trials' passes one by one)."""
    dev = _device(device)
    if _kind(spec.problem) == "quadratic":
        return 100_000 if dev.type == "cuda" else 10_000
    name = next((c.__dict__["name"] for c in PROBLEMS.get(spec.problem).__mro__
                 if c.__dict__.get("name") in _PARAMS), spec.problem)  # a DeepOBS problem or a subclass of one
    params = _PARAMS.get(name, 10_000_000)
    per_trial = params * 4 * 7  # parameter, gradient, up to 4 state tensors, a copy
    if dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory
        per_trial += _ACTIVATIONS.get(name, 2_000_000) * 4 * 3 * spec.batch_size
        return max(1, min(1024, int(0.5 * total // per_trial)))
    return max(1, min(64, int(0.5 * _available_memory() // per_trial)))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def engine_of(specs: Sequence[RunSpec]) -> str:
    return "cohort_fast" if specs and specs[0].arithmetic == "reordered" else "cohort"


def checkpoint_key(specs: Sequence[RunSpec]) -> str:
    """The cohort's checkpoint key: a stable hash of the engine and the members' run_ids (in any order)."""
    return _key(engine_of(specs), [s.run_id for s in specs])


def _key(engine: str, run_ids: Sequence[str]) -> str:
    text = engine + "\n" + "\n".join(sorted(run_ids))
    return "cohort-" + hashlib.sha256(text.encode()).hexdigest()[:20]


def default_mode(spec: RunSpec, device: torch.device) -> str:
    kind = _kind(spec.problem)
    if kind == "quadratic":
        return "fast" if spec.arithmetic == "reordered" else "exact"
    forced = os.environ.get("VALLEY_COHORT_MODE")
    if forced in ("loop", "vmap"):
        return forced
    return "loop" if device.type == "cpu" else "vmap"


def train_cohort(specs: Sequence[RunSpec], *, engine: str, device: str | torch.device = "cpu",
                 data_dir: str | Path | None = None, observers: Mapping[str, SafeObservers] | None = None,
                 checkpoints: ckpt.CheckpointStore | None = None, deterministic: bool = False,
                 mode: str | None = None) -> list[RunResult | StopRun]:
    """Train ``specs`` (one cohort key) as one program; one RunResult (or the StopRun that took it out) per spec.

    ``mode`` (tests, benchmarks): ``loop`` or ``vmap`` for neural problems (default: loop on the CPU, vmap on a GPU;
    ``VALLEY_COHORT_MODE`` overrides the default); P1 is ``exact`` or ``fast`` by the specs' arithmetic.
    """
    specs = list(specs)
    if not specs:
        return []
    if engine not in ("cohort", "cohort_fast"):
        raise ValueError(f"train_cohort: engine must be cohort or cohort_fast, not {engine!r}")
    if any((s.arithmetic == "reordered") != (engine == "cohort_fast") for s in specs):
        raise ValueError("train_cohort: engine=cohort_fast trains exactly the arithmetic=reordered specs")
    dev = _device(device)
    keys = {cohort_key(s, dev) for s in specs}  # (a spec's run_id is its content hash: computed once below)
    if len(keys) != 1:
        raise ValueError("train_cohort: the specs do not share one data stream (different cohort keys)")
    for s in specs:
        why = unsupported(s, engine, dev)
        if why is not None:
            raise ValueError(f"train_cohort: {s.problem}/{s.optimizer} cannot train in a cohort: {why}")
    mode = mode or default_mode(specs[0], dev)
    if mode not in MODES:
        raise ValueError(f"train_cohort: unknown mode {mode!r}; valid: {', '.join(MODES)}")
    build = _builder(specs[0], mode, dev, data_dir)
    run_ids = [s.run_id for s in specs]
    if len(set(run_ids)) != len(run_ids):
        raise ValueError("train_cohort: the same run twice (equal run_ids) in one cohort")
    identity = json.dumps({"engine": engine, "mode": mode, "run_ids": sorted(run_ids)})
    with run_numerics(specs[0].precision, deterministic):
        from bench.engine.cohort.loop import run_cohort

        return run_cohort(specs, build, engine=engine, device=str(dev), observers=observers or {},
                          checkpoints=checkpoints, deterministic=deterministic, key=_key(engine, run_ids),
                          identity=identity, run_ids=run_ids)


def _builder(spec: RunSpec, mode: str, device: torch.device, data_dir: str | Path | None) -> Any:
    kind = _kind(spec.problem)
    if kind == "quadratic":
        from bench.engine.cohort.quadratic import QuadraticExact, QuadraticFast

        if mode not in ("exact", "fast"):
            raise ValueError(f"train_cohort: quadratic_deep runs in mode exact or fast, not {mode!r}")
        cls: Any = QuadraticFast if mode == "fast" else QuadraticExact
    else:
        from bench.engine.cohort import neural

        if mode not in ("loop", "vmap"):
            raise ValueError(f"train_cohort: {spec.problem} runs in mode loop or vmap, not {mode!r}")
        if mode == "loop":
            cls = neural.NeuralLoop
        else:
            cls = neural.CharRNNBatched if kind == "char_rnn" else neural.NeuralVmap
    return lambda specs: cls(specs, device, data_dir)
