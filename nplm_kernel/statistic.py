"""The NPLM loss and test statistic, and the chi2 / p-value / Z conversions (scipy.stats).

L[f] = sum_R w_R (exp(f(x) + o(x)) - 1) - sum_D (f(x) + o(x)),   t = -2 L[f_hat]   (dimensionless),
where o(x) = log r(x; nu) is an optional offset (nuisance-shifted reference).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .exceptions import FitError, InputError


def nplm_loss(
    f_data: np.ndarray,
    f_ref: np.ndarray,
    w_ref: np.ndarray,
    offset_data: np.ndarray | float = 0.0,
    offset_ref: np.ndarray | float = 0.0,
) -> float:
    """L = sum_R w_R (exp(f + o_R) - 1) - sum_D (f + o_D), in float64; FitError if not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        ref_term = np.sum(np.asarray(w_ref, dtype=np.float64) * np.expm1(np.asarray(f_ref, dtype=np.float64) + offset_ref))
        data_term = np.sum(np.asarray(f_data, dtype=np.float64) + offset_data)
        loss = float(ref_term - data_term)
    if not np.isfinite(loss):
        raise FitError(
            "the NPLM loss L[f] is not finite: the learned f overflows exp() on the reference sample "
            "(reduce the model flexibility or increase the penalty)."
        )
    return loss


def t_from_loss(loss: float) -> float:
    """t = -2 L."""
    return -2.0 * loss


def chi2_p_value(t: float, dof: float) -> float:
    """Upper-tail probability P(chi2_dof >= t)."""
    if not dof > 0:
        raise InputError(f"dof must be positive, got {dof}.")
    return float(stats.chi2.sf(t, dof))


def z_score(p_value: float) -> float:
    """One-sided significance Z = Phi^-1(1 - p) (inf for p = 0; negative for p > 1/2)."""
    if not 0.0 <= p_value <= 1.0:
        raise InputError(f"p_value must lie in [0, 1], got {p_value}.")
    return float(stats.norm.isf(p_value))
