"""Mid-run checkpoints: a run stopped at an epoch boundary and resumed gives bit-identical curves on the CPU.

Every study optimizer on P1 (with a schedule that changes the rate every epoch, and the reactive plateau law whose
history is state), and a problem with augmentation and dropout at smoke size (cifar100_allcnnc: random crops,
flips, colour draws from the problem's generator, dropout from the global RNG). The stop is an exception raised by
an observer right after a checkpoint was written, as a kill at that moment would leave it; the resumed run must
equal the uninterrupted one in every curve value, step count and gradient-evaluation count, and the checkpoint
must be gone once the record is written.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.checkpoint import CheckpointPolicy, CheckpointStore, policy_from_config, CheckpointError
from bench.execute import execute
from bench.observers import StopRun
from bench.spec import make_spec
from bench.train import train
from tests.conftest import P1_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
STUDY = ("sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "ndadam", "adabound", "amsbound", "adagrad",
         "adadelta", "rmsprop", "lookahead_momentum", "lookahead_radam", "adabelief")


def defaults(name: str) -> dict:
    hp = yaml.safe_load((ROOT / "conf" / "optimizer" / f"{name}.yaml").read_text())
    hp.pop("name")
    return hp


class StopAfterCheckpoint:
    """Raises once the checkpoint of ``epoch`` is on disk: the state a kill at that moment leaves behind."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen: list[int] = []

    def on_checkpoint(self, epoch: int) -> None:
        self.seen.append(epoch)
        if epoch == self.epoch:
            raise StopRun


def interrupted_then_resumed(spec, tmp_path: Path, stop_at: int, **kw):
    store = CheckpointStore(tmp_path / "ckpt", CheckpointPolicy(every_epochs=1, every_minutes=0))
    stopper = StopAfterCheckpoint(stop_at)
    with pytest.raises(StopRun):
        _train_with(spec, store, stopper, **kw)
    assert store.path(spec.run_id).exists()
    return train(spec, checkpoints=store, **kw), stopper


def _train_with(spec, store, stopper, **kw):
    """Train with ``stopper`` as the harness callback (strict: its StopRun propagates, as a pruner's does)."""
    return train(spec, checkpoints=store, on_epoch=stopper, **kw)


def assert_same(a, b) -> None:
    assert a.status == b.status
    assert a.curves == b.curves  # every (epoch, split, metric, value), bit for bit
    assert (a.steps, a.grad_evals) == (b.steps, b.grad_evals)


@pytest.mark.parametrize("name", STUDY)
def test_every_study_optimizer_resumes_bit_identically_on_p1(name: str, tmp_path: Path) -> None:
    spec = make_spec("quadratic_deep", name, defaults(name), schedule="cosine_wr",
                     problem_settings={**P1_SETTINGS, "num_epochs": 12})
    full = train(spec)
    resumed, stopper = interrupted_then_resumed(spec, tmp_path, stop_at=7)  # inside a Lookahead cycle (k = 5)
    assert stopper.seen == [1, 2, 3, 4, 5, 6, 7]
    assert resumed.resumes == 1
    assert_same(full, resumed)


def test_plateau_history_and_per_step_factors_survive_a_resume(tmp_path: Path) -> None:
    spec = make_spec("quadratic_deep", "momentum", defaults("momentum"), schedule="plateau",
                     schedule_settings={"patience": 1, "gamma": 0.5},
                     problem_settings={**P1_SETTINGS, "num_epochs": 10})
    assert_same(train(spec), interrupted_then_resumed(spec, tmp_path, stop_at=6)[0])
    spec = make_spec("quadratic_deep", "adam", defaults("adam"), schedule="cosine",
                     schedule_settings={"granularity": "step"}, problem_settings={**P1_SETTINGS, "num_epochs": 6})
    assert_same(train(spec), interrupted_then_resumed(spec, tmp_path / "b", stop_at=3)[0])


def test_augmentation_and_dropout_resume_bit_identically(tmp_path: Path) -> None:
    settings = {"batch_size": 256, "num_epochs": 3, "weight_decay": 0.0005, "size": "smoke",
                "cifar100_offset_bug": False}
    spec = make_spec("cifar100_allcnnc", "momentum", defaults("momentum"), problem_settings=settings)
    full = train(spec, data_dir=tmp_path / "data")
    resumed, _ = interrupted_then_resumed(spec, tmp_path, stop_at=1, data_dir=tmp_path / "data")
    assert_same(full, resumed)


def test_a_foreign_or_torn_checkpoint_is_never_trusted(tmp_path: Path) -> None:
    a = make_spec("quadratic_deep", "sgd", defaults("sgd"), problem_settings={**P1_SETTINGS, "num_epochs": 4})
    b = make_spec("quadratic_deep", "sgd", {**defaults("sgd"), "learning_rate": 0.02},
                  problem_settings={**P1_SETTINGS, "num_epochs": 4})
    store = CheckpointStore(tmp_path, CheckpointPolicy(every_epochs=1, every_minutes=0))
    store.save(a.run_id, b.canonical(), {"next_epoch": 3})  # a's file holding another spec's state
    assert store.load(a.run_id, a.canonical()) is None
    store.path(a.run_id).write_bytes(b"\x80 not a checkpoint")
    assert store.load(a.run_id, a.canonical()) is None
    assert train(a, checkpoints=store).curves == train(a).curves


def test_checkpoint_is_removed_once_the_record_is_written(tmp_path: Path) -> None:
    spec = make_spec("quadratic_deep", "adam", defaults("adam"), problem_settings={**P1_SETTINGS, "num_epochs": 5})
    store = CheckpointStore.under(tmp_path, CheckpointPolicy(every_epochs=1, every_minutes=0))
    with pytest.raises(StopRun):
        _train_with(spec, store, StopAfterCheckpoint(2))
    outcome = execute(spec, tmp_path, device="cpu", checkpoints=store)
    assert outcome.record["resumes"] == 1 and outcome.record["status"] == "completed"
    assert not store.path(spec.run_id).exists()
    assert outcome.record["run_id"] == spec.run_id  # checkpoints never enter the identity


def test_policy() -> None:
    p = CheckpointPolicy(every_epochs=3, every_minutes=0)
    assert not p.due(2, 1e9) and p.due(3, 0.0)
    t = CheckpointPolicy(every_epochs=0, every_minutes=1)
    assert not t.due(100, 59.0) and t.due(1, 60.0)
    assert not CheckpointPolicy(enabled=False, every_epochs=1).due(5, 1e9)
    assert policy_from_config({"every_epochs": 2}).every_epochs == 2
    for bad in ({"every_epochs": -1}, {"every_minutes": "x"}, {"enabled": "yes"}, {"often": 1}):
        with pytest.raises(CheckpointError):
            policy_from_config(bad)
