"""The cohort engine on P1 and its interface: trials trained as one program equal single runs bit for bit (CPU).

Every study optimizer × {constant, cosine, cosine_wr, trapezoidal} in one cohort; the study's random-search samples
(diverging ones included) and the options beyond the study (SAM, warm-up, plateau, per-step factors, every
Lookahead rule, ...); ``engine=cohort_fast``'s agreement; a cohort killed after a checkpoint and re-run; observers
and StopRun per trial; the dispatcher writing each trial's records under its own run_id.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from bench.checkpoint import CheckpointPolicy, CheckpointStore
from bench.engine import assign
from bench.engine.cohort import (check, checkpoint_key, cohort_key, max_cohort, train_cohort, unsupported)
from bench.execute import RunEnv, execute_many
from bench.observers import SafeObservers, StopRun
from bench.spec import make_spec
from bench.train import RunResult, train
from optimizers import OPTIMIZERS
from optimizers.base import study_samples
from tests.conftest import P1_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
STUDY = ("sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "ndadam", "adabound", "amsbound", "adagrad",
         "adadelta", "rmsprop", "lookahead_momentum", "lookahead_radam", "adabelief")
SCHEDULES = ("constant", "cosine", "cosine_wr", "trapezoidal")
EPOCHS = 12  # past cosine_wr's first restart (epoch 10)


def defaults(name: str) -> dict:
    hp = yaml.safe_load((ROOT / "conf" / "optimizer" / f"{name}.yaml").read_text())
    hp.pop("name")
    return hp


def p1(optimizer: str, hp: dict | None = None, epochs: int = EPOCHS, **kw):
    return make_spec("quadratic_deep", optimizer, {**defaults(optimizer), **(hp or {})},
                     problem_settings={**P1_SETTINGS, "num_epochs": epochs}, **kw)


def same_value(a: float, b: float) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b) or (a != a and b != b)


def assert_identical(cohort: RunResult, single: RunResult) -> None:
    assert cohort.status == single.status, cohort.spec.optimizer
    assert len(cohort.curves) == len(single.curves)
    for x, y in zip(cohort.curves, single.curves):
        assert x[:3] == y[:3] and same_value(x[3], y[3]), (cohort.spec.optimizer, cohort.spec.hyperparameters, x, y)
    assert (cohort.steps, cohort.grad_evals, cohort.num_parameters) == (single.steps, single.grad_evals,
                                                                        single.num_parameters)
    assert cohort.engine in ("cohort", "cohort_fast") and cohort.spec == single.spec


def test_every_study_optimizer_and_schedule_is_bit_identical_in_one_cohort() -> None:
    specs = [p1(o, schedule=s) for o in STUDY for s in SCHEDULES]
    results = train_cohort(specs, engine="cohort", device="cpu")
    for spec, result in zip(specs, results):
        assert result.spec == spec
        assert_identical(result, train(spec))


def test_study_samples_and_options_beyond_the_study_are_bit_identical() -> None:
    specs = []
    for o in STUDY + ("sam",):
        for smp in study_samples(OPTIMIZERS.get(o), 4):
            specs.append(p1(o, smp, schedule="cosine"))
    extra = [("momentum", {"momentum_warmup_epochs": 4, "momentum_warmup_start": 0.0}),
             ("nag", {"momentum_warmup_epochs": 3, "momentum_warmup_start": 0.5}),
             ("sam", {"adaptive": True, "rho": 0.5}), ("sam", {}),
             ("lookahead_momentum", {"k": 1}), ("lookahead_momentum", {"k": 3, "sync": "after"}),
             ("lookahead_radam", {"inner_step_count": "advancing", "sync": "after", "k": 4}),
             ("lookahead_radam", {"inner_step_count": "advancing", "k": 2}),
             ("rmsprop", {"centered": True, "momentum": 0.5}), ("adabound", {"semantics": "torch"}),
             ("adagrad", {"semantics": "torch"}), ("ndadam", {"normalise_at_init": True}),
             ("adam", {"learning_rate": 1e6})]  # diverges at once
    specs += [p1(o, hp, schedule="trapezoidal") for o, hp in extra]
    specs += [p1("adam", schedule="plateau", schedule_settings={"patience": 1, "gamma": 0.5}),
              p1("momentum", schedule="cosine", schedule_settings={"granularity": "step"}),
              p1("lookahead_radam", schedule="step", schedule_settings={"granularity": "step"})]
    results = train_cohort(specs, engine="cohort", device="cpu")
    statuses = set()
    for spec, result in zip(specs, results):
        assert_identical(result, train(spec))
        statuses.add(result.status)
    assert statuses == {"completed", "diverged"}


def test_other_seeds_hessians_and_fresh_data_order_are_their_own_cohorts() -> None:
    specs = [p1(o, seed=43, data_order="fresh", epochs=4) for o in ("adam", "lookahead_momentum", "sgd")]
    draw = [make_spec("quadratic_deep", o, defaults(o), seed=44,
                      problem_settings={**P1_SETTINGS, "num_epochs": 4, "hessian_draw": 2}) for o in ("nag", "sam")]
    assert len({cohort_key(s, "cpu") for s in specs}) == 1 and cohort_key(specs[0], "cpu") != cohort_key(draw[0], "cpu")
    for group in (specs, draw):
        for spec, result in zip(group, train_cohort(group, engine="cohort", device="cpu")):
            assert_identical(result, train(spec))


def test_cohort_fast_is_the_closed_form_within_float_rounding() -> None:
    """Reordered maths (other run_ids): close to the exact runs, and each cell's tuning winner is the same."""
    exact_specs, fast_specs = [], []
    for o in ("sgd", "momentum", "adam", "rmsprop", "adagrad", "lookahead_radam", "adabound"):
        for smp in study_samples(OPTIMIZERS.get(o), 6):
            exact_specs.append(p1(o, smp, epochs=30, schedule="cosine"))
            fast_specs.append(p1(o, smp, epochs=30, schedule="cosine", arithmetic="reordered"))
    assert all(check(s) is None for s in fast_specs)
    assert {s.run_id for s in exact_specs}.isdisjoint(s.run_id for s in fast_specs)
    exact = train_cohort(exact_specs, engine="cohort", device="cpu")
    fast = train_cohort(fast_specs, engine="cohort_fast", device="cpu")
    assert all(r.engine == "cohort_fast" for r in fast)
    winners = {}
    for e, f in zip(exact, fast):
        assert e.status == f.status
        if e.status != "completed":
            continue
        assert e.series("test", "loss")[0] == pytest.approx(f.series("test", "loss")[0], rel=1e-6)
        assert f.series("test", "loss")[-1] == pytest.approx(e.series("test", "loss")[-1], rel=1e-3)
        for kind, r in (("exact", e), ("fast", f)):
            best = winners.setdefault((kind, e.spec.optimizer), (math.inf, None))
            if r.series("valid", "loss")[-1] < best[0]:
                winners[(kind, e.spec.optimizer)] = (r.series("valid", "loss")[-1], dict(r.spec.hyperparameters))
    for (kind, o), (_, hp) in winners.items():
        if kind == "exact":
            assert winners[("fast", o)][1] == hp, o


