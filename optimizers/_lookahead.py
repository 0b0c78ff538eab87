"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"), shared by the study's
``LookaheadOptimizerMBGDMomentum`` and ``LookaheadOptimizerRAdam``.

Slow weights φ start at θ₀ (a copy taken when the optimizer is built); a synchronisation is ``φ ← φ + α(θ − φ);
θ ← φ``; the inner (fast) optimizer's state (momentum buffer, Adam moments, step count) is never reset. Two
schedules of synchronisations, the hyperparameter ``sync``:

* ``replace`` (default, the study's code): the TF-1 wrapper the study ran, ``LookaheadOptimizer(fast_optimizer,
  k=5, alpha=0.5)`` of jinmel/lookahead-tensorflow (``lookahead.py``, ``LookaheadOptimizer._apply_dense`` /
  ``_finish``; matched by class name, signature, defaults and published curves; the repository is not on PyPI, so
  the rule is as issue #15 and protocol §2 notes read it). Its call n (counted from 0 by a step variable that
  ``_finish`` advances) does the synchronisation **instead of** the inner update when ``n % k == 0`` and the inner
  update otherwise. So call 0 is a no-op (φ₀ = θ₀), the gradient of a sync call is computed and discarded, only
  k − 1 of every k calls train, and k = 1 never trains.
* ``after`` (Zhang et al.'s Algorithm 1, pytorch_optimizer's ``Lookahead``): every call is an inner step, and a
  synchronisation follows every k-th inner step (calls k−1, 2k−1, …).

The same TF wrapper calls only the inner optimizer's ``_apply_dense``, never its ``_finish``; what that does to an
inner optimizer with counters (RAdam's t) is the inner optimizer's business (:mod:`optimizers.lookahead_radam`).

Why our own wrapper: pytorch_optimizer's ``Lookahead`` always steps first and syncs after every k-th step (the
``after`` rule), and it has no way to skip the inner update on a sync call. This one is a small
``torch.optim.Optimizer`` (only the synchronisation is its own, with ``torch._foreach_*`` ops):

* its ``param_groups`` *are* the inner optimizer's (a property), so the run loop's per-epoch ``group['lr']``
  rescaling reaches the inner step, also after ``load_state_dict`` replaced the inner groups;
* ``state`` holds the slow weights per parameter; the call count is a python int, so choosing between sync and inner
  step never syncs with the host;
* ``state_dict()`` = ``{"inner": inner.state_dict(), "slow": [φ per parameter, in param_groups order], "calls": n}``
  (tensors and plain python values only, so ``torch.load(weights_only=True)`` reads it), and ``load_state_dict``
  restores exactly that;
* only parameters with a gradient are synchronised (TF applies ``_apply_dense`` to the variables with gradients).

α ∈ [0, 1]; the study draws α ~ LU(1e-4, 1) and k ~ randint(1, 20). Every call evaluated one gradient, so the
harness's count (one per step) holds for both rules.
"""
from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor

from optimizers._cohort import CohortRule, Regrad, flags, floats, step_rows, to_device
from optimizers.base import Hyper, LogUniform, RandInt

K_SPACE = RandInt(1, 20)  # scipy.stats.randint(1, 20): k in 1..19 (§2.2)
ALPHA_SPACE = LogUniform(-4.0, 0.0)  # LU(1e-4, 1)
SYNC_RULES = ("replace", "after")


def k_hyper() -> Hyper:
    return Hyper(int, low=1, search=K_SPACE)


def alpha_hyper() -> Hyper:
    return Hyper(float, low=0.0, high=1.0, search=ALPHA_SPACE)


def sync_hyper() -> Hyper:
    """``replace`` = the study's TF wrapper (sync instead of the inner step on calls 0, k, 2k, …); ``after`` = the
    paper's rule (sync after every k-th inner step). Not tuned (no search distribution)."""
    return Hyper(str, choices=SYNC_RULES)


