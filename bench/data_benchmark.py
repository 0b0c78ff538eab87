"""``make bench-data``: steps/s and the share of step time spent on data (shuffle, slice, augment) per problem.

For each problem the same epochs are timed twice in one process, interleaved: once iterating the training stream
alone (permutation, index gather, on-device transform and augmentation) and once with the full training step. The
data share is data time / full-step time. Smoke size runs anywhere (the data are generated in the original formats);
``--size full`` uses the real data sets where present under the data directory and skips the others.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from bench.cli import CONF_DIR
from bench.train import make_step, resolve_device
from optimizers import OPTIMIZERS
from problems import PROBLEMS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, size: str, device: torch.device, data_dir: str | None, steps: int, repeats: int) -> dict[str, Any]:
    settings = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONF_DIR / "problem" / f"{name}.yaml")).items()
                if k != "name"}
    settings["size"] = size
    torch.manual_seed(0)
    problem = PROBLEMS.get(name)(settings, 42, device, "repeat", data_dir)
    problem.load_data()
    model = problem.build_model().to(device)
    opt_cls = OPTIMIZERS.get("adam")
    hp = opt_cls.validate({k: v for k, v in OmegaConf.load(CONF_DIR / "optimizer" / "adam.yaml").items() if k != "name"})
    optimizer = opt_cls.build(model.parameters(), hp)
    step, _ = make_step(problem, model, optimizer, opt_cls)
    model.train()

    def batches():
        epoch = 0
        while True:
            problem.reset_state()
            yield from problem.train_batches(epoch)
            epoch += 1

    def timed(train: bool) -> float:
        stream = batches()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            batch = next(stream)
            if train:
                step(batch)
        _sync(device)
        return time.perf_counter() - t0

    timed(True)  # warm-up
    data_t, full_t = [], []
    for _ in range(repeats):
        data_t.append(timed(False))
        full_t.append(timed(True))
    data, full = statistics.median(data_t), statistics.median(full_t)
    return {"problem": name, "steps_per_s": steps / full, "data_share": data / full, "batch_size": problem.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="*", help="default: every problem except quadratic_deep's trivial data")
    parser.add_argument("--size", choices=("smoke", "full"), default="smoke")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    names = args.problems or PROBLEMS.names()
    print(f"size={args.size} device={device} threads={torch.get_num_threads()} steps={args.steps} "
          f"median of {args.repeats}")
    print(f"{'problem':20s} {'batch':>6s} {'steps/s':>10s} {'data share':>11s}")
    for name in names:
        try:
            r = measure(name, args.size, device, args.data_dir, args.steps, args.repeats)
        except (FileNotFoundError, RuntimeError, OSError) as err:
            print(f"{name:20s} skipped: {str(err).splitlines()[0]}")
            continue
        print(f"{r['problem']:20s} {r['batch_size']:6d} {r['steps_per_s']:10.2f} {100 * r['data_share']:10.1f}%")


if __name__ == "__main__":
    main()
