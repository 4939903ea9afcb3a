"""The registry of backends and their settings schema.

The registry maps a backend's name (the `kind` of a config's backend section, `--backend` on the
command line) to its class; each backend's settings schema (config and CLI) is derived from its
constructor signature and docstring, so adding a backend is its module plus one register_backend
line, and each hyperparameter and its default are declared once, in the estimator's constructor.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from ..core.exceptions import ConfigurationError
from ..core.identity import current_class_path, qualified_name
from .contract import Backend


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
    """{name: help} from the Parameters section of a numpy-style docstring, which ends at the next
    section's title (a line underlined with dashes). An entry is a line 'name', 'name : type' or
    'a, b : type' (names sharing one description) and its indented description, the help; an
    entry without a description keeps the text after ' : ' (the one-line form 'name : help')."""
    lines = inspect.cleandoc(docstring).splitlines()
    titles = [index for index in range(len(lines) - 1)
              if lines[index].strip() and set(lines[index + 1].strip()) == {"-"}]
    start = next((index + 2 for index in titles if lines[index].strip() == "Parameters"), len(lines))
    end = next((index for index in titles if index >= start), len(lines))
    helps: dict[str, str] = {}
    names: list[str] = []
    described = False
    for line in lines[start:end]:
        entry = re.match(r"^(\w+(?:, \w+)*)(?: : (.*))?$", line)
        if entry:
            names, described = [name.strip() for name in entry.group(1).split(",")], False
            helps.update(dict.fromkeys(names, (entry.group(2) or "").strip()))
        elif names and line.startswith(" ") and line.strip():
            for name in names:
                helps[name] = f"{helps[name]} {line.strip()}" if described else line.strip()
            described = True
    return helps
