"""P1 quadratic_deep: a noisy 100-d quadratic with a deep-learning-like eigenspectrum (§1 P1), exactly as DeepOBS TF.

The Hessian must come from the TF construction: one module-level ``RandomState(42)`` feeds first the eigenvalues and
then the Diaconis–Shahshahani rotation. The DeepOBS PyTorch port draws the eigenvalues from a fresh stream and so
builds a different H (θ=1 test loss 228.89 instead of the published 353.45); we follow TF. ``hessian_draw=k`` takes
the k-th Hessian of that stream, as the study's multi-instantiation processes did for some published runs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from problems.base import PROBLEMS, Batch, Problem, Split

DIM = 100
NOISE = 0.6
SIZE = 1000
SEEDS = {"train": 42, "test": 43, "valid": 44}


def _random_rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """DeepOBS ``random_rotation``: Diaconis–Shahshahani subgroup algorithm, drawing from the shared stream."""
    theta = 2.0 * np.pi * rng.uniform()
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v /= np.sqrt(np.dot(v.T, v))
        e = np.concatenate((np.array([[1.0]]), np.zeros((d, 1))), axis=0)
        x = e - v
        x /= np.sqrt(np.dot(x.T, x))
        block = np.vstack([np.hstack([[[1.0]], np.zeros((1, d))]), np.hstack([np.zeros((d, 1)), rot])])
        rot = block - 2.0 * np.outer(x, np.dot(x.T, block))
    return -rot


_STREAM_STATES: list[tuple] = []  # _STREAM_STATES[k]: the stream's state just before draw k (k = 0, 1, ...)


@lru_cache(maxsize=8)
def hessian(draw: int = 0) -> np.ndarray:
    """The ``draw``-th Hessian of the module-level ``RandomState(42)`` stream (float64, as TF built it).

    The stream's state before each draw is kept, so draw k costs one draw once the draws before it were made (the
    importer matches published runs against hundreds of draws).
    """
    if not _STREAM_STATES:
        _STREAM_STATES.append(np.random.RandomState(42).get_state())
    start = min(draw, len(_STREAM_STATES) - 1)
    rng = np.random.RandomState()
    rng.set_state(_STREAM_STATES[start])
    for k in range(start, draw + 1):
        eig = np.concatenate((rng.uniform(0.0, 1.0, 90), rng.uniform(30.0, 60.0, 10)))
        rot = _random_rotation(DIM, rng)
        h = np.matmul(np.transpose(rot), np.matmul(np.diag(eig), rot))
        if k + 1 == len(_STREAM_STATES):
            _STREAM_STATES.append(rng.get_state())
    return h


def dataset(split: str) -> np.ndarray:
    """DeepOBS ``quadratic`` data: N(0, 0.6²) draws of ``RandomState(42/43/44)``, cast to float32."""
    return np.random.RandomState(SEEDS[split]).normal(0.0, NOISE, (SIZE, DIM)).astype(np.float32)


class Quadratic(nn.Module):
    """θ ∈ R^100 initialised to ones (independent of the seed); per-example loss 0.5 (θ−x)ᵀ H (θ−x).

    TF holds θ as a (1, 100) variable; we hold it 1-D. The maths is identical for every element-wise optimizer, and
    it keeps ND-Adam from mistaking θ for a hidden unit's weight vector (it would normalise θ to the unit sphere and
    change the epoch-0 loss from the published 353.45); how the study's ND-Adam treated θ is not recorded.
    """

    def __init__(self, h: np.ndarray) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.ones(DIM))
        self.register_buffer("hessian", torch.from_numpy(h.astype(np.float32)))

    def forward(self, x: Tensor) -> Tensor:
        d = self.theta - x
        return 0.5 * ((d @ self.hessian) * d).sum(dim=1)


@PROBLEMS.register
class QuadraticDeep(Problem):
    study_name = "quadratic_deep"
    has_accuracy = False
    train_eval_size = SIZE

    @classmethod
    def split_sizes(cls, settings: Mapping[str, Any]) -> dict[str, int]:
        return {"train": SIZE, "valid": SIZE, "test": SIZE}

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        draw = settings.get("hessian_draw", 0)
        if isinstance(draw, bool) or not isinstance(draw, int) or draw < 0:
            raise ValueError(f"invalid problem.hessian_draw={draw!r}: must be an integer >= 0 (the k-th Hessian "
                             "of the TF stream; 0 = a fresh process)")
        wd = settings.get("weight_decay", 0.0)
        if wd:
            raise ValueError(f"invalid problem.weight_decay={wd!r}: quadratic_deep has no L2 regularizer; must be 0")

    def load_data(self) -> None:
        self.data = {s: Split(torch.from_numpy(dataset(s)).to(self.device)) for s in ("train", "valid", "test")}

    def build_model(self) -> nn.Module:
        return Quadratic(hessian(int(self.settings.get("hessian_draw", 0))))

    def eval_batch_size(self) -> int:
        # All evaluated rows in one matmul: the mean of the 7 batch means of DeepOBS is the mean over the 896 rows.
        return (SIZE // self.batch_size) * self.batch_size

    def compute(self, model: nn.Module, batch: Batch, training: bool) -> tuple[Tensor, Tensor | None]:
        return model(batch[0]).mean(), None

    def sampled_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Gaussian-likelihood view of the quadratic: with H = L Lᵀ and outputs f = Lᵀθ, ℓ = ½‖f − Lᵀx‖².

        Drawing targets y ~ N(f, I) gives per-example gradients L ε with ε ~ N(0, I), whose expected square is
        diag(H) (the exact Hessian diagonal), the Gauss–Newton–Bartlett estimator of Sophia-G.
        """
        factor = getattr(self, "_hessian_factor", None)
        if factor is None:
            factor = self._hessian_factor = torch.linalg.cholesky(model.hessian.double()).to(model.hessian.dtype)
        f = model.theta @ factor  # (D,) = Lᵀθ
        y = f.detach() + torch.randn(batch[0].shape[0], DIM, device=f.device, dtype=f.dtype)
        return 0.5 * (f - y).square().sum(dim=1).mean()
