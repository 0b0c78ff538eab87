"""The study's fixed vocabularies and display orders (problems P1–P8, budgets, schedules, optimizers).

Kept here, as plain data, because the analysis must not import the plugin packages (they import torch): the
report of a results set has to render on a laptop that has only pandas, pyarrow and matplotlib.
"""
from __future__ import annotations

from typing import Iterable

#: The eight DeepOBS problems in P1..P8 order (§1); a report lists each one, with data or not.
PROBLEMS: tuple[str, ...] = (
    "quadratic_deep", "mnist_vae", "fmnist_2c2d", "cifar10_3c3d",
    "fmnist_vae", "cifar100_allcnnc", "svhn_wrn164", "tolstoi_char_rnn",
)
#: Comparison metric per problem (§1 metric rule): accuracy where the problem has one, otherwise the loss.
PROBLEM_METRIC: dict[str, str] = {
    "quadratic_deep": "loss", "mnist_vae": "loss", "fmnist_2c2d": "accuracy", "cifar10_3c3d": "accuracy",
    "fmnist_vae": "loss", "cifar100_allcnnc": "accuracy", "svhn_wrn164": "accuracy", "tolstoi_char_rnn": "accuracy",
}
#: §8 budgets: one-shot defaults, then the nested 25/50/75-sample random searches.
BUDGETS: tuple[str, ...] = ("oneshot", "small", "medium", "large")
TUNED_BUDGETS: tuple[str, ...] = ("small", "medium", "large")
#: The study's four schedules first (§3), then the lecture's learning-rate laws (§9).
SCHEDULES: tuple[str, ...] = (
    "constant", "cosine", "cosine_wr", "trapezoidal", "step", "exponential", "inverse_time", "plateau",
)
#: The 15 published optimizer folders (§2) in the table's order, then AdaBelief (§8) and the lecture's methods (§9).
OPTIMIZERS: tuple[str, ...] = (
    "sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "ndadam", "adabound", "amsbound",
    "adagrad", "adadelta", "rmsprop", "lookahead_momentum", "lookahead_radam", "adabelief",
    "sam", "lbfgs", "sophia", "momentum_warmup",
)
BASELINE = ("oneshot", "constant")
"""The (budget, schedule) every gain is measured against: the defaults without a schedule."""


def higher_is_better(metric: str) -> bool:
    """Accuracy is maximised, every loss minimised."""
    if metric not in ("accuracy", "loss"):
        raise ValueError(f"unknown metric {metric!r}: must be accuracy or loss")
    return metric == "accuracy"


def ordered(values: Iterable[str], canonical: Iterable[str]) -> list[str]:
    """The distinct values, canonical ones first in canonical order, unknown ones after them alphabetically."""
    seen = set(values)
    canon = [v for v in canonical if v in seen]
    return canon + sorted(seen - set(canon))
