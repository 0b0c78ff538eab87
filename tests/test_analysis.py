"""bench.analysis statistics, tables and verdict against hand-computed values and brute-force references."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as sps

from bench.analysis import stats, tables, verdict
from bench.analysis.load import load
from bench.records import CELLS_SCHEMA, CURVES_SCHEMA, RUNS_SCHEMA, write_atomic


# ------------------------------------------------------------------------------------------------ statistics
def test_mean_std_is_population_std() -> None:
    mean, std = stats.mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(1.25))  # ddof=0: sqrt(((1.5²+0.5²)·2)/4); ddof=1 would be 1.29


def test_best_of_k_weights_small_case() -> None:
    # n=3, k=2: subsets {1,2},{1,3},{2,3}: rank 1 wins two of three, rank 2 one, rank 3 never
    np.testing.assert_allclose(stats.best_of_k_weights(3, 2), [2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(stats.best_of_k_weights(5, 1), [0.2] * 5)
    np.testing.assert_allclose(stats.best_of_k_weights(5, 5), [1, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        stats.best_of_k_weights(3, 4)


def brute_best_of_k(valid: list[float], test: list[float], k: int, higher: bool) -> float:
    """Average over all k-subsets of the test value of the best-validation member (earlier index on ties)."""
    vals = []
    for subset in itertools.combinations(range(len(valid)), k):
        key = (lambda i: (-valid[i], i)) if higher else (lambda i: (valid[i], i))
        vals.append(test[min(subset, key=key)])
    return float(np.mean(vals))


@pytest.mark.parametrize("higher", [True, False])
def test_expected_best_of_k_equals_enumeration(higher: bool) -> None:
    valid = [0.5, 0.9, 0.7, 0.9, 0.1, 0.6, 0.7]     # ties at 0.9 and 0.7: the earlier sample wins
    test = [0.52, 0.85, 0.71, 0.95, 0.12, 0.58, 0.69]
    ks = list(range(1, len(valid) + 1))
    got = stats.expected_best_of_k(valid, test, ks, higher)
    want = [brute_best_of_k(valid, test, k, higher) for k in ks]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(np.mean(test))     # k = 1: a random trial
    best = int(np.argmax(valid)) if higher else int(np.argmin(valid))
    assert got[-1] == pytest.approx(test[best])       # k = n: the tuning winner


def test_best_of_k_distribution_and_quantiles() -> None:
    vals, w = stats.best_of_k_distribution([3.0, 1.0, 2.0], [30.0, 10.0, 20.0], 2, higher=True)
    np.testing.assert_allclose(vals, [30.0, 20.0, 10.0])
    np.testing.assert_allclose(w, [2 / 3, 1 / 3, 0.0])
    assert stats.discrete_quantile(vals, w, 0.1) == 20.0
    assert stats.discrete_quantile(vals, w, 0.5) == 30.0
    # P(X ≥ Y) with X ~ {30: 2/3, 20: 1/3}, Y uniform on {25, 15}: 2/3·1 + 1/3·1/2
    assert stats.prob_at_least_as_good(vals, w, np.array([25.0, 15.0]), np.array([0.5, 0.5]), True) == \
        pytest.approx(2 / 3 + 1 / 6)


def test_performance_profile_two_problems() -> None:
    costs = pd.DataFrame({"A": [1.0, 3.0], "B": [2.0, 1.5], "C": [4.0, np.nan]}, index=["P1", "P2"])
    ratios = stats.performance_ratios(costs)
    np.testing.assert_allclose(ratios["A"], [1.0, 2.0])
    np.testing.assert_allclose(ratios["B"], [2.0, 1.0])
    assert ratios.loc["P2", "C"] == np.inf
    prof = stats.performance_profile(costs, [1.0, 1.5, 2.0, 4.0, 100.0])
    np.testing.assert_allclose(prof["A"], [0.5, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(prof["B"], [0.5, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(prof["C"], [0.0, 0.0, 0.0, 0.5, 0.5])  # never solves P2
    assert stats.to_cost([0.9], "accuracy")[0] == pytest.approx(0.1)


def test_prob_beats_counts_ties_half() -> None:
    assert stats.prob_beats([1, 2, 3], [2, 2], higher=True) == pytest.approx(3 / 6)
    assert stats.prob_beats([3, 4], [1, 2, 3], higher=True) == pytest.approx(5.5 / 6)
    assert stats.prob_beats([3, 4], [1, 2, 3], higher=False) == pytest.approx(0.5 / 6)


def test_relative_improvement_sign_corrected() -> None:
    assert stats.relative_improvement(0.8, 0.88, higher=True) == pytest.approx(0.1)
    assert stats.relative_improvement(100.0, 90.0, higher=False) == pytest.approx(0.1)
    assert stats.relative_improvement(100.0, 110.0, higher=False) == pytest.approx(-0.1)


def test_welch_one_sided_against_hand_formula_and_scipy() -> None:
    a, b = np.array([10.0, 11.0, 12.0]), np.array([8.0, 9.0, 13.0, 6.0])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4                 # 1/3 and 8.6667/4
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    p = stats.welch_one_sided(a, b, higher=True)
    assert p == pytest.approx(sps.t.sf(t, df))
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    assert stats.welch_one_sided(-a, -b, higher=False) == pytest.approx(p)
    assert stats.welch_one_sided([1.0, 1.0], [0.0, 0.0], True) == 0.0     # constant and different
    assert stats.welch_one_sided([1.0, 1.0], [1.0, 1.0], True) == 1.0
    assert math.isnan(stats.welch_one_sided([1.0], [0.0, 0.5], True))


def test_holm_adjustment() -> None:
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = stats.holm([np.nan, 0.02])
    assert math.isnan(out[0]) and out[1] == pytest.approx(0.02)


def test_bootstrap_ci() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    lo, hi = stats.bootstrap_ci(x, seed=1)
    assert lo < x.mean() < hi and 3.0 < lo and hi < 8.0
    assert stats.bootstrap_ci(x, seed=1) == (lo, hi)
    assert stats.bootstrap_ci([2.0] * 5) == (2.0, 2.0)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([1.0]))


# ------------------------------------------------------------------------------------- constructed results
class Study:
    """A hand-made results set: cells with given seed values, written through the real Parquet schemas."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: list[dict] = []
        self.curves: list[tuple] = []
        self.cells: list[dict] = []

    def run(self, key: tuple, seed: int, test: float, valid: float | None = None, *, metric: str = "loss",
            status: str = "completed", epoch0: float | None = None, wall: float = 1.0) -> str:
        rid = f"r{len(self.runs):05d}"
        problem, optimizer, schedule = key[:3]
        valid = test if valid is None else valid
        self.runs.append({"run_id": rid, "source": "valley", "problem": problem, "optimizer": optimizer,
                          "schedule": schedule, "seed": seed, "status": status, "metric": metric,
                          f"final_test_{metric}": test, f"final_valid_{metric}": valid, "num_epochs": 2,
                          "wall_time_s": wall, "grad_evals": 10.0, "hyperparameters": "{}"})
        if epoch0 is not None:
            self.curves += [(rid, 0, "test", metric, epoch0), (rid, 0, "valid", metric, epoch0)]
        return rid

    def cell(self, problem: str, optimizer: str, schedule: str, budget: str, tests: list[float], *,
             metric: str = "loss", trials: list[tuple[float, float]] = (), **kw) -> None:
        key = (problem, optimizer, schedule)
        trial_ids = [self.run(key, 42, t, v, metric=metric) for v, t in trials]
        ids = [self.run(key, 42 + i, t, metric=metric, **kw) for i, t in enumerate(tests)]
        self.cells.append({"cell_id": f"c{len(self.cells)}", "source": "valley", "problem": problem,
                           "optimizer": optimizer, "schedule": schedule, "budget": budget,
                           "num_samples": len(trial_ids), "selection": "final", "metric": metric,
                           "winner_sample": 0 if trial_ids else -1, "winner_hyperparameters": json.dumps({}),
                           "trial_run_ids": trial_ids, "run_ids": ids, "seeds": list(range(42, 42 + len(ids))),
                           "n_seeds": len(ids), "n_diverged": 0, "test_mean": None, "test_std": None,
                           "status": "complete", "updated_at": None})

    def write(self) -> Path:
        runs = pa.Table.from_pylist([{k: r.get(k) for k in RUNS_SCHEMA.names} for r in self.runs], schema=RUNS_SCHEMA)
        write_atomic(runs, self.root / "runs" / "all.parquet")
        write_atomic(pa.Table.from_pylist(self.cells, schema=CELLS_SCHEMA), self.root / "cells" / "all.parquet")
        if self.curves:
            cols = list(zip(*self.curves))
            curves = pa.table(dict(zip(CURVES_SCHEMA.names, cols)), schema=CURVES_SCHEMA)
            write_atomic(curves, self.root / "curves" / "all.parquet")
        return self.root


