"""What a toy campaign is a null *of*: deterministic, JSON-safe descriptions of the objects that
define a distribution of t, and their comparison.

describe(obj) turns an estimator, a generator (function, bound method, functools.partial,
dataclass or plain object), a nuisance model or a sample into nested dicts of plain values, with
arrays replaced by their shape, dtype and a BLAKE2b digest of their bytes. A plain function (a
lambda, a function of a script) is described by its name and a digest of what it computes: its code
(bytecode, constants, names, nested functions), its defaults, the values it closes over and the
global values it names (code_digest), so that two lambdas, or a function redefined under one name,
are told apart. Two objects that would give different toys or fits get different descriptions; the
same objects in another process or session of the same Python version get the same one.
identity_differences(a, b) names the fields that differ.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import math
import sys
import types
from typing import Any

import numpy as np

#: Nesting depth beyond which an object is described by its class and repr only.
MAX_DEPTH = 12


def array_digest(values: np.ndarray) -> str:
    """BLAKE2b (128-bit) hex digest of an array's dtype, shape and C-ordered bytes."""
    array = np.ascontiguousarray(values)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def sample_digest(x: np.ndarray, w: np.ndarray | None = None) -> dict[str, Any]:
    """Description of an event sample (and its weights): sizes and a digest of the content."""
    events = np.ascontiguousarray(x, dtype=np.float64)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(array_digest(events).encode())
    if w is not None:
        digest.update(array_digest(np.broadcast_to(np.asarray(w, dtype=np.float64), (len(events),))).encode())
    return {"n_events": int(events.shape[0]), "n_features": int(events.shape[1]) if events.ndim == 2 else 1,
            "blake2b": digest.hexdigest()}


#: The packages whose classes and functions are named by their shortest public path.
OWN_PACKAGES = ("nplm_kernel", "nn_baseline")

#: Where classes of these packages were named in earlier versions; saved models and toy stores
#: written then name them so, and still mean the same class.
FORMER_CLASS_PATHS = {
    "nplm_kernel.estimator.KernelNPLM": "nplm_kernel.KernelNPLM",
    "nplm_kernel.kernel.estimator.KernelNPLM": "nplm_kernel.KernelNPLM",
    "nplm_kernel.taylor.KernelTaylorLearner": "nplm_kernel.KernelTaylorLearner",
    "nplm_kernel.kernel.taylor.KernelTaylorLearner": "nplm_kernel.KernelTaylorLearner",
    "nn_baseline.estimator.NNNPLM": "nn_baseline.NNNPLM",
    "nn_baseline.taylor.NNTaylorLearner": "nn_baseline.NNTaylorLearner",
    **{f"nplm_kernel.inference.campaign.{name}": f"nplm_kernel.toys.{name}"
       for name in ("ToySample", "PermutationToys", "AuxiliaryToys", "ReferencePoolToys", "LocalExcessToys")},
    **{f"nplm_kernel.inference.nuisance.{name}": f"nplm_kernel.nuisance.{name}"
       for name in ("NormalizationNuisance", "ShapeNuisance", "NuisanceModel")},
    **{f"nplm_kernel.inference.baselines.{name}": f"nplm_kernel.baselines.{name}"
       for name in ("BinnedLikelihoodRatio", "BumpHunt", "MaximumMeanDiscrepancy", "SlicedKolmogorovSmirnov",
                    "SlicedWasserstein", "GaussianProcessBumpSearch", "GaussianMixtureScore")},
}
#: Keys of a description whose value is a qualified name (identity_differences compares them by
#: the name they have today).
NAME_KEYS = ("class", "method", "function")


def qualified_name(obj: Any) -> str:
    """'module.qualname' of a class or function, except that one of this project's packages is
    named by the shortest public path that exports it ('nplm_kernel.KernelNPLM',
    'nplm_kernel.toys.ReferencePoolToys', 'nplm_kernel.benchmarks.Exponential1D.data' for a method):
    moving code between internal modules then changes neither saved models nor toy-store identities."""
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", type(obj).__qualname__)
    parts = module.split(".")
    if parts[0] in OWN_PACKAGES and sys.modules.get(module) is not None:
        head = name.split(".")[0]
        defined = getattr(sys.modules[module], head, None)
        for depth in range(1, len(parts)):
            public = ".".join(parts[:depth])
            if defined is not None and getattr(sys.modules.get(public), head, None) is defined:
                return f"{public}.{name}"
    return f"{module}.{name}"


def current_class_path(path: str) -> str:
    """The name qualified_name gives today to a class (or a member of one, 'Class.method') recorded
    as `path` by any version."""
    if path in FORMER_CLASS_PATHS:
        return FORMER_CLASS_PATHS[path]
    owner, _, member = path.rpartition(".")
    return f"{FORMER_CLASS_PATHS[owner]}.{member}" if owner in FORMER_CLASS_PATHS else path


