"""The backend contract: what every backend provides, and what the shared layer may ask of it.

A backend is a model of f(x) ~ log n(x|D) / n(x|R). The shared layer (the test, nuisances,
campaigns, calibration, persistence, model selection, config and CLI) talks to backends only
through this contract:

- a scikit-learn estimator: hyperparameters are the constructor's keyword arguments, each with
  its default declared there once (get_params / set_params / clone work);
- check_settings() raises ConfigurationError naming a bad hyperparameter (called by fit and by
  the config and CLI layers before any work);
- fit(x_data, x_ref, w_ref, offset_data=None, offset_ref=None) learns f on top of the offsets
  o = log r(x; nu), returns self, and sets `fit_` (a BackendFit: t, the NPLM loss, f on the
  data and reference points, convergence and diagnostics) with the usual fitted attributes
  t_, loss_, converged_, diagnostics_ (all set by finish_fit);
- decision_function(x) returns f(x) as float64 (n,);
- fitted_state() / fitted_state_spec() / restore_fitted_state(state): the fitted attributes a
  saved model holds, their shapes, and setting them back (persistence);
- class attributes: execution_settings, the hyperparameters that change how but not what is
  computed (left out of a campaign's identity); fits_nuisances_jointly, the optional capability
  of training nuisance parameters together with f: such a backend's fit also accepts
  nuisance_terms (a nuisance.NuisanceTerms) and nuisance_start, and sets nuisance_values_;
  fits_batches, the optional capability (a class attribute, or a property when it depends on the
  settings) of fitting several data samples on one reference together: such a backend has
  fit_batch(list of x_data, x_ref, w_ref) returning one fitted clone per sample, each with the t
  of its own fit to solver tolerance and, in fit_warnings_, the warnings its fit raised, recorded
  (warnings.WarningMessage) instead of raised, since each belongs to one sample (campaigns use it
  for throughput).
- identity_details() (optional): what defines t besides the hyperparameters (e.g. the rule behind
  a default), part of a campaign's identity;
- excess_scan() (optional): the backend's scan for a local excess, an object with
  prepare(x_ref, w_ref) (what depends on the reference alone, kept across the toys) and
  scan(x_data, prepared), which returns an outcome with t and details(); the default test adds its
  t as a member of the min-p (inference.hypothesis);
- setting_roles: {role: hyperparameter name} for the roles the shared layer needs (SETTING_ROLES):
  a kernel width (with reference_widths(x_ref, w_ref, quantiles), the widths at quantiles of
  pairwise reference distances in the backend's units), a device, a seed, a progress bar. The
  shared layer never names a backend's hyperparameters itself.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ..core.devices import resolve_device
from ..core.exceptions import FitConsistencyWarning, NotFittedError, ReferenceSupportWarning
from ..core.samples import Samples
from ..core.statistic import nplm_loss, t_from_loss

#: What a hyperparameter can be to the shared layer (Backend.setting_roles maps a role to the
#: backend's hyperparameter that plays it).
SETTING_ROLES = {
    "width": "a kernel width in the backend's input units: NPLMTest(widths=...) fits once per width, and the backend "
             "provides reference_widths(x_ref, w_ref, quantiles)",
    "device": "the torch device the fit computes on: campaigns run one process per GPU on CUDA, and load_model(path, "
              "device=...) moves a saved model",
    "seed": "the seed of the fit's randomness: the command line's --seed seeds it",
    "progress": "whether the fit shows a progress bar: on by default on the command line",
}


@dataclass(frozen=True)
class BackendFit:
    """What one backend fit produced: t = -2 L at the learned f, the NPLM loss L (offsets included,
    without any penalty or auxiliary term), f on the data (N_D,) and reference (N_R,) points,
    whether the fit met its tolerance (None when the backend has no criterion, e.g. a fixed number
    of epochs), the backend's own diagnostics, and the indices of the data events the reference
    sample cannot support (unsupported_events: the fitted f exceeds log(UNSUPPORTED_RATIO) there)."""

    t: float
    loss: float
    f_data: np.ndarray
    f_ref: np.ndarray
    converged: bool | None
    diagnostics: Any
    unsupported_events: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@runtime_checkable
class Backend(Protocol):
    """The contract (module docstring)."""

    execution_settings: ClassVar[tuple[str, ...]]
    setting_roles: ClassVar[dict[str, str]]
    fits_nuisances_jointly: ClassVar[bool]
    fits_batches: bool

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def set_params(self, **params: Any) -> Backend: ...

    def check_settings(self) -> None: ...

    def fit(self, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray,
            offset_data: np.ndarray | None = None, offset_ref: np.ndarray | None = None) -> Backend: ...

    def decision_function(self, x: np.ndarray) -> np.ndarray: ...

    def fitted_state(self) -> dict[str, Any]: ...

    def fitted_state_spec(self) -> dict[str, Any]: ...

    def restore_fitted_state(self, state: dict[str, Any]) -> None: ...


#: What a backend must provide (Backend), checked by contract_gaps.
CONTRACT_MEMBERS = ("get_params", "set_params", "check_settings", "fit", "decision_function", "fitted_state",
                    "fitted_state_spec", "restore_fitted_state", "execution_settings", "fits_nuisances_jointly",
                    "fits_batches", "setting_roles")


def contract_gaps(backend: Any) -> list[str]:
    """The members of the backend contract that `backend` lacks (empty when it implements it)."""
    return [name for name in CONTRACT_MEMBERS if not hasattr(backend, name)]


#: A data event at which the fitted f exceeds log(UNSUPPORTED_RATIO) has, as the fit resolves the
#: reference around it, less than 1 / UNSUPPORTED_RATIO of an expected reference event per data event
#: there: the reference sample cannot support it (docs: statistics, reference support).
UNSUPPORTED_RATIO = 1e3


def finish_fit(estimator: Any, samples: Samples, f_data: np.ndarray, f_ref: np.ndarray, converged: bool | None,
               diagnostics: Any, offset_data: np.ndarray | None = None, offset_ref: np.ndarray | None = None,
               rising_loss_advice: str = "") -> None:
    """Set the contract's fitted attributes from f on the training points: fit_ (BackendFit), t_,
    loss_ (L with the samples' offsets, or the given ones), converged_, diagnostics_ and
    unsupported_events_, warning (ReferenceSupportWarning) about data events the reference sample
    cannot support, and (FitConsistencyWarning, with the backend's rising_loss_advice) when the
    learned f raises L above its value at f = 0, which a minimiser of L never does."""
    offset_data = samples.offset_data if offset_data is None else offset_data
    offset_ref = samples.offset_ref if offset_ref is None else offset_ref
    loss = nplm_loss(f_data, f_ref, samples.w_ref, offset_data, offset_ref)
    unsupported = np.flatnonzero(f_data > np.log(UNSUPPORTED_RATIO))
    estimator.fit_ = BackendFit(t_from_loss(loss), loss, f_data, f_ref, converged, diagnostics, unsupported)
    estimator.loss_, estimator.t_ = loss, estimator.fit_.t
    estimator.converged_, estimator.diagnostics_ = converged, diagnostics
    estimator.unsupported_events_ = unsupported
    name = type(estimator).__name__
    if len(unsupported):
        where = "; ".join(f"x = {np.array2string(samples.x_data[index], precision=4)} (f = {f_data[index]:.3g})"
                          for index in unsupported[:3])
        warnings.warn(
            f"{name}: {len(unsupported)} data event(s) lie where the reference sample cannot support them: the fitted "
            f"f exceeds log({UNSUPPORTED_RATIO:g}) there, i.e. the fit resolves less than 1/{UNSUPPORTED_RATIO:g} of an "
            f"expected reference event around them ({where}{' ...' if len(unsupported) > 3 else ''}). t = "
            f"{estimator.t_:.6g} then measures how empty the reference sample is there, not the data. Use a larger "
            "penalty or a larger reference sample (docs: statistics, reference support).",
            ReferenceSupportWarning, stacklevel=3)
    baseline = nplm_loss(np.zeros_like(f_data), np.zeros_like(f_ref), samples.w_ref, offset_data, offset_ref)
    if loss > baseline + 1e-9 * max(1.0, abs(baseline)):
        warnings.warn(
            f"{name}: the learned f raises the NPLM loss above that of f = 0 (L = {loss:.6g} > {baseline:.6g}, "
            f"t = {estimator.t_:.6g}): a minimiser of L never does that, so this t is not the test statistic. "
            f"{rising_loss_advice}".rstrip(), FitConsistencyWarning, stacklevel=3)


def require_fitted(estimator: Any, attribute: str) -> None:
    """NotFittedError naming the estimator unless `attribute` is set."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"this {type(estimator).__name__} is not fitted yet: call fit(x_data, x_ref, w_ref) first."
        )



def role_setting(backend: Any, role: str) -> str | None:
    """The hyperparameter of `backend` (an estimator or its class) that plays `role` (SETTING_ROLES),
    or None when it has none."""
    return dict(getattr(backend, "setting_roles", {})).get(role)


def backend_device(backend: Any) -> torch.device:
    """The torch device a backend's fits compute on (the CPU for backends without a device setting)."""
    setting = role_setting(backend, "device")
    return resolve_device(backend.get_params(deep=False)[setting]) if setting else torch.device("cpu")
