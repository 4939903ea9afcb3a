"""Input containers and validation: every public entry point checks its inputs here.

Conventions: an event sample is a 2-D array (n_events, n_features); a 1-D array is read as one
feature. Reference weights w_R are positive, one per reference event (a scalar is broadcast), and
sum to the expected yield N(R) in events. Offsets are log r(x; nu) on each event (dimensionless).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .exceptions import ConfigurationError, InputError, NormalizationWarning, SampleSizeWarning, brief

#: Warn when the reference sample has fewer than this many events per data event.
MIN_REFERENCE_TO_DATA_RATIO = 5.0
#: Warn when N(R) = sum w_R and N_D differ by more than this factor (normalisation forgotten?).
MAX_YIELD_RATIO = 10.0


@dataclass(frozen=True)
class Samples:
    """Validated data and reference samples (float64 numpy arrays).

    x_data: (N_D, d) data events; x_ref: (N_R, d) reference events; w_ref: (N_R,) positive weights
    (sum = N(R), the expected yield); offset_data (N_D,), offset_ref (N_R,): log r(x; nu) per event.
    feature_names: the input variables' names when both samples came as data frames (the data's
    columns matched to the reference's by name), else None.
    """

    x_data: np.ndarray
    x_ref: np.ndarray
    w_ref: np.ndarray
    offset_data: np.ndarray
    offset_ref: np.ndarray
    feature_names: tuple[str, ...] | None = None

    @property
    def n_data(self) -> int:
        return self.x_data.shape[0]

    @property
    def n_ref(self) -> int:
        return self.x_ref.shape[0]

    @property
    def n_features(self) -> int:
        return self.x_data.shape[1]

    @property
    def expected_yield(self) -> float:
        """N(R) = sum of the reference weights, in events."""
        return float(self.w_ref.sum())


def _first_bad_index(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def check_finite(values: np.ndarray, name: str) -> None:
    """Raise InputError naming `name` if `values` holds NaN or inf."""
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf), first in row "
            f"{_first_bad_index(bad)}; remove or fix those events before fitting."
        )


def as_events(x: object, name: str, n_features: int | None = None) -> np.ndarray:
    """Return `x` as a finite float64 array of shape (n_events, n_features).

    A 1-D array is read as n_events values of a single feature. `n_features`, when given, is the
    number of features the array must have.
    """
    try:
        raw = np.asarray(x)
        if raw.dtype.kind == "c":
            raise InputError(f"{name} is complex ({raw.dtype}); events must be real numbers.")
        array = raw.astype(np.float64, copy=False)
    except (TypeError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{name} must be a numeric array of events, got {type(x).__name__}: {error}") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_events, n_features), got an array of shape {array.shape}.")
    if array.shape[0] == 0:
        raise InputError(f"{name} is empty (0 events); a test needs at least one event in each sample.")
    if array.shape[1] == 0:
        raise InputError(f"{name} has 0 features (shape {array.shape}).")
    if n_features is not None and array.shape[1] != n_features:
        raise InputError(
            f"{name} has {array.shape[1]} feature(s) but {n_features} were expected "
            f"(shape {array.shape}); all samples must share the same input variables."
        )
    check_finite(array, name)
    return np.ascontiguousarray(array)


#: Why the NPLM loss refuses non-positive reference weights (backends may give their own reason).
POSITIVE_WEIGHTS_REASON = (
    "the NPLM loss needs positive weights: with w < 0 the term w (e^f - 1) is unbounded below as f grows"
)


def as_weights(w: object, n_events: int, name: str = "w_ref", owner: str = "the fit",
               reason: str = POSITIVE_WEIGHTS_REASON) -> np.ndarray:
    """Return positive finite per-event weights of shape (n_events,); a scalar is broadcast.
    Non-positive weights raise InputError naming `owner` (e.g. the backend) and `reason`."""
    try:
        weights = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be a positive number or array of weights: {error}") from None
    if weights.ndim == 0:
        weights = np.full(n_events, float(weights))
    if weights.shape != (n_events,):
        raise InputError(
            f"{name} must be a scalar or have shape ({n_events},) (one weight per reference event), "
            f"got shape {weights.shape}."
        )
    check_finite(weights, name)
    if (weights <= 0).any():
        raise InputError(
            f"{name} has {int((weights <= 0).sum())} non-positive weight(s) (first at index "
            f"{int(np.flatnonzero(weights <= 0)[0])}, value {weights[weights <= 0][0]:g}); {owner} refuses "
            f"them: {reason}. Negative (NLO) weights are removed, keeping the weighted distribution and the sum of "
            "weights, by cell resampling: negative_weights='resample' (app.analysis.load_reference), "
            "--negative-weights resample (nplm), inputs.negative_weights: resample (analysis config), or "
            "nplm_kernel.core.weights.resample_negative_weights(x_ref, w_ref)."
        )
    return weights


def as_offsets(offset: object, n_events: int, name: str) -> np.ndarray:
    """Return finite per-event offsets log r(x; nu) of shape (n_events,); None means zeros."""
    if offset is None:
        return np.zeros(n_events)
    try:
        values = np.asarray(offset, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be a numeric array: {error}") from None
    if values.shape != (n_events,):
        raise InputError(f"{name} must have shape ({n_events},) (one value per event), got {values.shape}.")
    check_finite(values, name)
    return values


def column_names(x: object) -> tuple[str, ...] | None:
    """The column names of a data frame (pandas, polars), None for arrays."""
    columns = getattr(x, "columns", None)
    if columns is None or isinstance(x, np.ndarray):
        return None
    return tuple(str(column) for column in columns)


def in_column_order(x: object, names: tuple[str, ...] | None, name: str) -> object:
    """`x` with its columns in the order `names` when both are named; InputError naming the
    missing and unexpected columns when the names differ. Arrays pass unchanged."""
    own = column_names(x)
    if names is None or own is None or own == names:
        return x
    missing, extra = [c for c in names if c not in own], [c for c in own if c not in names]
    if missing or extra:
        raise InputError(f"{name} has columns {list(own)} but {list(names)} were expected (missing {missing}, "
                         f"unexpected {extra}); samples must describe the same input variables.")
    return x[list(names)]


def validate_samples(
    x_data: object,
    x_ref: object,
    w_ref: object,
    offset_data: object = None,
    offset_ref: object = None,
    owner: str = "the fit",
    weights_reason: str = POSITIVE_WEIGHTS_REASON,
    warn_sample_size: bool = True,
) -> Samples:
    """Check and convert the inputs of a fit; raise InputError naming the bad argument (and, for
    non-positive weights, `owner` and `weights_reason`).

    Data frames are matched by column name (the data's columns are put in the reference's order;
    different names are refused). When warn_sample_size (off where the same samples go on to a
    backend, which warns itself), warns with SampleSizeWarning when N_R < MIN_REFERENCE_TO_DATA_RATIO
    * N_D and with NormalizationWarning when N(R) = sum w_R and N_D differ by more than a factor
    MAX_YIELD_RATIO (weights that do not sum to the expected yield). The reference's size is its
    effective size (effective_sample_size): a few events carrying most of N(R) count as few.
    """
    names = column_names(x_ref)
    ref = as_events(x_ref, "x_ref")
    if not (ref != ref[0]).any():
        raise InputError(f"x_ref: all {len(ref)} reference event(s) are the same point {ref[0].tolist()}; a reference "
                         "sample must describe a distribution of events to compare the data with.")
    reference = Samples(x_data=ref[:0], x_ref=ref, w_ref=as_weights(w_ref, ref.shape[0], owner=owner, reason=weights_reason),
                        offset_data=np.zeros(0), offset_ref=as_offsets(offset_ref, ref.shape[0], "offset_ref"),
                        feature_names=names)
    return with_data(reference, x_data, offset_data, warn_sample_size)


def with_data(reference: Samples, x_data: object, offset_data: object = None, warn_sample_size: bool = True) -> Samples:
    """`reference` (validated: its x_ref, w_ref, offset_ref and, for a data frame, feature_names)
    with the data sample `x_data` checked against it: the same variables (data frames matched by
    column name), finite values, and the size and normalisation warnings of validate_samples. Toys
    fitted on one reference validate it once and their data with this."""
    names = reference.feature_names
    data = as_events(in_column_order(x_data, names, "x_data"), "x_data")
    ref, weights = reference.x_ref, reference.w_ref
    if ref.shape[1] != data.shape[1]:
        raise InputError(
            f"x_data has {data.shape[1]} feature(s) but x_ref has {ref.shape[1]}; both samples must "
            "describe the same input variables."
        )
    effective = effective_sample_size(weights)
    if warn_sample_size and effective < MIN_REFERENCE_TO_DATA_RATIO * data.shape[0]:
        size = (f"N_R = {ref.shape[0]}" if effective > (1.0 - 1e-9) * ref.shape[0] else
                f"effective size (Kish: (sum w)^2 / sum w^2) {effective:.4g} of N_R = {ref.shape[0]} events")
        warnings.warn(
            f"the reference sample ({size}) is less than {MIN_REFERENCE_TO_DATA_RATIO:g} times the data sample "
            f"(N_D = {data.shape[0]}); its statistical fluctuations will bias t.",
            SampleSizeWarning,
            stacklevel=3,
        )
    expected_yield = float(weights.sum())
    if warn_sample_size and not 1.0 / MAX_YIELD_RATIO <= expected_yield / data.shape[0] <= MAX_YIELD_RATIO:
        warnings.warn(
            f"the reference weights sum to N(R) = {expected_yield:.6g} but the data hold N_D = {data.shape[0]} "
            f"events ({expected_yield / data.shape[0]:.3g} times as many): w_R must sum to the expected yield in the "
            "data (w_R = N(R) / N_R for an unweighted reference). Were the weights left at 1?",
            NormalizationWarning,
            stacklevel=3,
        )
    return Samples(
        x_data=data,
        x_ref=ref,
        w_ref=weights,
        offset_data=as_offsets(offset_data, data.shape[0], "offset_data"),
        offset_ref=reference.offset_ref,
        feature_names=names if column_names(x_data) is not None else None,
    )


def effective_sample_size(weights: object) -> float:
    """Kish's effective sample size n_eff = (sum w)^2 / sum w^2, in events: the number of unweighted
    events whose total has the relative statistical error of the weighted sample's
    (sqrt(sum w^2) / sum w = 1 / sqrt(n_eff)). N for N equal weights, less when they spread."""
    values = np.asarray(weights, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise InputError("weights is empty: the effective sample size needs at least one weight.")
    check_finite(values, "weights")
    squares = float(np.sum(values**2))
    if squares == 0.0:
        raise InputError("every weight is zero: the effective sample size is undefined.")
    return float(np.sum(values)) ** 2 / squares


def reference_standardization(
    x_ref: np.ndarray, w_ref: np.ndarray, enabled: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per feature from the reference's weighted mean and standard deviation, so that
    (x - mean) / scale is standardised; a constant feature gets scale 1. Identity when not enabled.
    The deviations are scaled by their largest value before squaring, so inputs of any magnitude
    representable in float64 standardise without overflow; InputError if even that overflows."""
    if not enabled:
        return np.zeros(x_ref.shape[1]), np.ones(x_ref.shape[1])
    weights = w_ref / w_ref.sum()
    with np.errstate(over="ignore", invalid="ignore"):
        mean = weights @ x_ref
        deviations = x_ref - mean
        largest = np.max(np.abs(deviations), axis=0)
        largest[largest == 0] = 1.0
        scale = largest * np.sqrt(weights @ (deviations / largest) ** 2)
    if not (np.isfinite(mean).all() and np.isfinite(scale).all()):
        raise InputError(
            "x_ref: standardising the inputs overflows float64 (the reference's mean or spread is beyond "
            f"{np.finfo(np.float64).max:.3g}); express the variables in other units before fitting."
        )
    scale[scale == 0] = 1.0
    return mean, scale


