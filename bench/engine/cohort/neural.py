"""P2–P8 as cohorts: the problem's model with its parameters (and buffers: batch-norm statistics) stacked (M, ...).

``NeuralLoop`` (the CPU default; bit-identical to single runs). Each trial is a module whose parameters and buffers
are views of its rows of the stacked tensors (rows padded to 64-byte boundaries, as a single run's own tensors are
aligned), computed by a shallow copy of the problem (its own L2 kernel list, its own LSTM state): per batch, one
forward and backward per trial with the single run's kernels, the global RNG forked so that every trial draws the
single run's dropout masks and VAE noise; the gradients are copied into stacked tensors and the update is the
batched rule. On the CPU vmapped convolutions are slower than this loop (and their bias gradients differ by an ulp).

``NeuralVmap`` (the GPU default, P2–P7) and ``CharRNNBatched`` (P8). One program for all trials: ``torch.func``
``functional_call`` of the problem's loss under ``vmap(randomness='same')`` (the same dropout/noise draw for every
trial, the single run's; batch norm updates the stacked running statistics) and ``grad``; P8 runs the batched LSTM
of ``problems._char_rnn``. Other kernels than the single run (grouped convolutions, batched matmuls): equal to it
up to float rounding, not bit for bit.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from bench.engine.cohort.program import Program
from bench.precision import forward_context
from bench.spec import RunSpec
from bench.train import SPLITS
from problems.base import Batch

ALIGN = 16  # floats: 64 bytes


def padded_stack(t: Tensor, m: int) -> Tensor:
    """``t`` repeated m times as a (m, *t.shape) view whose rows start on 64-byte boundaries."""
    n = t.numel()
    stride = -(-n // ALIGN) * ALIGN if t.is_floating_point() else n
    store = torch.empty(m, max(stride, 1), dtype=t.dtype, device=t.device)
    view = store[:, :n].view(m, *t.shape) if n else store[:, :0].view(m, *t.shape)
    view.copy_(t.detach().unsqueeze(0).expand(m, *t.shape))
    return view


def padded_rows(t: Tensor, idx: Tensor) -> Tensor:
    rows = t.index_select(0, idx)
    out = padded_stack(rows[0], rows.shape[0]) if rows.shape[0] else rows
    out.copy_(rows)
    return out


def _names(model: nn.Module) -> tuple[list[str], list[str]]:
    params = [n for n, p in model.named_parameters()]
    if not all(p.requires_grad for p in model.parameters()):
        raise ValueError("cohort: every model parameter must be trainable")
    return params, [n for n, _ in model.named_buffers()]


class _NeuralBase(Program):
    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        super().__init__(specs, device, data_dir)
        from bench.engine.cohort import random_forward

        self.random_forward = random_forward(self.specs[0].problem)
        self.model = self.problem.build_model().to(device)
        self._num_parameters = self.problem.num_parameters(self.model)
        self.param_names, self.buffer_names = _names(self.model)
        self.forward_updates_state = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                                         for m in self.model.modules())

    def num_parameters(self) -> int:
        return self._num_parameters

    def _rng(self) -> Tensor:
        if self.device.type == "cuda":
            return torch.cuda.get_rng_state(self.device)
        return torch.get_rng_state()

    def _set_rng(self, state: Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    def model_state(self) -> dict[str, Any]:
        return {"buffers": [b.detach().clone() for b in self.buffers]}

    def load_model_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for b, saved in zip(self.buffers, state["buffers"]):
                b.copy_(saved.to(self.device))


class NeuralLoop(_NeuralBase):
    exact = True

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        super().__init__(specs, device, data_dir)
        m = self.size
        self.params = [padded_stack(p.detach(), m) for p in self.model.parameters()]
        self.buffers = [padded_stack(b, m) for b in self.model.buffers()]
        self.grads = [torch.zeros((m, *p.shape), dtype=p.dtype, device=device) for p in self.model.parameters()]
        self._bind()
        self.build_groups()

    def _bind(self) -> None:
        """One module per trial over its rows of the stacked tensors, and its own shallow copy of the problem."""
        self.models: list[nn.Module] = []
        self.problems = []
        originals = list(self.model.parameters())
        buffers = list(self.model.buffers())
        for r in range(self.size):
            memo: dict[int, Any] = {id(p): nn.Parameter(s[r]) for p, s in zip(originals, self.params)}
            memo.update({id(b): s[r] for b, s in zip(buffers, self.buffers)})
            self.models.append(copy.deepcopy(self.model, memo))
            self.problems.append(copy.copy(self.problem))

    def restack(self, t: Tensor, idx: Tensor) -> Tensor:
        return padded_rows(t, idx)

    def select_model(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.buffers = [padded_rows(b, idx) for b in self.buffers]
        self.grads = [g.index_select(0, idx) for g in self.grads]
        self._bind()

    def begin_training_epoch(self) -> None:
        for model, problem in zip(self.models, self.problems):
            model.train()
            problem.reset_state()

    @torch.enable_grad()
    def gradients(self, batch: Batch, rows: Sequence[int]) -> list[Tensor]:
        start = self._rng() if self.random_forward else None
        for r in rows:
            if start is not None:
                self._set_rng(start)
            model, problem = self.models[r], self.problems[r]
            for p in model.parameters():
                p.grad = None
            with forward_context(self.precision, self.device):
                loss = problem.compute(model, batch, training=True)[0]
            loss.backward()
            with torch.no_grad():
                for g, p in zip(self.grads, model.parameters()):
                    g[r].copy_(p.grad)
        return self.grads

    @torch.no_grad()
    def evaluate(self) -> Tensor:
        """``bench.train.evaluate`` per trial, batch by batch for all trials (the RNG forked per batch)."""
        for model in self.models:
            model.eval()
        per_trial: list[list[Tensor]] = [[] for _ in range(self.size)]
        with forward_context(self.precision, self.device):
            for split in SPLITS:
                self.problem.reset_state()
                for problem in self.problems:
                    problem.reset_state()
                parts: list[list[Tensor]] = [[] for _ in range(self.size)]
                rows: list[int] = []
                for batch in self.problem.eval_batches(split):
                    start = self._rng() if self.random_forward else None
                    for r, (model, problem) in enumerate(zip(self.models, self.problems)):
                        if start is not None:
                            self._set_rng(start)
                        loss, acc = problem.compute(model, batch, training=False)
                        parts[r].append(loss.float() if acc is None else torch.stack([loss.float(), acc.float()]))
                    rows.append(batch[0].shape[0])
                for r in range(self.size):
                    if len(parts[r]) == 1:
                        per_trial[r].append(parts[r][0])
                    else:
                        weights = torch.tensor(rows, dtype=parts[r][0].dtype, device=parts[r][0].device) / sum(rows)
                        per_trial[r].append(torch.tensordot(weights, torch.stack(parts[r]), dims=1))
        return torch.stack([torch.stack(v).reshape(-1) for v in per_trial])


class _Loss(nn.Module):
    """``problem.compute(model, batch, training)`` as a module, so ``functional_call`` can swap the model's tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.problem: Any = None

    def forward(self, batch: Batch, training: bool) -> tuple[Tensor, Tensor | None]:
        return self.problem.compute(self.model, batch, training)


