"""One module per optimizer; the module name is the config name (``conf/optimizer/<name>.yaml``)."""
from optimizers.base import OPTIMIZERS, OptimizerSpec

__all__ = ["OPTIMIZERS", "OptimizerSpec"]
