"""One module per DeepOBS test problem; the module name is the config name (``conf/problem/<name>.yaml``)."""
from problems.base import PROBLEMS, Problem, Split

__all__ = ["PROBLEMS", "Problem", "Split"]
