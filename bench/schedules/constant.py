"""The study's ``none``: the base learning rate throughout."""
from bench.schedules.base import SCHEDULES, Schedule


@SCHEDULES.register
class Constant(Schedule):
    def law(self, t: float) -> float:
        return 1.0
