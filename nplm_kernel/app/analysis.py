"""A whole NPLM study from one analysis config: `nplm run analysis.yaml`.

Loads and selects the samples, runs the observed test (model saved), runs or resumes the null toy
campaign (with nuisances: t = tau - Delta, each toy with auxiliary measurements nu0 ~ N(0, sigma)),
calibrates t, and writes everything with its provenance into the output directory:
config.yaml (a copy), provenance.json (package and library versions, config hash), model.npz,
the toy store (toys.jsonl unless configured), result.json and, when matplotlib is installed, f.png and null.png.
result.json, both figures and `nplm run` show one p-value and Z, the calibration's (its text is
result.json's "summary").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import build_backend
from ..core.exceptions import ConfigurationError, InputError
from ..core.samples import as_weights, check_choice
from ..core.version import __version__
from ..core.weights import NEGATIVE_WEIGHT_TREATMENTS, resample_negative_weights
from ..inference import NPLMTest, significance
from ..io import load_events, load_model, save_model
from ..nuisance import NormalizationNuisance, NuisanceModel, ShapeNuisance
from ..store import read_store, verify_identity
from ..toys import (
    AuxiliaryToys,
    PermutationToys,
    ReferencePoolToys,
    WeightedPoolToys,
    campaign_identity,
    pool_toys,
    run_toys,
    split_reference,
)
from .config import NuisanceEntry, ReferenceInput, load_config
from .report import shown_width

logger = logging.getLogger(__name__)


def _selected(path: Path, columns: list[str] | None, key: str | None, cuts: dict, selection: str | None = None,
              extra: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(events, extra columns) of the events passing the selection and the range cuts
    low <= value < high, read from `path` in one pass."""
    if columns is None and (cuts or extra):
        raise ConfigurationError(f"{path}: cuts and weight columns need explicit input columns.")
    extra = list(extra or [])
    wanted = None if columns is None else list(dict.fromkeys(list(columns) + list(cuts) + extra))
    table = load_events(path, wanted, key, selection)
    position = {name: index for index, name in enumerate(wanted or [])}
    mask = np.ones(len(table), dtype=bool)
    for name, (low, high) in cuts.items():
        values = table[:, position[name]]
        mask &= (values >= (-np.inf if low is None else low)) & (values < (np.inf if high is None else high))
    if not mask.any():
        raise InputError(f"{path}: no event passes the selection {selection!r} and the cuts {cuts}.")
    events = table[mask] if columns is None else table[mask][:, [position[name] for name in columns]]
    return events, table[mask][:, [position[name] for name in extra]]


def load_data(path: Path, columns: list[str] | None, key: str | None, cuts: dict | None = None,
              selection: str | None = None) -> np.ndarray:
    """Data events after the selection and the cuts."""
    return _selected(path, columns, key, cuts or {}, selection)[0]


def load_reference(
    reference: ReferenceInput,
    columns: list[str] | None,
    key: str | None,
    cuts: dict | None = None,
    pool: Path | None = None,
    pool_fraction: float | None = None,
    seed: int = 0,
    selection: str | None = None,
    negative_weights: str = "refuse",
    n_toys: int | None = None,
) -> tuple[np.ndarray, np.ndarray, ReferencePoolToys | WeightedPoolToys | None]:
    """(x_ref, w_ref, null toys or None) after the selection and the cuts, read in one pass.
    Weights: the weight column, or expected_yield / N_R (N(R) after the cuts). Toys: from a
    held-out pool file (weighted by the same column), or a seeded split of the reference (the same
    for the observed test and its toys); negative_weights and n_toys as in prepare_reference."""
    cuts = cuts or {}
    extra = [reference.weight_column] if reference.weight_column else []
    x_ref, weights = _selected(reference.path, columns, key, cuts, selection, extra)
    if reference.weight_column:
        w_ref = weights[:, 0]
    else:
        w_ref = np.full(len(x_ref), reference.expected_yield / len(x_ref))
    x_pool = w_pool = None
    if pool is not None:
        x_pool, pool_weights = _selected(pool, columns, key, cuts, selection, extra)
        w_pool = pool_weights[:, 0] if reference.weight_column else None
    return prepare_reference(x_ref, w_ref, pool_fraction, seed, x_pool, w_pool, negative_weights, n_toys)


