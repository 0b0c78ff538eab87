"""Extreme Hessian eigenvalues from Hessian-vector products alone (the Hessian itself is never formed).

Both methods take ``hvp(v) -> H v`` on flat vectors (``Surface.hvp``: double backward through the problem's loss)
and a start vector drawn from a seeded generator:

* :func:`power_iteration` — v ← Hv / ‖Hv‖; the Rayleigh quotient vᵀHv converges to the eigenvalue of largest
  *magnitude* (the top one when the Hessian's positive curvature dominates, as at a minimum); stops when the
  quotient changes by less than ``tol`` (relative) between iterations;
* :func:`lanczos` — ``steps`` Lanczos iterations with full re-orthogonalisation (float64 basis on the host's
  device of the vectors) build a tridiagonal T whose extreme eigenvalues (Ritz values) converge to H's largest
  and smallest eigenvalues — both ends at once, with a residual bound ``|β_m s_m|`` per Ritz value. The default
  method of ``valley-landscape``: it also reports negative curvature (λ_min < 0: not at a minimum).

Costs: one Hessian-vector product ≈ 2–3 forward/backward passes over the rows evaluated; Lanczos keeps ``steps``
vectors of P floats.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

HVP = Callable[[Tensor], Tensor]
METHODS = ("lanczos", "power")


@dataclass
class Eigen:
    """The outcome of one eigenvalue estimate."""

    method: str
    lambda_max: float
    lambda_min: float | None  # Lanczos only
    top: list[float] = field(default_factory=list)  # the k largest Ritz values (Lanczos) / [lambda_max] (power)
    residual: float = float("nan")  # ‖Hv − λv‖ / |λ| of the top estimate
    iterations: int = 0  # Hessian-vector products
    vector: Tensor | None = None  # the top eigenvector estimate (unit norm)


def start_vector(size: int, seed: int, like: Tensor | None = None) -> Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    v = torch.randn(size, generator=gen, dtype=torch.float64)
    v = v / v.norm()
    return v if like is None else v.to(like.device, like.dtype)


def power_iteration(hvp: HVP, size: int, *, iterations: int = 100, tol: float = 1e-5, seed: int = 0,
                    start: Tensor | None = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> Eigen:
    """The eigenvalue of largest magnitude and its vector (see the module docstring)."""
    v = start.to(device, dtype) if start is not None else start_vector(size, seed).to(device, dtype)
    v = v / v.norm()
    lam, prev = 0.0, None
    hv = hvp(v)
    done = 1
    for done in range(1, iterations + 1):
        lam = float(torch.dot(v.double(), hv.double()))
        norm = hv.norm()
        if float(norm) == 0.0:
            break
        if prev is not None and abs(lam - prev) <= tol * max(abs(lam), 1e-30):
            break
        prev = lam
        v = hv / norm
        hv = hvp(v)
    residual = float((hv.double() - lam * v.double()).norm()) / max(abs(lam), 1e-30)
    return Eigen("power", lam, None, [lam], residual, done, v.detach())


def lanczos(hvp: HVP, size: int, *, steps: int = 30, top_k: int = 1, seed: int = 0, start: Tensor | None = None,
            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Eigen:
    """Extreme eigenvalues by ``steps`` Lanczos iterations with full re-orthogonalisation."""
    steps = max(1, min(int(steps), size))
    q = start.to(device, torch.float64) if start is not None else start_vector(size, seed).to(device)
    q = q / q.norm()
    basis: list[Tensor] = []
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    for _ in range(steps):
        basis.append(q)
        w = hvp(q.to(dtype)).to(torch.float64)
        alpha = float(torch.dot(w, q))
        alphas.append(alpha)
        stack = torch.stack(basis)
        w = w - stack.T @ (stack @ w)  # full re-orthogonalisation (twice is enough: Kahan–Parlett)
        w = w - stack.T @ (stack @ w)
        beta = float(w.norm())
        if beta < 1e-10 * max(abs(alpha), 1.0) or len(basis) == size:
            betas.append(beta)
            break
        betas.append(beta)
        q = w / beta
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[:m - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    evals, evecs = torch.linalg.eigh(t)
    top = evals.flip(0)[:max(1, top_k)].tolist()
    s_last = evecs[-1, -1].abs().item()
    residual = abs(betas[-1]) * s_last / max(abs(top[0]), 1e-30)
    vector = (torch.stack(basis).T @ evecs[:, -1].to(basis[0].device)).to(dtype)
    return Eigen("lanczos", float(evals[-1]), float(evals[0]), top, residual, m, vector / vector.norm())


def top_eigenvalue(hvp: HVP, size: int, method: str = "lanczos", **kwargs) -> Eigen:  # noqa: ANN003
    if method == "lanczos":
        return lanczos(hvp, size, **{k: v for k, v in kwargs.items() if k != "iterations" and k != "tol"})
    if method == "power":
        return power_iteration(hvp, size, **{k: v for k, v in kwargs.items() if k not in ("steps", "top_k")})
    raise ValueError(f"invalid method={method!r}: must be one of {', '.join(METHODS)}")
