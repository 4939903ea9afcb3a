"""Saving and loading fitted models: one .npz file per model, no pickle.

The file holds the estimator's class, its hyperparameters, its fitted state (arrays and numbers)
and the package version. A loaded model computes f(x) from the same numbers with the same code,
so on the same device it gives the same f to the last bit.
"""

from __future__ import annotations

import inspect
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import loadable_class, loadable_paths, role_setting
from ..core.devices import resolve_device
from ..core.exceptions import ConfigurationError, InputError
from ..core.identity import qualified_name
from ..core.version import __version__

FORMAT = "nplm-model-v1"
#: The largest model file load_model reads, packed or unpacked (the models it writes take megabytes).
MAX_MODEL_BYTES = 256 * 2**20
METADATA_KEYS = {"format", "package_version", "class", "parameters", "state"}
#: A shape spec: one entry per axis, an int (that size) or a letter (the same size wherever it
#: appears); () for a number; None for a value of any form (a dict, a list of names, or None).
ShapeSpec = tuple[int | str, ...] | None


def _split(values: dict[str, Any], prefix: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays = {f"{prefix}{name}": value for name, value in values.items() if isinstance(value, np.ndarray)}
    plain = {name: value for name, value in values.items() if not isinstance(value, np.ndarray)}
    return arrays, plain


def save_model(estimator: Any, path: str | os.PathLike) -> None:
    """Write a fitted registered backend (nplm_kernel.contract) or Taylor learner (KernelTaylorLearner,
    NNTaylorLearner) to `path` (.npz): one learning of delta_k(x) then serves every toy."""
    path_name = qualified_name(type(estimator))
    if loadable_class(path_name) is None:
        raise ConfigurationError(f"cannot save a {type(estimator).__name__}: not a registered backend or Taylor "
                                 f"learner ({', '.join(loadable_paths())}).")
    if Path(path).is_symlink():
        raise InputError(f"{path} is a symbolic link; save_model writes a regular file and never through a link: "
                         "remove the link or choose another path.")
    state = estimator.fitted_state()
    parameter_arrays, parameters = _split(estimator.get_params(deep=False), "parameter:")
    state_arrays, state_values = _split(state, "state:")
    metadata = {
        "format": FORMAT,
        "package_version": __version__,
        "class": path_name,
        "parameters": parameters,
        "state": state_values,
    }
    with open(path, "wb") as handle:
        np.savez(handle, metadata=np.array(json.dumps(metadata)), **parameter_arrays, **state_arrays)


def check_fitted_state(state: dict[str, Any], spec: dict[str, ShapeSpec]) -> None:
    """ValueError unless `state` has exactly the attributes of `spec`, each of its shape (the
    letters of the spec standing for sizes that must agree across attributes)."""
    missing, extra = sorted(set(spec) - set(state)), sorted(set(state) - set(spec))
    if missing or extra:
        raise ValueError(f"fitted state has missing attribute(s) {missing} and unexpected attribute(s) {extra}")
    sizes: dict[str, int] = {}
    for name, shape in spec.items():
        if shape is None:
            continue
        value = np.asarray(state[name])
        if value.dtype.kind not in "biuf" or value.ndim != len(shape):
            raise ValueError(f"fitted attribute {name} must be a numeric array of shape {shape}, got "
                             f"{value.dtype} of shape {value.shape}")
        for axis, (size, expected) in enumerate(zip(value.shape, shape)):
            if isinstance(expected, str):
                expected = sizes.setdefault(expected, size)
            if size != expected:
                raise ValueError(f"fitted attribute {name} has shape {value.shape}, but axis {axis} must have "
                                 f"size {expected} (shape {shape}, sizes {sizes})")
        if not np.isfinite(value).all():
            raise ValueError(f"fitted attribute {name} holds non-finite values")


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays of a model file, sizes bounded before anything is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
        if max(path.stat().st_size, unpacked) > MAX_MODEL_BYTES:
            raise InputError(f"{path}: {max(path.stat().st_size, unpacked) / 2**20:.0f} MiB unpacked, more than any model "
                             f"nplm-kernel writes ({MAX_MODEL_BYTES / 2**20:.0f} MiB): not loaded.")
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            metadata = json.loads(str(archive["metadata"]))
            arrays = {name: archive[name] for name in archive.files if name != "metadata"}
    except RecursionError:
        raise InputError(f"{path}: damaged model file: its metadata is nested too deeply to be one.") from None
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not an nplm-kernel model file, or a damaged one ({type(error).__name__}: "
                         f"{error}).") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise InputError(f"{path}: not an nplm-kernel model file (format {found!r}).")
    if set(metadata) != METADATA_KEYS:
        raise InputError(f"{path}: damaged model file: metadata keys {sorted(metadata)}, expected "
                         f"{sorted(METADATA_KEYS)}.")
    if not isinstance(metadata["class"], str) or loadable_class(metadata["class"]) is None:
        raise InputError(f"{path}: class {metadata['class']!r} is not one that nplm-kernel loads "
                         f"({loadable_paths()}).")
    if not (isinstance(metadata["parameters"], dict) and isinstance(metadata["state"], dict)):
        raise InputError(f"{path}: damaged model file: parameters and state must be objects.")
    return metadata, arrays


def load_model(path: str | os.PathLike, device: str | None = None) -> Any:
    """Read a model written by save_model. InputError, naming the file and the problem, for a
    missing, truncated, oversized, foreign or damaged file: unknown class, unknown or invalid
    hyperparameters (each checked as the estimator checks its own), missing or unexpected fitted
    attributes, wrong shapes, a fitted state the estimator refuses. Only the class's declared fitted attributes
    (fitted_state_spec) are set, and nothing is imported but the declared classes. device: where
    the loaded model computes (e.g. 'cpu' for a model saved on a GPU machine); None: as saved."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    metadata, arrays = _read(path)
    cls = loadable_class(metadata["class"])
    parameters = dict(metadata["parameters"])
    state = dict(metadata["state"])
    for name, value in arrays.items():
        kind, _, attribute = name.partition(":")
        if kind not in ("parameter", "state") or not attribute:
            raise InputError(f"{path}: damaged model file: unexpected array {name!r}.")
        (parameters if kind == "parameter" else state)[attribute] = value
    accepted = set(inspect.signature(cls).parameters)
    device_setting = role_setting(cls, "device")
    if device is not None:
        if device_setting is None:
            raise ConfigurationError(f"{cls.__name__} has no device setting; load it without device=.")
        parameters[device_setting] = device
    elif device_setting in parameters:
        try:
            resolve_device(parameters[device_setting])
        except ConfigurationError as error:
            raise ConfigurationError(f"{path}: saved to compute on {parameters[device_setting]!r}: {error} Load it "
                                     "with load_model(path, device='cpu').") from None
    unknown = sorted(set(parameters) - accepted)
    if unknown:
        raise InputError(f"{path}: unknown hyperparameter(s) {unknown} for {cls.__name__} (accepted: "
                         f"{sorted(accepted)}).")
    try:
        estimator = cls(**parameters)
        if hasattr(estimator, "check_settings"):
            estimator.check_settings()
        check_fitted_state(state, estimator.fitted_state_spec())
        estimator.restore_fitted_state(state)
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        raise InputError(f"{path}: damaged model file: {error}") from None
    estimator.saved_with_version_ = metadata["package_version"]
    return estimator
