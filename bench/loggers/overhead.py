"""``python -m bench.loggers.overhead``: what ``logger=wandb`` (offline) costs a run. Prints figures; asserts nothing.

1. In one process (a sweep): P1 + Adam runs of ``--epochs`` epochs, alternating without and with the logger
   (distinct seeds, so nothing is skipped), ``--pairs`` pairs; the runs' own training wall time (the record's
   ``wall_time_s``) and the time ``execute`` takes, medians; then how long the process waits at the end for its
   W&B runs to be finished.
2. As a user runs it: ``valley optimizer=adam`` in a fresh process, ``logger=none`` vs ``logger=wandb``, interleaved,
   ``--cli`` times each: the whole process's wall time (torch import, wandb's writer process start, the exit drain).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def in_process(pairs: int, epochs: int, root: Path) -> None:
    import resource

    import torch

    torch.set_num_threads(1)
    from bench.execute import execute
    from bench.loggers import wandb as wl
    from bench.spec import make_spec

    settings = {"batch_size": 128, "num_epochs": epochs, "hessian_draw": 0, "size": "full", "weight_decay": 0.0}
    adam = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "semantics": "tf"}
    factory = wl.WandbFactory(wl.WandbSettings(mode="offline", dir=str(root)))
    out: dict[str, list[tuple[float, float, float]]] = {"none": [], "wandb": []}
    seed, logged = 1000, 0
    for i in range(pairs + 1):  # the first pair warms up (imports, wandb's writer process start)
        for kind in (("none", "wandb") if i % 2 == 0 else ("wandb", "none")):
            seed += 1
            spec = make_spec("quadratic_deep", "adam", adam, seed=seed, problem_settings=settings)
            t0, c0 = time.perf_counter(), time.process_time()
            rec = execute(spec, root, device="cpu", observers=factory(spec, {}) if kind == "wandb" else []).record
            logged += kind == "wandb"
            if i:
                out[kind].append((rec["wall_time_s"], time.perf_counter() - t0, time.process_time() - c0))
    t0 = time.perf_counter()
    wl.drain(600)
    tail = time.perf_counter() - t0
    remote = wl._CLIENT
    if isinstance(remote, wl.Remote):
        remote.close(60)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    base = statistics.median(w for w, _, _ in out["none"])
    base_cpu = statistics.median(c for _, _, c in out["none"])
    for kind, values in out.items():
        train = statistics.median(w for w, _, _ in values)
        total = statistics.median(t for _, t, _ in values)
        cpu = statistics.median(c for _, _, c in values)
        print(f"{kind:>6}: training wall {train:.3f} s ({100 * (train / base - 1):+.1f} %), execute {total:.3f} s, "
              f"training-process CPU {cpu:.3f} s ({1e3 * (cpu - base_cpu):+.1f} ms) - medians of {len(values)}")
    print(f"end-of-process wait for the W&B runs: {tail:.3f} s; W&B writer process + wandb-core CPU: "
          f"{child.ru_utime + child.ru_stime:.2f} s for {logged} runs of {epochs + 1} history rows "
          f"({1e3 * (child.ru_utime + child.ru_stime) / max(logged, 1):.0f} ms a run, start-up included)")


def cli(times: int, epochs: int, root: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(repo), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    walls: dict[str, list[float]] = {"none": [], "wandb": []}
    for i in range(times):
        for kind in (("none", "wandb") if i % 2 == 0 else ("wandb", "none")):
            args = [sys.executable, "-m", "bench.cli", "optimizer=adam", f"problem.num_epochs={epochs}",
                    f"seed={2000 + i}", f"logger={kind}", f"results_dir={root / ('cli-' + kind)}", "progress=false",
                    "threads=1"]
            t0 = time.perf_counter()
            subprocess.run(args, cwd=repo, env=env, check=True, capture_output=True)
            walls[kind].append(time.perf_counter() - t0)
    for kind, values in walls.items():
        print(f"valley logger={kind}: process wall {statistics.median(values):.2f} s (median of {len(values)}: "
              f"{', '.join(f'{v:.2f}' for v in values)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--cli", type=int, default=3, help="fresh-process runs of each kind (0: skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.pairs:
            in_process(args.pairs, args.epochs, Path(tmp) / "inproc")
        if args.cli:
            cli(args.cli, args.epochs, Path(tmp))


if __name__ == "__main__":
    main()
