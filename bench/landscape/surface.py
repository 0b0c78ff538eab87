"""A run's loss surface: the problem's model at any parameter vector, on fixed evaluation rows, many points per pass.

What is evaluated is what the run loop reports (``bench.train.evaluate``): the problem's own ``eval_batches`` and
``compute`` — the batch-mean loss *including* the L2 regulariser (DeepOBS), and the accuracy — averaged over the
rows with their sizes as weights. The rows are fixed once per surface, so every point sees the same data:

* ``train`` (train-eval) = the head of the run's training stream as its epoch-0 evaluation drew it (a fresh problem
  with the run's seed, data order and settings: the same positions, file order and augmentation draws);
* ``valid`` / ``test`` = the split in order, as evaluated every epoch.

The model is in eval mode: dropout off, batch norm with running statistics — the final (or snapshot's) statistics
the saver kept, never re-estimated. The VAE's reparameterisation noise is drawn inside the forward pass even at
evaluation (TF); a surface re-seeds the global generator before every batch (``noise_seed`` + batch index), so the
noise is the same at every point and in every call (common random numbers: a smooth surface, a fixed function for
Hessian-vector products). Stateful problems (the LSTM) restart their state at every point, as each evaluation
pass does, and carry it from batch to batch detached (the problem's own ``compute``): derivatives are those of
truncated back-propagation through time, as the run trains — each batch's loss differentiated with the state it
enters with held fixed at the values the pass at θ carries into it (on one batch, the entering state is zero and
this is the plain Hessian).

Derivatives (``loss_and_grad``, ``hvp``, ``full_hessian``) are of the train-eval loss as evaluated: L2 included,
eval mode; ``hvp`` is double backward, accumulated batch by batch (one batch's graph in memory at a time).

Batching (``batching``): ``vmap`` evaluates ``points_per_pass`` parameter vectors in one forward pass with
``torch.func.functional_call`` + ``torch.func.vmap`` (the weights get a leading point dimension, convolutions become
grouped ones); ``loop`` evaluates one point per pass. ``auto`` = ``vmap`` on CUDA, and on the CPU only for P1 (a
matrix product; for the conv nets grouped convolutions are no faster than a loop on the CPU — measured, see the
README); stateful problems and models vmap cannot batch (``aten::lstm``) always loop.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from bench.precision import forward_context
from problems.base import Batch, Problem

BATCHINGS = ("auto", "vmap", "loop")
NOISE_SEED = 1234


@dataclass(frozen=True)
class Layout:
    """Where each parameter tensor sits in the flat vector (``model.parameters()`` order, as the saver keeps it)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> Layout:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.numels)

    def tensors(self, flat: Tensor) -> list[Tensor]:
        """Views of ``flat`` (shape [..., P]) as the parameter tensors ([..., *shape] each)."""
        lead = flat.shape[:-1]
        return [part.reshape(*lead, *shape) for part, shape in zip(torch.split(flat, self.numels, dim=-1),
                                                                   self.shapes)]

    def unflatten(self, flat: Tensor, prefix: str = "") -> dict[str, Tensor]:
        return {prefix + n: t for n, t in zip(self.names, self.tensors(flat))}