class Lookahead(torch.optim.Optimizer):
    """Lookahead around an already built inner optimizer (see the module docstring for both ``sync`` rules)."""

    def __init__(self, inner: torch.optim.Optimizer, k: int, alpha: float, sync: str = "replace") -> None:
        if sync not in SYNC_RULES:
            raise ValueError(f"invalid sync={sync!r}: must be one of {', '.join(SYNC_RULES)}")
        if k < 1 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"invalid Lookahead k={k!r} or alpha={alpha!r}: k >= 1, 0 <= alpha <= 1")
        # torch.optim.Optimizer.__init__ would build its own param_groups; ours are the inner optimizer's, so the
        # attributes it sets up are set here instead.
        self.inner = inner
        self.k, self.alpha, self.sync = int(k), float(alpha), sync
        self.calls = 0
        self.defaults = {**inner.defaults, "k": self.k, "alpha": self.alpha, "sync": sync}
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True
        self.state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)
        self._init_slow()

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.inner.param_groups

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _init_slow(self) -> None:
        for p in self._params():
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()  # φ₀ = θ₀ (TF: the slot's initial value is the var's)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.inner.add_param_group(param_group)
        self._init_slow()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def synchronise(self) -> None:
        """φ ← φ + α(θ − φ); θ ← φ for every parameter with a gradient (TF: ``slow + alpha * (var - slow)``)."""
        params = [p for p in self._params() if p.grad is not None]
        if not params:
            return
        slow = [self.state[p]["slow"] for p in params]
        diff = torch._foreach_sub(params, slow)
        torch._foreach_add_(slow, diff, alpha=self.alpha)
        torch._foreach_copy_(params, slow)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        n = self.calls
        self.calls = n + 1
        if self.sync == "replace":
            if n % self.k == 0:  # the sync call: the gradient (closure) is evaluated and discarded
                loss = None
                if closure is not None:
                    with torch.enable_grad():
                        loss = closure()
                self.synchronise()
                return loss
            return self.inner.step(closure)
        loss = self.inner.step(closure)
        if self.calls % self.k == 0:
            self.synchronise()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "slow": [self.state[p]["slow"] for p in self._params()],
                "calls": self.calls}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        params = self._params()
        slow = state_dict["slow"]
        if len(slow) != len(params) or any(s.shape != p.shape for s, p in zip(slow, params)):
            raise ValueError("Lookahead state_dict does not match the optimizer's parameters")
        self.inner.load_state_dict(state_dict["inner"])
        for p, s in zip(params, slow):
            self.state[p]["slow"] = s.detach().to(device=p.device, dtype=p.dtype).clone()
        self.calls = int(state_dict["calls"])

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, sync={self.sync!r}, inner={self.inner!r})"


class LookaheadCohort(CohortRule):
    """Batched :class:`Lookahead` around an inner rule (``inner_rule``), every trial with its own k, α and call
    count: on a step, the trials whose call synchronises (``replace``: n % k = 0) do ``φ += α(θ − φ); θ ← φ``
    (``add_(alpha)`` = ``addcmul_`` with the α column) and the others take the inner step (on their rows only, so
    the syncing trials' inner state is untouched); ``after`` trials step, then sync when (n + 1) % k = 0."""

    inner_rule: ClassVar[type[CohortRule]]

    def configure(self, hps: list[Mapping[str, Any]], params: list[Tensor]) -> None:
        self.trial = {"k": np.array([int(hp["k"]) for hp in hps], dtype=np.int64), "alpha": floats(hps, "alpha"),
                      "replace": flags([hp["sync"] == "replace" for hp in hps]),
                      "calls": np.zeros(len(hps), dtype=np.int64)}
        self.state = {"slow": [p.detach().clone() for p in params]}  # φ₀ = θ₀
        self.children = {"inner": self.inner_rule(self.spec_cls, hps, params)}

    def on_epoch(self, epoch: int, num_epochs: int) -> None:
        self.children["inner"].on_epoch(epoch, num_epochs)

    def discards_gradient(self) -> np.ndarray | None:
        tr = self.trial
        return tr["replace"] & (tr["calls"] % tr["k"] == 0)

    def step(self, params: list[Tensor], grads: list[Tensor], lrs: np.ndarray, regrad: Regrad | None = None) -> None:
        tr = self.trial
        replace_sync = self.discards_gradient()
        step_rows(self.children["inner"], params, grads, lrs, np.flatnonzero(~replace_sync).tolist())
        sync = replace_sync | (~tr["replace"] & ((tr["calls"] + 1) % tr["k"] == 0))
        self.synchronise(params, np.flatnonzero(sync).tolist())
        tr["calls"] = tr["calls"] + 1

    def synchronise(self, params: list[Tensor], rows: list[int]) -> None:
        if not rows:
            return
        alpha = self.trial["alpha"][rows]
        if len(rows) == self.size:
            for p, slow, a in zip(params, self.state["slow"], self.columns(alpha, params)):
                diff = p - slow
                slow.addcmul_(diff, a)
                p.copy_(slow)
            return
        idx = to_device(torch.from_numpy(np.asarray(rows, dtype=np.int64)), params[0].device)
        for p, slow, a in zip(params, self.state["slow"], self.columns(alpha, params)):
            s = slow.index_select(0, idx)
            diff = p.index_select(0, idx) - s
            s.addcmul_(diff, a)
            slow.index_copy_(0, idx, s)
            p.index_copy_(0, idx, s)


def wrap(inner: torch.optim.Optimizer, hp: Mapping[str, Any]) -> Lookahead:
    """Lookahead with the plugin's ``k``, ``alpha`` and ``sync`` around an already built inner optimizer."""
    return Lookahead(inner, k=hp["k"], alpha=hp["alpha"], sync=hp["sync"])
