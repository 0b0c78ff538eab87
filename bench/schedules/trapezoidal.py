"""The study's ``ltr`` (trapezoidal): linear warm-up, constant, linear decay, with ramps of W = N/10 epochs (§3).

    f_n = n/W                   for n < W            (N = 100: 0.1, 0.2, …, 0.9)
    f_n = 1                     for W ≤ n ≤ N − W    (epochs 10..90)
    f_n = (N + 1 − n)/(W + 1)   for n > N − W        (10/11, 9/11, …, 1/11 for 91..100)

With f_0 = 1 (the epoch-granularity quirk of ``Schedule.factor``) epoch 0 trains at the full rate before the warm-up
starts at lr/W in epoch 1, exactly as the published runs did.

N not divisible by 10 (every study problem has N ∈ {50, 100, 160, 200, 350}, so the record is silent): W = N/10 is
kept as a real number rather than rounded. The formulas above are then one continuous piecewise-linear law in t (both
ramps meet the plateau at exactly 1: t/W = 1 at t = W, (N+1−t)/(W+1) = 1 at t = N − W), they reproduce the published
factors whenever 10 divides N, and for other N every ramp still spans N/10 epochs, e.g. N = 95: 1/9.5 … 9/9.5,
1.0 for 10..85, 10/10.5 … 1/10.5. For N < 10 there is no warm-up epoch and the decay touches only the last epoch(s),
always > 0. With ``granularity=step`` the same law is read at fractional epochs, so the very first step has factor 0.
"""
from __future__ import annotations

from bench.schedules.base import SCHEDULES, Schedule


@SCHEDULES.register
class Trapezoidal(Schedule):
    def law(self, t: float) -> float:
        n, w = self.num_epochs, self.num_epochs / 10
        if t < w:
            return t / w
        if t <= n - w:
            return 1.0
        return (n + 1 - t) / (w + 1)
