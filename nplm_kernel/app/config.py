"""Analysis configuration: one YAML file describes a whole study, validated with pydantic.

Unknown keys are errors (a misspelt key is never silently ignored), and every error names the
key path and its line in the file. Relative paths are relative to the config file.

    inputs:
      data: {path: data.parquet}
      reference: {path: reference.parquet, expected_yield: 2000}
      # or reference: {path: reference.parquet, weight_column: w}
      columns: [x]               # columns, ROOT branches, HDF5 datasets
      key: null                  # .npz array, HDF5 dataset/group, ROOT tree
      cuts: {x: [0.0, null]}     # keep low <= value < high (null: open)
      selection: "nMuon >= 2"    # ROOT TTrees: an uproot cut
      negative_weights: refuse   # or resample: cell resampling of negative (NLO) weights
    backend: {kind: kernel, n_centers: 500, penalty: 1.0e-6}
      # any KernelNPLM setting (device: cuda, dtype: float32, ...);
      # or kind: nn with any NNNPLM setting; or a registered backend
    toys: {n_toys: 300, seed: 0, executor: local, pool_fraction: 0.5}
      # or pool: heldout.parquet; store: toys.jsonl (in the output directory)
      # executor: serial, local, a number of processes, dask:ADDRESS, or batch jobs:
      #   {kind: slurm, jobs: 4, cores: 8, memory: 16GB, walltime: "04:00:00"}
      # kind: permutation (no pool): the data permuted with an unweighted reference
    nuisances:                   # optional: t = tau - Delta
      - {name: lumi, kind: normalization, sigma: 0.025}
      - {name: scale, kind: shape, sigma: 0.05, coefficients: delta.npz}
    test: {width_quantiles: [0.9], excess_scan: true}   # the default test; [] for one fit
    outputs:
      directory: results
      labels: ['$m_{\\mu\\mu}$']     # axis labels (mathtext)
      units: [GeV]
      experiment_label: CMS Simulation
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ..contract import backend_entry, backend_names, build_backend
from ..core.exceptions import ConfigurationError
from ..core.samples import check_choice
from ..core.weights import NEGATIVE_WEIGHT_TREATMENTS
from ..inference import DEFAULT_WIDTH_QUANTILES
from ..toys import DEFAULT_EXECUTOR, NULL_TOYS, resolve_executor


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked(check, value: Any, *arguments: Any) -> Any:
    """`value` when check(value, *arguments) passes; its ConfigurationError as the ValueError pydantic reports."""
    try:
        check(value, *arguments)
    except ConfigurationError as error:
        raise ValueError(str(error)) from None
    return value


class DataInput(_Strict):
    path: Path = Field(description="the data events' file (.npy, .npz, HDF5, parquet or ROOT)")


class ReferenceInput(_Strict):
    path: Path = Field(description="the reference (Standard-Model simulation) events' file, in a format of `data`")
    expected_yield: Annotated[float, Field(gt=0)] | None = Field(
        None, description="N(R), the events the data should hold: every reference event weighs N(R) / N_R after the "
                          "cuts; give this or `weight_column`")
    weight_column: str | None = Field(
        None, description="a column of per-event reference weights summing to N(R); give this or `expected_yield`")

    @model_validator(mode="after")
    def _one_normalisation(self) -> ReferenceInput:
        if (self.expected_yield is None) == (self.weight_column is None):
            raise ValueError("give exactly one of expected_yield (N(R)) or weight_column")
        return self


class Inputs(_Strict):
    data: DataInput = Field(description="the observed events")
    reference: ReferenceInput = Field(description="the reference events and their normalisation")
    columns: list[str] | None = Field(
        None, description="the input variables: columns, ROOT branches (or expressions such as 'Muon_pt[:, 0]') or "
                          "HDF5 datasets; null: every column")
    key: str | None = Field(None, description="the array in an .npz file, the dataset or group in HDF5, the tree in ROOT")
    cuts: dict[str, tuple[float | None, float | None]] = Field(
        {}, description="per column, keep low <= value < high (null: open), on data, reference and pool alike")
    selection: str | None = Field(None, description="ROOT TTrees: an uproot cut applied before the columns are read, "
                                                    "e.g. 'nMuon >= 2'")
    negative_weights: str = Field("refuse", description="a reference (and pool) with negative weights is refused "
                                                        "('refuse') or made usable by cell resampling ('resample'), which "
                                                        "keeps the weighted distribution and the sum of weights")

    @field_validator("negative_weights")
    @classmethod
    def _known_treatment(cls, value: str) -> str:
        return _checked(check_choice, value, NEGATIVE_WEIGHT_TREATMENTS, "negative_weights")


class Toys(_Strict):
    n_toys: Annotated[int, Field(ge=2)] = Field(
        description="null toys the store should hold (those already in it are kept: the campaign resumes)")
    seed: int = Field(0, description="campaign seed (toy i uses SeedSequence(seed, spawn_key=(i,))) and seed of the "
                                     "pool split")
    executor: str | int | dict[str, Any] = Field(
        DEFAULT_EXECUTOR, description="where toys run: 'serial', 'local' (a process pool over all cores), a number of "
                                      "processes, 'dask:ADDRESS' (a running scheduler) or batch jobs through "
                                      "dask-jobqueue ({kind: slurm, jobs: ..., cores: ..., memory: ..., walltime: ...})")
    kind: str = Field("pool", description="'pool': a held-out part of the reference (pool_fraction) or a file (pool), "
                                          "a weighted pool unweighted by accept-reject in each toy; 'permutation': the "
                                          "data and an unweighted reference permuted, no pool")
    pool: Path | None = Field(None, description="a file of held-out reference events to draw null toys from; give "
                                                "this or `pool_fraction`")
    pool_fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="hold out this fraction of the reference (a seeded split) to draw null toys from")
    store: Path = Field(Path("toys.jsonl"), description="the toy store, relative to the output directory")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        return _checked(check_choice, value, NULL_TOYS, "kind")

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str | int | dict[str, Any]) -> str | int | dict[str, Any]:
        try:
            resolve_executor(value)
        except ConfigurationError as error:
            raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _one_pool(self) -> Toys:
        pooled = (self.pool is not None) + (self.pool_fraction is not None)
        if self.kind == "permutation" and pooled:
            raise ValueError("permutation toys permute the data with the whole reference: give no pool or pool_fraction")
        if self.kind == "pool" and pooled != 1:
            raise ValueError("null toys need exactly one of pool (a held-out file) or pool_fraction")
        return self


class NuisanceEntry(_Strict):
    name: str = Field(description="the nuisance's name, as result.json reports its fitted values")
    kind: Literal["normalization", "shape"] = Field(
        description="'normalization': log r = nu; 'shape': log r = sum_k delta_k(x) nu^k from `coefficients`")
    sigma: Annotated[float, Field(gt=0)] = Field(description="width of its Gaussian auxiliary constraint")
    central_value: float = Field(0.0, description="nu0, the auxiliary measurement of the observed data")
    coefficients: Path | None = Field(None, description="shape nuisances: a Taylor learner saved with save_model "
                                                        "(relative to the config)")

    @model_validator(mode="after")
    def _coefficients_for_shapes(self) -> NuisanceEntry:
        if (self.kind == "shape") != (self.coefficients is not None):
            raise ValueError("a shape nuisance needs coefficients (a Taylor learner saved with save_model); "
                             "a normalization nuisance takes none")
        return self


class TestSettings(_Strict):
    width_quantiles: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        list(DEFAULT_WIDTH_QUANTILES),
        description="when the backend's width (the kernel's sigma) is not set, one fit per width at these quantiles "
                    "of pairwise reference distances, calibrated together (with the excess scan) by min-p on the "
                    "same null toys; [] or null: one fit with the backend's default width, and no scan")
    excess_scan: bool = Field(
        True, description="with width_quantiles and without nuisances, the backend's scan for a local excess is a "
                          "member of the min-p too (the default test: the full model at the 0.9 quantile and the "
                          "scan); false: the widths alone")


class Outputs(_Strict):
    directory: Path = Field(Path("results"), description="where result.json, the figures, the model and the toy "
                                                          "store go (relative to the config)")
    labels: list[str] | None = Field(None, description="the figures' axis label per input variable (matplotlib "
                                                       "mathtext works); null: the column names")
    units: list[str] | None = Field(None, description="the unit per input variable, e.g. [GeV, GeV, rad] ('' for "
                                                      "none)")
    experiment_label: str | None = Field(None, description="drawn above each figure, e.g. 'CMS Simulation' (first "
                                                           "word bold)")


def backend_section_type() -> Any:
    """The type of a config's backend section: one settings model per registered backend
    (backends.BackendEntry.settings_model), told apart by `kind`."""
    models = tuple(backend_entry(name).settings_model() for name in backend_names())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 - a runtime tuple of models


def analysis_config_model() -> type[BaseModel]:
    """The model of a whole analysis config, built from the backends registered now."""
    return create_model(
        "AnalysisConfig", __base__=_Strict, inputs=(Inputs, ...), backend=(backend_section_type(), ...),
        toys=(Toys, ...), nuisances=(list[NuisanceEntry], []), test=(TestSettings, TestSettings()),
        outputs=(Outputs, Outputs()))


def _line_of(text: str, location: tuple) -> int | None:
    """1-based line of the YAML node at `location` (a pydantic error path), or of its parent."""
    yaml = importlib.import_module("yaml")
    node, line = yaml.compose(text), None
    for part in location:
        if node is None:
            break
        if isinstance(node, yaml.MappingNode):
            match = next(((key, value) for key, value in node.value if key.value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_config(path: str | Path) -> BaseModel:
    """Read and validate an analysis YAML file; ConfigurationError names each bad key and line,
    and every input file that does not exist."""
    yaml = importlib.import_module("yaml")
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"{path}: config file not found.")
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_unique_key_loader(yaml))
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path}: not valid YAML: {error}") from None
    try:
        config = analysis_config_model().model_validate(raw if raw is not None else {})
    except ValidationError as error:
        messages = []
        for problem in error.errors():
            location = tuple(part for part in problem["loc"] if part not in backend_names())
            line = _line_of(text, location)
            where = ".".join(map(str, location)) or "(top level)"
            suffix = f" (line {line})" if line else ""
            reason = "unknown key (misspelt?)" if problem["type"] == "extra_forbidden" else problem["msg"]
            messages.append(f"{where}{suffix}: {reason}")
        raise ConfigurationError(f"{path}: invalid analysis config:\n  " + "\n  ".join(messages)) from None
    try:
        build_backend(config.backend)  # the backend's own checks (e.g. a negative penalty), before any work
    except ConfigurationError as error:
        named = [name for name in config.backend.model_fields_set if str(error).startswith(name)]
        where = f"backend.{named[0]} (line {_line_of(text, ('backend', named[0]))})" if named else "backend"
        raise ConfigurationError(f"{path}: invalid analysis config:\n  {where}: {error}") from None
    base = path.parent
    files = [("inputs.data.path", config.inputs.data.path), ("inputs.reference.path", config.inputs.reference.path)]
    if config.toys.pool is not None:
        files.append(("toys.pool", config.toys.pool))
    files += [(f"nuisances.{index}.coefficients", entry.coefficients) for index, entry in enumerate(config.nuisances)
              if entry.coefficients is not None]
    missing = [f"{key}: {base / file} not found" for key, file in files if not (base / file).is_file()]
    if missing:
        raise ConfigurationError(f"{path}: " + "; ".join(missing))
    for key, location, where in (("outputs.directory", config.outputs.directory, "the config's folder"),
                                 ("toys.store", config.toys.store, "the output directory")):
        if location.is_absolute() or ".." in location.parts:
            line = _line_of(text, tuple(key.split(".")))
            raise ConfigurationError(f"{path}: invalid analysis config:\n  {key}{f' (line {line})' if line else ''}: "
                                     f"{location} must be a relative path inside {where} (no absolute path, no '..'): "
                                     "nplm run writes nowhere else.")
    return config


def _unique_key_loader(yaml: Any) -> type:
    """yaml's safe loader, refusing a key given twice in one mapping (with both lines) instead of
    keeping the last one silently."""

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (lines {lines[key]} and {key_node.start_mark.line + 1})",
                        key_node.start_mark)
                lines[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader
