"""The NPLM loss and test statistic, and the chi2 / p-value / Z conversions (scipy.stats).

L[f] = sum_R w_R (exp(f(x) + o(x)) - 1) - sum_D (f(x) + o(x)),   t = -2 L[f_hat]   (dimensionless),
where o(x) = log r(x; nu) is an optional offset (nuisance-shifted reference). The loss and its
derivative are written once here, for numpy arrays and torch tensors alike (extended_likelihood,
extended_likelihood_slope), and used by the statistic, the kernel solver, the NN and the nuisance fit.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from .exceptions import FitError, InputError


def extended_likelihood(z_data, z_ref, w_ref):
    """L = sum_R w_R (e^z_R - 1) - sum_D z_D for z = f + o on the data and reference events (numpy
    arrays or torch tensors, computed in their own library; e^z - 1 as expm1)."""
    expm1 = torch.expm1 if isinstance(z_ref, torch.Tensor) else np.expm1
    return (w_ref * expm1(z_ref)).sum() - z_data.sum()


def extended_likelihood_slope(z_ref, w_ref):
    """dL/dz_R = w_R e^z_R on the reference events (dL/dz_D = -1 on every data event); it is also
    the second derivative d2L/dz_R^2 (and 0 on the data)."""
    return w_ref * (torch.exp(z_ref) if isinstance(z_ref, torch.Tensor) else np.exp(z_ref))


def nplm_loss(
    f_data: np.ndarray,
    f_ref: np.ndarray,
    w_ref: np.ndarray,
    offset_data: np.ndarray | float = 0.0,
    offset_ref: np.ndarray | float = 0.0,
) -> float:
    """L = sum_R w_R (exp(f + o_R) - 1) - sum_D (f + o_D), in float64; FitError if not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        loss = float(extended_likelihood(np.asarray(f_data, dtype=np.float64) + offset_data,
                                         np.asarray(f_ref, dtype=np.float64) + offset_ref,
                                         np.asarray(w_ref, dtype=np.float64)))
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
