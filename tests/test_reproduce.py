"""valley-reproduce: the agreement statistics against reference formulas, and a small P1 reproduction end to end on
a published-format tree written here from runs of a stand-in "study" (our own harness, so the true answer is known:
every re-run of the published seed and draw must give the published value exactly)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench import import_cv, reproduce
from bench.analysis import agreement as A
from bench.execute import RunEnv, execute_many
from bench.records import read_runs
from bench.spec import make_spec
from test_import_cv import setting_folder

# --------------------------------------------------------------------------------------------- statistics


def test_run_rule_against_the_reference_formula() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        ours = list(rng.normal(88.0, rng.uniform(0.01, 1.0), size=rng.integers(2, 12)))
        theirs = float(88.0 + rng.normal(0.0, 2.0))
        m, s = np.mean(ours), np.std(ours, ddof=1)
        tol = max(3.0 * s, 1e-3 * max(abs(m), 1.0))
        got = A.run_agreement(theirs, False, ours, [False] * len(ours))
        assert got["our_mean"] == pytest.approx(m) and got["our_std"] == pytest.approx(s)
        assert got["tolerance"] == pytest.approx(tol) and got["z"] == pytest.approx((theirs - m) / s)
        assert got["difference"] == pytest.approx(theirs - m)
        assert got["verdict"] == ("agree" if abs(theirs - m) <= tol else "disagree")


def test_run_rule_floor_divergence_and_missing() -> None:
    same = A.run_agreement(0.9, False, [0.9, 0.9, 0.9], [False] * 3)            # zero seed std: the floor decides
    assert same["verdict"] == "agree" and same["z"] == 0.0 and same["tolerance"] == pytest.approx(1e-3)
    off = A.run_agreement(0.902, False, [0.9, 0.9, 0.9], [False] * 3)
    assert off["verdict"] == "disagree" and off["z"] == math.inf
    assert A.run_agreement(88.05, False, [88.0, 88.0], [False] * 2)["verdict"] == "agree"   # 0.1 % of 88 = 0.088
    assert A.run_agreement(353.4, True, [353.4, 90.0], [True, False])["verdict"] == "agree"
    assert A.run_agreement(353.4, True, [90.0, 91.0], [False, False])["verdict"] == "disagree"
    assert A.run_agreement(90.0, False, [353.4, 353.4], [True, True])["verdict"] == "disagree"
    part = A.run_agreement(90.0, False, [90.0, 90.1, float("nan")], [False, False, True])
    assert part["our_n"] == 3 and part["our_n_diverged"] == 1 and part["our_mean"] == pytest.approx(90.05)
    assert "1 of our 3 seeds diverged" in part["reason"]
    assert A.run_agreement(90.0, False, [], [])["verdict"] == "missing"
    one = A.run_agreement(90.0, False, [90.05], [False])                           # one seed: floor only
    assert one["verdict"] == "agree" and math.isnan(one["our_std"])


def test_false_alarm_rate_is_the_t_prediction_interval() -> None:
    n = 10
    assert A.false_alarm(n) == pytest.approx(2 * sps.t.sf(3 / math.sqrt(1 + 1 / n), n - 1))
    assert A.false_alarm(n) == pytest.approx(0.0189, abs=5e-4)
    rng = np.random.default_rng(0)  # simulation: a run exchangeable with our seeds, floor made irrelevant
    draws = rng.normal(0.0, 1.0, size=(40000, n + 1)) + 1e4
    flagged = [A.run_agreement(d[0], False, d[1:], [False] * n, floor_rel=0.0)["verdict"] == "disagree"
               for d in draws]
    assert np.mean(flagged) == pytest.approx(A.false_alarm(n), abs=0.003)


def test_welch_against_the_textbook_formula() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        x, y = rng.normal(0, rng.uniform(0.5, 2), 7), rng.normal(0.3, rng.uniform(0.5, 2), 10)
        vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
        t = (x.mean() - y.mean()) / math.sqrt(vx + vy)
        df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
        p = 2 * sps.t.sf(abs(t), df)
        got = A.welch(x, y)
        assert got == pytest.approx((t, df, p))
    assert A.welch([1.0, 1.0], [1.0, 1.0])[2] == 1.0 and A.welch([1.0, 1.0], [2.0, 2.0])[2] == 0.0
    assert math.isnan(A.welch([1.0], [1.0, 2.0])[2])


def test_cell_rule() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(88, 1, 10)
    same = A.cell_agreement(x, x + rng.normal(0, 1e-6, 10))
    assert same["verdict"] == "agree" and same["n_theirs"] == same["n_ours"] == 10
    far = A.cell_agreement(x, x + 3.0)
    assert far["verdict"] == "disagree" and far["welch_p"] < 0.01 and far["difference"] == pytest.approx(-3.0)
    assert far["their_std"] == pytest.approx(np.std(x, ddof=1))
    near = A.cell_agreement(x, x + 0.3)
    assert near["verdict"] == "agree" and near["welch_p"] >= 0.01
    assert A.cell_agreement(x, [])["verdict"] == "missing"


def test_tables_merge_and_order() -> None:
    old = pd.DataFrame({"published_run_id": ["a", "b"], "variant": ["default"] * 2, "verdict": ["agree"] * 2,
                        "z": [0.1, 0.2]})
    new = pd.DataFrame({"published_run_id": ["b", "c"], "variant": ["default"] * 2,
                        "verdict": ["disagree", "agree"], "z": [5.0, -4.0]})
    merged = A.merge(old, new, A.RUN_KEY)
    assert sorted(merged["published_run_id"]) == ["a", "b", "c"]
    assert merged.set_index("published_run_id").loc["b", "verdict"] == "disagree"
    assert list(A.ordered_rows(merged, "z")["published_run_id"]) == ["b", "c", "a"]


def test_request_parsing() -> None:
    req = reproduce.parse_request(["problem=quadratic_deep", "optimizer=lookahead_radam", "role=all",
                                   "optimizer.sync=replace,after", "optimizer.inner_step_count=frozen,advancing"],
                                  n_seeds=3)
    assert req.selection == {"problem": ["quadratic_deep"], "optimizer": ["lookahead_radam"], "role": ["all"]}
    assert req.seeds == [42, 43, 44] and len(req.variants) == 4
    assert reproduce.variant_label(req.variants[1]) == "optimizer.inner_step_count=advancing,optimizer.sync=replace"
    assert reproduce.variant_label({}) == "default"
    for bad in (["colour=red"], ["role=winners"], ["problem"], ["optimizer.lr="]):
        with pytest.raises(reproduce.ReproduceError):
            reproduce.parse_request(bad)


# --------------------------------------------------------------------------------------------- end to end
N = 4  # epochs of the stand-in study
P1 = {"batch_size": 128, "num_epochs": N, "weight_decay": 0.0, "size": "full"}
FOLDERS = {"adam": "AdamOptimizer", "lookahead_radam": "LookaheadOptimizerRAdam", "sgd": "GradientDescentOptimizer"}
PUBLISHED_HP = {"adam": ("learning_rate", "beta1", "beta2", "epsilon"),
                "lookahead_radam": ("learning_rate", "beta1", "beta2", "k", "alpha", "epsilon"),
                "sgd": ("learning_rate",)}
PERTURBED = ("adam", 44)  # the study's file of this (optimizer, seed) gets +5 on its final test loss


def _defaults(optimizer: str) -> dict:
    return reproduce.yaml_defaults("optimizer", optimizer)


def _study_spec(optimizer: str, hp: dict, schedule: str, seed: int, draw: int):
    return make_spec("quadratic_deep", optimizer, {**_defaults(optimizer), **hp}, schedule=schedule, seed=seed,
                     problem_settings={**P1, "hessian_draw": draw})


def _publish(root: Path, results: Path, budget: str, schedule: str, optimizer: str, spec, stamp: str) -> None:
    """Write one run of ours as the study's result file (§7.2): full-precision JSON, rounded folder name, curves
    with ``Infinity`` at the non-finite evaluation and epoch-0 padding after it."""
    from bench.records import read_curves

    rec = read_runs(results).set_index("run_id").loc[spec.run_id]
    c = read_curves(results, [spec.run_id])
    lists = {}
    for split in ("train", "valid", "test"):
        vals = c[(c["split"] == split) & (c["metric"] == "loss")].sort_values("epoch")["value"].tolist()
        if len(vals) < N + 1:
            vals = vals + [float("inf")] + [vals[0]] * (N - len(vals))
        lists[f"{split}_losses"] = vals
    if (optimizer, spec.seed) == PERTURBED:
        lists["test_losses"][-1] += 5.0
    hp = {k: spec.hyperparameters[k] for k in PUBLISHED_HP[optimizer]}
    training = ({"lr_sched_epochs": list(range(1, N + 1)),
                 "lr_sched_factors": [0.5 * (1 + math.cos(math.pi * e / N)) for e in range(1, N + 1)]}
                if schedule == "cosine" else {"lr_sched_epochs": None, "lr_sched_factors": None})
    data = {"testproblem": "quadratic_deep", "batch_size": 128, "num_epochs": N, "random_seed": spec.seed,
            "l2_reg": None, "optimizer_name": FOLDERS[optimizer],
            "optimizer_hyperparams": {**hp, "use_locking": False}, "training_params": training, **lists,
            "minibatch_train_losses": [lists["train_losses"][0]] * 2 * N}
    folder = {"constant": "none"}.get(schedule, schedule)
    path = root / "results" / budget / folder / "quadratic_deep" / FOLDERS[optimizer] / setting_folder(hp, N)
    path.mkdir(parents=True, exist_ok=True)
    assert rec["status"] in ("completed", "diverged")
    (path / f"random_seed__{spec.seed}__{stamp}.json").write_text(json.dumps(data))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A stand-in study trained here, one process's draws per folder as the study's tuner had them: one-shot Adam
    seeds 42..44 on draws 0..2, SGD lr 1 (diverges) seeds 42, 43 on draws 0, 1, and a "large_budget" cosine
    Lookahead-RAdam: samples 0..2 (seed 42, draws 0..2), the winner re-run with seeds 43, 44 on draws 3, 4."""
    from optimizers import OPTIMIZERS
    from optimizers.base import study_samples

    tmp = tmp_path_factory.mktemp("study")
    results, root = tmp / "study_runs", tmp / "cv"
    env = RunEnv(results_dir=str(results), device="cpu")
    specs = {("adam", s): _study_spec("adam", {}, "constant", s, s - 42) for s in (42, 43, 44)}
    specs.update({("sgd", s): _study_spec("sgd", {"learning_rate": 1.0}, "constant", s, s - 42) for s in (42, 43)})
    samples = study_samples(OPTIMIZERS.get("lookahead_radam"), 3)
    trials = [_study_spec("lookahead_radam", samples[i], "cosine", 42, i) for i in range(3)]
    out = execute_many([*specs.values(), *trials], env)
    valid = [out[t.run_id].record["final_valid_loss"] for t in trials]
    valid = [v if v is not None and np.isfinite(v) and out[t.run_id].record["status"] == "completed" else np.inf
             for v, t in zip(valid, trials)]
    winner = int(np.argmin(valid))
    reruns = {s: _study_spec("lookahead_radam", samples[winner], "cosine", s, s - 40) for s in (43, 44)}
    execute_many(list(reruns.values()), env)
    for (opt, seed), spec in specs.items():
        _publish(root, results, "oneshot", "constant", opt, spec, f"2020-02-12-22-{seed - 40:02d}-00")
    for i, spec in enumerate(trials):
        _publish(root, results, "large_budget", "cosine", "lookahead_radam", spec, f"2020-05-11-10-0{i}-00")
    for seed, spec in reruns.items():
        _publish(root, results, "large_budget", "cosine", "lookahead_radam", spec, f"2020-05-12-10-{seed - 40:02d}-00")
    published = tmp / "crowded_valley"
    rep = import_cv.import_tree(root, published)
    assert rep.runs == 10 and not rep.skipped
    by_run = {("adam", "seed", s): sp for (o, s), sp in specs.items() if o == "adam"}
    by_run.update({("sgd", "seed", s): sp for (o, s), sp in specs.items() if o == "sgd"})
    by_run.update({("lookahead_radam", "trial", i): sp for i, sp in enumerate(trials)})
    by_run.update({("lookahead_radam", "seed", s): sp for s, sp in reruns.items()})
    by_run[("lookahead_radam", "seed", 42)] = trials[winner]
    return {"tmp": tmp, "published": published, "specs": by_run, "winner": winner, "study_runs": results}


