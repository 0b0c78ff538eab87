"""Batched (cohort) forms of the optimizers: one update for a group of trials whose parameters are stacked along a
leading trial dimension (``bench.engine.cohort`` trains a tuning cell's trials as one program).

A rule holds, per parameter, the group's optimizer state stacked the same way (shape ``(M, *param.shape)``) and, per
trial, its hyperparameters and counters (numpy arrays of length M: the per-step scalar maths runs vectorised, in
float64 with the python expressions' operation order, and powers through python's own ``pow``, so every value is
the python double the single run computes). Each optimizer module declares its rule next to the
single-run class (``OptimizerSpec.cohort_rule``); an optimizer without one trains alone.

**Equal to the single run, bit for bit on the CPU.** A rule applies the single optimizer's own kernels, in the same
order, to the stacked tensors; a per-trial scalar becomes a column ``(M, 1, ..., 1)`` holding the very float32
value the single kernel would have used (the python double the single run computes, rounded once). Where a kernel
fuses the scalar into a product, the factor is folded into an operand so that the fused kernel rounds as in the
single run (verified per kernel and per rule by ``tests/test_cohort_rules.py``):

* ``p.add_(g, alpha=a)`` (a fused multiply-add) = ``p.addcmul_(g, a_col)``;
* ``v.addcmul_(g, g, value=w)`` (= v + (w·g)·g) = ``v.addcmul_(g * w_col, g)``;
* ``p.addcdiv_(m, d, value=a)`` (= p + (a·m)/d) = ``p.addcdiv_(m * a_col, d)``;
* ``x.lerp_(y, w)``, ``x.mul_(s)``, ``x.add_(s)``, ``x.div_(s)``, ``clamp_min_/clamp_max_(s)`` take the column as is.

Hand-written algebra (``p - lr * g``) is *not* the same: it rounds twice where the fused kernel rounds once.
Per-trial branches (RAdam's rectification, a momentum of exactly 0 during a warm-up, Lookahead's sync calls) are
taken per trial: both results are computed and the trial's own is selected (``torch.where``), or the rule runs on
the rows concerned only (``take``/``put``).
"""
from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

Regrad = Callable[[], list[Tensor]]
"""Gradients of the group's trials at the *current* (e.g. SAM-perturbed) stacked parameters."""


