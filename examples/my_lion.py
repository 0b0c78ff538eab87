"""A user's own optimizer, benchmarked without touching valley: `valley optimizer=file:examples/my_lion.py`."""
import torch

from optimizers.base import Hyper, LogUniform, OptimizerSpec, beta


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled weight decay."""

    def __init__(self, params, lr: float, beta1: float, beta2: float, weight_decay: float) -> None:
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * group["beta1"] + p.grad * (1 - group["beta1"])), alpha=-group["lr"])
                m.lerp_(p.grad, 1 - group["beta2"])


class MyLion(OptimizerSpec):
    hyperparameters = {  # the tuned ones (with search=...) are drawn in this order by the study's sampler
        "learning_rate": Hyper(float, low=0.0, search=LogUniform(-5.0, -1.0)),
        "beta1": beta(), "beta2": beta(), "weight_decay": Hyper(float, low=0.0),
    }
    defaults = {"learning_rate": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0}

    @classmethod
    def build(cls, params, hp):
        return Lion(params, hp["learning_rate"], hp["beta1"], hp["beta2"], hp["weight_decay"])
