"""``make bench-data``: steps/s and the share of step time spent on data (shuffle, slice, augment) per problem.

For each problem the same steps are timed twice in one process, interleaved: once iterating the training stream
alone (index gather, on-device transform and augmentation) and once with the full training step. On top of that
the *epoch set-up* is timed: what a new training epoch costs before its first batch (the epoch's order — file order,
buffer-shuffle emulation, permutation — and the gather of its rows), amortised over the epoch's steps. The data
share is (per-step data time + amortised set-up) / full-step time.

Sizes: ``smoke`` runs anywhere (the data are generated in the original formats); ``full`` uses the real data sets
where present under the data directory and skips the others; ``synthetic`` has the real record counts with random
content held in memory (no files, no download): the data path at the real sizes on any machine. ``--data-only``
times the data path alone (no model), ``--data-order fresh`` the modern order (a new one every epoch).
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from omegaconf import OmegaConf

from bench.cli import CONF_DIR
from bench.train import make_step, resolve_device
from optimizers import OPTIMIZERS
from problems import PROBLEMS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_load(dataset: str, data_dir: Any = None, size: str = "full", **_: Any) -> dict:
    """``datasets.load`` stand-in: the full layout's record counts (§1.9), random uint8 images / char ids."""
    from problems.datasets import build

    lay = build.FULL[dataset]
    g = torch.Generator().manual_seed(0)
    if dataset == "tolstoi":
        n_train_file = 2_612_948  # ≈ DeepOBS train.npy (80 % of the text)
        ids = torch.randint(0, 83, (n_train_file + lay.test,), generator=g)
        return {"train": (ids[lay.valid:n_train_file], None), "valid": (ids[:lay.valid], None),
                "test": (ids[n_train_file:], None)}
    shape, classes = ((1, 28, 28), 10) if dataset in ("mnist", "fmnist") else ((3, 32, 32), 100 if dataset == "cifar100"
                                                                           else 10)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8), torch.randint(0, classes, (n,),
                                                                                                 generator=g)

    assert lay.train_file is not None
    return {"train": part(lay.train_file - lay.valid), "valid": part(lay.valid), "test": part(lay.test)}


@contextmanager
def _synthetic_data(enabled: bool) -> Iterator[None]:
    from problems import datasets

    original = datasets.load
    if enabled:
        datasets.load = synthetic_load  # type: ignore[assignment]
    try:
        yield
    finally:
        datasets.load = original  # type: ignore[assignment]


def measure(name: str, size: str, device: torch.device, data_dir: str | None, steps: int, repeats: int,
            data_order: str = "repeat", data_only: bool = False) -> dict[str, Any]:
    settings = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONF_DIR / "problem" / f"{name}.yaml")).items()
                if k != "name"}
    settings["size"] = "full" if size == "synthetic" else size
    torch.manual_seed(0)
    problem = PROBLEMS.get(name)(settings, 42, device, data_order, data_dir)
    with _synthetic_data(size == "synthetic"):
        problem.load_data()
    model = problem.build_model().to(device)
    opt_cls = OPTIMIZERS.get("adam")
    hp = opt_cls.validate({k: v for k, v in OmegaConf.load(CONF_DIR / "optimizer" / "adam.yaml").items() if k != "name"})
    optimizer = opt_cls.build(model.parameters(), hp)
    step, _ = make_step(problem, model, optimizer, opt_cls)
    model.train()
    steps = max(1, min(steps, problem.steps_per_epoch() - 1))
    epoch = [0]

    def run(train: bool) -> tuple[float, float]:
        """(seconds to a new epoch's first batch, seconds per later batch) for one new epoch."""
        epoch[0] += 1
        problem.reset_state()
        _sync(device)
        t0 = time.perf_counter()
        stream = problem.train_batches(epoch[0])
        batch = next(stream)
        _sync(device)
        first = time.perf_counter() - t0
        if train:
            step(batch)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            batch = next(stream)
            if train:
                step(batch)
        _sync(device)
        return first, (time.perf_counter() - t0) / steps

    run(not data_only)  # warm-up (and, under data_order=repeat, the run's one-off order)
    firsts, data_t, full_t = [], [], []
    for _ in range(repeats):
        first, per_step = run(False)
        firsts.append(first)
        data_t.append(per_step)
        if not data_only:
            full_t.append(run(True)[1])
    data = statistics.median(data_t)
    setup_s = max(statistics.median(firsts) - data, 0.0)
    amortised = setup_s / problem.steps_per_epoch()
    out = {"problem": name, "batch_size": problem.batch_size, "setup_ms": 1e3 * setup_s, "data_ms": 1e3 * data,
           "steps_per_s": float("nan"), "data_share": float("nan")}
    if not data_only:
        full = statistics.median(full_t)
        out.update(steps_per_s=1.0 / (full + amortised), data_share=(data + amortised) / (full + amortised))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="*", help="default: every problem")
    parser.add_argument("--size", choices=("smoke", "full", "synthetic"), default="smoke")
    parser.add_argument("--data-order", choices=("repeat", "fresh"), default="repeat")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-only", action="store_true", help="time only the data path (no training steps)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    names = args.problems or PROBLEMS.names()
    print(f"size={args.size} data_order={args.data_order} device={device} threads={torch.get_num_threads()} "
          f"steps={args.steps} median of {args.repeats}")
    print(f"{'problem':20s} {'batch':>6s} {'steps/s':>10s} {'data/step':>12s} {'epoch set-up':>13s} "
          f"{'data share':>11s}")
    for name in names:
        try:
            r = measure(name, args.size, device, args.data_dir, args.steps, args.repeats, args.data_order,
                        args.data_only)
        except (FileNotFoundError, RuntimeError, OSError) as err:
            print(f"{name:20s} skipped: {str(err).splitlines()[0]}")
            continue
        print(f"{r['problem']:20s} {r['batch_size']:6d} {r['steps_per_s']:10.2f} {r['data_ms']:9.2f} ms "
              f"{r['setup_ms']:10.1f} ms {100 * r['data_share']:10.1f}%")


if __name__ == "__main__":
    main()
