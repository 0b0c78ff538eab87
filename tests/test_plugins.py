"""Plugins from outside the repository: the README's example optimizer file, an installed entry-point package, the
run identity of a plugin's source, worker processes, the report next to the study's optimizers, and one line for
every kind of broken plugin."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, run_valley

EXAMPLE = ROOT / "examples" / "my_lion.py"
TINY = ["problem.num_epochs=3", "progress=false"]


def records(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results / "runs")


def test_example_file_trains_tunes_and_is_recorded_with_its_source_hash(tmp_path: Path) -> None:
    import hashlib

    out = run_valley("-m", f"optimizer=adam,file:{EXAMPLE}", "budget=oneshot,small", "tuning.seeds=[42,43]", *TINY,
                     f"results_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    runs = records(tmp_path)
    mine = runs[runs.optimizer == "my_lion"]
    assert len(mine) == 2 + 25 + 1 and set(mine.status) == {"completed"}  # 2 one-shot seeds, 25 trials, 1 re-run
    sha = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    for rec in mine.itertuples():
        spec = json.loads(rec.spec)
        assert spec["plugins"] == {"optimizer": {"name": "my_lion", "sha256": sha}}  # identity: name + source
        assert json.loads(rec.plugins)["optimizer"]["path"] == str(EXAMPLE)  # where it lives: recorded, not hashed
    assert "plugins" not in json.loads(runs[runs.optimizer == "adam"].spec.iloc[0])  # built-ins: unchanged ids
    cells = pd.read_parquet(tmp_path / "cells")
    assert set(cells[cells.optimizer == "my_lion"].status) == {"complete"}
    again = run_valley("-m", f"optimizer=file:{EXAMPLE}", "budget=oneshot", "tuning.seeds=[42,43]", *TINY,
                       f"results_dir={tmp_path}")
    assert again.returncode == 0 and len(records(tmp_path)) == len(runs)  # recorded: nothing trains again


def test_an_edited_plugin_is_a_new_run_never_a_reused_record(tmp_path: Path) -> None:
    plugin = tmp_path / "edited_lion.py"
    plugin.write_text(EXAMPLE.read_text())
    assert run_valley(f"optimizer=file:{plugin}", *TINY, f"results_dir={tmp_path / 'r'}").returncode == 0
    plugin.write_text(EXAMPLE.read_text().replace("1 - group[\"lr\"] * group[\"weight_decay\"]",
                                                  "1.0 - group[\"lr\"] * group[\"weight_decay\"]"))
    out = run_valley(f"optimizer=file:{plugin}", *TINY, f"results_dir={tmp_path / 'r'}")
    assert out.returncode == 0 and "already recorded" not in out.stdout
    assert len(records(tmp_path / "r")) == 2 and records(tmp_path / "r").run_id.nunique() == 2


def test_tuning_workers_load_the_plugin_in_their_own_processes(tmp_path: Path) -> None:
    out = run_valley(f"optimizer=file:{EXAMPLE}", "budget=small", "budget.samples=4", "tuning.workers=2",
                     "tuning.seeds=[42,43]", *TINY, f"results_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert len(records(tmp_path)) == 5 and set(records(tmp_path).status) == {"completed"}


def test_installed_entry_point_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "acme_optim").mkdir(parents=True)
    (site / "acme_optim" / "__init__.py").write_text(EXAMPLE.read_text())
    dist = site / "acme_optim-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-optim\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[valley.optimizers]\nacme_lion = acme_optim:MyLion\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}
    out = subprocess.run([sys.executable, "-m", "bench.cli", "optimizer=acme_lion", *TINY,
                          f"results_dir={tmp_path / 'r'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    rec = records(tmp_path / "r").iloc[0]
    assert rec.optimizer == "acme_lion" and json.loads(rec.plugins)["optimizer"]["entry_point"] == "acme_optim:MyLion"


def test_the_report_places_a_plugin_next_to_the_studys_optimizers(tmp_path: Path) -> None:
    out = run_valley("-m", f"optimizer=sgd,adam,file:{EXAMPLE}", "budget=oneshot", "tuning.seeds=[42,43,44]",
                     *TINY, f"results_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rep = subprocess.run([sys.executable, "-m", "bench.report.cli", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "my_lion" in md and "adam" in md and "sgd" in md


# ------------------------------------------------------------------------------------------------ bad plugins
GOOD_HEAD = "import torch\nfrom optimizers.base import Hyper, LogUniform, OptimizerSpec\n"
GOOD_CLASS = textwrap.dedent('''
    class Mine(OptimizerSpec):
        hyperparameters = {"learning_rate": Hyper(float, low=0.0, search=LogUniform(-4.0, 0.0))}
        defaults = {"learning_rate": 0.01}

        @classmethod
        def build(cls, params, hp):
            return torch.optim.SGD(params, lr=hp["learning_rate"])
''')


@pytest.mark.parametrize("name, source, message", [
    ("missing.py", None, "no such file"),
    ("broken.py", GOOD_HEAD + "def oops(:\n", "does not import: SyntaxError"),
    ("raises.py", GOOD_HEAD + "raise RuntimeError('nope')\n", "does not import: RuntimeError: nope (line 3)"),
    ("empty.py", GOOD_HEAD + "x = 1\n", "defines no OptimizerSpec subclass"),
    ("two.py", GOOD_HEAD + GOOD_CLASS + GOOD_CLASS.replace("Mine", "Other"), "defines 2 OptimizerSpec subclasses"),
    ("adam.py", GOOD_HEAD + GOOD_CLASS, "the name 'adam' is a built-in optimizer"),
    ("weird.py", GOOD_HEAD + "from scipy import stats\n" + GOOD_CLASS.replace(
        "search=LogUniform(-4.0, 0.0)", "search=stats.norm(0, 1)"), "has search distribution"),
    ("nodefault.py", GOOD_HEAD + GOOD_CLASS.replace('defaults = {"learning_rate": 0.01}', "defaults = {}"),
     "no default for learning_rate"),
    ("badefault.py", GOOD_HEAD + GOOD_CLASS.replace("0.01}", "-1.0}"), "its defaults are invalid: invalid learning_rate"),
    ("nobuild.py", GOOD_HEAD + GOOD_CLASS.split("    @classmethod")[0], "define build(cls, params, hp)"),
])
def test_bad_plugin_is_one_line_naming_the_file_nothing_written(tmp_path: Path, name: str, source: str | None,
                                                                message: str) -> None:
    path = tmp_path / name
    if source is not None:
        path.write_text(source)
    out = run_valley(f"optimizer=file:{path}", *TINY, f"results_dir={tmp_path / 'r'}")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert message in lines[0] and str(path.name) in lines[0], lines[0]
    assert "Traceback" not in out.stderr and not (tmp_path / "r").exists()


def test_plugin_hyperparameters_are_validated_like_built_ins(tmp_path: Path) -> None:
    out = run_valley(f"optimizer=file:{EXAMPLE}", "optimizer.beta1=1.5", *TINY, f"results_dir={tmp_path / 'r'}")
    assert out.returncode == 2 and "invalid beta1=1.5: must be a number in [0, 1)" in out.stderr
    out = run_valley(f"optimizer=file:{EXAMPLE}", "optimizer.momentum=0.9", *TINY, f"results_dir={tmp_path / 'r'}")
    assert out.returncode == 2 and "unknown hyperparameter 'momentum' for optimizer my_lion" in out.stderr
    assert not (tmp_path / "r").exists()


PROBLEM_PLUGIN = '''
import torch
from torch import nn
from problems.base import Problem, Split


class Ridge(Problem):
    """Linear least squares on fixed synthetic data: a problem plugin in a dozen lines."""
    defaults = {"batch_size": 32, "num_epochs": 3, "weight_decay": 0.0, "noise": 0.1}

    def load_data(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 256, 8, generator=g)
        w = torch.arange(8.0)
        self.data = {s: Split(x[i], x[i] @ w + self.settings["noise"] * torch.randn(256, generator=g))
                     for i, s in enumerate(("train", "valid", "test"))}

    @classmethod
    def split_sizes(cls, settings):  # optional: lets valley reject a batch larger than a split before training
        return {"train": 256, "valid": 256, "test": 256}

    def build_model(self):
        return nn.Linear(8, 1)

    def compute(self, model, batch, training):
        x, y = batch
        return (model(x).squeeze(-1) - y).square().mean(), None
'''

SCHEDULE_PLUGIN = '''
from bench.schedules.base import Param, Schedule
from optimizers.base import Hyper


class Halving(Schedule):
    """f(t) = 2^(-t / half_life)."""
    parameters = {"half_life": Param(2.0, Hyper(float, low=0.0, low_open=True))}

    def law(self, t):
        return 2.0 ** (-t / self.half_life)
'''


def test_problem_and_schedule_plugins(tmp_path: Path) -> None:
    (tmp_path / "ridge.py").write_text(PROBLEM_PLUGIN)
    (tmp_path / "halving.py").write_text(SCHEDULE_PLUGIN)
    out = run_valley(f"problem=file:{tmp_path / 'ridge.py'}", f"schedule=file:{tmp_path / 'halving.py'}",
                     "schedule.half_life=4", "optimizer=sgd", "problem.noise=0.5", "progress=false",
                     f"results_dir={tmp_path / 'r'}")
    assert out.returncode == 0, out.stderr
    rec = records(tmp_path / "r").iloc[0]
    spec = json.loads(rec.spec)
    assert rec.problem == "ridge" and rec.schedule == "halving" and rec.steps == 3 * 8
    assert spec["problem_settings"]["noise"] == 0.5 and spec["schedule_settings"]["half_life"] == 4.0
    assert set(spec["plugins"]) == {"problem", "schedule"} and rec.final_test_loss < rec.final_train_loss * 100
    bad = run_valley(f"problem=file:{tmp_path / 'ridge.py'}", "problem.batch_size=1000", "optimizer=sgd",
                     f"results_dir={tmp_path / 'r2'}")
    assert bad.returncode == 2 and "must be an integer in [1, 256]" in bad.stderr  # validated like a built-in's
