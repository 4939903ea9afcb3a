"""nplm-kernel: the New Physics Learning Machine goodness-of-fit test with kernel methods.

The public API, by layer (docs/architecture.md):
- backends: KernelNPLM and KernelTaylorLearner (nplm_kernel.kernel), the NN in the nn_baseline
  package, and the backend contract and registry (Backend, BackendFit, register_backend);
- inference: NPLMTest (by default the full model and the excess scan, combined by min-p; t = tau - Delta
  with nuisances; several widths with widths=...) and
  significance (p-value and Z); toy campaigns: run_toys and CampaignResult (nplm_kernel.toys);
- methods: BaselineTest and compare_methods (nplm_kernel.baselines);
- files: save_model / load_model (nplm_kernel.io).

The names are imported when first used, so that `import nplm_kernel.cli` (the `nplm` command's
--version and --help) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.version import __version__

#: Where each public name is defined.
_EXPORTS = {
    "Backend": "contract", "BackendFit": "contract", "register_backend": "contract",
    "ConfigurationError": "core.exceptions", "ConvergenceWarning": "core.exceptions",
    "FitConsistencyWarning": "core.exceptions", "FitError": "core.exceptions", "InputError": "core.exceptions",
    "NormalizationWarning": "core.exceptions", "NotFittedError": "core.exceptions", "NPLMError": "core.exceptions",
    "ReferenceSupportWarning": "core.exceptions",
    "SampleSizeWarning": "core.exceptions",
    "Samples": "core.samples", "validate_samples": "core.samples",
    "chi2_p_value": "core.statistic", "nplm_loss": "core.statistic", "t_from_loss": "core.statistic",
    "z_score": "core.statistic",
    "KernelNPLM": "kernel", "KernelTaylorLearner": "kernel",
    "MultiScaleResult": "inference", "NPLMResult": "inference", "NPLMTest": "inference",
    "combine_settings": "inference", "significance": "inference",
    "CampaignResult": "toys", "run_toys": "toys",
    "BaselineTest": "baselines", "compare_methods": "baselines",
    "load_model": "io", "save_model": "io",
}

__all__ = ["__version__", "Backend", "BackendFit", "BaselineTest", "CampaignResult", "chi2_p_value",
           "combine_settings", "compare_methods", "ConfigurationError", "ConvergenceWarning",
           "FitConsistencyWarning", "FitError", "InputError", "KernelNPLM", "KernelTaylorLearner", "load_model",
           "MultiScaleResult", "NormalizationWarning", "NotFittedError", "nplm_loss", "NPLMError", "NPLMResult",
           "NPLMTest", "ReferenceSupportWarning", "register_backend", "run_toys", "Samples", "SampleSizeWarning", "save_model", "significance",
           "t_from_loss", "validate_samples", "z_score"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nplm_kernel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .baselines import BaselineTest, compare_methods
    from .contract import Backend, BackendFit, register_backend
    from .core.exceptions import (
        ConfigurationError,
        ConvergenceWarning,
        FitConsistencyWarning,
        FitError,
        InputError,
        NormalizationWarning,
        NotFittedError,
        NPLMError,
        ReferenceSupportWarning,
        SampleSizeWarning,
    )
    from .core.samples import Samples, validate_samples
    from .core.statistic import chi2_p_value, nplm_loss, t_from_loss, z_score
    from .inference import MultiScaleResult, NPLMResult, NPLMTest, combine_settings, significance
    from .io import load_model, save_model
    from .kernel import KernelNPLM, KernelTaylorLearner
    from .toys import CampaignResult, run_toys