def test_load_mean_std_and_divergence_rules(tmp_path: Path) -> None:
    s = Study(tmp_path)
    s.cell("quadratic_deep", "adam", "constant", "oneshot", [90.0, 92.0, 94.0])
    s.cell("quadratic_deep", "sgd", "constant", "oneshot", [100.0, 110.0])
    s.cell("quadratic_deep", "sgd", "constant", "small", [math.nan], status="diverged", epoch0=353.0)
    s.cell("fmnist_2c2d", "sgd", "constant", "oneshot", [0.9, math.nan], metric="accuracy", status="diverged",
           epoch0=0.1)
    root = s.write()
    worst = load(root)
    cells = worst.cells.set_index(["problem", "optimizer", "budget"])
    assert cells.loc[("quadratic_deep", "adam", "oneshot"), "test_mean"] == pytest.approx(92.0)
    assert cells.loc[("quadratic_deep", "adam", "oneshot"), "test_std"] == pytest.approx(math.sqrt(8 / 3))
    # worst outcome: a loss gets the worst loss seen on the problem (epoch-0 353 > finite finals), accuracy 0
    assert cells.loc[("quadratic_deep", "sgd", "small"), "test_mean"] == pytest.approx(353.0)
    assert cells.loc[("fmnist_2c2d", "sgd", "oneshot"), "test_mean"] == pytest.approx(0.0)
    assert cells.loc[("fmnist_2c2d", "sgd", "oneshot"), "n_diverged"] == 2
    pad = load(root, diverged="pad").cells.set_index(["problem", "optimizer", "budget"])
    assert pad.loc[("fmnist_2c2d", "sgd", "oneshot"), "test_mean"] == pytest.approx(0.1)
    assert any("diverged" in n for n in worst.notes)


