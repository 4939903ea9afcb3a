"""Reading event samples from files: .npy, .npz, HDF5 (.h5/.hdf5), parquet and ROOT (uproot).

load_events(path, columns=..., key=..., selection=...) returns a float64 (n_events, n_features)
array: `columns` selects variables (names for parquet, ROOT branches, HDF5 datasets in a group,
structured-array fields; integer indices for plain arrays), `key` names the array in an .npz, the
dataset or group in an HDF5 file, or the TTree (or RNTuple) in a ROOT file. In a TTree a column
may be an uproot expression, e.g. 'Muon_pt[:, 0]' for the first value of a jagged branch, and
`selection` an uproot cut, e.g. 'nMuon >= 2'; the tree is read once, in chunks of `step_size`
(uproot.iterate), keeping only the selected events. A jagged branch asked for as a plain column is
refused with a hint. Optional readers import lazily and say which extra to install.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.exceptions import ConfigurationError, InputError
from ..core.samples import as_events

#: A column that takes the k-th value of a jagged branch, after the selection: 'Muon_pt[:, 0]'.
ELEMENT = re.compile(r"^(\w+)\[\s*:\s*,\s*(-?\d+)\s*\]$")
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


def _flat_column(values: Any, name: str, path: Path) -> np.ndarray:
    """One value per event as float64; InputError with a hint for a jagged branch."""
    awkward = importlib.import_module("awkward")
    try:
        return np.asarray(awkward.to_numpy(values), dtype=np.float64)
    except ValueError:
        raise InputError(
            f"{path}: branch {name!r} is jagged (a varying number of values per event); choose one value per event "
            f"with an expression such as '{name}[:, 0]' (the first one) and a selection that guarantees it exists, "
            f"e.g. selection='n{name.split('_')[0]} >= 1'."
        ) from None


def _read_root(path: Path, columns, key, selection: str | None = None, step_size: str = "100 MB") -> np.ndarray:
    uproot = _optional("uproot", "io")
    with uproot.open(path) as handle:
        classes = {name.split(";")[0]: classname for name, classname in handle.classnames().items()
                   if classname.startswith("TTree") or classname == "ROOT::RNTuple"}
        if key is None:
            if len(classes) != 1:
                raise InputError(f"{path}: holds trees {sorted(classes)}; say which one with key=.")
            key = next(iter(classes))
        _missing([key], list(classes), path, "tree")
        tree = handle[key]
        names = list(columns) if columns is not None else list(tree.keys())
        indexed = {name: match.groups() for name in names if (match := ELEMENT.match(name))}
        reads = list(dict.fromkeys(indexed[name][0] if name in indexed else name for name in names))
        plain = [name for name in reads if name.isidentifier()]
        _missing(plain, list(tree.keys()), path, f"branch in tree {key!r}:")
        if classes[key] == "ROOT::RNTuple" and (selection or len(plain) < len(reads)):
            raise InputError(f"{path}: {key!r} is an RNTuple; expressions and selections need a TTree here "
                             f"(asked for {names} with selection {selection!r}).")
        chunks = []
        try:
            for chunk in tree.iterate(reads, cut=selection, step_size=step_size, library="ak"):
                values = [chunk[indexed[name][0]][:, int(indexed[name][1])] if name in indexed else chunk[name]
                          for name in names]
                chunks.append(np.column_stack([_flat_column(value, name, path) for value, name in zip(values, names)]))
        except (IndexError, KeyError, NameError, SyntaxError, TypeError) as error:
            raise InputError(f"{path}: cannot evaluate the columns {names} with selection {selection!r} in tree "
                             f"{key!r} ({type(error).__name__}: {error}); an index such as [:, k] needs every "
                             "selected event to hold k + 1 values.") from None
        return np.concatenate(chunks) if chunks else np.empty((0, len(names)))


READERS = {"numpy": _read_numpy, "hdf5": _read_hdf5, "parquet": _read_parquet, "root": _read_root}


def load_events(
    path: str | os.PathLike, columns: Sequence[str | int] | None = None, key: str | None = None,
    selection: str | None = None,
) -> np.ndarray:
    """Events (n_events, n_features) as float64 from `path` (module docstring); InputError names
    the file and what is wrong (missing file, unknown format, missing column, jagged branch,
    non-finite values). `selection` (an uproot cut) is for ROOT TTrees only."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown file type {path.suffix!r}; supported: {', '.join(sorted(SUFFIXES))}.")
    if selection is not None and kind != "root":
        raise InputError(f"{path}: a selection string needs ROOT input; select {kind} events with range cuts "
                         "(cuts: {column: [low, high]}).")
    try:
        values = READERS[kind](path, columns, key, selection) if kind == "root" else READERS[kind](path, columns, key)
    except (OSError, ValueError, KeyError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: cannot be read as {kind}: {error}") from None
    return as_events(values, str(path))