class CohortRule:
    """Batched form of one optimizer for a group of M trials (rows 0..M-1 of every stacked tensor).

    ``trial``: per-trial values (hyperparameters, step counts) as numpy arrays of length M.
    ``state``: per-parameter stacked tensors, name → list (one per parameter, in ``model.parameters()`` order).
    ``children``: nested rules (Lookahead's inner optimizer, SAM's base), selected and saved with this one.
    """

    passes: ClassVar[int] = 1  # gradient evaluations per step (SAM: 2, through ``regrad``)

    def __init__(self, spec_cls: type, hps: Sequence[Mapping[str, Any]], params: Sequence[Tensor]) -> None:
        self.spec_cls = spec_cls
        self.size = len(hps)
        self.trial: dict[str, np.ndarray] = {}
        self.state: dict[str, list[Tensor]] = {}
        self.children: dict[str, CohortRule] = {}
        self._cache: dict[Any, Tensor] = {}
        self.configure(list(hps), list(params))

    # --------------------------------------------------------------------------------------------- to implement
    @classmethod
    def unsupported(cls, hp: Mapping[str, Any]) -> str | None:
        """Why a trial with these hyperparameters has no batched form here (None: it has one)."""
        return None

    def configure(self, hps: list[Mapping[str, Any]], params: list[Tensor]) -> None:
        """Fill ``trial`` and ``state`` (the single optimizer's initial state, stacked)."""

    def on_epoch(self, epoch: int, num_epochs: int) -> None:
        """The single run's ``OptimizerSpec.on_epoch`` (momentum warm-up), per trial."""

    def discards_gradient(self) -> np.ndarray | None:
        """Per trial: whether the next step computes a gradient only to discard it (Lookahead's sync calls).

        The engine may then skip that gradient (where the forward pass draws no random numbers)."""
        return None

    def step(self, params: list[Tensor], grads: list[Tensor], lrs: np.ndarray, regrad: Regrad | None = None) -> None:
        """One step of every trial: ``params``/``grads`` stacked (M, ...), updated in place; ``lrs`` (float64, M) the
        rate each trial's param groups hold now (base rate × schedule factor, as the run loop sets ``group['lr']``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- helpers
    def column(self, values: Any, like: Tensor) -> Tensor:
        """Per-trial scalars as a (M, 1, ..., 1) tensor of ``like``'s dtype and device (each value rounded once)."""
        return self.columns(values, [like])[0]

    def columns(self, values: Any, params: Sequence[Tensor]) -> list[Tensor]:
        """One column per parameter (views of one tensor): ``values`` broadcast against each stacked parameter."""
        like = params[0]
        np_dtype = _NUMPY.get(like.dtype)
        if np_dtype is None:
            base = torch.tensor(np.asarray(values, dtype=np.float64).tolist(), dtype=like.dtype)
        else:
            base = torch.from_numpy(np.ascontiguousarray(values, dtype=np_dtype))
        base = to_device(base, like.device)
        return [base.view(-1, *([1] * (p.ndim - 1))) for p in params]

    def constant(self, name: str, values: Any, like: Tensor) -> Tensor:
        """A column that does not change between steps (cached per name and rank)."""
        key = (name, like.ndim, like.dtype, like.device)
        col = self._cache.get(key)
        if col is None:
            col = self._cache[key] = self.column(values, like)
        return col

    def adam_moments(self, params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
        """TF's Adam moment update (m ← β1·m + (1−β1)·g as ``lerp``, v ← β2·v + (1−β2)·g²) on ``state["m"]`` and
        ``state["v"]``, the kernels of the single runs' ``update_moments`` (Adam, AMSGrad, AdaBound, RAdam)."""
        b1, b2 = self.trial["beta1"], self.trial["beta2"]
        for p, g, m, v in zip(params, grads, self.state["m"], self.state["v"]):
            m.lerp_(g, self.constant("1-b1", 1.0 - b1, p))
            v.mul_(self.constant("b2", b2, p))
            v.addcmul_(g * self.constant("1-b2", 1.0 - b2, p), g)

    def pow(self, name: str, exponent: Any) -> np.ndarray:
        """``trial[name] ** exponent`` per trial (:func:`power`), the hyperparameter's python floats cached."""
        key = ("list", name)
        values = self._cache.get(key)
        if values is None:
            values = self._cache[key] = self.trial[name].tolist()
        return power(values, exponent)

    def mask(self, flags: Any, like: Tensor) -> Tensor:
        base = to_device(torch.from_numpy(np.ascontiguousarray(flags, dtype=bool)), like.device)
        return base.view(-1, *([1] * (like.ndim - 1)))

    # ----------------------------------------------------------------------------------------- rows and state
    def _index(self, rows: Sequence[int]) -> Tensor | None:
        for tensors in self.state.values():
            if tensors:
                return to_device(torch.from_numpy(np.asarray(rows, dtype=np.int64)), tensors[0].device)
        return None

    def select(self, rows: Sequence[int], idx: Tensor | None = None) -> None:
        """Keep the trials ``rows`` (in that order), e.g. when others leave the cohort."""
        rows = list(rows)
        idx = self._index(rows) if idx is None else idx
        self.state = {name: [t.index_select(0, idx) for t in tensors] for name, tensors in self.state.items()}
        self.trial = {k: v[rows] for k, v in self.trial.items()}
        for child in self.children.values():
            child.select(rows, idx)
        self.size = len(rows)
        self._cache = {}

    def take(self, rows: Sequence[int], idx: Tensor | None = None) -> CohortRule:
        """A rule for the trials ``rows`` only (state gathered); ``put`` writes it back."""
        rows = list(rows)
        idx = self._index(rows) if idx is None else idx
        sub = copy.copy(self)
        sub.state = {name: [t.index_select(0, idx) for t in tensors] for name, tensors in self.state.items()}
        sub.trial = {k: v[rows] for k, v in self.trial.items()}
        sub.children = {k: c.take(rows, idx) for k, c in self.children.items()}
        sub._cache = {}
        sub.size = len(rows)
        return sub

    def put(self, rows: Sequence[int], sub: CohortRule, idx: Tensor | None = None) -> None:
        rows = list(rows)
        idx = self._index(rows) if idx is None else idx
        for name, tensors in self.state.items():
            for t, s in zip(tensors, sub.state[name]):
                t.index_copy_(0, idx, s)
        for k, values in self.trial.items():
            values[rows] = sub.trial[k]
        for name, child in self.children.items():
            child.put(rows, sub.children[name], idx)

    def state_dict(self) -> dict[str, Any]:
        return {"trial": {k: v.copy() for k, v in self.trial.items()},
                "state": {k: [t.detach().clone() for t in v] for k, v in self.state.items()},
                "children": {k: c.state_dict() for k, c in self.children.items()}}

    def load_state_dict(self, saved: Mapping[str, Any], device: torch.device) -> None:
        self.trial = {k: np.array(v, copy=True) for k, v in saved["trial"].items()}
        self.state = {k: [t.to(device, copy=True) for t in v] for k, v in saved["state"].items()}
        for name, child in self.children.items():
            child.load_state_dict(saved["children"][name], device)
        if self.trial:
            self.size = len(next(iter(self.trial.values())))
        self._cache = {}


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A small host tensor on ``device``; to a GPU through pinned memory without blocking, so that the per-step
    scalars of a step never make the host wait for the device (a pageable copy would synchronise)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def floats(hps: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    """A hyperparameter of every trial as float64 (the python float each single optimizer holds)."""
    return np.array([float(hp[name]) for hp in hps], dtype=np.float64)


def flags(values: Sequence[Any]) -> np.ndarray:
    return np.array([bool(v) for v in values], dtype=bool)


def power(base: np.ndarray | list[float], exponent: Any) -> np.ndarray:
    """``base ** exponent`` per trial through python's own ``pow`` (numpy's may use SIMD code that rounds otherwise)."""
    values = base.tolist() if isinstance(base, np.ndarray) else base
    exps = np.asarray(exponent)
    if exps.ndim == 0 or (exps == exps.flat[0]).all():
        value = exps.flat[0].item()
        return np.fromiter(map(pow, values, itertools.repeat(value)), dtype=np.float64, count=len(values))
    return np.fromiter(map(pow, values, exps.tolist()), dtype=np.float64, count=len(values))


def step_rows(rule: CohortRule, params: list[Tensor], grads: list[Tensor], lrs: np.ndarray, rows: Sequence[int],
              regrad: Regrad | None = None) -> None:
    """``rule.step`` for the trials ``rows`` only; the other trials' parameters and state stay as they are."""
    rows = list(rows)
    if not rows:
        return
    if len(rows) == rule.size:
        rule.step(params, grads, lrs, regrad)
        return
    idx = to_device(torch.from_numpy(np.asarray(rows, dtype=np.int64)), params[0].device)
    sub = rule.take(rows, idx)
    sub_params = [p.index_select(0, idx) for p in params]
    sub_grads = [g.index_select(0, idx) for g in grads]
    sub_regrad = None if regrad is None else (lambda: [g.index_select(0, idx) for g in regrad()])
    sub.step(sub_params, sub_grads, lrs[rows], sub_regrad)
    rule.put(rows, sub, idx)
    for p, s in zip(params, sub_params):
        p.index_copy_(0, idx, s)


def zeros_state(params: Sequence[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(p) for p in params]


def tf_semantics_only(hp: Mapping[str, Any]) -> str | None:
    """The batched forms follow the study's TF rules; ``semantics=torch`` selects torch.optim classes."""
    if hp.get("semantics", "tf") != "tf":
        return "semantics=torch (a torch.optim class) has no batched form; semantics=tf has"
    return None
