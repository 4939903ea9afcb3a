"""Reading event samples from files: .npy, .npz, HDF5 (.h5/.hdf5), parquet and ROOT (uproot).

load_events(path, columns=..., key=...) returns a float64 (n_events, n_features) array: `columns`
selects variables (names for parquet, ROOT branches, HDF5 datasets in a group, structured-array
fields; integer indices for plain arrays), `key` names the array in an .npz, the dataset or group
in an HDF5 file, or the TTree (or RNTuple) in a ROOT file. Optional readers import lazily and say which extra
to install.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError, InputError
from ..samples import as_events

SUFFIXES = {".npy": "numpy", ".npz": "numpy", ".h5": "hdf5", ".hdf5": "hdf5", ".parquet": "parquet", ".root": "root"}


def _optional(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(
            f"reading this file needs the '{module}' package: pip install 'nplm-kernel[{extra}]'"
        ) from None


def _missing(requested: Sequence[str], available: Sequence[str], path: Path, what: str) -> None:
    absent = [name for name in requested if name not in available]
    if absent:
        raise InputError(f"{path}: no {what} {', '.join(map(repr, absent))}; available: {', '.join(map(str, available))}.")


def _select_array(array: np.ndarray, columns: Sequence[str | int] | None, path: Path) -> np.ndarray:
    if array.dtype.names:
        names = list(columns) if columns is not None else list(array.dtype.names)
        _missing(names, array.dtype.names, path, "field")
        return np.column_stack([array[name] for name in names])
    if columns is None:
        return array
    matrix = array[:, None] if array.ndim == 1 else array
    indices = [int(column) if str(column).lstrip("-").isdigit() else column for column in columns]
    if any(not isinstance(index, int) for index in indices):
        raise InputError(f"{path}: a plain array has no column names; select columns by index, got {list(columns)}.")
    bad = [index for index in indices if not -matrix.shape[1] <= index < matrix.shape[1]]
    if bad:
        raise InputError(f"{path}: column index(es) {bad} out of range for {matrix.shape[1]} column(s).")
    return matrix[:, indices]


def _read_numpy(path: Path, columns, key) -> np.ndarray:
    if path.suffix == ".npy":
        return _select_array(np.load(path, allow_pickle=False), columns, path)
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if key is None:
            if len(names) != 1:
                raise InputError(f"{path}: holds arrays {names}; say which one with key=.")
            key = names[0]
        _missing([key], names, path, "array")
        return _select_array(archive[key], columns, path)


def _read_hdf5(path: Path, columns, key) -> np.ndarray:
    h5py = _optional("h5py", "io")
    with h5py.File(path, "r") as handle:
        if key is None:
            names = list(handle.keys())
            if len(names) != 1:
                raise InputError(f"{path}: holds {names}; say which dataset or group with key=.")
            key = names[0]
        _missing([key], list(handle.keys()), path, "dataset or group")
        node = handle[key]
        if isinstance(node, h5py.Group):
            names = list(columns) if columns is not None else list(node.keys())
            _missing(names, list(node.keys()), path, f"dataset in group {key!r}:")
            return np.column_stack([node[name][()] for name in names])
        return _select_array(node[()], columns, path)


def _read_parquet(path: Path, columns, key) -> np.ndarray:
    parquet = _optional("pyarrow.parquet", "io")
    available = parquet.read_schema(path).names
    names = list(columns) if columns is not None else available
    _missing(names, available, path, "column")
    table = parquet.read_table(path, columns=names)
    return np.column_stack([table.column(name).to_numpy() for name in names])


def _read_root(path: Path, columns, key) -> np.ndarray:
    uproot = _optional("uproot", "io")
    with uproot.open(path) as handle:
        trees = [name.split(";")[0] for name, classname in handle.classnames().items()
                 if classname.startswith("TTree") or classname == "ROOT::RNTuple"]
        if key is None:
            if len(set(trees)) != 1:
                raise InputError(f"{path}: holds trees {sorted(set(trees))}; say which one with key=.")
            key = trees[0]
        _missing([key], trees, path, "tree")
        tree = handle[key]
        names = list(columns) if columns is not None else list(tree.keys())
        _missing(names, list(tree.keys()), path, f"branch in tree {key!r}:")
        arrays = tree.arrays(names, library="np")
        return np.column_stack([np.asarray(arrays[name], dtype=np.float64) for name in names])


READERS = {"numpy": _read_numpy, "hdf5": _read_hdf5, "parquet": _read_parquet, "root": _read_root}


def load_events(
    path: str | os.PathLike, columns: Sequence[str | int] | None = None, key: str | None = None
) -> np.ndarray:
    """Events (n_events, n_features) as float64 from `path` (module docstring); InputError names
    the file and what is wrong (missing file, unknown format, missing column, non-finite values)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown file type {path.suffix!r}; supported: {', '.join(sorted(SUFFIXES))}.")
    try:
        values = READERS[kind](path, columns, key)
    except (OSError, ValueError, KeyError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: cannot be read as {kind}: {error}") from None
    return as_events(values, str(path))
