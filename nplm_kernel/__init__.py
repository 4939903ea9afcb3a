"""nplm-kernel: the New Physics Learning Machine goodness-of-fit test with kernel methods.

The public API, by layer (docs/architecture.md):
- backends: KernelNPLM (nplm_kernel.kernel), the NN in the nn_baseline package, and the backend
  contract and registry (Backend, BackendFit, register_backend);
- inference: NPLMTest (t, or t = tau - Delta with nuisances; multi-scale with widths=...),
  run_toys and CampaignResult (toy campaigns and their stores), significance (p-value and Z);
- application: save_model / load_model, load_config / run_analysis (the `nplm` command).
"""

from .app.persistence import load_model, save_model
from .backends import Backend, BackendFit, register_backend
from .exceptions import (
    ConfigurationError,
    ConvergenceWarning,
    FitConsistencyWarning,
    FitError,
    InputError,
    NormalizationWarning,
    NotFittedError,
    NPLMError,
    SampleSizeWarning,
)
from .inference.baselines import BaselineTest
from .inference.calibration import combine_settings, significance
from .inference.campaign import CampaignResult, run_toys
from .inference.comparison import compare_methods
from .inference.hypothesis_test import MultiScaleResult, NPLMResult, NPLMTest
from .kernel.estimator import KernelNPLM
from .kernel.taylor import KernelTaylorLearner
from .samples import Samples, validate_samples
from .statistic import chi2_p_value, nplm_loss, t_from_loss, z_score
from .version import __version__

__all__ = [
    "__version__",
    "Backend",
    "BackendFit",
    "BaselineTest",
    "CampaignResult",
    "ConfigurationError",
    "ConvergenceWarning",
    "FitConsistencyWarning",
    "FitError",
    "InputError",
    "KernelNPLM",
    "KernelTaylorLearner",
    "MultiScaleResult",
    "NormalizationWarning",
    "NotFittedError",
    "NPLMError",
    "NPLMResult",
    "NPLMTest",
    "SampleSizeWarning",
    "Samples",
    "chi2_p_value",
    "combine_settings",
    "compare_methods",
    "load_model",
    "nplm_loss",
    "register_backend",
    "run_toys",
    "save_model",
    "significance",
    "t_from_loss",
    "validate_samples",
    "z_score",
]