def test_draws_identified_and_specs_rebuilt_exactly(study: dict) -> None:
    """Every imported run gets the draw it was trained on, and our spec for its seed is the spec that made it
    (same run_id: full-precision hyperparameters, schedule, epochs, draw)."""
    pubs = reproduce.load_published(study["published"], {"role": ["all"]})
    assert len(pubs) == 10 and {p.role for p in pubs} == {"seed", "trial"}
    p = reproduce.plan(pubs, [{}], [42, 43, 44])
    assert not p.issues
    for pub in pubs:
        lr = json.loads(pub.hyperparameters)["learning_rate"]
        made = next(sp for (o, _, _), sp in study["specs"].items() if o == pub.optimizer and sp.seed == pub.seed
                    and sp.hyperparameters["learning_rate"] == lr)
        assert pub.draw == made.problem_settings["hessian_draw"]
        assert p.ours[(pub.run_id, "default")][pub.seed] == made.run_id


def test_small_p1_reproduction_end_to_end(study: dict, capsys: pytest.CaptureFixture) -> None:
    ours = study["tmp"] / "ours"
    args = ["--published", str(study["published"]), "--results-dir", str(ours), "--seeds", "3", "--device", "cpu",
            "problem=quadratic_deep", "role=all"]
    assert reproduce.main([*args, "--dry-run"]) == 0
    assert "10 published runs (3 cells) × 1 variant(s): 30 runs of ours (0 recorded, 30 to train)" in \
        capsys.readouterr().out
    assert reproduce.main(args) == 1                                # one published run was perturbed
    out = capsys.readouterr().out
    assert "10 published runs re-run: 9 agree, 1 disagree" in out and "run disagree: quadratic_deep · adam" in out
    runs, cells = A.read(ours)
    assert len(runs) == 10 and len(cells) == 3
    bad = runs[runs["verdict"] == "disagree"].iloc[0]
    assert (bad["optimizer"], bad["seed"], bad["hessian_draw"]) == ("adam", 44, 2) and bad["z"] > 3
    assert "|difference|" in bad["reason"]
    # the published seed's own re-run reproduces the published value bit for bit (same spec, same maths)
    recs = read_runs(ours).set_index("run_id")
    for r in runs[runs["verdict"] == "agree"].itertuples():
        if r.their_status == "completed":
            mine = recs.loc[r.our_run_ids[list(r.our_seeds).index(r.seed)], "final_test_loss"]
            assert mine == r.theirs
    sgd = runs[runs["optimizer"] == "sgd"]
    assert (sgd["their_status"] == "diverged").all() and (sgd["verdict"] == "agree").all()
    assert sgd["reason"].str.contains("diverged in the study and in 3 of our 3 seeds").all()
    lar = cells[cells["optimizer"] == "lookahead_radam"].iloc[0]
    assert lar["verdict"] == "agree" and lar["n_theirs"] == lar["n_ours"] == 3 and lar["welch_p"] == 1.0
    assert lar["budget"] == "medium" and lar["runs_agree"] == 3
    # resume: everything is recorded, nothing trains, the tables are rewritten identically
    assert reproduce.main(args) == 1
    assert "(30 recorded, 0 to train)" in capsys.readouterr().out
    again, _ = A.read(ours)
    pd.testing.assert_frame_equal(runs.drop(columns="updated_at"), again.drop(columns="updated_at"))


