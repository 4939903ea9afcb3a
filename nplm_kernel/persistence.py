"""Saving and loading fitted models: one .npz file per model, no pickle.

The file holds the estimator's class, its hyperparameters, its fitted state (arrays and numbers)
and the package version. A loaded model computes f(x) from the same numbers with the same code,
so on the same device it gives the same f to the last bit.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import ConfigurationError, InputError, NotFittedError

FORMAT = "nplm-model-v1"
#: Classes that may be loaded (module path -> class name); loading never imports anything else.
LOADABLE = {"nplm_kernel.estimator.KernelNPLM", "nn_baseline.estimator.NNNPLM",
            "nplm_kernel.taylor.KernelTaylorLearner", "nn_baseline.taylor.NNTaylorLearner"}
_ARRAY_PREFIX = "array:"


def _split(values: dict[str, Any], prefix: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {f"{prefix}{name}": value for name, value in values.items() if isinstance(value, np.ndarray)}
    plain = {name: value for name, value in values.items() if not isinstance(value, np.ndarray)}
    return arrays, plain


def save_model(estimator: Any, path: str | os.PathLike) -> None:
    """Write a fitted KernelNPLM, NNNPLM or Taylor learner (KernelTaylorLearner, NNTaylorLearner) to
    `path` (.npz): one learning of delta_k(x) then serves every toy."""
    from . import __version__

    if not hasattr(estimator, "fitted_state"):
        raise ConfigurationError(f"cannot save a {type(estimator).__name__}: not an nplm-kernel estimator.")
    state = estimator.fitted_state()
    parameter_arrays, parameters = _split(estimator.get_params(deep=False), "parameter:")
    state_arrays, state_values = _split(state, "state:")
    metadata = {
        "format": FORMAT,
        "package_version": __version__,
        "class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        "parameters": parameters,
        "state": state_values,
    }
    with open(path, "wb") as handle:
        np.savez(handle, metadata=np.array(json.dumps(metadata)), **parameter_arrays, **state_arrays)


def load_model(path: str | os.PathLike) -> Any:
    """Read a model written by save_model; InputError if the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            metadata = json.loads(str(archive["metadata"]))
            arrays = {name: archive[name] for name in archive.files if name != "metadata"}
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{path}: not an nplm-kernel model file ({error}).") from None
    if metadata.get("format") != FORMAT or metadata.get("class") not in LOADABLE:
        raise InputError(f"{path}: not an nplm-kernel model file (format {metadata.get('format')!r}).")
    module_name, class_name = metadata["class"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    parameters = dict(metadata["parameters"])
    parameters.update({name.removeprefix("parameter:"): value for name, value in arrays.items()
                       if name.startswith("parameter:")})
    state = dict(metadata["state"])
    state.update({name.removeprefix("state:"): value for name, value in arrays.items() if name.startswith("state:")})
    estimator = cls(**parameters)
    estimator.restore_fitted_state(state)
    estimator.saved_with_version_ = metadata["package_version"]
    return estimator


def require_fitted(estimator: Any, attribute: str) -> None:
    """NotFittedError naming the estimator unless `attribute` is set."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"this {type(estimator).__name__} is not fitted yet: call fit(x_data, x_ref, w_ref) first."
        )
