"""A baseline statistic and its test: the counterpart of NPLMTest for the classical methods, so that
toy campaigns, stores, executors, resume and calibration serve them unchanged."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, clone

from ..core.exceptions import ConfigurationError, FitError, InputError
from ..core.identity import describe, qualified_name, sample_digest
from ..core.samples import (
    Samples,
    as_events,
    as_weights,
    validate_samples,
)


class Baseline(BaseEstimator, abc.ABC):
    """A two-sample statistic with hyperparameters in the constructor: fit(x_data, x_ref, w_ref)
    sets t_ (large = departure) and any details as attributes ending in _ (listed in details()).

    What depends on the reference alone (binning and expected counts, a mixture fitted on it, its
    kernel mean embedding) is computed by prepare(samples) and passed to _statistic; BaselineTest
    keeps it across the toys of a campaign, so a toy costs only the data's part."""

    name: ClassVar[str]
    assumptions: ClassVar[str]
    one_dimensional: ClassVar[bool] = False
    uses_weights: ClassVar[bool] = True

    def fit(self, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray) -> Baseline:
        samples = validate_samples(x_data, x_ref, w_ref, owner=type(self).__name__)
        return self.fit_samples(samples, self.prepare(samples))

    @classmethod
    def refusal(cls, n_features: int, w_ref: np.ndarray) -> str | None:
        """Why the method cannot run on samples of n_features variables with reference weights
        w_ref (one per event), or None when it can."""
        if cls.one_dimensional and n_features != 1:
            return (f"is one-dimensional ({cls.assumptions}); the samples have {n_features} variables: "
                    "select one column")
        if not cls.uses_weights and np.ptp(w_ref) > 1e-12 * np.abs(w_ref).mean():
            return (f"cannot use per-event reference weights ({cls.assumptions}); give an unweighted reference "
                    "(equal weights) or another method")
        return None

    def fit_samples(self, samples: Samples, prepared: Any) -> Baseline:
        """fit on validated samples with the reference's prepare(samples) already at hand."""
        reason = self.refusal(samples.n_features, samples.w_ref)
        if reason:
            raise InputError(f"{type(self).__name__} {reason}.")
        self.t_ = float(self._statistic(samples, prepared))
        if not np.isfinite(self.t_):
            raise FitError(f"{type(self).__name__}: the statistic is not finite ({self.t_}).")
        return self

    def prepare(self, samples: Samples) -> Any:
        """What the statistic needs from the reference alone (None: nothing)."""
        return None

    @abc.abstractmethod
    def _statistic(self, samples: Samples, prepared: Any) -> float:
        """The statistic of validated samples (large = departure), given prepare(samples)."""

    def details(self) -> dict[str, Any]:
        """Fitted attributes besides t_, JSON-safe (for campaign rows and reports)."""
        return {name: describe(value) for name, value in vars(self).items() if name.endswith("_") and name != "t_"}


@dataclass(frozen=True)
class BaselineResult:
    """One baseline test: the statistic t, the method, its details and the wall time (seconds)."""

    t: float
    backend: str
    hyperparameters: dict[str, Any]
    wall_time: float
    details: dict[str, Any] = field(default_factory=dict)
    converged: bool = True
    #: One t, calibrated alone (no member weights), as NPLMResult's.
    member_weights = None

    def row_fields(self) -> dict[str, Any]:
        return {"t": self.t, "tau": self.t, "delta": 0.0, "nu_hat_tau": [], "nu_hat_delta": [],
                "nuisance_iterations": 0, "converged": True, "details": self.details}


class BaselineTest:
    """A baseline as a test for campaigns and calibration: the counterpart of NPLMTest, so that
    run_toys, stores (with an identity of the method and its settings), executors, resume and
    significance() serve baselines unchanged."""

    batchable = False
    nuisances = None

    def __init__(self, statistic: Baseline):
        if not isinstance(statistic, Baseline):
            raise ConfigurationError(f"BaselineTest needs a Baseline statistic, got {type(statistic).__name__}.")
        self.backend = statistic
        self._prepared: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"backend": self.backend, "_prepared": {}}  # each process prepares its own reference

    def with_quiet_fits(self) -> BaselineTest:
        """The test a campaign runs: this one (a baseline draws no per-fit progress bar)."""
        return self

    def for_reference(self, x_ref: np.ndarray | None, w_ref: float | np.ndarray | None) -> BaselineTest:
        """The test a campaign runs on this reference: this one (a baseline has no widths to find)."""
        return self

    def identity(self, x_ref: np.ndarray | None = None, w_ref: float | np.ndarray | None = None) -> dict[str, Any]:
        reference = None
        if x_ref is not None:
            events = as_events(x_ref, "x_ref")
            reference = sample_digest(events, as_weights(w_ref, len(events)))
        return {"baseline": {"class": qualified_name(type(self.backend)),
                             "hyperparameters": describe(self.backend.get_params(deep=False))},
                "reference": reference}

    def run(self, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray,
            central_values: np.ndarray | None = None) -> BaselineResult:
        if central_values is not None:
            raise ConfigurationError("baselines take no nuisance parameters (central_values).")
        start = time.perf_counter()
        samples = validate_samples(x_data, x_ref, w_ref, owner=type(self.backend).__name__)
        key = sample_digest(samples.x_ref, samples.w_ref)["blake2b"]
        if key not in self._prepared:
            self._prepared = {key: self.backend.prepare(samples)}  # one reference at a time
        fitted = clone(self.backend).fit_samples(samples, self._prepared[key])
        return BaselineResult(t=fitted.t_, backend=type(fitted).__name__, hyperparameters=describe(
            fitted.get_params(deep=False)), wall_time=time.perf_counter() - start, details=fitted.details())

