"""The kernel backend: KernelNPLM (a Nystrom Gaussian-kernel model of f solved by nplm_kernel.solver),
its Nystrom geometry, how a fit spends its memory budget (and the per-process reference cache), the
kernel excess scan (the default test's local-excess member) and the kernel Taylor learner of shape
nuisances."""

from .estimator import KernelNPLM
from .excess_scan import ExcessScan
from .memory import DEFAULT_MEMORY_BUDGET, MemoryBudget, reference_cache
from .taylor import KernelTaylorLearner

__all__ = ["KernelNPLM", "ExcessScan", "KernelTaylorLearner", "DEFAULT_MEMORY_BUDGET", "MemoryBudget", "reference_cache"]
