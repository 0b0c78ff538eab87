"""``make bench``: P1 with Adam through the harness next to a bare PyTorch loop doing the same maths.

Both sides do the whole DeepOBS protocol (data, model, N+1 evaluations of three splits, 7 steps per epoch) with the
same model, optimizer class and permutation, in the same process, interleaved (A, B, A, B, …) so that machine noise
hits both alike; the figure is the median over repeats. No timed test asserts on this: it prints.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.spec import make_spec
from bench.train import train
from optimizers.adam import TFAdam
from problems.quadratic_deep import SIZE, Quadratic, dataset, hessian

ADAM = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "semantics": "tf"}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    r = measure(args.repeats, args.epochs)
    print(f"P1 quadratic_deep, Adam (TF), {args.epochs} epochs x 7 steps + {args.epochs + 1} evaluations, "
          f"CPU, 1 thread, median of {args.repeats} interleaved repeats")
    print(f"  harness (bench.train.train): {r['harness']:10,.0f} steps/s")
    print(f"  bare PyTorch loop:           {r['bare']:10,.0f} steps/s")
    print(f"  ratio harness / bare:        {r['harness'] / r['bare']:10.3f}   (goal >= 0.95)")


if __name__ == "__main__":
    main()
