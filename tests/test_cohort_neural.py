"""The cohort engine on P2–P8 (smoke data, truncated to a few batches so that a test takes seconds).

``loop`` mode (the CPU default) must equal single runs bit for bit: dropout and the VAE's noise drawn from the
forked global RNG, batch-norm statistics, the stateful LSTM, L2 on kernels, Lookahead's discarded gradients (not
skipped where a pass updates batch-norm statistics), SAM's two passes. ``vmap`` mode (the GPU default; ``torch.func``
and the batched LSTM) runs here on the CPU and must agree within float rounding.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from bench.engine.cohort import train_cohort
from bench.spec import make_spec
from bench.train import train
from problems import PROBLEMS
from problems.base import Split
from tests.test_cohort import STUDY, assert_identical, defaults

ROOT = Path(__file__).resolve().parent.parent


def tiny(name: str) -> str:
    """``name`` on its smoke data cut to 2 training batches and 1 batch per evaluated split (a test-only problem)."""
    tname = f"tiny_{name}"
    if tname in PROBLEMS._classes:
        return tname
    base = PROBLEMS.get(name)

    class Tiny(base):  # type: ignore[misc, valid-type]
        train_eval_size = base.train_eval_size if name == "tolstoi_char_rnn" else None  # all training rows

        def load_data(self) -> None:
            super().load_data()
            per = 1 if name == "tolstoi_char_rnn" else self.batch_size  # tolstoi's rows are whole batches
            n = {"train": 2 * per, "valid": per, "test": per}
            self.data = {k: Split(v.x[:n[k]], None if v.y is None else v.y[:n[k]]) for k, v in self.data.items()
                         if k in n}  # CIFAR-10 / SVHN: the cut splits stand alone (no file pool to re-draw)
            self._pieces = None

        def eval_batch_size(self) -> int:
            return self.batch_size

    Tiny.__name__ = Tiny.__qualname__ = f"Tiny{base.__name__}"
    Tiny.name = tname
    PROBLEMS._classes[tname] = Tiny
    return tname


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def specs_for(name: str, optimizers, batch_size: int, epochs: int = 2, **kw):
    settings = yaml.safe_load((ROOT / "conf" / "problem" / f"{name}.yaml").read_text())
    settings.pop("name")
    settings.update(size="smoke", num_epochs=epochs, batch_size=batch_size)
    if name == "tolstoi_char_rnn":
        settings["seq_length"] = 10  # 8 streams × 10 chars per batch
    return [make_spec(tiny(name), o, defaults(o), problem_settings=settings, schedule="cosine", **kw)
            for o in optimizers]


def check_identical(specs, data_dir: Path) -> None:
    results = train_cohort(specs, engine="cohort", device="cpu", data_dir=data_dir, mode="loop")
    for spec, result in zip(specs, results):
        assert_identical(result, train(spec, data_dir=data_dir))


# (problem, batch size, optimizers in one cohort); SAM gets its own cohort where the forward pass is random
CASES = [
    ("mnist_vae", 8, ["adam", "lookahead_momentum", "rmsprop"]),  # VAE noise + dropout, also at evaluation
    ("fmnist_2c2d", 8, ["momentum", "lookahead_radam", "sam"]),  # deterministic: discarded gradients skipped
    ("cifar10_3c3d", 8, ["adam", "nag", "sam"]),  # L2 on kernels, augmentation
    ("cifar100_allcnnc", 4, ["adabound", "lookahead_momentum"]),  # dropout, L2
    ("svhn_wrn164", 4, ["lookahead_momentum", "sam"]),  # batch norm: every pass updates its statistics
]


@pytest.mark.parametrize("name,batch_size,optimizers", CASES, ids=[c[0] for c in CASES])
def test_loop_mode_is_bit_identical(name: str, batch_size: int, optimizers: list[str], data_dir: Path) -> None:
    check_identical(specs_for(name, optimizers, batch_size), data_dir)


def test_every_study_optimizer_and_sam_on_the_stateful_lstm(data_dir: Path) -> None:
    """P8: dropout in every pass, the LSTM state carried across batches; all rules on real parameter shapes."""
    check_identical(specs_for("tolstoi_char_rnn", STUDY, 8), data_dir)
    sam = specs_for("tolstoi_char_rnn", ["sam"], 8, epochs=1)
    sam.append(make_spec(sam[0].problem, "sam", {**defaults("sam"), "adaptive": True},
                         problem_settings=dict(sam[0].problem_settings)))
    check_identical(sam, data_dir)


def test_random_forward_sam_cohort_on_dropout(data_dir: Path) -> None:
    specs = specs_for("cifar100_allcnnc", ["sam"], 4, epochs=1)
    specs.append(make_spec(specs[0].problem, "sam", {**defaults("sam"), "rho": 0.2}, problem_settings=dict(
        specs[0].problem_settings), schedule="constant"))
    check_identical(specs, data_dir)


VMAP = ["mnist_vae", "cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164", "tolstoi_char_rnn"]


@pytest.mark.parametrize("name", VMAP)
def test_vmap_mode_agrees_within_rounding(name: str, data_dir: Path) -> None:
    """The GPU programs on the CPU: torch.func (P2–P7) and the batched LSTM (P8); SGD and momentum amplify no
    rounding, so their losses agree to ~1e-6; accuracies are argmaxes and may flip, so they are not compared."""
    specs = specs_for(name, ["sgd", "momentum"], 8 if name == "tolstoi_char_rnn" else 4, epochs=1)
    results = train_cohort(specs, engine="cohort", device="cpu", data_dir=data_dir, mode="vmap")
    for spec, result in zip(specs, results):
        single = train(spec, data_dir=data_dir)
        assert result.status == single.status and result.steps == single.steps
        for x, y in zip(result.curves, single.curves):
            assert x[:3] == y[:3]
            if x[2] == "loss":
                assert math.isclose(x[3], y[3], rel_tol=1e-4), (spec.optimizer, x, y)


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_loop_mode_is_bit_identical_in_other_precisions(precision: str, data_dir: Path) -> None:
    check_identical(specs_for("cifar10_3c3d", ["adam", "momentum"], 4, epochs=1, precision=precision), data_dir)