def test_verdict_single_best_when_one_optimizer_dominates(tmp_path: Path) -> None:
    s = Study(tmp_path)
    rng = np.random.default_rng(0)
    for p, metric in (("quadratic_deep", "loss"), ("mnist_vae", "loss"), ("fmnist_2c2d", "accuracy")):
        sign = 1.0 if metric == "accuracy" else -1.0
        for opt, level in (("adam", 1.0), ("sgd", 0.0), ("momentum", 0.2)):
            base = 0.8 if metric == "accuracy" else 100.0
            scale = 0.05 if metric == "accuracy" else 5.0
            vals = base + sign * level * scale + 0.001 * scale * rng.standard_normal(10)
            s.cell(p, opt, "constant", "large", list(vals), metric=metric)
    res = load(s.write())
    main = tables.main_table(res, n_boot=200)
    per = verdict.per_problem(res, main)
    summ = verdict.summary(per, main)
    row = summ.iloc[0]
    assert row["no_single_best"] is not None and not row["no_single_best"]
    assert row["tied_everywhere"] == "adam"
    assert set(per.loc[per["best"], "optimizer"]) == {"adam"}
    assert "does NOT hold" in verdict.headline(summ, ("large", "constant"))
    comp = verdict.competitive(per)
    assert comp.loc[comp["optimizer"] == "adam", "fraction"].iloc[0] == 1.0
    assert list(comp.loc[comp["reduced_set"], "optimizer"]) == ["adam"]


def test_verdict_no_single_best_when_winners_differ(tmp_path: Path) -> None:
    s = Study(tmp_path)
    rng = np.random.default_rng(1)
    winners = {"quadratic_deep": "adam", "mnist_vae": "sgd", "fmnist_vae": "momentum"}
    for p, w in winners.items():
        for opt in ("adam", "sgd", "momentum"):
            vals = (90.0 if opt == w else 100.0) + rng.standard_normal(10)
            s.cell(p, opt, "constant", "large", list(vals))
    res = load(s.write())
    main = tables.main_table(res, n_boot=200)
    per = verdict.per_problem(res, main)
    summ = verdict.summary(per, main)
    assert bool(summ.iloc[0]["no_single_best"]) is True and summ.iloc[0]["tied_everywhere"] == ""
    best = per[per["best"]].set_index("problem")["optimizer"].to_dict()
    assert best == winners
    # every loser is 10 std below the winner: significant after Holm, so tied sets are singletons
    assert per.groupby("problem")["tied"].sum().tolist() == [1, 1, 1]
    assert "HOLDS" in verdict.headline(summ, ("large", "constant"))


def test_tied_with_best_keeps_noisy_rival_and_untestable() -> None:
    t = verdict.tied_with_best({"a": np.array([1.0, 1.1, 0.9]), "b": np.array([0.95, 1.2, 0.7]),
                                "c": np.array([0.2, 0.21, 0.19]), "d": np.array([0.1])}, higher=True)
    t = t.set_index("optimizer")
    assert t.loc["a", "best"] and t.loc["b", "tied"] and not t.loc["c", "tied"]
    assert t.loc["d", "tied"] and not t.loc["d", "testable"]
    assert t.loc["a", "p_beats_best"] == pytest.approx(0.5) and t.loc["c", "p_beats_best"] == 0.0
    assert t.loc["b", "p_beats_best"] == pytest.approx(4 / 9)   # 1.2 beats all of a's seeds, 0.95 beats 0.9


