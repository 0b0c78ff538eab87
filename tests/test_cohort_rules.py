"""The batched optimizer rules (``OptimizerSpec.cohort_rule``) against the single optimizers, bit for bit (CPU).

Every rule updates M trials whose parameters are stacked along dim 0; each trial has its own hyperparameters (the
one-shot defaults, the study's random-search samples, and the options beyond the study: warm-up, Nesterov,
centered/momentum RMSProp, torch-semantics AdaBound/AdaGrad, every Lookahead sync rule, frozen and advancing
inner RAdam, ASAM), its own learning-rate factor per step and its own epoch hook. The single optimizer of each
trial takes the same steps on its own copies; after every step every parameter row must equal the single
optimizer's parameter exactly. Gradients are affine in θ (mul/add kernels only), so the stacked and single
gradients are equal too and SAM's second gradient at the perturbed point is exercised.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from optimizers import OPTIMIZERS
from optimizers._cohort import CohortRule
from optimizers.base import study_samples

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(100,), (6, 3, 5, 5), (10,), (7, 13), ()]
STEPS = 14


def defaults(name: str) -> dict:
    hp = yaml.safe_load((ROOT / "conf" / "optimizer" / f"{name}.yaml").read_text())
    hp.pop("name")
    return hp


def trial_hps(name: str) -> list[dict]:
    base = defaults(name)
    cls = OPTIMIZERS.get(name)
    hps = [base] + [{**base, **s} for s in study_samples(cls, 5)]
    extra = {
        "momentum": [{"momentum_warmup_epochs": 3, "momentum_warmup_start": 0.0},
                     {"momentum_warmup_epochs": 2, "momentum_warmup_start": 0.5}, {"momentum": 0.0}],
        "rmsprop": [{"centered": True}, {"momentum": 0.5}, {"momentum": 0.3, "centered": True}],
        "adabound": [{"semantics": "torch"}],
        "adagrad": [{"semantics": "torch", "initial_accumulator_value": 0.0}],
        "lookahead_momentum": [{"k": 1}, {"k": 2, "sync": "after"}, {"k": 3}, {"momentum": 0.0, "k": 2}],
        "lookahead_radam": [{"k": 1}, {"k": 3, "sync": "after", "inner_step_count": "advancing"},
                            {"k": 2, "inner_step_count": "advancing"}, {"k": 4, "sync": "after"}],
        "sam": [{"adaptive": True, "rho": 0.5}, {"momentum": 0.0}],
        "ndadam": [{"normalise_at_init": True}],
    }
    extra["nag"] = extra["momentum"]
    extra["amsbound"] = extra["adabound"]
    hps += [{**base, **e} for e in extra.get(name, [])]
    return [cls.validate(hp) for hp in hps]


RULED = [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).cohort_rule is not None]


def affine_grads(params, step: int, stacked: bool):
    """g = a·θ + b with per-step random a, b of the parameter's shape (broadcast over trials when stacked)."""
    g = torch.Generator().manual_seed(1000 + step)
    out = []
    for p in params:
        shape = p.shape[1:] if stacked else p.shape
        a = torch.randn(shape, generator=g) * 0.5
        b = torch.randn(shape, generator=g) * (10.0 ** (step % 3 - 1))
        out.append(p * a + b)
    return out


@pytest.mark.parametrize("name", RULED)
def test_rule_equals_single_optimizer(name: str) -> None:
    cls = OPTIMIZERS.get(name)
    hps = [hp for hp in trial_hps(name) if cls.cohort_unsupported(hp) is None]
    assert len(hps) >= 4
    m = len(hps)
    init = [torch.randn((m, *s), generator=torch.Generator().manual_seed(i)) for i, s in enumerate(SHAPES)]
    singles = []
    for r, hp in enumerate(hps):
        params = [torch.nn.Parameter(t[r].clone()) for t in init]
        opt = cls.build(params, hp)
        singles.append((params, opt, [g["lr"] for g in opt.param_groups]))
    stacked = [t.clone() for t in init]
    rule: CohortRule = cls.cohort_rule(cls, hps, stacked)
    for step in range(STEPS):
        epoch = step // 3
        factors = [0.5 + 0.5 * ((r + step) % 4) / 3 for r in range(m)]
        if step % 3 == 0:
            rule.on_epoch(epoch, 10)
        lrs = []
        for r, (params, opt, base) in enumerate(singles):
            if step % 3 == 0:
                cls.on_epoch(opt, epoch, 10)
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * factors[r]
            lrs.append(base[0] * factors[r])
            if cls.needs_closure:
                def closure(params=params):
                    for p, g in zip(params, affine_grads([q.detach() for q in params], step, False)):
                        p.grad = g
                    return torch.zeros(())
                opt.step(closure)
            else:
                for p, g in zip(params, affine_grads([q.detach() for q in params], step, False)):
                    p.grad = g
                opt.step()
        with torch.no_grad():
            rule.step(stacked, affine_grads(stacked, step, True), np.array(lrs),
                      regrad=lambda: affine_grads(stacked, step, True))
        for r, (params, _, _) in enumerate(singles):
            for i, p in enumerate(params):
                assert torch.equal(stacked[i][r], p.detach()), (name, hps[r], step, i)


def test_rows_can_leave_and_state_round_trips() -> None:
    cls = OPTIMIZERS.get("lookahead_radam")
    hps = trial_hps("lookahead_radam")
    params = [torch.randn(len(hps), 5)]
    rule = cls.cohort_rule(cls, hps, params)
    grads = [torch.randn(len(hps), 5)]
    rule.step(params, grads, np.full(len(hps), 1e-3))
    saved = rule.state_dict()
    twin = cls.cohort_rule(cls, hps, [torch.zeros(len(hps), 5)])
    twin.load_state_dict(saved, torch.device("cpu"))
    p2 = [params[0].clone()]
    rule.step(params, grads, np.full(len(hps), 1e-3))
    twin.step(p2, grads, np.full(len(hps), 1e-3))
    assert torch.equal(params[0], p2[0])
    keep = [0, 2, 3]
    rule.select(keep)
    assert rule.size == 3 and rule.children["inner"].state["m"][0].shape[0] == 3
    assert rule.trial["k"].tolist() == [hps[i]["k"] for i in keep]