def test_variants_commands_and_report(study: dict, capsys: pytest.CaptureFixture) -> None:
    from bench.analysis.report import build
    from bench.spec import spec_from_config
    from bench.tuning.sweep import compose_jobs, expand

    ours = study["tmp"] / "ours_variants"
    sel = ["optimizer=lookahead_radam", "budget=medium", "optimizer.sync=replace,after"]
    base = ["--published", str(study["published"]), "--results-dir", str(ours), "--seeds", "2", "--device", "cpu"]
    reproduce.main([*base, *sel])
    capsys.readouterr()
    runs, cells = A.read(ours)
    assert set(runs["variant"]) == {"optimizer.sync=replace", "optimizer.sync=after"} and len(cells) == 2
    assert (runs.loc[runs["variant"] == "optimizer.sync=replace", "verdict"] == "agree").all()  # the default rule

    # --print-commands: `valley -m` lines that compose to exactly the planned specs
    assert reproduce.main([*base, "--print-commands", "optimizer=adam"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("valley -m problem=quadratic_deep") for line in lines)
    got = set()
    for line in lines:
        for cfg in compose_jobs(expand(line.split()[2:], True)):
            got.add(spec_from_config(cfg).run_id)
    pubs = reproduce.load_published(study["published"], {"optimizer": ["adam"]})
    want = {s.run_id for s in reproduce.plan(pubs, [{}], [42, 43]).specs}
    assert got == want
    # --launcher inline: the same runs through bench.launch (the composed jobs of those lines)
    launched = study["tmp"] / "ours_launched"
    code = reproduce.main(["--published", str(study["published"]), "--results-dir", str(launched), "--seeds", "2",
                           "--device", "cpu", "--launcher", "inline", "optimizer=adam"])
    assert code == 1 and set(read_runs(launched)["run_id"]) == want       # the perturbed run still disagrees
    assert len(A.read(launched)[0]) == 3

    # the report: the section, disagreements first
    reproduce.main(["--published", str(study["published"]), "--results-dir", str(ours), "--seeds", "3",
                    "--device", "cpu", "optimizer=adam"])
    capsys.readouterr()
    index = build(ours)
    html = index.read_text()
    assert "Agreement with the published study" in html and "agreement_scatter.png" in html
    table = pd.read_csv(ours / "report" / "tables" / "agreement_runs.csv")
    flags = (table["verdict"] == "disagree").tolist()
    assert flags[0] and flags == sorted(flags, reverse=True)      # disagreements first
    assert (ours / "report" / "figures" / "agreement_z.png").exists()


def test_cli_errors(study: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert reproduce.main(["--published", str(tmp_path / "none")]) == 2
    assert reproduce.main(["--published", str(study["published"]), "colour=red"]) == 2
    assert reproduce.main(["--published", str(study["published"]), "optimizer=nadam"]) == 2
    err = capsys.readouterr().err
    assert "do not exist" in err and "unknown key 'colour'" in err and "matches no published run" in err


def test_paired_test_and_when_it_decides() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        x = rng.normal(88, 5, 10)
        y = x + rng.normal(0.3, 0.2, 10)
        d = x - y
        t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
        n, got_t, got_p = A.paired(x, y)
        assert n == 10 and got_t == pytest.approx(t) and got_p == pytest.approx(2 * sps.t.sf(abs(t), 9))
        assert got_p == pytest.approx(sps.ttest_rel(x, y).pvalue)
    assert A.paired([1.0, 2.0], [1.0, 2.0])[2] == 1.0 and A.paired([1.0, 2.0], [0.0, 1.0])[2] == 0.0
    assert A.paired([1.0, np.nan, 3.0], [1.0, 2.0, 3.5])[0] == 2
    # published runs on different draws (std 5) shifted by 2 against ours on the same draws: Welch cannot see it,
    # the pairs can; the verdict follows the test asked for
    draws = rng.normal(88, 5, 10)
    theirs, ours = draws + rng.normal(0, 0.05, 10), draws + 2.0 + rng.normal(0, 0.05, 10)
    w = A.cell_agreement(theirs, ours)
    p = A.cell_agreement(theirs, ours, by_pairs=True)
    assert w["test"] == "welch" and w["verdict"] == "agree" and w["welch_p"] > 0.1
    assert p["test"] == "paired" and p["verdict"] == "disagree" and p["paired_p"] < 1e-6
    assert p["welch_p"] == w["welch_p"] and "paired t-test" in p["reason"]
