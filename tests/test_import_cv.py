"""valley-import-cv on a small tree written here in exactly the published format (§7.1 layout, §7.2 JSON)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import import_cv
from bench.analysis.load import load
from bench.records import read_runs

N = 6  # epochs: every list has N + 1 entries


def float2str(x: float) -> str:
    """DeepOBS's setting-folder float format: '{:.10e}' with the mantissa's trailing zeros stripped."""
    mantissa, exponent = f"{x:.10e}".split("e")
    return f"{mantissa.rstrip('0')}e{exponent}"


def setting_folder(hp: dict, num_epochs: int = N, batch_size: int = 128) -> str:
    parts = [f"num_epochs__{num_epochs}__batch_size__{batch_size}"]
    for k in sorted(hp):
        v = hp[k]
        parts.append(f"{k}__{v}" if isinstance(v, (bool, int)) else f"{k}__{float2str(v)}")
    return "__".join(parts)


def test_float2str_matches_the_published_examples() -> None:
    assert float2str(1e-3) == "1.e-03"
    assert float2str(0.999) == "9.99e-01"
    assert float2str(3.148911648e-03) == "3.148911648e-03"
    assert setting_folder({"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8,
                           "use_locking": False}, 100) == (
        "num_epochs__100__batch_size__128__beta1__9.e-01__beta2__9.99e-01__epsilon__1.e-08__learning_rate__1.e-02"
        "__use_locking__False")


def curve(start: float, end: float, rng: np.random.Generator) -> list[float]:
    return list(np.linspace(start, end, N + 1) + 0.01 * rng.standard_normal(N + 1))


def run_json(problem: str, folder: str, seed: int, hp: dict, rng: np.random.Generator, *, accuracy: bool,
             diverge_at: int | None = None, schedule_factors: list[float] | None = None) -> dict:
    """One result file; ``diverge_at`` = epoch n in which the minibatch loss went non-finite (DeepOBS abort)."""
    d = {"testproblem": problem, "batch_size": 128, "num_epochs": N, "random_seed": seed, "l2_reg": None,
         "optimizer_name": folder, "optimizer_hyperparams": {**hp, "use_locking": False},
         "training_params": {"lr_sched_epochs": list(range(1, N + 1)) if schedule_factors else [],
                             "lr_sched_factors": schedule_factors or []}}
    series = {"train_losses": curve(350, 90, rng), "valid_losses": curve(352, 92, rng),
              "test_losses": curve(353, 93, rng)}
    if accuracy:
        series.update(train_accuracies=curve(0.1, 0.9, rng), valid_accuracies=curve(0.1, 0.88, rng),
                      test_accuracies=curve(0.1, 0.87, rng))
    mb = [float(v) for v in np.linspace(2.3, 0.3, 7 * N // 1)]
    mb = [v for v in mb for _ in (0, 1)]  # the runner appends each logged loss twice
    if diverge_at is not None:
        for k, vals in series.items():
            series[k] = vals[: diverge_at + 1] + [vals[0]] * (N - diverge_at)
        mb = mb[: 2 * (diverge_at + 1)] + [mb[0]] * (N - diverge_at)
    d.update(series)
    d["minibatch_train_losses"] = mb
    return d


def write(root: Path, budget: str, schedule: str, problem: str, folder: str, hp: dict, seed: int, stamp: str,
          content: dict | str) -> Path:
    path = root / "results" / budget / schedule / problem / folder / setting_folder(hp)
    path.mkdir(parents=True, exist_ok=True)
    f = path / f"random_seed__{seed}__{stamp}.json"
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    return f


ADAM = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
# large-budget momentum samples; sample order = timestamp order, which differs from the folder names' order
SAMPLES = [({"learning_rate": 3.148911648e-03, "momentum": 0.71144760093}, "2020-05-11-10-00-00"),
           ({"learning_rate": 2.4637685959e-02, "momentum": 5.829384543e-01}, "2020-05-11-10-05-00"),
           ({"learning_rate": 1.1040511903e-02, "momentum": 0.1}, "2020-05-11-10-10-00"),
           ({"learning_rate": 7.5568101413e-01, "momentum": 2.1154290797e-01}, "2020-05-11-10-15-00")]
WINNER = 2
DIVERGED_SEED, DIVERGE_AT = 47, 3


@pytest.fixture()
def tree(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    root = tmp_path / "cv"
    published = {}
    for seed in range(42, 52):  # one-shot Adam, quadratic_deep (no accuracy keys), one diverged seed
        d = run_json("quadratic_deep", "AdamOptimizer", seed, ADAM, rng, accuracy=False,
                     diverge_at=DIVERGE_AT if seed == DIVERGED_SEED else None)
        published[seed] = d
        write(root, "oneshot", "none", "quadratic_deep", "AdamOptimizer", ADAM, seed,
              f"2020-02-12-22-{seed - 40:02d}-00", d)
    for i, (hp, stamp) in enumerate(SAMPLES):  # large budget momentum: 4 samples, #2 re-run with seeds 43..51
        write(root, "large_budget", "none", "quadratic_deep", "MomentumOptimizer", hp, 42, stamp,
              run_json("quadratic_deep", "MomentumOptimizer", 42, hp, rng, accuracy=False))
    for seed in range(43, 52):
        hp = SAMPLES[WINNER][0]
        write(root, "large_budget", "none", "quadratic_deep", "MomentumOptimizer", hp, seed,
              f"2020-05-12-10-{seed - 40:02d}-00",
              run_json("quadratic_deep", "MomentumOptimizer", seed, hp, rng, accuracy=False))
    sgd = {"learning_rate": 1e-2}
    factors = [0.1 * k for k in range(1, N + 1)]
    for seed in range(42, 52):  # one-shot SGD with accuracies, trapezoidal schedule folder 'ltr'
        write(root, "oneshot", "ltr", "fmnist_2c2d", "GradientDescentOptimizer", sgd, seed,
              f"2020-03-01-10-{seed - 40:02d}-00",
              run_json("fmnist_2c2d", "GradientDescentOptimizer", seed, sgd, rng, accuracy=True,
                       schedule_factors=factors))
    good = json.dumps(run_json("quadratic_deep", "MomentumOptimizer", 42, SAMPLES[0][0], rng, accuracy=False))
    bad_json = write(root, "large_budget", "none", "quadratic_deep", "MomentumOptimizer",
                     {"learning_rate": 0.5, "momentum": 0.5}, 42, "2020-05-11-11-00-00", good[: len(good) // 2])
    short = run_json("quadratic_deep", "MomentumOptimizer", 42, SAMPLES[0][0], rng, accuracy=False)
    short["test_losses"] = short["test_losses"][:-1]
    bad_len = write(root, "large_budget", "none", "quadratic_deep", "MomentumOptimizer",
                    {"learning_rate": 0.25, "momentum": 0.5}, 42, "2020-05-11-11-05-00", short)
    return {"root": root, "published": published, "malformed": [bad_json, bad_len]}


def test_import_tables(tree: dict, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    rep = import_cv.import_tree(tree["root"], out)
    assert rep.files == 10 + 4 + 9 + 10 + 2
    assert rep.runs == 33 and rep.diverged == 1 and rep.cells == 3
    skipped = {Path(p).name: why for p, why in rep.skipped}
    assert set(skipped) == {f.name for f in tree["malformed"]}
    assert "JSON" in skipped[tree["malformed"][0].name] and "7" in skipped[tree["malformed"][1].name]

    runs = read_runs(out)
    assert len(runs) == 33 and set(runs["source"]) == {"crowded_valley"}
    assert set(runs["optimizer"]) == {"adam", "momentum", "sgd"}
    assert set(runs["schedule"]) == {"constant", "trapezoidal"}
    adam = runs[runs["optimizer"] == "adam"]
    assert json.loads(adam["hyperparameters"].iloc[0]) == ADAM  # use_locking dropped, names kept
    assert (adam["metric"] == "loss").all() and adam["final_test_accuracy"].isna().all()
    sgd = runs[runs["optimizer"] == "sgd"]
    assert (sgd["metric"] == "accuracy").all()
    assert json.loads(sgd["schedule_settings"].iloc[0])["lr_sched_factors"][0] == pytest.approx(0.1)

    curves = pd.read_parquet(out / "curves")
    done = adam[adam["seed"] == 42]["run_id"].iloc[0]
    c = curves[curves["run_id"] == done]
    assert sorted(c["epoch"].unique()) == list(range(N + 1))          # N + 1 evaluations
    assert set(c["metric"]) == {"loss"} and len(c) == 3 * (N + 1)
    pub = tree["published"][42]
    got = c[c["split"] == "test"].sort_values("epoch")["value"].to_numpy()
    np.testing.assert_allclose(got, pub["test_losses"])
    s = curves[curves["run_id"] == sgd["run_id"].iloc[0]]
    assert len(s) == 6 * (N + 1) and set(s["metric"]) == {"loss", "accuracy"}

    # the padded run: diverged, measured epochs only, final = last measured value
    div = adam[adam["seed"] == DIVERGED_SEED].iloc[0]
    assert div["status"] == "diverged" and div["epochs_completed"] == DIVERGE_AT
    pub = tree["published"][DIVERGED_SEED]
    assert div["final_test_loss"] == pytest.approx(pub["test_losses"][DIVERGE_AT])
    assert sorted(curves.loc[curves["run_id"] == div["run_id"], "epoch"].unique()) == list(range(DIVERGE_AT + 1))


def test_cells_budget_mapping_and_rerun_setting(tree: dict, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    import_cv.import_tree(tree["root"], out)
    cells = pd.read_parquet(out / "cells")
    assert set(cells["budget"]) == {"oneshot", "medium"}            # large_budget → medium
    runs = read_runs(out).set_index("run_id")
    mom = cells[cells["optimizer"] == "momentum"].iloc[0]
    assert mom["budget"] == "medium" and mom["num_samples"] == 4
    # trials in sample (timestamp) order; the winner is the setting with seeds ≥ 43
    trial_lr = [json.loads(runs.loc[r, "hyperparameters"])["learning_rate"] for r in mom["trial_run_ids"]]
    assert trial_lr == pytest.approx([hp["learning_rate"] for hp, _ in SAMPLES])
    assert mom["winner_sample"] == WINNER
    assert json.loads(mom["winner_hyperparameters"]) == pytest.approx(SAMPLES[WINNER][0])
    assert list(mom["seeds"]) == list(range(42, 52)) and mom["status"] == "complete"
    assert mom["run_ids"][0] == mom["trial_run_ids"][WINNER]        # seed 42 of the winner is its tuning run
    adam = cells[cells["optimizer"] == "adam"].iloc[0]
    assert len(adam["trial_run_ids"]) == 0 and adam["winner_sample"] == -1 and adam["n_diverged"] == 1
    # the published numbers: mean and population std of the stored final values (padding included)
    stored = [tree["published"][s]["test_losses"][-1] for s in range(42, 52)]
    assert stored[DIVERGED_SEED - 42] == tree["published"][DIVERGED_SEED]["test_losses"][0]
    assert adam["test_mean"] == pytest.approx(np.mean(stored))
    assert adam["test_std"] == pytest.approx(np.std(stored))


def test_reimport_is_idempotent(tree: dict, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    import_cv.import_tree(tree["root"], out, batch=4)
    first = [pd.read_parquet(out / t) for t in ("runs", "curves", "cells")]
    rep = import_cv.import_tree(tree["root"], out, batch=4)
    again = [pd.read_parquet(out / t) for t in ("runs", "curves", "cells")]
    assert [len(t) for t in first] == [len(t) for t in again] == [33, len(first[1]), 3]
    assert set(first[0]["run_id"]) == set(again[0]["run_id"])
    assert rep.runs == 33
    # a folder whose files are gone on the next import takes its runs, curves and cell with it
    for f in (tree["root"] / "results" / "oneshot" / "ltr").rglob("*.json"):
        f.unlink()
    import_cv.import_tree(tree["root"], out, batch=4)
    runs, cells = pd.read_parquet(out / "runs"), pd.read_parquet(out / "cells")
    assert len(runs) == 23 and set(runs["optimizer"]) == {"adam", "momentum"}
    assert len(cells) == 2 and set(pd.read_parquet(out / "curves")["run_id"]) == set(runs["run_id"])


def test_cli_and_repository_root(tree: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "imported"
    assert import_cv.main([str(tree["root"]), "--results-dir", str(out)]) == 0  # the clone's root, not results/
    captured = capsys.readouterr()
    assert "33 runs (1 diverged), 3 cells" in captured.out
    assert "skipped 2" in captured.err
    assert import_cv.main([str(tmp_path / "nowhere"), "--results-dir", str(out)]) == 2


def test_imported_results_load_with_both_divergence_rules(tree: dict, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    import_cv.import_tree(tree["root"], out)
    pub = tree["published"]
    pad = load(out, diverged="pad")
    cell = pad.cells[pad.cells["optimizer"] == "adam"].iloc[0]
    stored = [pub[s]["test_losses"][-1] for s in range(42, 52)]
    assert cell["test_mean"] == pytest.approx(np.mean(stored))       # padding reproduces the published mean
    worst = load(out, diverged="worst")
    w = worst.runs.set_index("seed").loc[DIVERGED_SEED]
    w = w[w["optimizer"] == "adam"].iloc[0] if isinstance(w, pd.DataFrame) else w
    finite = worst.runs.loc[(worst.runs["problem"] == "quadratic_deep") & ~worst.runs["diverged"], "test"]
    assert w["test"] == pytest.approx(max(finite.max(), pub[DIVERGED_SEED]["test_losses"][0]))


def test_report_renders_from_an_imported_tree(tree: dict, tmp_path: Path) -> None:
    from bench.analysis.report import build

    out = tmp_path / "imported"
    import_cv.import_tree(tree["root"], out)
    index = build(out)
    html = index.read_text()
    assert "source: crowded_valley" in html and "quadratic_deep" in html
    main = pd.read_csv(out / "report" / "tables" / "main_table.csv")
    cell = main[(main["optimizer"] == "momentum") & (main["budget"] == "medium")].iloc[0]
    assert cell["n_seeds"] == 10 and cell["num_samples"] == 4
