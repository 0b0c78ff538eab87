"""``make bench-gpu``: the cohort engine's GPU figures in one script (≈ 6 minutes on one GPU), written to JSON.

1. versions and the TF32 flags (torch's defaults as found, and what ``precision=fp32|tf32`` sets);
2. cifar10_3c3d: single-run training steps/s against cohorts of M = 1 / 8 / 32 trials (``vmap`` program), in fp32
   and tf32, with achieved TFLOP/s (model FLOPs of the single run's step) and peak memory;
3. parity: a trial trained in a cohort against the same spec alone, after steps 1, 10 and 200 (relative difference
   of the parameter vectors; heavy-ball momentum, which does not amplify rounding as Adam's first steps do), fp32
   and tf32;
4. P1 cohorts at M = 10⁵ (exact and fast): trial-epochs/s and peak memory;
5. P8: the batched LSTM cohort (M = 1 / 8 / 32) against single runs with cuDNN's LSTM, steps/s and parity.

Smoke-size data (generated in the original formats, no download) stand in for the data sets: throughput does not
depend on pixel values. ``--smoke`` runs everything tiny on whatever device there is (the CPU here), so the script
is tested end to end without a GPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from bench.precision import run_numerics
from bench.spec import RunSpec, make_spec


def _defaults(kind: str, name: str) -> dict:
    import yaml

    root = Path(__file__).resolve().parent.parent
    d = yaml.safe_load((root / "conf" / kind / f"{name}.yaml").read_text())
    d.pop("name")
    return d


SMOKE: dict[str, dict[str, Any]] = {}  # per-problem setting overrides of --smoke (small batches)


def specs(problem: str, optimizers: Sequence[str], m: int, epochs: int = 1, precision: str = "fp32",
          **settings: Any) -> list[RunSpec]:
    s = {**_defaults("problem", problem), "size": "smoke", "num_epochs": epochs, **SMOKE.get(problem, {}),
         **settings}
    out = []
    for i in range(m):
        o = optimizers[i % len(optimizers)]
        hp = _defaults("optimizer", o)
        hp["learning_rate"] = hp["learning_rate"] * (1.0 + 0.01 * i)
        out.append(make_spec(problem, o, hp, problem_settings=s, precision=precision))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def batches(problem: Any) -> Iterator[Any]:
    epoch = 0
    while True:
        problem.reset_state()
        for b in problem.train_batches(epoch):
            yield b
        epoch += 1


class Single:
    """One run's model, optimizer and step exactly as ``bench.train`` builds them."""

    def __init__(self, spec: RunSpec, device: torch.device, data_dir: str | None) -> None:
        from bench.train import make_step
        from optimizers import OPTIMIZERS
        from problems import PROBLEMS

        torch.manual_seed(spec.seed)
        self.problem = PROBLEMS.get(spec.problem)(spec.problem_settings, spec.seed, device, spec.data_order, data_dir)
        self.problem.load_data()
        self.model = self.problem.build_model().to(device)
        opt_cls = OPTIMIZERS.get(spec.optimizer)
        self.optimizer = opt_cls.build(self.model.parameters(), spec.hyperparameters)
        self.step_fn, _ = make_step(self.problem, self.model, self.optimizer, opt_cls, spec.precision)
        self.stream = batches(self.problem)
        self.model.train()

    def step(self) -> None:
        self.step_fn(next(self.stream))

    def flat(self) -> torch.Tensor:
        from bench.train import flat_parameters

        return flat_parameters(self.model)


class Cohort:
    """A cohort program (``bench.engine.cohort``) stepped directly, at the specs' own learning rates."""

    def __init__(self, specs_: Sequence[RunSpec], device: torch.device, data_dir: str | None, mode: str) -> None:
        from bench.engine.cohort import _builder
        from bench.engine.cohort.program import row_order

        ids = [s.run_id for s in specs_]
        order = row_order(specs_, ids)
        self.program = _builder(specs_[0], mode, device, data_dir)([specs_[i] for i in order])
        self.row_of_first = order.index(0)
        self.lrs = np.array([float(self.program.specs[r].hyperparameters["learning_rate"])
                             for r in range(self.program.size)])
        self.stream = batches(self.program.problem)
        self.program.begin_training_epoch()

    def step(self) -> None:
        self.program.step(next(self.stream), self.lrs)

    def flat(self) -> torch.Tensor:
        return self.program.flat_params(self.row_of_first)


def step_flops(spec: RunSpec, device: torch.device, data_dir: str | None) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    s = Single(spec, device, data_dir)
    batch = next(s.stream)
    with FlopCounterMode(display=False) as counter:
        s.problem.compute(s.model, batch, training=True)[0].backward()
    return float(counter.get_total_flops())