class Recorder:
    """Records what a run's observers see: starts, metrics, flat parameters, checkpoints."""

    def __init__(self, stop_at: int | None = None, kill_at_checkpoint: int | None = None) -> None:
        self.starts, self.epochs, self.params, self.checkpoints = [], [], [], []
        self.stop_at, self.kill_at = stop_at, kill_at_checkpoint

    def on_start(self, start) -> None:
        self.starts.append((start.start_epoch, start.resumes, start.engine, len(start.curves)))

    def on_epoch(self, epoch, metrics, info) -> None:
        self.epochs.append((epoch, metrics, info.lr_factor, info.steps))
        self.params.append(info.flat_params().tolist())
        if epoch == self.stop_at:
            raise StopRun(epoch)

    def on_checkpoint(self, epoch) -> None:
        self.checkpoints.append(epoch)
        if epoch == self.kill_at:
            raise KeyboardInterrupt  # as a kill at that moment leaves it: the checkpoint is on disk


def test_observers_see_each_trial_as_its_single_run_and_stoprun_takes_one_out() -> None:
    specs = [p1("adam", epochs=6), p1("lookahead_momentum", epochs=6), p1("sam", epochs=6)]
    stops = [None, 3, None]
    recorders = [Recorder(stop_at=s) for s in stops]
    watchers = {s.run_id: SafeObservers(strict=[r]) for s, r in zip(specs, recorders)}
    results = train_cohort(specs, engine="cohort", device="cpu", observers=watchers)
    assert isinstance(results[1], StopRun) and results[1].epoch == 3
    for spec, rec, result, stop in zip(specs, recorders, results, stops):
        alone = Recorder(stop_at=stop)
        try:
            single = train(spec, observers=[alone])
        except StopRun:
            single = None
        assert rec.epochs == alone.epochs  # metrics, lr factor, steps at every evaluated epoch
        assert rec.params == alone.params  # flat parameters, in model.parameters() order
        assert rec.starts == [(0, 0, "cohort", 0)] and alone.starts == [(0, 0, "single", 0)]
        assert (single is None) == (stop is not None)
        if single is not None:
            assert_identical(result, single)


