"""The one entry point that wraps any backend: NPLMTest(backend).run(x_data, x_ref, w_ref).

Without nuisances t = tau and Delta = 0 (DESIGN.md section 4); the result records the backend,
its hyperparameters and diagnostics so that every t can be traced to how it was obtained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from .exceptions import ConfigurationError


@dataclass(frozen=True)
class NPLMResult:
    """One NPLM test: t = tau - Delta (dimensionless), the fitted estimator (f via its
    decision_function), the backend's name and hyperparameters, and the wall time in seconds."""

    t: float
    tau: float
    delta: float
    backend: str
    hyperparameters: dict[str, Any]
    wall_time: float
    estimator: BaseEstimator = field(repr=False)

    @property
    def diagnostics(self) -> Any:
        """The backend's fit diagnostics (KernelNPLM: SolverDiagnostics; NNNPLM: loss history)."""
        return getattr(self.estimator, "diagnostics_", getattr(self.estimator, "loss_history_", None))


def json_safe_parameters(estimator: BaseEstimator) -> dict[str, Any]:
    """The estimator's hyperparameters with arrays summarised, so that they serialise to JSON."""
    safe = {}
    for name, value in estimator.get_params(deep=False).items():
        if isinstance(value, np.ndarray):
            safe[name] = f"array{value.shape}"
        elif isinstance(value, (np.integer, np.floating)):
            safe[name] = value.item()
        elif isinstance(value, tuple):
            safe[name] = list(value)
        else:
            safe[name] = value if isinstance(value, (str, int, float, bool, list, type(None))) else repr(value)
    return safe


class NPLMTest:
    """Runs the NPLM test with `backend`, an unfitted estimator with the shared contract
    (KernelNPLM or NNNPLM): each run fits a fresh clone, so one NPLMTest serves many toys."""

    def __init__(self, backend: BaseEstimator):
        if not (hasattr(backend, "fit") and hasattr(backend, "get_params")):
            raise ConfigurationError(
                f"backend must be an estimator such as KernelNPLM(...) or NNNPLM(...), got {type(backend).__name__}."
            )
        self.backend = backend

    def run(self, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray) -> NPLMResult:
        """Fit the backend on (data, reference, weights) and return t = tau - Delta (Delta = 0)."""
        start = time.perf_counter()
        estimator = clone(self.backend).fit(x_data, x_ref, w_ref)
        return NPLMResult(
            t=float(estimator.t_),
            tau=float(estimator.t_),
            delta=0.0,
            backend=type(estimator).__name__,
            hyperparameters=json_safe_parameters(estimator),
            wall_time=time.perf_counter() - start,
            estimator=estimator,
        )
