"""Analysis configuration: one YAML file describes a whole study, validated with pydantic.

Unknown keys are errors (a misspelt key is never silently ignored), and every error names the
key path and its line in the file. Relative paths are relative to the config file.

    inputs:
      data: {path: data.parquet}
      reference: {path: reference.parquet, expected_yield: 2000}   # or weight_column: w
      columns: [x]                  # input variables (columns, branches, HDF5 datasets)
      key: null                     # .npz array, HDF5 dataset/group, ROOT tree
      cuts: {x: [0.0, null]}        # keep low <= value < high (null = open)
      selection: "nMuon >= 2"       # ROOT TTrees: an uproot cut; columns may be expressions ('Muon_pt[:, 0]')
    backend: {kind: kernel, n_centers: 500, penalty: 1.0e-6}   # any KernelNPLM setting (device: cuda, dtype:
                                    # float32, ...); or kind: nn with any NNNPLM setting; or a registered backend
    toys: {n_toys: 300, seed: 0, executor: local, pool_fraction: 0.5}   # or pool: heldout.parquet
                                    # store: toys.jsonl (relative to the output directory)
                                    # executor: serial, local, a number of processes, dask:ADDRESS, or batch
                                    # jobs: {kind: slurm, jobs: 4, cores: 8, memory: 16GB, walltime: "04:00:00"}
    nuisances:                      # optional: t = tau - Delta; toys draw nu0 ~ N(0, sigma)
      - {name: lumi, kind: normalization, sigma: 0.025}
      - {name: scale, kind: shape, sigma: 0.05, coefficients: delta_scale.npz}   # save_model of a Taylor learner
    test: {width_quantiles: [0.5, 0.9]}   # kernel sigma not fixed: multi-scale test (min-p); [] for one width
    outputs: {directory: results}
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ..contract import backend_entry, backend_names, build_backend
from ..core.exceptions import ConfigurationError
from ..inference import DEFAULT_WIDTH_QUANTILES
from ..toys import DEFAULT_EXECUTOR, resolve_executor


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataInput(_Strict):
    path: Path


class ReferenceInput(_Strict):
    path: Path
    expected_yield: Annotated[float, Field(gt=0)] | None = None
    weight_column: str | None = None

    @model_validator(mode="after")
    def _one_normalisation(self) -> ReferenceInput:
        if (self.expected_yield is None) == (self.weight_column is None):
            raise ValueError("give exactly one of expected_yield (N(R)) or weight_column")
        return self


class Inputs(_Strict):
    data: DataInput
    reference: ReferenceInput
    columns: list[str] | None = None
    key: str | None = None
    cuts: dict[str, tuple[float | None, float | None]] = {}
    selection: str | None = None


class Toys(_Strict):
    n_toys: Annotated[int, Field(ge=2)]
    seed: int = 0
    executor: str | int | dict[str, Any] = DEFAULT_EXECUTOR
    pool: Path | None = None
    pool_fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    store: Path = Path("toys.jsonl")

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
        if (self.pool is None) == (self.pool_fraction is None):
            raise ValueError("null toys need exactly one of pool (a held-out file) or pool_fraction")
        return self


class NuisanceEntry(_Strict):
    name: str
    kind: Literal["normalization", "shape"]
    sigma: Annotated[float, Field(gt=0)]
    central_value: float = 0.0
    coefficients: Path | None = None

    @model_validator(mode="after")
    def _coefficients_for_shapes(self) -> NuisanceEntry:
        if (self.kind == "shape") != (self.coefficients is not None):
            raise ValueError("a shape nuisance needs coefficients (a Taylor learner saved with save_model); "
                             "a normalization nuisance takes none")
        return self


class TestSettings(_Strict):
    """width_quantiles: when the backend's kernel width sigma is not fixed, the test is multi-scale:
    one fit per width at these quantiles of pairwise reference distances, calibrated jointly by
    min-p on the same null toys ([] or null: one fit with the default width)."""

    width_quantiles: list[Annotated[float, Field(gt=0, lt=1)]] | None = list(DEFAULT_WIDTH_QUANTILES)


class Outputs(_Strict):
    directory: Path = Path("results")


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
        raw = yaml.safe_load(text)
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
    return config