def throughput(make: Any, steps: int, warmup: int, device: torch.device) -> tuple[float, float | None]:
    runner = make()
    for _ in range(warmup):
        runner.step()
    sync(device)
    reset_peak(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step()
    sync(device)
    return steps / (time.perf_counter() - t0), peak_mib(device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def section_image(problem: str, device: torch.device, data_dir: str | None, sizes: Sequence[int], steps: int,
                  warmup: int, parity_at: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for precision in ("fp32", "tf32"):
        with run_numerics(precision, False):
            one = specs(problem, ["adam"], 1, precision=precision)[0]
            flops = step_flops(one, device, data_dir)
            rate, peak = throughput(lambda: Single(one, device, data_dir), steps, warmup, device)
            res: dict[str, Any] = {"single": {"steps_per_s": rate, "trial_steps_per_s": rate,
                                              "tflops": flops * rate / 1e12, "peak_mib": peak}}
            for m in sizes:
                cohort_specs = specs(problem, ["adam", "momentum", "sgd", "nag"], m, precision=precision)
                rate_m, peak_m = throughput(lambda: Cohort(cohort_specs, device, data_dir, "vmap"), steps, warmup,
                                            device)
                res[f"cohort_M{m}"] = {"steps_per_s": rate_m, "trial_steps_per_s": rate_m * m,
                                       "vs_single": rate_m * m / rate, "tflops": flops * m * rate_m / 1e12,
                                       "peak_mib": peak_m}
            res["parity"] = parity(specs(problem, ["momentum", "adam"], 2, precision=precision), device, data_dir,
                                   parity_at, "vmap")
            out[precision] = res
            print(f"  {problem} {precision}: " + ", ".join(
                f"{k} {v['trial_steps_per_s']:.1f} trial-steps/s" for k, v in res.items() if k != "parity") +
                "; parity " + ", ".join(f"step {k}: {v['params']:.1e}" for k, v in res["parity"].items()),
                flush=True)
    return out


def parity(cohort_specs: Sequence[RunSpec], device: torch.device, data_dir: str | None, at: Sequence[int],
           mode: str) -> dict[str, dict[str, float]]:
    """The first spec alone vs as a trial of a cohort of ``cohort_specs``: the relative difference of the parameter
    vectors after each step in ``at`` (same batches: both streams start from the spec's seed)."""
    single = Single(cohort_specs[0], device, data_dir)
    cohort = Cohort(cohort_specs, device, data_dir, mode)
    out, done = {}, 0
    for k in sorted(at):
        while done < k:
            single.step()
            cohort.step()
            done += 1
        out[str(k)] = {"params": rel(cohort.flat(), single.flat())}
    return out


def section_p1(device: torch.device, m: int, epochs: int) -> dict[str, Any]:
    from bench.engine.cohort import train_cohort

    out: dict[str, Any] = {}
    for arithmetic, engine in (("exact", "cohort"), ("reordered", "cohort_fast")):
        from bench.benchmark import p1_specs

        cohort_specs = p1_specs(m, epochs=epochs, arithmetic=arithmetic)
        reset_peak(device)
        t0 = time.perf_counter()
        results = train_cohort(cohort_specs, engine=engine, device=str(device))
        sync(device)
        seconds = time.perf_counter() - t0
        epochs_done = sum(len(r.series("valid", "loss")) - 1 for r in results)
        out[engine] = {"trials": m, "epochs": epochs, "seconds": seconds, "trial_epochs_per_s": epochs_done / seconds,
                       "runs_per_s_100_epochs": epochs_done / seconds / 100, "peak_mib": peak_mib(device)}
        print(f"  P1 {engine} M={m}: {epochs_done / seconds:,.0f} trial-epochs/s ({seconds:.1f} s)", flush=True)
    return out


def section_lstm(device: torch.device, data_dir: str | None, sizes: Sequence[int], steps: int, warmup: int,
                 parity_at: Sequence[int]) -> dict[str, Any]:
    one = specs("tolstoi_char_rnn", ["adam"], 1)[0]
    rate, peak = throughput(lambda: Single(one, device, data_dir), steps, warmup, device)
    out: dict[str, Any] = {"single_cudnn" if device.type == "cuda" else "single_aten":
                           {"steps_per_s": rate, "trial_steps_per_s": rate, "peak_mib": peak}}
    for m in sizes:
        cohort_specs = specs("tolstoi_char_rnn", ["adam", "momentum"], m)
        rate_m, peak_m = throughput(lambda: Cohort(cohort_specs, device, data_dir, "vmap"), steps, warmup, device)
        out[f"batched_M{m}"] = {"steps_per_s": rate_m, "trial_steps_per_s": rate_m * m, "vs_single": rate_m * m / rate,
                                "peak_mib": peak_m}
    out["parity"] = parity(specs("tolstoi_char_rnn", ["sgd", "momentum"], 2), device, data_dir, parity_at, "vmap")
    print("  P8 LSTM: " + ", ".join(f"{k} {v['trial_steps_per_s']:.1f} trial-steps/s" for k, v in out.items()
                                    if k != "parity"), flush=True)
    return out


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": np.__version__, "device": str(device),
                           "tf32_defaults": {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                                             "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}}
    for precision in ("fp32", "tf32"):
        with run_numerics(precision, False):
            env[f"tf32_under_{precision}"] = {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                                              "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), gpu=props.name,
                   capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / 2**30)
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (CI without a GPU)")
    parser.add_argument("--out", default="results/bench_gpu.json")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from bench.train import resolve_device

    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.smoke:
        sizes, steps, warmup, at, p1_m, p1_epochs, lstm_sizes = (1, 2), 2, 1, (1, 2, 3), 64, 1, (1, 2)
        SMOKE.update(cifar10_3c3d={"batch_size": 16}, tolstoi_char_rnn={"batch_size": 8, "seq_length": 10})
    else:
        sizes, steps, warmup, at, p1_m, p1_epochs, lstm_sizes = (1, 8, 32), 40, 5, (1, 10, 200), 100_000, 3, (1, 8, 32)
    report: dict[str, Any] = {"smoke": args.smoke, "environment": environment(device)}
    print(f"bench-gpu on {device} ({'smoke' if args.smoke else 'full'})", flush=True)
    report["cifar10_3c3d"] = section_image("cifar10_3c3d", device, args.data_dir, sizes, steps, warmup, at)
    report["p1"] = section_p1(device, p1_m, p1_epochs)
    report["tolstoi_char_rnn"] = section_lstm(device, args.data_dir, lstm_sizes, steps, warmup, at)
    report["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