def standardized(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, name: str,
                 dtype: type = np.float64) -> np.ndarray:
    """(x - mean) / scale as `dtype`; InputError naming `name` if the result overflows (inputs far
    from the reference's range, or beyond float32 when the backend computes in float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        values = ((x - mean) / scale).astype(dtype, copy=False)
    if not np.isfinite(values).all():
        raise InputError(
            f"{name}: the standardised inputs overflow {np.dtype(dtype).name} (values up to "
            f"{np.max(np.abs(x)):.3g} against a reference scale of {np.min(scale):.3g}); express the variables in "
            "other units, or keep standardize=True."
        )
    return values


def check_positive_integer(value: object, name: str, minimum: int = 1) -> None:
    """ConfigurationError naming `name` unless value is an integer >= minimum."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum):
        adjective = "positive" if minimum == 1 else f">= {minimum}"
        raise ConfigurationError(f"{name} must be a {adjective} integer, got {brief(value)}.")


def check_choice(value: object, choices, name: str) -> None:
    """ConfigurationError naming `name` unless value is one of `choices` (a collection of names)."""
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {sorted(choices)}, got {brief(value)}.")


def check_positive_number(value: object, name: str) -> None:
    """ConfigurationError naming `name` unless value is a finite number > 0."""
    if not (isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be positive and finite, got {brief(value)}.")


def fitted_inputs(x: object, n_features: int, names: Sequence[str] | None, mean: np.ndarray, scale: np.ndarray,
                  dtype: type = np.float64) -> np.ndarray:
    """New points `x` (n, d) prepared as a fitted model's inputs were: columns matched by name when
    it was fitted on data frames, then standardised with its (mean, scale)."""
    events = as_events(in_column_order(x, None if names is None else tuple(names), "x"), "x", n_features)
    return standardized(events, mean, scale, "x", dtype)
