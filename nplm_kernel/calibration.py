"""Calibration of an observed t against null toys: empirical p-value with a Clopper-Pearson
interval, a chi2 fit of the null (fitted dof and its KS p-value), and Z = Phi^-1(1 - p).

When the observed t exceeds every null toy the empirical p-value is only bounded, so the p-value
is taken from the fitted chi2 tail and labelled as an extrapolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .exceptions import FitError, InputError
from .samples import check_finite
from .statistic import z_score

EMPIRICAL = "empirical"
CHI2_EXTRAPOLATION = "fitted chi2 tail (extrapolation: t exceeds every null toy)"


@dataclass(frozen=True)
class Chi2Fit:
    """Maximum-likelihood chi2 fit of a null sample of t: dof, and the KS test of the fitted chi2
    (statistic and p-value; the p-value is optimistic since dof was fitted on the same sample)."""

    dof: float
    ks_statistic: float
    ks_p_value: float
    n_toys: int


@dataclass(frozen=True)
class Significance:
    """p-value of an observed t and its one-sided Z = Phi^-1(1 - p).

    method is EMPIRICAL (p = fraction of null toys with t_null >= t; [p_low, p_high] is the
    Clopper-Pearson interval at `confidence`) or CHI2_EXTRAPOLATION (p from the fitted chi2 tail;
    p_high is then the empirical upper bound on p from having no toy above t)."""

    t: float
    p_value: float
    p_low: float
    p_high: float
    z: float
    method: str
    n_toys: int
    chi2_fit: Chi2Fit

    @property
    def is_extrapolated(self) -> bool:
        return self.method == CHI2_EXTRAPOLATION


def _as_null_sample(t_null: object) -> np.ndarray:
    values = np.asarray(t_null, dtype=np.float64).reshape(-1)
    if values.size < 2:
        raise InputError(f"t_null needs at least 2 null toys, got {values.size}.")
    check_finite(values[:, None], "t_null")
    return values


def fit_chi2(t_null: object) -> Chi2Fit:
    """Fit chi2(dof) (location 0, scale 1) to null t values by maximum likelihood (scipy.stats)."""
    values = _as_null_sample(t_null)
    if (values <= 0).any():
        raise FitError(
            f"cannot fit a chi2 to a null sample with {int((values <= 0).sum())} non-positive t value(s); "
            "the chi2 approximation does not hold for these toys."
        )
    dof, _, _ = stats.chi2.fit(values, floc=0.0, fscale=1.0)
    ks = stats.kstest(values, stats.chi2(dof).cdf)
    return Chi2Fit(dof=float(dof), ks_statistic=float(ks.statistic), ks_p_value=float(ks.pvalue), n_toys=values.size)


def chi2_ks_test(t_null: object, dof: float) -> tuple[float, float]:
    """(KS statistic, KS p-value) of null t values against chi2(dof) with dof fixed in advance."""
    values = _as_null_sample(t_null)
    if not dof > 0:
        raise InputError(f"dof must be positive, got {dof}.")
    result = stats.kstest(values, stats.chi2(dof).cdf)
    return float(result.statistic), float(result.pvalue)


def empirical_p_value(t: float, t_null: object, confidence: float = 0.6827) -> tuple[float, float, float]:
    """(p, p_low, p_high): p = #(t_null >= t) / n_toys with its Clopper-Pearson interval."""
    values = _as_null_sample(t_null)
    exceeding = int(np.count_nonzero(values >= t))
    interval = stats.binomtest(exceeding, values.size).proportion_ci(confidence_level=confidence, method="exact")
    return exceeding / values.size, float(interval.low), float(interval.high)


def significance(t: float, t_null: object, confidence: float = 0.6827) -> Significance:
    """Calibrate an observed t against null toys (module docstring)."""
    if not np.isfinite(t):
        raise InputError(f"observed t must be finite, got {t}.")
    values = _as_null_sample(t_null)
    chi2_fit = fit_chi2(values)
    p_value, p_low, p_high = empirical_p_value(t, values, confidence)
    method = EMPIRICAL
    if p_value == 0.0:
        p_value, method = float(stats.chi2.sf(t, chi2_fit.dof)), CHI2_EXTRAPOLATION
    return Significance(
        t=float(t),
        p_value=p_value,
        p_low=p_low,
        p_high=p_high,
        z=z_score(p_value),
        method=method,
        n_toys=values.size,
        chi2_fit=chi2_fit,
    )
