"""``make bench``: runs/s of the engines side by side, measured in one process (workers: a spawned pool).

P1 (quadratic_deep, the study's 100 epochs): ``engine=single`` with 1 and 2 workers against ``engine=cohort`` (bit-
identical) at cohort sizes 1 / 16 / 64 / 256 (``--p1-row``: also 4,800, the P1 row's seed-42 trials) and
``engine=cohort_fast`` (P1's closed form, reordered: not bit-identical) up to 4,800; trials are the P1 row's — the
16 study optimizers × 4 schedules × the study's random-search samples. Then every neural problem at smoke size
(1 epoch) on the CPU: single runs against a cohort (``loop``, bit-identical; ``vmap``, the GPU program), and the same
on CUDA when a GPU is present. GFLOP/s counts the single run's model FLOPs (``torch.utils.flop_counter`` over one
training step and the evaluations), so an engine that skips redundant work shows it as speed; peak memory is
CUDA's allocator peak. No test times anything: this prints.

``--harness`` prints instead the older figure: P1 + Adam through the harness next to a bare PyTorch loop.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Sequence

import torch

from bench.spec import RunSpec, make_spec
from bench.train import train
from optimizers.adam import TFAdam
from problems.quadratic_deep import SIZE, Quadratic, dataset, hessian

ADAM = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "semantics": "tf"}
STUDY = ("sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "ndadam", "adabound", "amsbound", "adagrad",
         "adadelta", "rmsprop", "lookahead_momentum", "lookahead_radam", "adabelief")
SCHEDULES = ("constant", "cosine", "cosine_wr", "trapezoidal")
NEURAL = ("mnist_vae", "fmnist_2c2d", "cifar10_3c3d", "fmnist_vae", "cifar100_allcnnc", "svhn_wrn164",
          "tolstoi_char_rnn")


# ------------------------------------------------------------------------------------ harness vs bare loop
def bare_loop(num_epochs: int, seed: int = 42, batch_size: int = 128, history: list | None = None) -> int:
    """The same run written as plainly as possible; returns the number of training steps.

    ``history`` (if given) receives [train, valid, test] losses per epoch, so a test can check the maths is the same.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_x, valid_x, test_x = (torch.from_numpy(dataset(s)) for s in ("train", "valid", "test"))
    model = Quadratic(hessian(0))
    opt = TFAdam(model.parameters(), lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
    perm = torch.randperm(SIZE, generator=gen)
    nb = SIZE // batch_size
    rows = nb * batch_size
    history = [] if history is None else history
    for epoch in range(num_epochs + 1):
        with torch.no_grad():
            losses = torch.stack([model(x).mean() for x in (train_x[perm[:rows]], valid_x[:rows], test_x[:rows])])
        history.append(losses.tolist())
        if epoch == num_epochs:
            break
        for i in range(nb):
            x = train_x[perm[i * batch_size:(i + 1) * batch_size]]
            opt.zero_grad(set_to_none=True)
            model(x).mean().backward()
            opt.step()
    return num_epochs * nb


def harness(num_epochs: int, seed: int = 42) -> int:
    spec = make_spec("quadratic_deep", "adam", ADAM, seed=seed,
                     problem_settings={"batch_size": 128, "num_epochs": num_epochs, "hessian_draw": 0,
                                       "size": "full", "weight_decay": 0.0})
    return train(spec, device="cpu").steps


def measure(repeats: int, num_epochs: int) -> dict[str, float]:
    torch.set_num_threads(1)
    harness(2), bare_loop(2)  # warm-up: imports, lazy inits, the cached Hessian
    rates: dict[str, list[float]] = {"harness": [], "bare": []}
    for _ in range(repeats):
        for name, fn in (("harness", harness), ("bare", bare_loop)):
            t0 = time.perf_counter()
            steps = fn(num_epochs)
            rates[name].append(steps / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


# ----------------------------------------------------------------------------------------------- the specs
def p1_specs(n: int, epochs: int = 100, arithmetic: str = "exact") -> list[RunSpec]:
    """n trials of the P1 row at seed 42: optimizer × schedule × the study's samples, in that nesting."""
    import yaml
    from pathlib import Path

    from optimizers import OPTIMIZERS
    from optimizers.base import study_samples

    root = Path(__file__).resolve().parent.parent
    per_cell = -(-n // (len(STUDY) * len(SCHEDULES)))
    base = {}
    for opt in STUDY:
        base[opt] = yaml.safe_load((root / "conf" / "optimizer" / f"{opt}.yaml").read_text())
        base[opt].pop("name")
    samples = {opt: study_samples(OPTIMIZERS.get(opt), per_cell) for opt in STUDY}
    specs = []
    for sample in range(per_cell):
        for opt in STUDY:
            hp = {**base[opt], **samples[opt][sample]}
            for sched in SCHEDULES:
                specs.append(make_spec("quadratic_deep", opt, hp, schedule=sched, arithmetic=arithmetic,
                                       problem_settings={"batch_size": 128, "num_epochs": epochs, "hessian_draw": 0,
                                                         "size": "full", "weight_decay": 0.0}))
    return specs[:n]


def neural_specs(problem: str, n: int, epochs: int = 1) -> list[RunSpec]:
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    settings = yaml.safe_load((root / "conf" / "problem" / f"{problem}.yaml").read_text())
    settings.pop("name")
    settings.update(size="smoke", num_epochs=epochs)
    opts = ("adam", "momentum", "sgd", "rmsprop", "nag", "adagrad", "lookahead_momentum", "amsgrad")
    specs = []
    for i in range(n):
        o = opts[i % len(opts)]
        hp = yaml.safe_load((root / "conf" / "optimizer" / f"{o}.yaml").read_text())
        hp.pop("name")
        hp["learning_rate"] = hp["learning_rate"] * (1.0 + 0.01 * (i // len(opts)))
        specs.append(make_spec(problem, o, hp, problem_settings=settings))
    return specs


# ------------------------------------------------------------------------------------------------- measures
def model_flops(spec: RunSpec, device: str, data_dir: str | None) -> float:
    """FLOPs of one single run of ``spec``: one training step × steps + every evaluation (flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.train import SPLITS
    from optimizers import OPTIMIZERS
    from problems import PROBLEMS

    dev = torch.device(device)
    torch.manual_seed(spec.seed)
    problem = PROBLEMS.get(spec.problem)(spec.problem_settings, spec.seed, dev, spec.data_order, data_dir)
    problem.load_data()
    model = problem.build_model().to(dev)
    OPTIMIZERS.get(spec.optimizer)  # registered
    batch = next(iter(problem.train_batches(0)))
    with FlopCounterMode(display=False) as counter:
        problem.compute(model, batch, training=True)[0].backward()
    step = counter.get_total_flops()
    evaluation = 0.0
    with torch.no_grad():
        for split in SPLITS:
            problem.reset_state()
            for b in problem.eval_batches(split):
                with FlopCounterMode(display=False) as counter:
                    problem.compute(model, b, training=False)
                evaluation += counter.get_total_flops()
    return step * problem.steps_per_epoch() * spec.num_epochs + evaluation * (spec.num_epochs + 1)


def _single_many(specs: Sequence[RunSpec], device: str, data_dir: str | None) -> int:
    for s in specs:
        train(s, device=device, data_dir=data_dir)
    return len(specs)


def _cohort(specs: Sequence[RunSpec], engine: str, device: str, data_dir: str | None, mode: str | None) -> int:
    from bench.engine.cohort import train_cohort

    train_cohort(list(specs), engine=engine, device=device, data_dir=data_dir, mode=mode)
    return len(specs)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, float | None]:
    """(seconds, peak MiB on CUDA)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return seconds, peak


def in_workers(specs: Sequence[RunSpec], workers: int, device: str, data_dir: str | None,
               cohorts: str | None = None) -> float:
    """Seconds for ``specs`` split over ``workers`` processes (single runs, or one cohort per worker)."""
    from bench.tuning import pool

    executor = pool.get_pool(workers)
    list(executor.map(_warm, range(workers)))  # imports done before the clock starts
    parts = [list(specs[i::workers]) for i in range(workers)]
    t0 = time.perf_counter()
    if cohorts is None:
        list(executor.map(_single_many, parts, [device] * workers, [data_dir] * workers))
    else:
        list(executor.map(_cohort, parts, [cohorts] * workers, [device] * workers, [data_dir] * workers,
                          [None] * workers))
    return time.perf_counter() - t0


def _warm(_: int) -> None:
    import bench.engine.cohort  # noqa: F401
    import bench.train  # noqa: F401


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.single: dict[str, float] = {}

    def add(self, problem: str, engine: str, how: str, runs: int, seconds: float, flops: float,
            peak: float | None) -> None:
        rate = runs / seconds
        if engine == "single" and how == "1 worker":
            self.single[problem] = rate
        base = self.single.get(problem)
        self.rows.append((problem, engine, how, runs, seconds, rate, rate / base if base else None,
                          flops * runs / seconds / 1e9, peak))
        r = self.rows[-1]
        print(f"  {r[0]:<18} {r[1]:<12} {r[2]:<12} {r[3]:>6} {r[4]:>9.2f} {r[5]:>10.2f} "
              f"{'' if r[6] is None else f'{r[6]:.1f}x':>8} {r[7]:>9.1f} {'—' if r[8] is None else f'{r[8]:.0f}':>9}",
              flush=True)


def header() -> None:
    print(f"  {'problem':<18} {'engine':<12} {'workers/M':<12} {'runs':>6} {'seconds':>9} {'runs/s':>10} "
          f"{'vs single':>8} {'GFLOP/s':>9} {'peak MiB':>9}")


def bench_p1(table: Table, device: str, sizes: Sequence[int], fast_sizes: Sequence[int], single_runs: int,
             workers: int) -> None:
    exact_flops = model_flops(p1_specs(1)[0], device, None)
    specs = p1_specs(max([single_runs, *sizes]))
    _single_many(specs[:2], device, None)  # warm-up
    sec, peak = timed(lambda: _single_many(specs[:single_runs], device, None), device)
    table.add("quadratic_deep", "single", "1 worker", single_runs, sec, exact_flops, peak)
    if workers > 1 and device == "cpu":
        sec = in_workers(specs[:single_runs], workers, device, None)
        table.add("quadratic_deep", "single", f"{workers} workers", single_runs, sec, exact_flops, None)
    for m in sizes:
        sec, peak = timed(lambda m=m: _cohort(specs[:m], "cohort", device, None, None), device)
        table.add("quadratic_deep", "cohort", f"M={m}", m, sec, exact_flops, peak)
    if workers > 1 and device == "cpu" and sizes:
        m = max(sizes)
        sec = in_workers(specs[:m], workers, device, None, cohorts="cohort")
        table.add("quadratic_deep", "cohort", f"{workers}×M={m // workers}", m, sec, exact_flops, None)
    fast = p1_specs(max(fast_sizes), arithmetic="reordered") if fast_sizes else []
    for m in fast_sizes:
        sec, peak = timed(lambda m=m: _cohort(fast[:m], "cohort_fast", device, None, None), device)
        table.add("quadratic_deep", "cohort_fast", f"M={m}", m, sec, exact_flops, peak)
    if workers > 1 and device == "cpu" and fast_sizes:
        m = max(fast_sizes)
        sec = in_workers(fast[:m], workers, device, None, cohorts="cohort_fast")
        table.add("quadratic_deep", "cohort_fast", f"{workers}×M={m // workers}", m, sec, exact_flops, None)


# On a CPU the vmapped program of the two large conv nets takes minutes per row and only shows what the other
# problems already show (vmap is the GPU program; `engine=auto` declines neural cohorts on a CPU); --all-modes runs it.
CPU_VMAP_SKIPPED = ("cifar100_allcnnc", "svhn_wrn164")


def bench_neural(table: Table, device: str, problem: str, sizes: Sequence[int], data_dir: str | None,
                 single_runs: int, all_modes: bool = False) -> None:
    specs = neural_specs(problem, max([single_runs, *sizes]))
    flops = model_flops(specs[0], device, data_dir)
    train(specs[0], device=device, data_dir=data_dir)  # data on disk, kernels warm
    sec, peak = timed(lambda: _single_many(specs[:single_runs], device, data_dir), device)
    table.add(problem, "single", "1 worker", single_runs, sec, flops, peak)
    modes = ("loop", "vmap") if device == "cpu" else ("vmap",)
    if device == "cpu" and problem in CPU_VMAP_SKIPPED and not all_modes:
        modes = ("loop",)
    for mode in modes:
        for m in sizes:
            sec, peak = timed(lambda m=m, mode=mode: _cohort(specs[:m], "cohort", device, data_dir, mode), device)
            table.add(problem, f"cohort/{mode}", f"M={m}", m, sec, flops, peak)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", action="store_true", help="the harness-vs-bare-loop figure instead")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--p1-row", action="store_true", help="also the exact cohort of 4,800 trials")
    parser.add_argument("--quick", action="store_true", help="P1 only, smaller cohorts")
    parser.add_argument("--data-dir", default=None, help="where smoke data are generated (default: the cache)")
    parser.add_argument("--problems", default=",".join(NEURAL))
    parser.add_argument("--neural-sizes", default="2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--all-modes", action="store_true",
                        help=f"also the CPU vmap rows of {', '.join(CPU_VMAP_SKIPPED)} (minutes each)")
    args = parser.parse_args(argv)
    if args.harness:
        r = measure(args.repeats, args.epochs)
        print(f"P1 quadratic_deep, Adam (TF), {args.epochs} epochs x 7 steps + {args.epochs + 1} evaluations, "
              f"CPU, 1 thread, median of {args.repeats} interleaved repeats")
        print(f"  harness (bench.train.train): {r['harness']:10,.0f} steps/s")
        print(f"  bare PyTorch loop:           {r['bare']:10,.0f} steps/s")
        print(f"  ratio harness / bare:        {r['harness'] / r['bare']:10.3f}   (goal >= 0.95)")
        return
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        print(f"engines on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU, 1 thread'}); "
              f"P1: {args.epochs} epochs; neural: smoke size, 1 epoch", flush=True)
        header()
        table = Table()
        sizes = (1, 16, 64) if args.quick else (1, 16, 64, 256) + ((4800,) if args.p1_row else ())
        fast_sizes = (1, 64, 256) if args.quick else (1, 16, 64, 256, 4800)
        if device == "cuda":
            sizes = (1, 64, 1024, 4800)
            fast_sizes = (1, 1024, 4800, 100_000)
        bench_p1(table, device, sizes, fast_sizes, single_runs=8 if args.quick else 16, workers=args.workers)
        if args.quick:
            continue
        for problem in args.problems.split(","):
            sizes_n = [int(x) for x in args.neural_sizes.split(",")]
            if device == "cuda":
                sizes_n = [1, 8, 32]
            bench_neural(table, device, problem, sizes_n, args.data_dir, single_runs=2 if device == "cpu" else 4,
                         all_modes=args.all_modes)
    from bench.tuning import pool

    pool.shutdown()


if __name__ == "__main__":
    main()