class _Objective(nn.Module):
    """``problem.compute`` as a module, so ``functional_call`` can substitute the model's parameters: the loss
    (L2 included) and, where the problem has one, the accuracy, stacked into one tensor."""

    def __init__(self, problem: Problem, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.problem = problem

    def forward(self, *batch: Tensor) -> Tensor:
        self.problem._l2_params = None  # the L2 kernels are looked up again: the substituted tensors
        try:
            loss, acc = self.problem.compute(self.model, batch, training=False)
        finally:
            self.problem._l2_params = None
        if acc is None:
            return loss.float().reshape(1)
        return torch.stack([loss.float(), acc.float()])


def _stateful(problem: Problem) -> bool:
    return type(problem).reset_state is not Problem.reset_state


class Surface:
    """The loss surface of one problem instance (see the module docstring)."""

    def __init__(self, problem: Problem, model: nn.Module, *, splits: Sequence[str] = ("train", "test"),
                 rows: int | None = None, batching: str = "auto", points_per_pass: int | None = None,
                 precision: str = "fp32", dtype: torch.dtype | None = None, problem_name: str | None = None) -> None:
        if batching not in BATCHINGS:
            raise ValueError(f"invalid batching={batching!r}: must be one of {', '.join(BATCHINGS)}")
        self.problem = problem
        self.device = next(iter(model.parameters())).device
        if dtype is not None:
            model = model.to(dtype)
        self.model = model.eval()
        self.dtype = next(iter(model.parameters())).dtype
        self.layout = Layout.of(self.model)
        self.precision = precision
        self.name = problem_name or getattr(problem, "name", type(problem).__name__)
        self.objective = _Objective(problem, self.model)
        self.stateful = _stateful(problem)
        self.base_buffers = {f"model.{n}": b for n, b in self.model.named_buffers()}
        self.batches: dict[str, list[Batch]] = {}
        with torch.random.fork_rng(devices=self._rng_devices()):
            for split in ("train", "valid", "test"):  # the run's evaluation order (train-eval draws first)
                if split in splits:
                    self.batches[split] = self._materialise(split, rows)
        self.rows = {s: sum(b[0].shape[0] for b in bs) for s, bs in self.batches.items()}
        if batching == "auto":
            batching = "vmap" if (self.device.type == "cuda" or self.name == "quadratic_deep") else "loop"
        if batching == "vmap" and self.stateful:
            batching = "loop"
        self.batching = batching
        self.points_per_pass = points_per_pass or (64 if self.name == "quadratic_deep" else 8)
        self.notes: list[str] = []

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_spec(cls, spec: Any, *, device: str | torch.device = "cpu", data_dir: str | Path | None = None,
                  **kwargs: Any) -> Surface:
        """The surface of a run spec: its problem (settings, seed, data order) and model architecture."""
        from bench.train import resolve_device
        from problems import PROBLEMS

        dev = resolve_device(device) if isinstance(device, str) else device
        problem = PROBLEMS.get(spec.problem)(spec.problem_settings, spec.seed, dev, spec.data_order, data_dir)
        problem.load_data()
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(spec.seed)
            model = problem.build_model().to(dev)
        return cls(problem, model, precision=spec.precision, problem_name=spec.problem, **kwargs)

    def _rng_devices(self) -> list[Any]:
        return [self.device] if self.device.type == "cuda" else []

    def _materialise(self, split: str, rows: int | None) -> list[Batch]:
        """The split's evaluation chunks, transformed once; ``rows`` keeps the first rows only (stateful problems:
        whole batches, so a stream's state flows as it does in the run)."""
        self.problem.reset_state()
        out: list[Batch] = []
        have = 0
        for batch in self.problem.eval_batches(split):
            if rows is not None and have >= rows:
                break
            n = batch[0].shape[0]
            if rows is not None and have + n > rows and not self.stateful:
                batch, n = tuple(t[:rows - have] for t in batch), rows - have
            out.append(tuple(self._cast(t) for t in batch))
            have += n
        if not out:
            raise ValueError(f"{split}: no rows to evaluate")
        return out

    def _cast(self, t: Tensor) -> Tensor:
        return t.to(self.dtype) if t.is_floating_point() and t.dtype != self.dtype else t

    # ----------------------------------------------------------------------------------------- parameters
    @property
    def size(self) -> int:
        return self.layout.size

    def flat(self) -> Tensor:
        """The model's own parameters as one vector (its initialisation, unless loaded)."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters() if p.requires_grad])

    def load_buffers(self, buffers: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """The buffers for ``functional_call``: the model's, with those given (saved snapshot) replacing them."""
        out = dict(self.base_buffers)
        for name, value in (buffers or {}).items():
            key = f"model.{name}"
            if key in out:
                out[key] = value.to(self.device, out[key].dtype)
        return out

    def to_device(self, flat: Tensor) -> Tensor:
        return flat.to(self.device, self.dtype)

    # ----------------------------------------------------------------------------------------- evaluation
    @contextlib.contextmanager
    def _numerics(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self._rng_devices()), forward_context(self.precision, self.device):
            yield

    def _seed(self, index: int) -> None:
        torch.manual_seed(NOISE_SEED + index)

    def _one(self, flat: Tensor, buffers: Mapping[str, Tensor], split: str) -> Tensor:
        """Loss (and accuracy) of one point on ``split``: [1] or [2]."""
        params = self.layout.unflatten(flat, "model.")
        self.problem.reset_state()
        total = None
        rows = self.rows[split]
        for i, batch in enumerate(self.batches[split]):
            self._seed(i)
            value = functional_call(self.objective, {**buffers, **params}, batch) * (batch[0].shape[0] / rows)
            total = value if total is None else total + value
        return total

    def _many(self, flats: Tensor, buffers: Mapping[str, Tensor] | Tensor, split: str,
              stacked_buffers: Mapping[str, Tensor] | None = None) -> Tensor:
        """[k, 1|2] for k points in one pass per batch (vmap); buffers shared, or stacked per point."""
        rows = self.rows[split]
        total = None
        for i, batch in enumerate(self.batches[split]):
            def at(flat: Tensor, extra: Mapping[str, Tensor]) -> Tensor:
                params = self.layout.unflatten(flat, "model.")
                return functional_call(self.objective, {**buffers, **extra, **params}, batch)

            self._seed(i)
            extra = stacked_buffers or {}
            value = vmap(at, in_dims=(0, 0 if extra else None), randomness="same")(flats, extra)
            value = value * (batch[0].shape[0] / rows)
            total = value if total is None else total + value
        return total

    @torch.no_grad()
    def evaluate_affine(self, origin: Tensor, directions: Tensor, coefs: Tensor, splits: Sequence[str] | None = None,
                        *, buffers: Mapping[str, Tensor] | None = None,
                        buffer_delta: Mapping[str, Tensor] | None = None) -> dict[str, dict[str, Tensor]]:
        """Loss (and accuracy) at ``origin + coefs @ directions`` for every row of ``coefs`` ([n, m]; directions
        [m, P]), on each split: ``{split: {"loss": [n], "accuracy": [n]}}`` (CPU, float64).

        ``buffers`` are the origin's (saved BN statistics); with ``buffer_delta`` (one direction, interpolation)
        a point's float buffers are ``buffers + c · buffer_delta`` too.
        """
        splits = list(splits or self.batches)
        origin = self.to_device(origin)
        directions = self.to_device(directions).reshape(-1, self.size)
        coefs = coefs.to(self.device, self.dtype).reshape(coefs.shape[0], -1)
        base = self.load_buffers(buffers)
        delta = {f"model.{k}": v.to(self.device, base[f"model.{k}"].dtype) for k, v in (buffer_delta or {}).items()
                 if f"model.{k}" in base}
        n = coefs.shape[0]
        results: dict[str, list[Tensor]] = {s: [] for s in splits}
        with self._numerics():
            start = 0
            while start < n:
                step = self.points_per_pass if self.batching == "vmap" else 1
                c = coefs[start:start + step]
                flats = origin + c @ directions
                stacked = {k: base[k] + c[:, 0].reshape(-1, *[1] * base[k].dim()) * d for k, d in delta.items()}
                for split in splits:
                    results[split].append(self._chunk(flats, base, stacked, split).detach().to("cpu", torch.float64))
                start += c.shape[0]
        out: dict[str, dict[str, Tensor]] = {}
        for split, parts in results.items():
            values = torch.cat(parts)
            out[split] = {"loss": values[:, 0]}
            if values.shape[1] > 1:
                out[split]["accuracy"] = values[:, 1]
        return out

    def _chunk(self, flats: Tensor, base: Mapping[str, Tensor], stacked: Mapping[str, Tensor], split: str) -> Tensor:
        """[k, 1|2] for the chunk's points: one vmapped pass per batch, or (loop, or vmap unavailable) one by one."""
        if self.batching == "vmap":
            try:
                shared = {k: v for k, v in base.items() if k not in stacked}
                return self._many(flats, shared, split, stacked)
            except (RuntimeError, NotImplementedError, ValueError) as err:
                self.batching = "loop"
                self.notes.append(f"vmap unavailable ({type(err).__name__}: {' '.join(str(err).split())[:120]}); "
                                  f"one point per pass")
        point_buffers = dict(base)
        rows = []
        for j in range(flats.shape[0]):
            point_buffers.update({k: v[j] for k, v in stacked.items()})
            rows.append(self._one(flats[j], point_buffers, split))
        return torch.stack(rows)

    def evaluate(self, flat: Tensor, splits: Sequence[str] | None = None,
                 buffers: Mapping[str, Tensor] | None = None) -> dict[str, dict[str, float]]:
        """Loss (and accuracy) at one point."""
        zero = torch.zeros(1, self.size)
        res = self.evaluate_affine(flat, zero, torch.zeros(1, 1), splits, buffers=buffers)
        return {s: {m: float(v[0]) for m, v in d.items()} for s, d in res.items()}

    # ----------------------------------------------------------------------------------------- derivatives
    def _batches_for(self, split: str, rows: int | None) -> list[tuple[int, Batch, float]]:
        """(index, batch, weight) of the rows derivatives use: the split's first ``rows`` rows (all: None)."""
        chosen, have = [], 0
        for i, batch in enumerate(self.batches[split]):
            if rows is not None and have >= rows:
                break
            n = batch[0].shape[0]
            if rows is not None and have + n > rows and not self.stateful:
                batch, n = tuple(t[:rows - have] for t in batch), rows - have
            chosen.append((i, batch, n))
            have += n
        total = sum(n for _, _, n in chosen)
        return [(i, b, n / total) for i, b, n in chosen]

    def _loss_graph(self, flat: Tensor, batch: Batch, buffers: Mapping[str, Tensor]) -> Tensor:
        params = self.layout.unflatten(flat, "model.")
        return functional_call(self.objective, {**buffers, **params}, batch)[0]

    def loss_and_grad(self, flat: Tensor, *, split: str = "train", rows: int | None = None,
                      buffers: Mapping[str, Tensor] | None = None) -> tuple[float, Tensor]:
        """The split's loss at ``flat`` and its gradient (the training objective as evaluated: L2 included)."""
        base = self.load_buffers(buffers)
        theta = self.to_device(flat).detach().requires_grad_(True)
        total, grad = 0.0, torch.zeros_like(theta)
        with self._numerics(), _no_cudnn(self.device):
            self.problem.reset_state()
            for i, batch, w in self._batches_for(split, rows):
                self._seed(i)
                loss = self._loss_graph(theta, batch, base)
                (g,) = torch.autograd.grad(loss, theta)
                total += w * float(loss.detach())
                grad += w * g
        return total, grad.detach()

    def hvp(self, flat: Tensor, vectors: Tensor, *, split: str = "train", rows: int | None = None,
            buffers: Mapping[str, Tensor] | None = None) -> Tensor:
        """Hessian-vector products H·v of the split's loss at ``flat`` for v in ``vectors`` ([P] or [k, P]):
        double backward, accumulated batch by batch (one batch's graph in memory at a time)."""
        base = self.load_buffers(buffers)
        theta = self.to_device(flat).detach().requires_grad_(True)
        vs = self.to_device(vectors).reshape(-1, self.size)
        out = torch.zeros_like(vs)
        with self._numerics(), _no_cudnn(self.device):
            self.problem.reset_state()
            for i, batch, w in self._batches_for(split, rows):
                self._seed(i)
                loss = self._loss_graph(theta, batch, base)
                (g,) = torch.autograd.grad(loss, theta, create_graph=True)
                for j in range(vs.shape[0]):
                    (hv,) = torch.autograd.grad(g @ vs[j], theta, retain_graph=j + 1 < vs.shape[0])
                    out[j] += w * hv
        return out.reshape(vectors.shape).detach()

    def full_hessian(self, flat: Tensor, *, split: str = "train", rows: int | None = None,
                     buffers: Mapping[str, Tensor] | None = None, max_size: int = 4096) -> Tensor:
        """The full Hessian [P, P] of the split's loss (tiny models only: P ≤ ``max_size``)."""
        if self.size > max_size:
            raise ValueError(f"the full Hessian of {self.size} parameters is too large (max {max_size})")
        base = self.load_buffers(buffers)
        theta = self.to_device(flat).detach()
        chosen = self._batches_for(split, rows)

        def total(t: Tensor) -> Tensor:
            self.problem.reset_state()
            value = None
            for i, batch, w in chosen:
                self._seed(i)
                term = w * self._loss_graph(t, batch, base)
                value = term if value is None else value + term
            return value

        with self._numerics(), _no_cudnn(self.device):
            return torch.autograd.functional.hessian(total, theta).detach()


@contextlib.contextmanager
def _no_cudnn(device: torch.device) -> Iterator[None]:
    """cuDNN's RNN backward has no double backward (P8's Hessian-vector products)."""
    if device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=False):
            yield
    else:
        yield

