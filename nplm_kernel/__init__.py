"""nplm-kernel: the New Physics Learning Machine goodness-of-fit test with kernel methods."""

from .kernel.estimator import KernelNPLM
from .exceptions import (
    ConfigurationError,
    ConvergenceWarning,
    FitError,
    InputError,
    FitConsistencyWarning,
    NormalizationWarning,
    NotFittedError,
    NPLMError,
    SampleSizeWarning,
)
from .samples import Samples, validate_samples
from .statistic import chi2_p_value, nplm_loss, t_from_loss, z_score
from .version import __version__


__all__ = [
    "KernelNPLM",
    "ConfigurationError",
    "ConvergenceWarning",
    "FitError",
    "InputError",
    "FitConsistencyWarning",
    "NormalizationWarning",
    "NotFittedError",
    "NPLMError",
    "SampleSizeWarning",
    "Samples",
    "validate_samples",
    "chi2_p_value",
    "nplm_loss",
    "t_from_loss",
    "z_score",
]