def stacked(tensors: Any, m: int) -> list[torch.Tensor]:
    """Each tensor repeated along a new leading trial dimension of size ``m`` (every trial starts from it)."""
    return [t.detach().unsqueeze(0).repeat(m, *([1] * t.ndim)).contiguous() for t in tensors]


class NeuralVmap(_NeuralBase):
    exact = False

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        super().__init__(specs, device, data_dir)
        self.params = stacked(self.model.parameters(), self.size)
        self.buffers = stacked(self.model.buffers(), self.size)
        self.loss = _Loss(self.model)
        self.build_groups()

    def select_model(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.buffers = [b.index_select(0, idx) for b in self.buffers]

    def begin_training_epoch(self) -> None:
        self.loss.train()

    def _dicts(self, params: Sequence[Tensor], buffers: Sequence[Tensor]) -> tuple[dict, dict]:
        return ({f"model.{n}": t for n, t in zip(self.param_names, params)},
                {f"model.{n}": t for n, t in zip(self.buffer_names, buffers)})

    @torch.enable_grad()
    def gradients(self, batch: Batch, rows: Sequence[int]) -> list[Tensor]:
        rows = list(rows)
        a, b = (min(rows), max(rows) + 1) if rows else (0, 0)
        if self.random_forward:
            a, b = (a, b) if rows else (0, self.size)
        if a == b:
            return [torch.zeros_like(p) for p in self.params]
        self.loss.problem = copy.copy(self.problem)  # a fresh L2 kernel list for the functional tensors
        precision, device = self.precision, self.device

        def loss_of(params: dict, buffers: dict) -> Tensor:
            with forward_context(precision, device):
                return functional_call(self.loss, (params, buffers), (batch, True))[0]

        params, buffers = self._dicts([p[a:b] for p in self.params], [t[a:b] for t in self.buffers])
        grads = vmap(grad(loss_of), in_dims=(0, 0), randomness="same")(params, buffers)
        out = [torch.zeros_like(p) for p in self.params] if (a, b) != (0, self.size) else None
        result = []
        for i, name in enumerate(self.param_names):
            g = grads[f"model.{name}"]
            if out is None:
                result.append(g)
            else:
                out[i][a:b] = g
                result.append(out[i])
        return result

    @torch.no_grad()
    def evaluate(self) -> Tensor:
        self.loss.eval()
        precision, device = self.precision, self.device
        per_split = []
        for split in SPLITS:
            self.problem.reset_state()
            parts, rows = [], []
            for batch in self.problem.eval_batches(split):
                self.loss.problem = copy.copy(self.problem)

                def values(params: dict, buffers: dict) -> Tensor:
                    with forward_context(precision, device):
                        loss, acc = functional_call(self.loss, (params, buffers), (batch, False))
                    return loss.float() if acc is None else torch.stack([loss.float(), acc.float()])

                params, buffers = self._dicts(self.params, self.buffers)
                parts.append(vmap(values, in_dims=(0, 0), randomness="same")(params, buffers))
                rows.append(batch[0].shape[0])
            weights = torch.tensor(rows, dtype=parts[0].dtype, device=device) / sum(rows)
            per_split.append(torch.tensordot(weights, torch.stack(parts), dims=1))  # (M,) or (M, 2)
        return torch.stack(per_split, dim=1).reshape(self.size, -1)


class CharRNNBatched(_NeuralBase):
    """P8 with the batched LSTM; the stateful (h, c) of every trial carried from batch to batch as the problem does
    (reset at each training epoch and evaluation pass; repeated passes over one batch, SAM's, start from the state
    the batch entered with, and the last one's final state is carried on)."""

    exact = False

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        super().__init__(specs, device, data_dir)
        self.params = stacked(self.model.parameters(), self.size)
        self.buffers = stacked(self.model.buffers(), self.size)
        self.drop = float(self.model.drop)
        self.training = True
        self._reset()
        self.build_groups()

    def _reset(self) -> None:
        self._batch: Batch | None = None
        self._state_in: Any = None
        self._state_out: Any = None

    def select_model(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.buffers = [b.index_select(0, idx) for b in self.buffers]
        self._reset()

    def begin_training_epoch(self) -> None:
        self.training = True
        self._reset()

    def _forward(self, batch: Batch, params: Sequence[Tensor], training: bool) -> tuple[Tensor, Tensor]:
        from problems._char_rnn import batched_char_rnn

        if batch is not self._batch:
            self._batch, self._state_in = batch, self._state_out
        x, y = batch
        with forward_context(self.precision, self.device):
            logits, state = batched_char_rnn(dict(zip(self.param_names, params)),
                                             dict(zip(self.buffer_names, self.buffers)), x, self._state_in,
                                             training=training, drop=self.drop)
        self._state_out = tuple((h.detach(), c.detach()) for h, c in state)
        m, vocab = logits.shape[0], logits.shape[-1]
        losses = F.cross_entropy(logits.reshape(-1, vocab).float(), y.reshape(-1).repeat(m),
                                 reduction="none").view(m, -1).mean(1)
        accuracy = (logits.argmax(dim=-1) == y).float().reshape(m, -1).mean(1)
        return losses, accuracy

    @torch.enable_grad()
    def gradients(self, batch: Batch, rows: Sequence[int]) -> list[Tensor]:
        leaves = [p.detach().requires_grad_(True) for p in self.params]
        losses, _ = self._forward(batch, leaves, training=True)
        return list(torch.autograd.grad(losses.sum(), leaves))

    @torch.no_grad()
    def evaluate(self) -> Tensor:
        per_split = []
        for split in SPLITS:
            self.problem.reset_state()
            self._reset()
            parts, rows = [], []
            for batch in self.problem.eval_batches(split):
                losses, accuracy = self._forward(batch, self.params, training=False)
                parts.append(torch.stack([losses, accuracy], dim=1))
                rows.append(batch[0].shape[0])
            weights = torch.tensor(rows, dtype=parts[0].dtype, device=self.device) / sum(rows)
            per_split.append(torch.tensordot(weights, torch.stack(parts), dims=1))
        return torch.stack(per_split, dim=1).reshape(self.size, -1)