def prepare_reference(
    x_ref: np.ndarray,
    w_ref: np.ndarray,
    pool_fraction: float | None = None,
    seed: int = 0,
    x_pool: np.ndarray | None = None,
    w_pool: np.ndarray | None = None,
    negative_weights: str = "refuse",
    n_toys: int | None = None,
) -> tuple[np.ndarray, np.ndarray, ReferencePoolToys | WeightedPoolToys | None]:
    """(x_ref, w_ref, null toys or None) of a reference sample and its held-out pool: the pool
    x_pool (weights w_pool, None: unweighted), or else a seeded split of `pool_fraction` of the
    reference (toys.split_reference), or none. The toys draw Poisson(N(R) = sum w_ref) events, a
    weighted pool unweighted by accept-reject in each toy (toys.pool_toys). negative_weights: 'refuse'
    (InputError naming the events and this option) or 'resample' (cell resampling,
    core.weights.resample_negative_weights), applied to the reference and the pool separately
    after the split, so that they stay independent samples. n_toys: the toys the pool is asked for
    (SampleSizeWarning when the pool cannot make them count, with the figures)."""
    check_choice(negative_weights, NEGATIVE_WEIGHT_TREATMENTS, "negative_weights")
    w_ref = np.asarray(w_ref, dtype=np.float64)
    expected_yield = float(w_ref.sum())
    if x_pool is None and pool_fraction is not None:
        x_pool, w_pool, x_ref, w_ref = split_reference(x_ref, w_ref, pool_fraction, seed)
    x_ref, w_ref, _ = _usable_weights(x_ref, w_ref, negative_weights, "reference")
    if x_pool is None:
        return x_ref, w_ref, None
    effective_size = None
    if w_pool is not None:
        x_pool, w_pool, effective_size = _usable_weights(x_pool, w_pool, negative_weights, "pool")
    toys = pool_toys(x_pool, w_pool, expected_yield, effective_size)
    logger.info("null toys: %s", toys.summary())
    if n_toys is not None:
        toys.check_toys(n_toys)
    return x_ref, w_ref, toys


