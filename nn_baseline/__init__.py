"""nn_baseline: the original weight-clipped NPLM neural network, for cross-checks of the kernel backend."""

from .estimator import NNNPLM
from .network import ClippedMLP
from .taylor import NNTaylorLearner

__all__ = ["NNNPLM", "NNTaylorLearner", "ClippedMLP"]
