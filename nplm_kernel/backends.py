"""The backend contract and the registry of backends.

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
  of its own fit to solver tolerance (campaigns use it for throughput).

The registry maps a backend's name (the `kind` of a config's backend section, `--backend` on the
command line) to its class; each backend's settings schema (config and CLI) is derived from its
constructor signature, so adding a backend is its module plus one register_backend line.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .exceptions import ConfigurationError, NotFittedError
from .identity import current_class_path, qualified_name
from .samples import Samples
from .statistic import nplm_loss, t_from_loss


@dataclass(frozen=True)
class BackendFit:
    """What one backend fit produced: t = -2 L at the learned f, the NPLM loss L (offsets included,
    without any penalty or auxiliary term), f on the data (N_D,) and reference (N_R,) points,
    whether the fit met its tolerance (None when the backend has no criterion, e.g. a fixed number
    of epochs), and the backend's own diagnostics."""

    t: float
    loss: float
    f_data: np.ndarray
    f_ref: np.ndarray
    converged: bool | None
    diagnostics: Any


@runtime_checkable
class Backend(Protocol):
    """The contract (module docstring)."""

    execution_settings: ClassVar[tuple[str, ...]]
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
                    "fits_batches")


def contract_gaps(backend: Any) -> list[str]:
    """The members of the backend contract that `backend` lacks (empty when it implements it)."""
    return [name for name in CONTRACT_MEMBERS if not hasattr(backend, name)]


def finish_fit(estimator: Any, samples: Samples, f_data: np.ndarray, f_ref: np.ndarray, converged: bool | None,
               diagnostics: Any, offset_data: np.ndarray | None = None, offset_ref: np.ndarray | None = None) -> None:
    """Set the contract's fitted attributes from f on the training points: fit_ (BackendFit), t_,
    loss_ (L with the samples' offsets, or the given ones), converged_ and diagnostics_."""
    offset_data = samples.offset_data if offset_data is None else offset_data
    offset_ref = samples.offset_ref if offset_ref is None else offset_ref
    loss = nplm_loss(f_data, f_ref, samples.w_ref, offset_data, offset_ref)
    estimator.fit_ = BackendFit(t_from_loss(loss), loss, f_data, f_ref, converged, diagnostics)
    estimator.loss_, estimator.t_ = loss, estimator.fit_.t
    estimator.converged_, estimator.diagnostics_ = converged, diagnostics


def require_fitted(estimator: Any, attribute: str) -> None:
    """NotFittedError naming the estimator unless `attribute` is set."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"this {type(estimator).__name__} is not fitted yet: call fit(x_data, x_ref, w_ref) first."
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """torch.device for `device` ('auto': CUDA when available, else the CPU); ConfigurationError if
    it is malformed or CUDA was asked for but is not available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigurationError(f"device {device!r} is not a valid torch device: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu' "
                                 "(or 'auto').")
    return resolved


# --- the registry ---------------------------------------------------------------------------

@dataclass
class BackendEntry:
    """A registered backend: its name and its class, given directly or as 'module:Class' (imported
    when first needed, so that the registry does not import every backend)."""

    name: str
    target: str | type

    @property
    def estimator(self) -> type:
        if isinstance(self.target, str):
            module, _, qualname = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), qualname)
        return self.target

    @property
    def path(self) -> str:
        """'module.Class' of the estimator (what a saved model records)."""
        return qualified_name(self.estimator)

    def settings(self) -> list[Setting]:
        """The backend's hyperparameters (settings_of)."""
        return settings_of(self.estimator)

    def settings_model(self) -> type[BaseModel]:
        """A pydantic model of the backend's config section: `kind` (this name) and every setting
        that a config can hold, with the constructor's defaults; unknown keys are refused."""
        fields: dict[str, Any] = {"kind": (Literal[self.name], ...)}
        for setting in self.settings():
            if setting.configurable:
                fields[setting.name] = (setting.annotation, setting.default)
        return create_model(f"{self.estimator.__name__}Settings", __config__=ConfigDict(extra="forbid", frozen=True),
                            **fields)


_REGISTRY: dict[str, BackendEntry] = {
    "kernel": BackendEntry("kernel", "nplm_kernel.kernel.estimator:KernelNPLM"),
    "nn": BackendEntry("nn", "nn_baseline.estimator:NNNPLM"),
}
#: Saved-model classes that are not backends (Taylor learners of shape nuisances), by path.
_MODELS: dict[str, str] = {
    "nplm_kernel.KernelTaylorLearner": "nplm_kernel.kernel.taylor:KernelTaylorLearner",
    "nn_baseline.NNTaylorLearner": "nn_baseline.taylor:NNTaylorLearner",
}


