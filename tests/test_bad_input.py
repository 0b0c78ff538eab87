"""Every setting a user can type, tried with out-of-range, wrong-type and empty values: one clear line each.

Generated from the configs themselves (every key of every ``conf/problem`` YAML, every law parameter of every
schedule, every ``tuning.*`` key, ``budget.samples``, ``checkpoint.*`` and the top-level keys), so a new setting is
covered the day it is added; the validation functions are called in-process, and one value per kind goes through
the real command line (exit code 2, one line, nothing written).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.checkpoint import CheckpointError, policy_from_config
from bench.cli import precheck
from bench.schedules import SCHEDULES
from bench.spec import SpecError, make_spec
from bench.tuning.settings import TUNING_KEYS, TuningError, budget_from_config, check_value
from tests.conftest import ADAM_DEFAULTS, run_valley

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = sorted(p.stem for p in (ROOT / "conf" / "problem").glob("*.yaml"))


def problem_defaults(name: str) -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "conf" / "problem" / f"{name}.yaml").read_text())
    cfg.pop("name")
    cfg.pop("resources", None)
    return cfg


def bad_values(default: Any) -> list[Any]:
    """Wrong type, out of range and empty for a setting whose default is ``default``."""
    if isinstance(default, bool):
        return ["maybe", 2, "", None]
    if isinstance(default, int):
        return [-1, 1.5, "abc", "", None]
    if isinstance(default, float):
        return [-1.0, "abc", "", None, float("nan")]
    return ["no-such-choice", "", 3, None]


PROBLEM_CASES = [(p, key, bad) for p in PROBLEMS for key, default in problem_defaults(p).items()
                 for bad in bad_values(default)
                 if not (key == "weight_decay" and bad in (None,))]


@pytest.mark.parametrize("problem, key, bad", PROBLEM_CASES, ids=lambda v: repr(v)[:20])
def test_every_problem_setting_rejects_bad_values(problem: str, key: str, bad: Any) -> None:
    settings = {**problem_defaults(problem), key: bad}
    with pytest.raises(SpecError) as err:
        make_spec(problem, "adam", ADAM_DEFAULTS, problem_settings=settings)
    message = str(err.value)
    assert "\n" not in message and key in message, message


@pytest.mark.parametrize("problem", PROBLEMS)
def test_batch_larger_than_a_split_names_the_largest_valid(problem: str) -> None:
    settings = {**problem_defaults(problem), "batch_size": 10**7}
    with pytest.raises(SpecError, match=r"must be an integer in \[1, \d+\] \(the \w+ split of"):
        make_spec(problem, "adam", ADAM_DEFAULTS, problem_settings=settings)
    smoke = {**problem_defaults(problem), "size": "smoke"}
    make_spec(problem, "adam", ADAM_DEFAULTS, problem_settings=smoke)  # the defaults fit even the smoke data


def _schedule_cases() -> list[tuple[str, str, Any]]:
    cases = []
    for name in sorted(p.stem for p in (ROOT / "conf" / "schedule").glob("*.yaml")):
        cls = SCHEDULES.get(name)
        cases += [(name, "granularity", bad) for bad in ("hour", "", None)]
        for key, param in cls.parameters.items():
            h = param.range
            values: list[Any] = ["abc", "", None]
            if h.choices is not None:
                values = ["no-such-choice", "", None]
            elif h.kind is int:
                values.append(1.5)
            if h.low is not None and h.choices is None:
                values.append(h.low - 1)
            if h.high is not None and h.choices is None:
                values.append(h.high + 1)
            cases += [(name, key, v) for v in values]
    return cases


@pytest.mark.parametrize("schedule, key, bad", _schedule_cases(), ids=lambda v: repr(v)[:20])
def test_every_schedule_parameter_rejects_bad_values(schedule: str, key: str, bad: Any) -> None:
    with pytest.raises(SpecError) as err:
        make_spec("quadratic_deep", "adam", ADAM_DEFAULTS, schedule=schedule, schedule_settings={key: bad},
                  problem_settings=problem_defaults("quadratic_deep"))
    assert "\n" not in str(err.value) and key in str(err.value)


TUNING_BAD = {
    "storage": ["", None, 3], "sampler": ["grid", "", None], "sampler_seed": [-1, 1.5, "x", ""],
    "pruner": ["asha", ""], "workers": [0, -2, 1.5, "two", ""], "selection": ["median", ""],
    "diverged": ["drop", ""], "seeds": [[], [42, 42], [-1], "42", [1.5], ""],
    "heartbeat_s": [0, -1, "x", ""], "stale_after_s": [0, -5, "x", ""], "journal_lock": ["nfs", ""],
}


@pytest.mark.parametrize("key, bad", [(k, b) for k in TUNING_KEYS for b in TUNING_BAD[k]], ids=lambda v: repr(v)[:20])
def test_every_tuning_key_rejects_bad_values(key: str, bad: Any) -> None:
    assert set(TUNING_BAD) == set(TUNING_KEYS)  # a new key needs its bad values here
    with pytest.raises(TuningError) as err:
        check_value(key, bad)
    assert "\n" not in str(err.value) and key in str(err.value) or "sampler" in str(err.value)


@pytest.mark.parametrize("bad", [-1, 1.5, "x", "", None, True])
def test_budget_samples_rejects_bad_values(bad: Any) -> None:
    with pytest.raises(TuningError, match="budget"):
        budget_from_config({"budget": {"name": "small", "samples": bad}})


@pytest.mark.parametrize("key, bad", [("enabled", "yes"), ("enabled", ""), ("every_epochs", -1),
                                      ("every_epochs", 1.5), ("every_epochs", ""), ("every_minutes", -1),
                                      ("every_minutes", "soon"), ("often", 1)])
def test_checkpoint_keys_reject_bad_values(key: str, bad: Any) -> None:
    with pytest.raises(CheckpointError, match=f"checkpoint.{key}"):
        policy_from_config({key: bad})


@pytest.mark.parametrize("arg, message", [
    ("seed=abc", "invalid seed='abc'"), ("seed=-1", "invalid seed='-1'"), ("seed=", "invalid seed="),
    ("data_order=random", "invalid data_order='random'"), ("force=maybe", "invalid force='maybe'"),
    ("progress=2", "invalid progress='2'"), ("dry_run=", "invalid dry_run=''"),
    ("results_dir=", "invalid results_dir=''"), ("engine=gpu", "unknown engine 'gpu'"),
    ("precision=fp16", "invalid precision='fp16'"), ("deterministic=1", "invalid deterministic='1'"),
    ("threads=0", "invalid threads='0'"), ("threads=two", "invalid threads='two'"),
    ("checkpoint.every_epochs=-2", "invalid checkpoint.every_epochs=-2"),
    ("budget.samples=-3", "invalid budget.samples='-3'"), ("tuning.workers=0", "invalid tuning.workers=0"),
    ("problem.split=fixed", "unknown setting 'split' for problem quadratic_deep"),
    ("logger.mode=offline", "logger none has no settings"),
])
def test_top_level_and_block_keys_in_precheck(arg: str, message: str) -> None:
    error = precheck([arg])
    assert error is not None and message in error, error


@pytest.mark.parametrize("args, message", [
    (["problem.batch_size=100000"], "invalid problem.batch_size=100000: must be an integer in [1, 1000]"),
    (["problem.hessian_draw=-1"], "invalid problem.hessian_draw=-1: must be an integer >= 0"),
    (["problem.hessian_draw=1.5"], "invalid problem.hessian_draw=1.5"),
    (["problem=fmnist_2c2d", "problem.shuffle_buffer=0"], "invalid problem.shuffle_buffer=0"),
    (["problem=cifar10_3c3d", "problem.split="], "invalid problem.split="),
    (["problem=tolstoi_char_rnn", "problem.seq_length=abc"], "invalid problem.seq_length='abc'"),
    (["problem=svhn_wrn164", "problem.bn_epsilon=0"], "invalid problem.bn_epsilon=0"),
    (["schedule=step", "schedule.gamma=2"], "schedule.gamma"),
    (["schedule=plateau", "schedule.patience=-1"], "schedule.patience"),
    (["+problem.foo=1"], "unknown setting 'foo' for problem quadratic_deep"),
    (["seed=abc"], "invalid seed='abc'"),
])
def test_through_the_cli_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    out = run_valley(*args, f"results_dir={tmp_path / 'r'}")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout and not (tmp_path / "r").exists()