def test_a_killed_cohort_resumes_bit_identically(tmp_path: Path) -> None:
    """Kill after the epoch-5 checkpoint; one trial diverged before it, one was stopped by its pruner before it."""
    specs = [p1(o, epochs=9, schedule="cosine_wr") for o in ("adam", "lookahead_radam", "momentum", "rmsprop")]
    specs.append(p1("adam", {"learning_rate": 1e6}, epochs=9))  # diverges at epoch 1
    specs.append(p1("nag", epochs=9))  # stopped at epoch 2
    store = CheckpointStore(tmp_path, CheckpointPolicy(every_epochs=1, every_minutes=0))

    def watchers(kill: bool):
        recs = {s.run_id: Recorder(stop_at=2 if s.optimizer == "nag" else None,
                                   kill_at_checkpoint=5 if kill and s.optimizer == "momentum" else None)
                for s in specs}
        return recs, {k: SafeObservers(strict=[r]) for k, r in recs.items()}

    _, w = watchers(kill=True)
    with pytest.raises(KeyboardInterrupt):
        train_cohort(specs, engine="cohort", device="cpu", observers=w, checkpoints=store)
    key = checkpoint_key(specs)
    assert store.path(key).exists()
    recs, w = watchers(kill=False)
    resumed = train_cohort(list(reversed(specs)), engine="cohort", device="cpu", observers=w,
                           checkpoints=store)[::-1]
    assert store.path(key).exists()  # the dispatcher removes it once the records are written
    fresh = train_cohort(specs, engine="cohort", device="cpu", observers=watchers(kill=False)[1])
    for spec, a, b in zip(specs, resumed, fresh):
        if spec.optimizer == "nag":
            assert isinstance(a, StopRun) and isinstance(b, StopRun) and a.epoch == b.epoch == 2
            assert recs[spec.run_id].starts == []  # it had left before the checkpoint
            continue
        assert_identical(a, b)
        if a.status == "diverged":
            assert a.resumes == 0 and recs[spec.run_id].starts == []
        else:
            assert a.resumes == 1 and recs[spec.run_id].starts == [(5, 1, "cohort", 5 * 3)]
            assert_identical(a, train(spec))


