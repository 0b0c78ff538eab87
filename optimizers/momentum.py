"""Heavy-ball momentum, the study's ``MomentumOptimizer`` (``tf.train.MomentumOptimizer``, use_nesterov=False).

TF keeps an accumulator initialised to zeros and applies ``v ← ρ·v + g;  θ ← θ − lr·v`` (Polyak 1964 in TF's form,
lr outside the accumulator). torch.optim.SGD with ``momentum=ρ, dampening=0, nesterov=False`` computes exactly this:
its first step sets ``v = g`` (= ρ·0 + g) and later steps ``v ← ρ·v + g``, then ``θ ← θ − lr·v`` with the lr of
the current step, so a schedule rescales the step the same way as TF's learning-rate variable. Hence torch's class
(subclassed only to keep TF's accumulator through a warm-up epoch with coefficient 0, see :class:`WarmupSGD`).

Momentum warm-up (the lecture, §9; not part of the study): with ``momentum_warmup_epochs = W > 0`` the coefficient
of epoch e (0-based) is ``start + (momentum − start)·min(e, W)/W``, i.e. linear from ``momentum_warmup_start`` in
epoch 0 to ``momentum`` from epoch W on (W = 4, 0.5 → 0.9: 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, ...). ``W = 0`` (the
default, the study) keeps the coefficient at ``momentum`` throughout. The warm-up settings are not tuned: they have
no search distribution, so the study's sample stream is unchanged.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable, Mapping

import numpy as np
import torch

from optimizers._cohort import CohortRule, Regrad, zeros_state
from optimizers.base import MOMENTUM_SPACE, OPTIMIZERS, Hyper, OptimizerSpec, beta, learning_rate


def warmup_momentum(epoch: int, momentum: float, start: float, warmup_epochs: int) -> float:
    """The momentum coefficient used during training epoch ``epoch`` (0-based)."""
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return momentum
    return start + (momentum - start) * epoch / warmup_epochs


class WarmupSGD(torch.optim.SGD):
    """torch SGD that keeps TF's accumulator through warm-up epochs whose coefficient is exactly 0.

    torch skips the momentum buffer while ``momentum == 0`` and starts it afresh (``v = g``) at the first non-zero
    coefficient, whereas TF's accumulator keeps following ``v ← 0·v + g = g``; so after such a step the buffer is
    set to g. Only a warm-up starting at 0 towards a non-zero momentum reaches this; otherwise this is torch SGD.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = super().step(closure)
        for group in self.param_groups:
            if group["momentum"] == 0.0 and group.get("momentum_target", 0.0) != 0.0:
                for p in group["params"]:
                    if p.grad is not None:
                        self.state[p]["momentum_buffer"] = p.grad.clone()
        return loss


class MomentumCohort(CohortRule):
    """Batched ``torch.optim.SGD`` (dampening 0, heavy ball or Nesterov) with :class:`WarmupSGD`'s buffer rule.

    Per trial and step, as torch's single-tensor loop: a non-zero coefficient ρ starts the buffer (v = g, its first
    use) or updates it (v = ρ·v + g); a coefficient of exactly 0 (a warm-up from 0, or ρ = 0) steps with g and, as
    WarmupSGD, keeps v = g when the target momentum is not 0. Then θ += −lr·d with d = v (heavy ball), g + ρ·v
    (Nesterov) or g (ρ = 0). Also the inner rule of Lookahead-Momentum and SAM's base (plain torch SGD: no warm-up).
    """

    def configure(self, hps: list[Mapping[str, Any]], params: list[torch.Tensor]) -> None:
        self.nesterov = bool(getattr(self.spec_cls, "nesterov", False))
        self.trial = {
            "target": np.array([float(hp.get("momentum", 0.0)) for hp in hps]),
            "start": np.array([float(hp.get("momentum_warmup_start", 0.0)) for hp in hps]),
            "warmup_epochs": np.array([int(hp.get("momentum_warmup_epochs", 0)) for hp in hps], dtype=np.int64),
            "has_buf": np.zeros(len(hps), dtype=bool),
        }
        self.on_epoch(0, 0)
        self.state = {"buf": zeros_state(params)}

    def on_epoch(self, epoch: int, num_epochs: int) -> None:
        t = self.trial
        t["momentum"] = np.array([warmup_momentum(epoch, m, s, w) for m, s, w in
                                  zip(t["target"].tolist(), t["start"].tolist(), t["warmup_epochs"].tolist())],
                                 dtype=np.float64).reshape(-1)

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], lrs: np.ndarray,
             regrad: Regrad | None = None) -> None:
        t = self.trial
        mu, has_buf = t["momentum"], t["has_buf"]
        moving = mu != 0.0
        update = moving & has_buf  # v = ρ·v + g
        restart = (moving & ~has_buf) | (~moving & (t["target"] != 0.0))  # v = g
        any_update, all_update, any_restart = update.any(), update.all(), restart.any()
        any_moving, all_moving = moving.any(), moving.all()
        neg_lrs = self.columns(-lrs, params)
        mus = self.columns(mu, params) if any_moving else [None] * len(params)
        for p, g, buf, neg_lr, rho in zip(params, grads, self.state["buf"], neg_lrs, mus):
            if all_update:
                buf.mul_(rho).add_(g)
            elif any_update or any_restart:
                new = buf
                if any_update:
                    new = torch.where(self.mask(update, p), buf.mul(rho).add_(g), new)
                if any_restart:
                    new = torch.where(self.mask(restart, p), g, new)
                buf.copy_(new)
            if not any_moving:
                direction = g
            else:
                direction = g.addcmul(buf, rho) if self.nesterov else buf
                if not all_moving:
                    direction = torch.where(self.mask(moving, p), direction, g)
            p.addcmul_(direction, neg_lr)
        t["has_buf"] = has_buf | restart


@OPTIMIZERS.register
class Momentum(OptimizerSpec):
    study_name = "MomentumOptimizer"
    nesterov: ClassVar[bool] = False
    hyperparameters = {
        "learning_rate": learning_rate(),
        "momentum": beta(MOMENTUM_SPACE),
        "momentum_warmup_epochs": Hyper(int, low=0),
        "momentum_warmup_start": beta(),
    }
    cohort_rule = MomentumCohort

    @classmethod
    def build(cls, params: Iterable[torch.nn.Parameter], hp: Mapping[str, Any]) -> torch.optim.Optimizer:
        first = warmup_momentum(0, hp["momentum"], hp["momentum_warmup_start"], hp["momentum_warmup_epochs"])
        # torch refuses nesterov=True with momentum 0 at construction; TF's Nesterov rule with ρ = 0 is plain SGD,
        # which torch's step also computes (g + 0·v), so the flag is set after construction.
        opt = WarmupSGD(params, lr=hp["learning_rate"], momentum=first, dampening=0.0,
                        nesterov=cls.nesterov and first > 0)
        for group in opt.param_groups:
            group["nesterov"] = cls.nesterov
            group["momentum_target"] = hp["momentum"]
            group["momentum_warmup_start"] = hp["momentum_warmup_start"]
            group["momentum_warmup_epochs"] = hp["momentum_warmup_epochs"]
        return opt

    @classmethod
    def on_epoch(cls, optimizer: torch.optim.Optimizer, epoch: int, num_epochs: int) -> None:
        """Set this epoch's warm-up coefficient (a no-op without warm-up)."""
        for group in optimizer.param_groups:
            group["momentum"] = warmup_momentum(epoch, group["momentum_target"], group["momentum_warmup_start"],
                                                group["momentum_warmup_epochs"])
