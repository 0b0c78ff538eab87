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


# ------------------------------------------------------------------------------------------- re-run settings
def p1_epoch0(draw: int, batch_size: int = 128) -> tuple[float, float]:
    """Reference: the epoch-0 test and valid loss of θ = 1 under Hessian draw k, straight from the problem module
    (float32 H as TF held it; the mean over the evaluated rows of 0.5 (1 − x)ᵀ H (1 − x))."""
    from problems.quadratic_deep import dataset, hessian

    h = hessian(draw).astype(np.float32).astype(np.float64)
    rows = (1000 // batch_size) * batch_size
    out = []
    for split in ("test", "valid"):
        d = 1.0 - dataset(split)[:rows].astype(np.float64)
        out.append(float(np.mean(0.5 * np.einsum("ij,jk,ik->i", d, h, d))))
    return out[0], out[1]


def cosine_factors(n: int) -> list[float]:
    return [0.5 * (1.0 + np.cos(np.pi * e / n)) for e in range(1, n + 1)]


def p1_json(folder: str, seed: int, hp: dict, draw: int | None, rng: np.random.Generator, *,
            training_params: dict | None, n: int = N, diverge_at: int | None = None, extra: dict | None = None) -> dict:
    """A quadratic_deep result file whose epoch-0 losses are those of Hessian draw ``draw`` (None: of no draw).
    ``diverge_at``: the evaluation that went non-finite (``Infinity``), the rest padded with epoch-0 values."""
    t0, v0 = p1_epoch0(draw) if draw is not None else (321.0, 322.0)
    series = {"train_losses": [t0 + 1.5] + list(np.linspace(200, 90, n) + rng.standard_normal(n)),
              "valid_losses": [v0] + list(np.linspace(201, 92, n) + rng.standard_normal(n)),
              "test_losses": [t0] + list(np.linspace(202, 93, n) + rng.standard_normal(n))}
    mb = [float(v) for v in np.linspace(300, 90, n)]
    if diverge_at is not None:
        for k, vals in series.items():
            series[k] = vals[:diverge_at] + [float("inf")] + [vals[0]] * (n - diverge_at)
        mb = mb[:diverge_at] + [float("nan")] + [mb[0]] * (n - diverge_at - 1)
    return {"testproblem": "quadratic_deep", "batch_size": 128, "num_epochs": n, "random_seed": seed, "l2_reg": None,
            "optimizer_name": folder, "optimizer_hyperparams": {**hp, "use_locking": False, **(extra or {})},
            "training_params": training_params, **series, "minibatch_train_losses": [v for v in mb for _ in (0, 1)]}


def test_draw_table_is_the_problems_stream() -> None:
    table = import_cv.draw_losses(6)
    for k in range(6):
        np.testing.assert_allclose(table[k], p1_epoch0(k), rtol=1e-12)
    # the published seed-42 values (protocol §1 P1) and the k = 1 one-shot Adam seed-43 file
    assert table[0, 0] == pytest.approx(353.44676426478793, rel=1e-7)
    assert table[0, 1] == pytest.approx(353.8127659388951, rel=1e-7)
    assert table[1, 0] == pytest.approx(347.35823, rel=1e-7) and table[1, 1] == pytest.approx(349.22410, rel=1e-7)


def test_identify_draw() -> None:
    for k in (0, 1, 4, 37):
        t, v = p1_epoch0(k)
        m = import_cv.identify_draw(t * (1 + 3e-7), v * (1 - 3e-7))  # float32-level differences
        assert m.draw == k and m.issue is None and m.searched == import_cv.DRAWS_SEARCHED
    t, v = p1_epoch0(2)
    miss = import_cv.identify_draw(t * (1 + 1e-4), v)
    assert miss.draw is None and "no Hessian draw among the first 300" in miss.issue and "nearest: draw 2" in miss.issue
    assert import_cv.identify_draw(float("inf"), v).draw is None
    assert import_cv.identify_draw(*p1_epoch0(40), searched=30).draw is None  # beyond the searched draws


LR_FULL = 0.0031489116479568613  # sample 0's learning rate; its folder name says 3.148911648e-03
MOM_FULL = 0.7114476009343418


@pytest.fixture()
def p1_tree(tmp_path: Path) -> dict:
    rng = np.random.default_rng(1)
    root = tmp_path / "cv"
    hp = {"learning_rate": LR_FULL, "momentum": MOM_FULL}
    files = {}
    constant_fields = [None, {"lr_sched_epochs": None, "lr_sched_factors": None},
                       {"lr_sched_epochs": [], "lr_sched_factors": []}]
    for i, seed in enumerate((42, 43, 44)):      # constant: three spellings of "no schedule"; draws 0, 1, 2
        d = p1_json("MomentumOptimizer", seed, hp, i, rng, training_params=constant_fields[i],
                    extra={"use_nesterov": False})
        files[("constant", seed)] = write(root, "oneshot", "none", "quadratic_deep", "MomentumOptimizer", hp, seed,
                                          f"2020-02-12-22-{seed - 40:02d}-00", d)
    cos = {"lr_sched_epochs": list(range(1, N + 1)), "lr_sched_factors": cosine_factors(N)}
    files[("cosine", 42)] = write(root, "oneshot", "cosine", "quadratic_deep", "MomentumOptimizer", hp, 42,
                                  "2020-02-13-10-00-00", p1_json("MomentumOptimizer", 42, hp, 5, rng,
                                                                 training_params=cos, diverge_at=3))
    files[("cosine", 43)] = write(root, "oneshot", "cosine", "quadratic_deep", "MomentumOptimizer", hp, 43,
                                  "2020-02-13-10-01-00", p1_json("MomentumOptimizer", 43, hp, None, rng,
                                                                 training_params=cos))
    bad = {"lr_sched_epochs": list(range(1, N + 1)), "lr_sched_factors": [0.5] * N}  # not our cosine
    files[("ltr", 42)] = write(root, "oneshot", "ltr", "quadratic_deep", "MomentumOptimizer", hp, 42,
                               "2020-02-14-10-00-00", p1_json("MomentumOptimizer", 42, hp, 0, rng, training_params=bad,
                                                              extra={"use_nesterov": True, "frobnicate": 3}))
    return {"root": root, "files": files}


def _spec(runs: pd.DataFrame, schedule: str, seed: int) -> tuple[pd.Series, dict]:
    row = runs[(runs["schedule"] == schedule) & (runs["seed"] == seed)].iloc[0]
    return row, json.loads(row["spec"])


def test_import_records_the_rerun_settings(p1_tree: dict, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    rep = import_cv.import_tree(p1_tree["root"], out)
    assert rep.runs == 6 and not rep.skipped
    runs = read_runs(out)
    # the folder name is rounded; the re-run gets the JSON's full-precision values, TF-only flags dropped
    assert "3.148911648e-03" in str(p1_tree["files"][("constant", 42)])
    for seed, draw in ((42, 0), (43, 1), (44, 2)):
        row, spec = _spec(runs, "constant", seed)
        rerun = spec["rerun"]
        assert rerun["hyperparameters"] == {"learning_rate": LR_FULL, "momentum": MOM_FULL}
        assert rerun["problem_settings"] == {"batch_size": 128, "num_epochs": N, "hessian_draw": draw}
        assert rerun["issues"] == [] and rerun["seed"] == seed and rerun["schedule"] == "constant"
        assert json.loads(row["problem_settings"])["hessian_draw"] == draw
        assert spec["hessian_draw"] == {"draw": draw, "searched": import_cv.DRAWS_SEARCHED}
    # Infinity after divergence, the rest padded: diverged, draw found from epoch 0, schedule checked
    row, spec = _spec(runs, "cosine", 42)
    assert row["status"] == "diverged" and row["epochs_completed"] == 2
    assert spec["rerun"]["problem_settings"]["hessian_draw"] == 5 and spec["rerun"]["issues"] == []
    # no draw matched: recorded as such
    row, spec = _spec(runs, "cosine", 43)
    assert json.loads(row["problem_settings"])["hessian_draw"] is None
    assert spec["rerun"]["problem_settings"]["hessian_draw"] is None
    assert len(spec["rerun"]["issues"]) == 1 and "no Hessian draw" in spec["rerun"]["issues"][0]
    # not our schedule's factors, a flag we do not implement, a key we do not have
    _, spec = _spec(runs, "trapezoidal", 42)
    issues = " | ".join(spec["rerun"]["issues"])
    assert "use_nesterov=True" in issues and "frobnicate=3" in issues
    assert "differ from our trapezoidal schedule's (epoch 1: 0.5 vs " in issues


def test_published_factors_hold_until_the_next_listed_epoch() -> None:
    assert import_cv._factors({"lr_sched_epochs": [2, 4], "lr_sched_factors": [0.5, 0.25]}, 5) == (
        [1.0, 0.5, 0.5, 0.25, 0.25], None)
    assert import_cv._factors({"lr_sched_epochs": None, "lr_sched_factors": []}, 3) == (None, None)
    assert import_cv._factors({"lr_sched_epochs": [1], "lr_sched_factors": None}, 3)[1] is not None
