"""A cohort's model state and maths: M trials with their parameters stacked along a leading trial dimension, one
shared data stream, and the optimizers as batched rules over contiguous row ranges.

Rows are ordered by optimizer, so each optimizer's trials are one slice ``params[i][a:b]`` (a view: its rule
updates the stacked tensors in place, no gather). A program subclass supplies the maths — the gradients of given
rows on a batch, the N+1 evaluations — and the generic step here runs the rules: it computes the gradients a step
needs (a Lookahead sync call discards its gradient; where the forward pass draws no random numbers it is not
computed at all), hands each group its slice, and gives SAM its second gradient through ``regrad``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from bench.spec import RunSpec
from optimizers import OPTIMIZERS
from optimizers._cohort import CohortRule
from problems import PROBLEMS, Problem
from problems.base import Batch


@dataclass
class Group:
    """The trials of one optimizer: rows [start, stop) of every stacked tensor."""

    optimizer: str
    rule: CohortRule
    start: int
    stop: int


def row_order(specs: Sequence[RunSpec], run_ids: Sequence[str]) -> list[int]:
    """Spec indices in row order: by optimizer, then run_id — the same rows however the specs are ordered, so a
    cohort checkpoint maps onto a re-run of the same members."""
    return sorted(range(len(specs)), key=lambda i: (specs[i].optimizer, run_ids[i]))


class Program:
    """Base of the cohort programs (``quadratic``: P1; ``neural``: P2–P8). ``specs`` are in row order."""

    exact: bool = True  # bit-identical to single runs on the CPU (cohort_fast programs are not)

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        self.specs = list(specs)
        self.device = device
        first = self.specs[0]
        self.precision = first.precision
        torch.manual_seed(first.seed)  # the single run's order: seed, problem, data, model
        self.problem: Problem = PROBLEMS.get(first.problem)(first.problem_settings, first.seed, device,
                                                              first.data_order, data_dir)
        self.problem.load_data()
        self.has_accuracy = bool(self.problem.has_accuracy)
        self.params: list[Tensor] = []
        self.groups: list[Group] = []
        self.random_forward = True  # whether a forward pass draws from the global RNG (subclasses know)
        self.forward_updates_state = True  # whether a training pass changes buffers (batch-norm statistics)

    # ------------------------------------------------------------------------------------------- to implement
    @property
    def size(self) -> int:
        return len(self.specs)

    def num_parameters(self) -> int:
        raise NotImplementedError

    def evaluate(self) -> Tensor:
        """(M, k) on the device: per trial loss (and accuracy) of train-eval, valid, test, in ``SPLITS`` order."""
        raise NotImplementedError

    def gradients(self, batch: Batch, rows: Sequence[int]) -> list[Tensor]:
        """Stacked gradients (one tensor per parameter, M rows) at the current parameters; only ``rows`` valid."""
        raise NotImplementedError

    def flat_params(self, row: int) -> Tensor:
        return torch.cat([p[row].detach().reshape(-1) for p in self.params]).clone()

    def begin_training_epoch(self) -> None:
        """Model mode and per-trial model state before a training epoch (the single loop's model.train())."""

    def select_model(self, rows: list[int]) -> None:
        """Keep the model-side state (buffers, per-trial modules) of ``rows``; ``params`` are already selected."""

    def model_state(self) -> dict[str, Any]:
        return {}

    def load_model_state(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------------------------------------- shared
    def build_groups(self) -> None:
        """One batched rule per optimizer over its row range (``params`` must be set)."""
        self.groups = []
        start = 0
        while start < self.size:
            name = self.specs[start].optimizer
            stop = start
            while stop < self.size and self.specs[stop].optimizer == name:
                stop += 1
            cls = OPTIMIZERS.get(name)
            rule = cls.cohort_rule(cls, [s.hyperparameters for s in self.specs[start:stop]],
                                   [p[start:stop] for p in self.params])
            self.groups.append(Group(name, rule, start, stop))
            start = stop

    @property
    def passes(self) -> int:
        return max((g.rule.passes for g in self.groups), default=1)

    def on_epoch(self, epoch: int, num_epochs: int) -> None:
        for g in self.groups:
            g.rule.on_epoch(epoch, num_epochs)

    def train_epoch(self, epoch: int, lrs_at: Callable[[int], list[float]]) -> None:
        self.problem.reset_state()
        self.begin_training_epoch()
        for i, batch in enumerate(self.problem.train_batches(epoch)):
            self.step(batch, lrs_at(i))

    def step(self, batch: Batch, lrs: Sequence[float] | np.ndarray) -> None:
        lrs = np.asarray(lrs, dtype=np.float64)
        if self.random_forward or self.forward_updates_state:  # the pass itself is part of the single run's state
            rows = list(range(self.size))
        else:
            discard = np.zeros(self.size, dtype=bool)
            for g in self.groups:
                d = g.rule.discards_gradient()
                if d is not None:
                    discard[g.start:g.stop] = d
            rows = np.flatnonzero(~discard).tolist()
        grads = self.gradients(batch, rows)
        with torch.no_grad():
            for g in self.groups:
                a, b = g.start, g.stop
                regrad = None
                if g.rule.passes > 1:
                    regrad = (lambda a=a, b=b: [t[a:b] for t in self.gradients(batch, range(a, b))])
                g.rule.step([p[a:b] for p in self.params], [t[a:b] for t in grads], lrs[a:b], regrad)

    def select(self, rows: list[int]) -> None:
        """Keep the trials ``rows`` (ascending), e.g. after others diverged or stopped."""
        if rows == list(range(self.size)):
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.params = [self.restack(p, idx) for p in self.params]
        keep = set(rows)
        groups = []
        for g in self.groups:
            local = [r - g.start for r in range(g.start, g.stop) if r in keep]
            if not local:
                continue
            g.rule.select(local)
            groups.append(g)
        self.specs = [self.specs[r] for r in rows]
        start = 0
        for g in groups:
            n = g.rule.size
            g.start, g.stop = start, start + n
            start += n
        self.groups = groups
        self.select_model(rows)

    def restack(self, t: Tensor, idx: Tensor) -> Tensor:
        """The rows ``idx`` of a stacked tensor, in this program's storage layout."""
        return t.index_select(0, idx)

    def state_dict(self) -> dict[str, Any]:
        return {"params": [p.detach().clone() for p in self.params],
                "rules": [g.rule.state_dict() for g in self.groups],
                "problem": self.problem.state_dict(), "model": self.model_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, state["params"]):
                p.copy_(saved.to(self.device))
        for g, saved in zip(self.groups, state["rules"]):
            g.rule.load_state_dict(saved, self.device)
        self.problem.load_state_dict(state["problem"])
        self.load_model_state(state["model"])


def chunks(rows: Iterable[int], size: int) -> list[list[int]]:
    rows = list(rows)
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def row_slices(rows: Sequence[int], size: int) -> list[slice]:
    """``rows`` (ascending) as slices of consecutive rows, each at most ``size`` long."""
    out: list[slice] = []
    rows = list(rows)
    i = 0
    while i < len(rows):
        j = i + 1
        while j < len(rows) and j - i < size and rows[j] == rows[j - 1] + 1:
            j += 1
        out.append(slice(rows[i], rows[j - 1] + 1))
        i = j
    return out
