"""Learning-rate schedules: one module per law; the module name is the config name (``conf/schedule/<name>.yaml``)."""
from bench.schedules.base import SCHEDULES, Schedule

__all__ = ["SCHEDULES", "Schedule"]