def register_backend(name: str, estimator: type | str) -> None:
    """Make a backend available by `name` to NPLMTest users, configs (`backend: {kind: name}`),
    the CLI (`--backend name`) and persistence."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigurationError(f"backend names are lowercase identifiers, got {name!r}.")
    _REGISTRY[name] = BackendEntry(name, estimator)


def backend_names() -> list[str]:
    return list(_REGISTRY)


def backend_entry(name: str) -> BackendEntry:
    if name not in _REGISTRY:
        raise ConfigurationError(f"unknown backend {name!r}; registered: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def backend_name_of(estimator: Any) -> str | None:
    """The registered name of an estimator's class (None when it is not registered)."""
    for name, entry in _REGISTRY.items():
        if isinstance(estimator, entry.estimator):
            return name
    return None


def loadable_class(path: str) -> type | None:
    """The class a saved model names (qualified_name, or a former path), if it is a registered
    backend or model."""
    path = current_class_path(path)
    for entry in _REGISTRY.values():
        if entry.path == path:
            return entry.estimator
    if path in _MODELS:
        module, _, qualname = _MODELS[path].partition(":")
        return getattr(importlib.import_module(module), qualname)
    return None


def loadable_paths() -> list[str]:
    return sorted([entry.path for entry in _REGISTRY.values()] + list(_MODELS))


def parse_setting(setting: Setting, text: str) -> Any:
    """A command-line string for `setting`, as the value its settings model validates: 'none'
    for None, comma-separated items for a list or tuple, the string itself otherwise (pydantic
    converts numbers and booleans)."""
    if text.strip().lower() in ("none", "null") and setting.default is None:
        return None
    if any(token in str(setting.annotation) for token in ("list[", "tuple[")):
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def backend_from_options(name: str, options: dict[str, str]) -> Backend:
    """The backend `name` built from command-line strings {setting: text}; ConfigurationError names
    an option that belongs to another backend or whose value is invalid."""
    entry = backend_entry(name)
    settings = {setting.name: setting for setting in entry.settings() if setting.configurable}
    values: dict[str, Any] = {}
    for option, text in options.items():
        if option not in settings:
            owners = [other for other in _REGISTRY if option in {s.name for s in _REGISTRY[other].settings()}]
            raise ConfigurationError(f"--{option.replace('_', '-')} is a setting of backend(s) {', '.join(owners)}, "
                                     f"not of {name!r}.")
        values[option] = parse_setting(settings[option], text)
    try:
        section = entry.settings_model().model_validate({"kind": name, **values})
    except ValidationError as error:
        problem = error.errors()[0]
        option = "--" + str(problem["loc"][0]).replace("_", "-") if problem["loc"] else "a backend option"
        raise ConfigurationError(f"{option}: {problem['msg']} (got {options.get(str(problem['loc'][0]))!r}).") from None
    return build_backend(section)


def build_backend(section: dict[str, Any] | BaseModel) -> Backend:
    """The estimator a backend section describes ({'kind': name, setting: value, ...}), its
    settings checked (ConfigurationError names the bad one)."""
    values = dict(section.model_dump(exclude_unset=True) | {"kind": section.kind} if isinstance(section, BaseModel)
                  else section)
    entry = backend_entry(values.pop("kind"))
    accepted = {setting.name for setting in entry.settings()}
    unknown = sorted(set(values) - accepted)
    if unknown:
        raise ConfigurationError(f"unknown setting(s) {unknown} for backend {entry.name!r}; accepted: {sorted(accepted)}.")
    estimator = entry.estimator(**values)
    estimator.check_settings()
    return estimator


# --- settings schema from constructor signatures ---------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One hyperparameter of a backend: name, type annotation, default, help text (from the class
    docstring's parameter list) and whether a config or the command line can hold it (arrays
    cannot: they are Python-only)."""

    name: str
    annotation: Any
    default: Any
    help: str
    configurable: bool


def settings_of(cls: type) -> list[Setting]:
    """The constructor's keyword arguments of `cls` as Settings, in signature order."""
    hints = typing.get_type_hints(cls.__init__, include_extras=False)
    documented = _parameter_help(cls.__doc__ or "")
    settings = []
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        annotation = hints.get(name, Any)
        configurable = "ndarray" not in str(annotation)
        settings.append(Setting(name, annotation, parameter.default, documented.get(name, ""), configurable))
    return settings


def _parameter_help(docstring: str) -> dict[str, str]:
    """'name : text' entries of a numpy-style Parameters section (several names may share one)."""
    helps: dict[str, str] = {}
    current: list[str] = []
    for line in inspect.cleandoc(docstring).splitlines():
        match = re.match(r"^(\w+(?:, \w+)*) : (.*)$", line)
        if match:
            current = [name.strip() for name in match.group(1).split(",")]
            for name in current:
                helps[name] = match.group(2).strip()
        elif current and line.startswith(" ") and line.strip():
            for name in current:
                helps[name] += " " + line.strip()
        elif not line.strip():
            current = []
    return helps
