"""P1 (quadratic_deep) as a cohort: θ stacked (M, 100), the shared batches, the maths of the problem.

**Exact** (``engine=cohort``; bit-identical to single runs on the CPU). The single run's per-example maths, with the
single run's kernels on stacked operands: d = θ − x (M, B, 100), a = d·H as one matrix product of (M·B, 100)
rows (row for row the product the single run computes), losses ``mean(0.5 · sum(a ⊙ d))`` per trial. The
gradient is autograd's: ``Σ_b [c·a_b + (c·d_b)·Hᵀ]`` with c = 0.5/B; when Hᵀ = H bit for bit (every Hessian
draw of the TF stream) and c is a power of two (B = 128), ``(c·d)·Hᵀ = c·(d·H)`` exactly, so the gradient is
``2c · Σ_b a_b``: the backward product is the forward one, and the training loss (never used) is not
computed. Evaluations skip rows whose θ equals another row's bit for bit (all trials at epoch 0; a Lookahead
k = 1 trial that never moves), and the gradients of Lookahead's sync calls (discarded by the single run) are
not computed. What remains is the matrix products, which set the speed: ~7 GFLOP per 100-epoch run.

**Fast** (``engine=cohort_fast``, ``arithmetic=reordered``: other run_ids). The closed form: the batch gradient is
H(θ − x̄_b) = θH − x̄_bH (one (M, 100) × (100, 100) product per step), a split's loss is
``0.5 (θ − μ)ᵀH(θ − μ) + C`` with the split's mean μ and the constant C = mean_b 0.5 (x_b − μ)ᵀH(x_b − μ)
(float64). Not bit-identical: same maths, reordered (agreement in the README and ``tests/test_cohort.py``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from bench.engine.cohort.program import Program, row_slices
from optimizers._cohort import to_device
from bench.spec import RunSpec
from bench.train import SPLITS
from problems.base import Batch

GRAD_CHUNK = {"cpu": 16, "cuda": 2048}  # trials per gradient product: on the CPU (16·128, 100) rows stay in cache
EVAL_CHUNK = {"cpu": 4, "cuda": 512}  # trials per evaluation product (896 rows each); (measured best on the dev CPU)


class QuadraticProgram(Program):
    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        super().__init__(specs, device, data_dir)
        model = self.problem.build_model().to(device)
        self._num_parameters = self.problem.num_parameters(model)
        self.hessian = model.hessian.detach()
        self.random_forward = False
        self.forward_updates_state = False
        self.params = [model.theta.detach().unsqueeze(0).repeat(self.size, 1).contiguous()]
        self.build_groups()

    def num_parameters(self) -> int:
        return self._num_parameters


class QuadraticExact(QuadraticProgram):
    exact = True

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        super().__init__(specs, device, data_dir)
        bs = self.problem.batch_size
        h = self.hessian
        # autograd's factor: mean's backward (1/B, float32), then 0.5's
        self.c = (torch.ones((), dtype=h.dtype, device=h.device) / bs) * 0.5
        self.symmetric = bool(torch.equal(h, h.t())) and bs & (bs - 1) == 0
        self.two_c = self.c * 2

    def gradients(self, batch: Batch, rows: Sequence[int]) -> list[Tensor]:
        theta = self.params[0]
        grad = torch.empty_like(theta)
        x = batch[0]
        h = self.hessian
        for part in row_slices(rows, GRAD_CHUNK.get(theta.device.type, 256)):
            d = theta[part].unsqueeze(1) - x  # (c, B, 100): the single run's θ − x per trial
            a = torch.mm(d.reshape(-1, d.shape[-1]), h).view(d.shape)
            if self.symmetric:
                grad[part] = a.sum(1).mul_(self.two_c)
            else:  # autograd's two terms as it computes them
                back = torch.mm((d * self.c).reshape(-1, d.shape[-1]), h.t()).view(d.shape)
                grad[part] = (a * self.c + back).sum(1)
        return [grad]

    @torch.no_grad()
    def evaluate(self) -> Tensor:
        theta = self.params[0]
        unique, inverse = _unique_rows(theta)
        h = self.hessian
        per_split = []
        for split in SPLITS:
            self.problem.reset_state()
            parts, sizes = [], []
            for batch in self.problem.eval_batches(split):
                x = batch[0]
                out = torch.empty(unique.shape[0], dtype=theta.dtype, device=theta.device)
                for part in row_slices(range(unique.shape[0]), EVAL_CHUNK.get(theta.device.type, 64)):
                    d = unique[part].unsqueeze(1) - x
                    a = torch.mm(d.reshape(-1, d.shape[-1]), h).view(d.shape)
                    out[part] = (0.5 * (a * d).sum(dim=-1)).mean(dim=-1)  # Quadratic.forward, then .mean()
                parts.append(out)
                sizes.append(x.shape[0])
            per_split.append(_weighted(parts, sizes))
        return torch.stack(per_split, dim=1)[inverse]


class QuadraticFast(QuadraticProgram):
    exact = False

    def __init__(self, specs: Sequence[RunSpec], device: torch.device, data_dir: str | Path | None) -> None:
        super().__init__(specs, device, data_dir)
        h = self.hessian
        self.sym = h if torch.equal(h, h.t()) else 0.5 * (h + h.t())
        self.h64 = self.sym.double()
        self._constants: dict[tuple, tuple[Tensor, float]] = {}

    def gradients(self, batch: Batch, rows: Sequence[int]) -> list[Tensor]:
        theta = self.params[0]
        shift = -(batch[0].double().mean(0).to(theta.dtype) @ self.sym)  # −H x̄_b: grad = θH − x̄H, one fused product
        if len(rows) == self.size:
            return [torch.addmm(shift, theta, self.sym)]
        grad = torch.zeros_like(theta)
        idx = to_device(torch.from_numpy(np.asarray(list(rows), dtype=np.int64)), theta.device)
        grad[idx] = torch.addmm(shift, theta[idx], self.sym)
        return [grad]

    def split_constants(self, split: str, x: Tensor) -> tuple[Tensor, Tensor, float]:
        """(μ, Hμ, μᵀHμ + 2C) of a batch, C = mean_b 0.5 (x_b − μ)ᵀH(x_b − μ), float64, cached by content."""
        key = (split, x.shape, hashlib.blake2b(x.detach().cpu().numpy().tobytes(), digest_size=16).digest())
        hit = self._constants.get(key)
        if hit is None:
            x64 = x.double()
            mu = x64.mean(0)
            d = x64 - mu
            h_mu = self.h64 @ mu
            hit = (mu, h_mu, float(mu @ h_mu) + float(((d @ self.h64) * d).sum(1).mean()))
            if len(self._constants) > 64:
                self._constants.clear()
            self._constants[key] = hit
        return hit

    @torch.no_grad()
    def evaluate(self) -> Tensor:
        """0.5 (θ − μ)ᵀH(θ − μ) + C = 0.5 (θᵀHθ − 2 θ·Hμ + μᵀHμ + 2C): one product θH per epoch for all splits."""
        theta = self.params[0].double()
        quad = ((theta @ self.h64) * theta).sum(1)
        per_split = []
        for split in SPLITS:
            self.problem.reset_state()
            parts, sizes = [], []
            for batch in self.problem.eval_batches(split):
                _, h_mu, rest = self.split_constants(split, batch[0])
                parts.append(0.5 * (quad - 2.0 * (theta @ h_mu) + rest))
                sizes.append(batch[0].shape[0])
            per_split.append(_weighted(parts, sizes))
        return torch.stack(per_split, dim=1)


def _weighted(parts: list[Tensor], sizes: list[int]) -> Tensor:
    """The single loop's row-weighted mean of batch means (one batch: that batch), per trial."""
    if len(parts) == 1:
        return parts[0]
    weights = torch.tensor(sizes, dtype=parts[0].dtype, device=parts[0].device) / sum(sizes)
    stacked = torch.stack(parts)  # (n, M)
    return torch.stack([torch.tensordot(weights, stacked[:, m].contiguous(), dims=1)
                        for m in range(stacked.shape[1])])


def _unique_rows(theta: Tensor) -> tuple[Tensor, Tensor]:
    """Rows equal bit for bit evaluated once: (unique rows, index of each row's unique row)."""
    if theta.shape[0] == 1 or theta.device.type != "cpu":  # on a GPU the unique count would cost a host sync
        return theta, torch.arange(theta.shape[0], device=theta.device)
    bits = theta.view(torch.int32) if theta.dtype == torch.float32 else theta.view(torch.int64)
    _, inverse = torch.unique(bits, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), theta.shape[0], dtype=torch.long, device=theta.device)
    first.scatter_reduce_(0, inverse, torch.arange(theta.shape[0], device=theta.device), reduce="amin")
    return theta[first], inverse
