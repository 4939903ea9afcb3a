"""The training samples of the shape-nuisance Taylor learners (kernel and NN), prepared once.

From a nominal reference R_0 and samples R_i simulated at shifted nuisance values nu_i, both
learners fit log r(x; nu) = sum_k delta_k(x) nu^k with the parametrised-classifier loss; this
module validates the samples and puts them in the units both learners train in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.exceptions import ConfigurationError, InputError
from ..core.samples import as_events, as_weights, reference_standardization

#: Highest Taylor degree of a shape nuisance.
MAX_TAYLOR_DEGREE = 2


@dataclass(frozen=True)
class TaylorTrainingSet:
    """The training samples of a Taylor learner, standardised by the nominal reference's weighted
    mean and scale (input_mean, input_scale), weights divided by the total weight W of all samples,
    and for each shifted sample (monomials, points, weights) with monomials (nu_i / s)^k,
    k = 1..degree, s = nu_scale = max_i |nu_i|."""

    nominal: np.ndarray
    nominal_weights: np.ndarray
    shifted: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    input_mean: np.ndarray
    input_scale: np.ndarray
    nu_scale: float

    @property
    def powers(self) -> np.ndarray:
        """k = 1..degree."""
        return np.arange(1, len(self.shifted[0][0]) + 1)


def taylor_training_set(
    x_nominal: np.ndarray,
    w_nominal: float | np.ndarray,
    shifted: Sequence[tuple[float, np.ndarray, float | np.ndarray]],
    degree: int,
) -> TaylorTrainingSet:
    """Validate and prepare the training samples of a Taylor learner: the nominal reference
    (x, weights) and (nu_i, x_i, w_i) simulated at shifted nuisance values; weights sum to each
    sample's expected yield. Needs at least `degree` distinct non-zero nu_i."""
    nominal = as_events(x_nominal, "x_nominal")
    nominal_weights = as_weights(w_nominal, len(nominal), "w_nominal", owner="the Taylor learner")
    if not 1 <= degree <= MAX_TAYLOR_DEGREE:
        raise ConfigurationError(f"degree must be 1 or 2, got {degree!r}.")
    checked = []
    for index, item in enumerate(shifted):
        try:
            nu, x, w = item
        except (TypeError, ValueError):
            raise InputError(f"shifted[{index}] must be a (nu, x, w) triple.") from None
        if not (np.isfinite(nu) and nu != 0):
            raise InputError(f"shifted[{index}]: nu must be finite and non-zero, got {nu!r}.")
        events = as_events(x, f"shifted[{index}] x", nominal.shape[1])
        checked.append((float(nu), events, as_weights(w, len(events), f"shifted[{index}] w", owner="the Taylor learner")))
    if len({nu for nu, _, _ in checked}) < degree:
        raise InputError(f"a degree-{degree} Taylor expansion needs samples at {degree} or more distinct shifted nu values.")
    mean, scale = reference_standardization(nominal, nominal_weights)
    nu_scale = max(abs(nu) for nu, _, _ in checked)
    total_weight = nominal_weights.sum() * len(checked) + sum(w.sum() for _, _, w in checked)
    powers = np.arange(1, degree + 1)
    return TaylorTrainingSet(
        nominal=(nominal - mean) / scale,
        nominal_weights=nominal_weights / total_weight,
        shifted=[((nu / nu_scale) ** powers, (x - mean) / scale, w / total_weight) for nu, x, w in checked],
        input_mean=mean,
        input_scale=scale,
        nu_scale=float(nu_scale),
    )
