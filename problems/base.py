"""The test-problem interface (AlgoPerf's "workload"): model, loss, metric and a data pipeline on the device.

The run loop only calls the methods below; everything DeepOBS-specific about a problem (its initialisers, its L2 on
kernels, its stateful LSTM, its augmentation) stays in the problem's own module.

Data pipeline contract (DeepOBS TF semantics, §0): each split is held whole on the run's device (uint8 where the
data are images, converted per batch); a training epoch is a permutation of the training set cut into
``batch_size`` slices with the remainder dropped; ``data_order=repeat`` reuses the run's one permutation every
epoch (the TF 1.x quirk of §0.1b), ``fresh`` draws a new one per epoch. ``train_eval`` is the first
``train_eval_size // batch_size`` batches of the (shuffled, augmented) training stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import torch
from torch import Tensor, nn

from bench.registry import Registry

Batch = tuple[Tensor, ...]


@dataclass
class Split:
    """One data split on the device: inputs and (where the problem has them) targets, first dimension = examples."""

    x: Tensor
    y: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, index: Tensor | slice) -> Batch:
        return (self.x[index],) if self.y is None else (self.x[index], self.y[index])


class Problem:
    """Base class of test problems. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    study_name: ClassVar[str]  # DeepOBS name in the published results
    has_accuracy: ClassVar[bool] = False
    train_eval_size: ClassVar[int | None] = None  # examples of the train stream evaluated per epoch (None: all)

    def __init__(self, settings: Mapping[str, Any], seed: int, device: torch.device, data_order: str = "repeat",
                 data_dir: str | Path | None = None) -> None:
        if data_order not in ("repeat", "fresh"):
            raise ValueError(f"invalid data_order={data_order!r}: must be one of repeat, fresh")
        self.settings = dict(settings)
        self.batch_size: int = int(self.settings["batch_size"])
        self.num_epochs: int = int(self.settings["num_epochs"])
        self.weight_decay: float = float(self.settings.get("weight_decay") or 0.0)
        self.seed = seed
        self.device = device
        self.data_order = data_order
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        # Data order and augmentation draw from their own generator so that model init and dropout (global RNG)
        # do not shift the data stream when a problem changes.
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.data: dict[str, Split] = {}
        self._permutation: Tensor | None = None
        self._epoch_rows: Batch | None = None
        self._l2_params: list[nn.Parameter] | None = None

    # ----------------------------------------------------------------------------------------------- to implement
    def load_data(self) -> None:
        """Fill ``self.data`` with ``train``, ``valid`` and ``test`` splits on ``self.device``."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """The model with the TF initialisers; called after ``torch.manual_seed(seed)``, moved to the device by the caller."""
        raise NotImplementedError

    def compute(self, model: nn.Module, batch: Batch, training: bool) -> tuple[Tensor, Tensor | None]:
        """Batch-mean loss *including* the L2 regularizer, and the batch accuracy (None when not needed or defined).

        When ``training`` is true the accuracy may be skipped (return None): the training step never reads it.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- overridable
    def sampled_loss_terms(self) -> int:
        """How many independent terms ``sampled_loss`` averages (examples per batch; tokens for per-token losses)."""
        return self.batch_size

    def sampled_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Batch-mean loss on targets drawn from the model's own predictive distribution (no L2).

        Its gradient's square is the Gauss–Newton–Bartlett estimate of the Hessian diagonal (Sophia-G). Problems
        define it from their likelihood: softmax → categorical draws, squared error → Gaussian draws.
        """
        raise NotImplementedError(f"problem {self.name} has no sampled_loss (needed by Sophia-G)")

    def transform(self, batch: Batch, augment: bool) -> Batch:
        """Per-batch preprocessing on the device (uint8 → float); ``augment`` is true for the train stream."""
        return batch

    def reset_state(self) -> None:
        """Called at the start of every training epoch and every evaluation pass (stateful models reset here)."""

    def eval_batch_size(self) -> int:
        """Batch size for evaluation; the mean of equal-size batch means equals the mean over the evaluated rows."""
        return self.batch_size

    def l2_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters under L2 (§0.3): conv and dense kernels only, never biases or batch-norm parameters."""
        return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]

    def regularizer(self, model: nn.Module) -> Tensor | float:
        """``0.5 * wd * sum ||W||^2`` over the kernels (TF ``l2_regularizer``); 0.0 when the problem has no decay."""
        if self.weight_decay == 0.0:
            return 0.0
        if self._l2_params is None:  # the kernel list is fixed for the run: found once, not every step
            self._l2_params = self.l2_parameters(model)
        params = self._l2_params
        return 0.5 * self.weight_decay * torch.stack([p.square().sum() for p in params]).sum()

    # ----------------------------------------------------------------------------------------------------- shared
    def steps_per_epoch(self) -> int:
        return len(self.data["train"]) // self.batch_size

    def epoch_permutation(self, epoch: int) -> Tensor:
        if self.data_order == "fresh" or self._permutation is None:
            perm = torch.randperm(len(self.data["train"]), generator=self.generator, device=self.device)
            if self.data_order == "fresh":
                return perm
            self._permutation = perm
        return self._permutation

    def epoch_rows(self, epoch: int) -> Batch:
        """The epoch's training rows in permuted order, drop-remainder, gathered in one index operation.

        With ``data_order=repeat`` every epoch sees the same rows in the same order, so they are gathered once per
        run (one extra copy of the training set on the device) and batches are views: no per-step gather at all.
        """
        if self.data_order == "repeat" and self._epoch_rows is not None:
            return self._epoch_rows
        split, bs = self.data["train"], self.batch_size
        rows = split.take(self.epoch_permutation(epoch)[:(len(split) // bs) * bs])
        if self.data_order == "repeat":
            self._epoch_rows = rows
        return rows

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """Drop-remainder batches of the epoch's permutation, transformed (augmented) on the device."""
        rows, bs = self.epoch_rows(epoch), self.batch_size
        for i in range(rows[0].shape[0] // bs):
            yield self.transform(tuple(t[i * bs:(i + 1) * bs] for t in rows), augment=True)

    def eval_batches(self, split_name: str) -> Iterator[Batch]:
        """The rows DeepOBS evaluates, in chunks of ``eval_batch_size()`` (the loop weights chunks by their size).

        DeepOBS evaluates ``n // batch_size`` equal batches; ``train`` is the head of the shuffled, augmented
        training stream (``train_eval_size`` examples), ``valid``/``test`` are read in file order.
        """
        bs, chunk = self.batch_size, self.eval_batch_size()
        if split_name == "train":
            split = self.data["train"]
            n = len(split) if self.train_eval_size is None else min(self.train_eval_size, len(split))
            order = self.epoch_permutation(0) if self.data_order == "repeat" else torch.randperm(
                len(split), generator=self.generator, device=self.device)
            rows = (n // bs) * bs
            for i in range(0, rows, chunk):
                yield self.transform(split.take(order[i:min(i + chunk, rows)]), augment=True)
            return
        split = self.data[split_name]
        rows = (len(split) // bs) * bs
        for i in range(0, rows, chunk):
            yield self.transform(split.take(slice(i, min(i + chunk, rows))), augment=False)

    def state_dict(self) -> dict[str, Any]:
        """The data stream's state at an epoch boundary (generator, cached order), for mid-run checkpoints."""
        return {"generator": self.generator.get_state(), "permutation": self._permutation}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream where ``state`` left it (after ``load_data``): bit-identical batches and draws."""
        self.generator.set_state(state["generator"])
        perm = state["permutation"]
        self._permutation = None if perm is None else perm.to(self.device)
        self._epoch_rows = None

    def num_parameters(self, model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)


PROBLEMS: Registry[Problem] = Registry("problem", "problems")
