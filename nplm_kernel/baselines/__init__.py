"""Is NPLM worth it here? The classical and seed two-sample statistics as tests on the same toys
and calibration as NPLM (base.py: Baseline, BaselineTest; statistics.py: the methods), and
compare_methods, which runs NPLM backends and baselines on the same data and null toys."""

from .base import Baseline, BaselineResult, BaselineTest
from .comparison import (
    MethodComparison,
    MethodOutcome,
    build_method,
    compare_methods,
    method_applicability,
    method_names,
)
from .statistics import (
    BASELINES,
    BinnedLikelihoodRatio,
    BumpHunt,
    GaussianMixtureScore,
    GaussianProcessBumpSearch,
    KernelExcessScan,
    MaximumMeanDiscrepancy,
    SlicedKolmogorovSmirnov,
    SlicedWasserstein,
)

__all__ = ["Baseline", "BaselineResult", "BaselineTest", "MethodComparison", "MethodOutcome", "build_method",
           "compare_methods", "method_applicability", "method_names", "BASELINES", "BinnedLikelihoodRatio", "BumpHunt", "GaussianMixtureScore",
           "GaussianProcessBumpSearch", "KernelExcessScan", "MaximumMeanDiscrepancy", "SlicedKolmogorovSmirnov", "SlicedWasserstein"]
