"""Random directions in parameter space, with Li et al.'s filter normalisation (Li, Xu, Taylor, Studer & Goldstein,
"Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, §4; their code ``tomgoldstein/loss-landscape``).

A direction d has the layout of the parameters (``surface.Layout``); its entries are i.i.d. N(0, 1), drawn tensor by
tensor in ``model.parameters()`` order from a ``torch.Generator`` seeded with the direction seed (CPU, float32), so
the same seed gives the same direction on any device. Normalisations (``normalise``):

* ``filter`` (Li et al., the default): every *filter* of a tensor with ≥ 2 dimensions — a slice along its first
  dimension: a conv kernel's output channel, a dense (or LSTM) kernel's row = one unit's weights, an embedding's row —
  is scaled to the norm of the same filter of the weights, ``d_f ← d_f · ‖θ_f‖ / ‖d_f‖``. One-dimensional tensors
  (biases, batch-norm γ and β, the LSTM's bias) are **zeroed** (``one_d="zero"``: Li et al.'s ``--xignore biasbn``,
  the setting of their figures), so those parameters stay at θ along the direction; ``one_d="filter"`` treats
  each as one filter instead (scaled to its own norm);
* ``layer``: every tensor scaled to the weights' tensor norm (the same rule for 1-D tensors);
* ``unit``: the whole vector scaled to norm 1, independent of θ.

``auto`` is ``filter`` when the model has any tensor with ≥ 2 dimensions and ``unit`` otherwise: P1's θ is a single
1-D vector (a "bias" to Li's rule, which would zero every direction), so its directions are unit vectors and a
slice coordinate is a Euclidean distance. Batch-norm running statistics are buffers, not parameters: never part
of a direction (evaluated at the saved values).
"""
from __future__ import annotations

import torch
from torch import Tensor

from bench.landscape.surface import Layout

NORMALISATIONS = ("auto", "filter", "layer", "unit")
ONE_D = ("zero", "filter")
EPS = 1e-10  # Li et al.'s guard against a zero filter


def resolve(normalisation: str, layout: Layout) -> str:
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"invalid normalisation={normalisation!r}: must be one of {', '.join(NORMALISATIONS)}")
    if normalisation != "auto":
        return normalisation
    return "filter" if any(len(s) >= 2 for s in layout.shapes) else "unit"


def random_direction(layout: Layout, seed: int) -> Tensor:
    """An i.i.d. N(0, 1) direction of the layout's size (CPU float32; reproducible from ``seed``)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.cat([torch.randn(*shape, generator=gen).reshape(-1) for shape in layout.shapes])


def normalise(direction: Tensor, theta: Tensor, layout: Layout, normalisation: str = "filter",
              one_d: str = "zero") -> Tensor:
    """The direction rescaled against the weights ``theta`` (see the module docstring); a new tensor."""
    mode = resolve(normalisation, layout)
    if one_d not in ONE_D:
        raise ValueError(f"invalid one_d={one_d!r}: must be one of {', '.join(ONE_D)}")
    d = direction.detach().to(torch.float64).clone()
    if mode == "unit":
        return (d / (d.norm() + EPS)).to(direction.dtype)
    w = theta.detach().to(d.device, torch.float64)
    parts_d, parts_w = layout.tensors(d), layout.tensors(w)
    out = []
    for dp, wp in zip(parts_d, parts_w):
        if dp.dim() <= 1:
            if one_d == "zero":
                out.append(torch.zeros_like(dp).reshape(-1))
            else:
                out.append((dp * wp.norm() / (dp.norm() + EPS)).reshape(-1))
            continue
        if mode == "layer":
            out.append((dp * wp.norm() / (dp.norm() + EPS)).reshape(-1))
            continue
        df, wf = dp.reshape(dp.shape[0], -1), wp.reshape(wp.shape[0], -1)
        scale = wf.norm(dim=1, keepdim=True) / (df.norm(dim=1, keepdim=True) + EPS)
        out.append((df * scale).reshape(-1))
    return torch.cat(out).to(direction.dtype)


def directions(layout: Layout, theta: Tensor, count: int, seed: int, normalisation: str = "auto",
               one_d: str = "zero") -> Tensor:
    """``count`` normalised random directions [count, P] from seeds ``seed``, ``seed + 1``, …"""
    return torch.stack([normalise(random_direction(layout, seed + i), theta.cpu(), layout, normalisation, one_d)
                        for i in range(count)])