def test_interface_reasons_keys_and_limits() -> None:
    from bench.engine.cohort import CPU_NEURAL_NOTE

    assert unsupported(p1("adam"), "cohort", "cpu") is None and unsupported(p1("adam"), "auto", "cpu") is None
    assert "line search" in unsupported(p1("lbfgs"), "cohort", "cpu")
    assert "Sophia" in unsupported(p1("sophiag"), "cohort", "cpu")
    assert "no batched" in unsupported(p1("adamw"), "cohort", "cpu")
    assert "semantics=torch" in unsupported(p1("adam", {"semantics": "torch"}), "cohort", "cpu")
    assert "vec_axes" in unsupported(p1("ndadam", {"vec_axes": "dim0"}), "cohort", "cpu")
    assert "bf16" in unsupported(p1("adam", precision="bf16"), "cohort", "cpu")
    allcnnc = {"batch_size": 256, "num_epochs": 2, "weight_decay": 0.0005, "size": "smoke"}
    neural = [make_spec("cifar100_allcnnc", o, defaults(o), problem_settings=allcnnc) for o in ("adam", "sam")]
    assert unsupported(neural[0], "cohort", "cpu") is None
    assert unsupported(neural[0], "auto", "cpu") == CPU_NEURAL_NOTE
    fast = make_spec("cifar100_allcnnc", "adam", defaults("adam"), problem_settings=allcnnc, arithmetic="reordered")
    assert "cohort_fast" in check(fast) and check(neural[0]) is None and check(p1("adam", arithmetic="reordered")) is None
    # dropout: SAM's two forward passes per step draw twice, so SAM trials have their own stream
    assert cohort_key(neural[0], "cpu") != cohort_key(neural[1], "cpu")
    assert cohort_key(p1("adam"), "cpu") == cohort_key(p1("sam"), "cpu") == cohort_key(p1("nag", schedule="cosine"),
                                                                                        "cpu")
    assert cohort_key(p1("adam"), "cpu") != cohort_key(p1("adam", seed=43), "cpu")
    assert cohort_key(p1("adam"), "cpu") != cohort_key(p1("adam", precision="tf32"), "cpu")
    specs = [p1("adam"), p1("sgd"), p1("nag")]
    assert checkpoint_key(specs) == checkpoint_key(specs[::-1]) != checkpoint_key(specs[:2])
    assert checkpoint_key([p1("adam", arithmetic="reordered")]) != checkpoint_key([p1("adam")])
    assert max_cohort(p1("adam"), "cpu") >= 4800 and 1 <= max_cohort(neural[0], "cpu") <= 64


def test_dispatcher_writes_each_trial_as_its_single_run(tmp_path: Path) -> None:
    from bench import records

    specs = [p1(o, epochs=5) for o in ("adam", "sgd", "lookahead_momentum", "lbfgs")]
    notes: list[str] = []
    groups = assign(specs, "auto", "cpu", say=notes.append)
    assert sorted(len(g.specs) for g in groups) == [1, 3] and any("line search" in n for n in notes)
    cohort = execute_many(specs, RunEnv(str(tmp_path / "cohort"), device="cpu", engine="auto"), say=notes.append)
    single = execute_many(specs, RunEnv(str(tmp_path / "single"), device="cpu", engine="single"))
    for spec in specs:
        a, b = cohort[spec.run_id].record, single[spec.run_id].record
        assert a["run_id"] == b["run_id"] == spec.run_id
        assert a["engine"] == ("single" if spec.optimizer == "lbfgs" else "cohort") and b["engine"] == "single"
        for col in ("status", "final_train_loss", "final_valid_loss", "final_test_loss", "steps", "grad_evals",
                    "epochs_completed", "best_valid_epoch", "num_parameters", "spec"):
            assert a[col] == b[col], col
    curves_a = records.read_curves(tmp_path / "cohort").sort_values(["run_id", "epoch", "split", "metric"])
    curves_b = records.read_curves(tmp_path / "single").sort_values(["run_id", "epoch", "split", "metric"])
    assert curves_a["value"].tolist() == curves_b["value"].tolist()
    fast = [p1("adam", epochs=3, arithmetic="reordered"), p1("sgd", epochs=3, arithmetic="reordered")]
    out = execute_many(fast, RunEnv(str(tmp_path / "fast"), device="cpu", engine="cohort_fast"))
    assert {o.record["engine"] for o in out.values()} == {"cohort_fast"}