def _usable_weights(x: np.ndarray, w: np.ndarray, negative_weights: str,
                    name: str) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(x, w, n_eff before resampling or None): the weights refused when not all positive, or, with
    negative_weights='resample', cell-resampled when any is not positive."""
    if negative_weights == "refuse" or (w > 0).all():
        return x, as_weights(w, len(x), f"the {name}'s weights", owner="the test"), None
    resampled = resample_negative_weights(x, w)
    logger.info("%s: %s", name, resampled.summary())
    return resampled.x, resampled.w, resampled.original_effective_size


def build_nuisances(entries: list[NuisanceEntry], base: Path) -> NuisanceModel | None:
    """The NuisanceModel of a config's nuisances section (None when empty); shape coefficients are
    Taylor learners saved with save_model, paths relative to the config."""
    if not entries:
        return None
    nuisances = []
    for index, entry in enumerate(entries):
        if entry.kind == "normalization":
            nuisances.append(NormalizationNuisance(entry.name, entry.sigma, entry.central_value))
            continue
        coefficients = load_model(base / entry.coefficients)
        if not hasattr(coefficients, "coefficients"):
            raise ConfigurationError(f"nuisances.{index}.coefficients: {entry.coefficients} holds a "
                                     f"{type(coefficients).__name__}, not a Taylor learner.")
        nuisances.append(ShapeNuisance(entry.name, entry.sigma, coefficients, entry.central_value))
    return NuisanceModel(nuisances)


def _provenance(config_path: Path) -> dict[str, Any]:
    versions = {}
    for module in ("numpy", "scipy", "torch", "sklearn"):
        versions[module] = getattr(sys.modules.get(module) or __import__(module), "__version__", "unknown")
    return {"package_version": __version__, "python": platform.python_version(), "libraries": versions,
            "config_sha256": hashlib.sha256(config_path.read_bytes()).hexdigest(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _plot(kind: str, *arguments, **options) -> bool:
    try:
        from . import plots

        getattr(plots, kind)(*arguments, **options)
    except ConfigurationError:
        return False
    return True


#: The files nplm run writes in its output directory (besides the toy store).
OUTPUT_FILES = ("config.yaml", "provenance.json", "model.npz", "result.json", "f.png", "null.png")


def _refuse_links(out: Path, targets: list[Path]) -> None:
    """ConfigurationError when the output directory, a folder on the way to an output file, or an
    output file is a symbolic link: nplm run writes only inside its output directory, never through
    a link to somewhere else."""
    for target in targets:
        for path in [target, *target.parents]:
            if path.is_symlink():
                raise ConfigurationError(f"{path} is a symbolic link; nplm run writes only regular files inside its "
                                         f"output directory {out}: remove the link or choose another directory.")
            if path == out:
                break


def run_analysis(config_path: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study of `config_path`; returns the result written to result.json."""
    config_path = Path(config_path)
    config = load_config(config_path)
    base = config_path.parent
    inputs, toys_config = config.inputs, config.toys
    out = base / config.outputs.directory
    reference = inputs.reference.model_copy(update={"path": base / inputs.reference.path})
    x_ref, w_ref, toys = load_reference(reference, inputs.columns, inputs.key, inputs.cuts,
                                        pool=None if toys_config.pool is None else base / toys_config.pool,
                                        pool_fraction=toys_config.pool_fraction, seed=toys_config.seed,
                                        selection=inputs.selection, negative_weights=inputs.negative_weights,
                                        n_toys=toys_config.n_toys)
    x_data = load_data(base / inputs.data.path, inputs.columns, inputs.key, inputs.cuts, inputs.selection)
    if toys_config.kind == "permutation":
        toys = PermutationToys.from_reference(x_data, x_ref, w_ref)
    null_toys = toys.summary()
    for key in ("labels", "units"):
        given = getattr(config.outputs, key)
        if given is not None and len(given) != x_data.shape[1]:
            raise ConfigurationError(f"outputs.{key}: one entry per input variable ({x_data.shape[1]}), got "
                                     f"{len(given)}: {given}.")
    nuisances = build_nuisances(config.nuisances, base)
    backend = build_backend(config.backend)
    test = NPLMTest(backend, nuisances=nuisances, width_quantiles=config.test.width_quantiles,
                    excess_scan=config.test.excess_scan).for_reference(x_ref, w_ref)
    if nuisances is not None:
        toys = AuxiliaryToys(toys, np.zeros(nuisances.n_nuisances), nuisances.sigmas)
    store = out / toys_config.store
    _refuse_links(out, [store] + [out / name for name in OUTPUT_FILES])
    if store.exists():  # refuse a store of another setting before writing anything
        verify_identity(store, read_store(store), campaign_identity(test, toys, x_ref, w_ref, toys_config.seed))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_path, out / "config.yaml")
    (out / "provenance.json").write_text(json.dumps(_provenance(config_path), indent=2) + "\n")
    logger.info("%s: N_D = %d, N_R = %d, N(R) = %.6g; test %s", config_path, len(x_data), len(x_ref), w_ref.sum(),
                test.identity(x_ref, w_ref)["backend"])
    observed = test.run(x_data, x_ref, w_ref)
    logger.info("observed t = %s", observed.t)
    campaign = run_toys(test, toys, x_ref, w_ref, n_toys=toys_config.n_toys, seed=toys_config.seed,
                        executor=toys_config.executor, store=store, progress=progress)
    calibrated = significance(observed.t, campaign.t, weights=observed.member_weights)
    best = shown_width(calibrated, len(test.widths or ()), np.size(observed.t))  # its model is saved and plotted
    shown = observed if best is None else observed.results[best]
    null_t = campaign.t if best is None else campaign.t[:, best]
    save_model(shown.estimator, out / "model.npz")
    result = {
        **observed.row_fields(),
        "nuisances": [] if nuisances is None else nuisances.names,
        "n_data": len(x_data), "n_reference": len(x_ref), "expected_yield": float(w_ref.sum()),
        "backend": observed.backend, "hyperparameters": observed.hyperparameters,
        "p_value": calibrated.p_value, "p_interval_68": [calibrated.p_low, calibrated.p_high], "z": calibrated.z,
        "method": calibrated.method, "members": list(observed.members),
        "member_p_values": list(calibrated.member_p_values), "member_weights": list(calibrated.member_weights),
        "model_width": None if best is None else test.widths[best],
        "null_toys": null_toys,
        "n_toys": calibrated.n_toys, "n_failed_toys": campaign.n_failed, "n_unconverged_toys": campaign.n_unconverged,
        "n_unsupported_toys": campaign.n_unsupported,
        "null_chi2_fit": None if calibrated.chi2_fit is None else dataclasses.asdict(calibrated.chi2_fit),
        "summary": str(calibrated),
    }
    width_text = None if best is None else (f"model and null shown: width sigma = {test.widths[best]:.3g} "
                                             f"(the units of sigma), the smallest p of the {len(test.widths)} "
                                             f"width(s) of the test's {np.size(observed.t)} members")
    labels = {"experiment_label": config.outputs.experiment_label, "description": width_text}
    result["plots"] = [name for name, made in [
        ("f.png", _plot("plot_learned_f", shown.estimator, x_data, x_ref, w_ref, out / "f.png",
                        config.outputs.labels or inputs.columns, units=config.outputs.units, result=calibrated,
                        **labels)),
        ("null.png", _plot("plot_null_distribution", null_t, out / "null.png", shown.t, result=calibrated, **labels)),
    ] if made]
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