def test_gain_rankings_heatmap_defaults_vs_tuning(tmp_path: Path) -> None:
    s = Study(tmp_path)
    one = {"adam": 0.80, "sgd": 0.60, "nag": 0.70}
    tuned = {"adam": 0.84, "sgd": 0.75, "nag": 0.70}
    for opt in one:
        s.cell("fmnist_2c2d", opt, "constant", "oneshot", [one[opt]] * 3, metric="accuracy")
        s.cell("fmnist_2c2d", opt, "constant", "large", [tuned[opt]] * 3, metric="accuracy")
    res = load(s.write())
    main = tables.main_table(res, n_boot=100)
    gain = tables.gain_table(main).set_index(["budget", "schedule"])
    rel = np.array([0.84 / 0.80 - 1, 0.75 / 0.60 - 1, 0.0])    # 0.05, 0.25, 0
    q25, med, q75 = np.quantile(rel, [0.25, 0.5, 0.75])
    assert gain.loc[("large", "constant"), "median"] == pytest.approx(med)
    assert gain.loc[("large", "constant"), "q25"] == pytest.approx(q25)
    assert gain.loc[("large", "constant"), "q75"] == pytest.approx(q75)
    assert gain.loc[("oneshot", "constant"), "median"] == pytest.approx(0.0)
    ranks = tables.rankings(main, "large", "constant")
    assert ranks.loc["fmnist_2c2d"].to_dict() == {"sgd": 2.0, "nag": 3.0, "adam": 1.0}
    heat = tables.heatmap_table(main, ("oneshot", "constant"), ("large", "constant"))
    h = heat.set_index(["from_optimizer", "to_optimizer"])["relative_improvement"]
    assert h[("sgd", "adam")] == pytest.approx(0.84 / 0.60 - 1)
    assert h[("adam", "nag")] == pytest.approx(0.70 / 0.80 - 1)
    # defaults (validation = test here) vs tuning: brute force over k-subsets of the optimizers
    dvt = tables.defaults_vs_tuning(main, "large", "constant").set_index("k")
    for k in (1, 2, 3):
        picks = [max(sub, key=lambda o: one[o]) for sub in itertools.combinations(one, k)]
        values = np.array([one[o] for o in picks])
        assert dvt.loc[k, "defaults_expected"] == pytest.approx(values.mean())
        p = np.mean([[v >= t for t in tuned.values()] for v in values])
        assert dvt.loc[k, "p_defaults_at_least_as_good"] == pytest.approx(p)
    assert dvt.loc[1, "tuned_mean"] == pytest.approx(np.mean(list(tuned.values())))


def test_expected_best_of_k_table_and_cost(tmp_path: Path) -> None:
    s = Study(tmp_path)
    trials = [(0.5, 0.52), (0.9, 0.85), (0.7, 0.71), (0.6, 0.58)]    # (valid, test), sample order
    s.cell("fmnist_2c2d", "adam", "constant", "small", [0.85] * 3, metric="accuracy", trials=trials[:2])
    s.cell("fmnist_2c2d", "adam", "constant", "large", [0.85] * 3, metric="accuracy", trials=trials)
    res = load(s.write())
    ebk = tables.expected_best_of_k_table(res)
    assert list(ebk["k"]) == [1, 2, 3, 4]                            # the largest stream only
    want = [brute_best_of_k([v for v, _ in trials], [t for _, t in trials], k, True) for k in range(1, 5)]
    np.testing.assert_allclose(ebk["expected_test"], want)
    cost = tables.cost_table(res).set_index("budget")
    assert cost.loc["small", "runs"] == 5 and cost.loc["large", "runs"] == 7
    assert cost.loc["large", "device_hours"] == pytest.approx(7 / 3600)
    summ = tables.cost_summary(res)
    assert summ.iloc[-1]["runs"] == 12 and summ.iloc[-1]["grad_evals"] == pytest.approx(120.0)


def test_cells_of_another_selection_rule_are_not_mixed(tmp_path: Path) -> None:
    s = Study(tmp_path)
    s.cell("quadratic_deep", "adam", "constant", "oneshot", [100.0] * 2)
    s.cell("quadratic_deep", "adam", "constant", "large", [90.0] * 2)
    s.cell("quadratic_deep", "adam", "constant", "large", [80.0] * 2)
    s.cells[-1]["selection"] = "best"   # the same cell tuned by best-epoch validation
    root = s.write()
    final = load(root).cells.set_index("budget")
    assert final.loc["large", "test_mean"] == pytest.approx(90.0) and len(final) == 2
    best = load(root, selection="best").cells.set_index("budget")
    assert best.loc["large", "test_mean"] == pytest.approx(80.0) and best.loc["oneshot", "test_mean"] == 100.0