def describe(value: Any, depth: int = 0) -> Any:
    """A deterministic JSON-safe description of `value` (module docstring)."""
    if depth > MAX_DEPTH:
        return {"class": qualified_name(type(value)), "repr": repr(value)[:200]}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, np.ndarray):
        return {"array": list(value.shape), "dtype": value.dtype.str, "blake2b": array_digest(value)}
    if type(value).__module__.startswith("torch"):
        return _describe_torch(value, depth)
    if isinstance(value, (list, tuple)):
        return [describe(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {str(key): describe(item, depth + 1) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, functools.partial):
        return {"partial": describe(value.func, depth + 1), "args": describe(list(value.args), depth + 1),
                "keywords": describe(dict(value.keywords), depth + 1)}
    if inspect.ismethod(value):
        return {"method": qualified_name(value.__func__), "of": describe(value.__self__, depth + 1)}
    if inspect.isfunction(value):
        return {"function": qualified_name(value), "code": code_digest(value, depth)}
    if inspect.isbuiltin(value) or inspect.isclass(value):
        return {"function" if not inspect.isclass(value) else "class": qualified_name(value)}
    described: dict[str, Any] = {"class": qualified_name(type(value))}
    if hasattr(value, "get_params"):
        described["parameters"] = describe(value.get_params(deep=False), depth + 1)
        if hasattr(value, "fitted_state") and _is_fitted(value):
            described["fitted"] = describe(value.fitted_state(), depth + 1)
        return described
    if dataclasses.is_dataclass(value):
        described["fields"] = {field.name: describe(getattr(value, field.name), depth + 1)
                               for field in dataclasses.fields(value)}
        return described
    if hasattr(value, "__dict__"):
        described["attributes"] = describe(vars(value), depth + 1)
        return described
    described["repr"] = repr(value)[:200]
    return described


def code_digest(function: types.FunctionType, depth: int = 0) -> str:
    """BLAKE2b (128-bit) digest of what a plain function computes: its code object (bytecode,
    constants with nested code objects, names), its defaults, the values its closure holds and the
    values of the globals it names (other functions, classes and modules by their name); the same
    digest in every process of one Python version."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(sys.version_info[:2]).encode())

    def add_code(code: types.CodeType) -> None:
        digest.update(code.co_code)
        digest.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_argcount,
                            code.co_kwonlyargcount)).encode())
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                add_code(constant)
            else:
                digest.update(_constant_text(constant).encode())

    add_code(function.__code__)
    cells = [cell.cell_contents for cell in function.__closure__ or () if _filled(cell)]
    named = {name: function.__globals__[name] for name in _global_names(function.__code__)
             if name in function.__globals__}
    used = {"defaults": function.__defaults__, "keyword_defaults": function.__kwdefaults__, "closure": cells,
            "globals": named}
    digest.update(repr(_used_values(used, depth)).encode())
    return digest.hexdigest()


def _constant_text(constant: Any) -> str:
    """repr of a code constant, a frozenset's items sorted (their order changes with string hashing)."""
    if isinstance(constant, frozenset):
        return "frozenset(" + repr(sorted(map(_constant_text, constant))) + ")"
    if isinstance(constant, tuple):
        return "(" + ", ".join(map(_constant_text, constant)) + ")"
    return repr(constant)


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _global_names(code: types.CodeType) -> set[str]:
    """The names a code object (and the code nested in it) may look up as globals."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _used_values(value: Any, depth: int) -> Any:
    """The description of a value a function uses: functions, classes and modules by their name
    (a function named here is not followed further: recursion ends), everything else as describe."""
    if isinstance(value, dict):
        return {str(key): _used_values(item, depth) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_used_values(item, depth) for item in value]
    if inspect.isfunction(value) or inspect.isbuiltin(value) or inspect.isclass(value):
        return qualified_name(value)
    if inspect.ismodule(value):
        return value.__name__
    return describe(value, depth + 1)


def _is_fitted(estimator: Any) -> bool:
    return any(name.endswith("_") and not name.startswith("_") for name in vars(estimator))


def _describe_torch(value: Any, depth: int) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return describe(value.detach().cpu().numpy(), depth)
    if isinstance(value, torch.nn.Module):
        return {"class": qualified_name(type(value)),
                "state": describe({name: tensor for name, tensor in value.state_dict().items()}, depth + 1)}
    return {"class": qualified_name(type(value)), "repr": str(value)}


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and any(isinstance(item, (dict, list)) for item in value):
        out[f"{prefix}.length" if prefix else "length"] = len(value)
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}.{index}" if prefix else str(index), out)
    else:
        out[prefix] = value


def identity_differences(expected: dict[str, Any], found: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, value in `expected`, value in `found`) for every leaf that differs (missing: None)."""
    left: dict[str, Any] = {}
    right: dict[str, Any] = {}
    _flatten(expected, "", left)
    _flatten(found, "", right)
    for flat in (left, right):
        for key, value in flat.items():
            if key.rpartition(".")[2] in NAME_KEYS and isinstance(value, str):
                flat[key] = current_class_path(value)
    return [(key, left.get(key), right.get(key)) for key in sorted(set(left) | set(right))
            if left.get(key) != right.get(key)]


def format_differences(differences: list[tuple[str, Any, Any]], left: str, right: str, limit: int = 8) -> str:
    """One line per differing field: 'field: <left> has A, <right> has B' (at most `limit`)."""
    lines = [f"{field}: {left} has {a!r}, {right} has {b!r}" for field, a, b in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"... and {len(differences) - limit} more field(s)")
    return "\n  ".join(lines)
