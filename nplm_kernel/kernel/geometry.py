"""The Nystrom geometry of a kernel model, shared by KernelNPLM and KernelTaylorLearner: the
kernel width, the candidate centres, and the kept centres with their factor T = chol(K_MM).

Widths are in the units of the (standardised) inputs; the default is the SIGMA_QUANTILE of
pairwise distances between reference events (the papers' heuristic, 2.3 for the Exp(1) benchmark).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.samples import reference_standardization
from ..solver import NystromFactor, gaussian_kernel, pairwise_distance_quantiles, pivoted_centers, select_centers

#: Default kernel width: this quantile of pairwise reference distances.
SIGMA_QUANTILE = 0.9
#: Default centre-pruning tolerance (solver.pivoted_centers).
DEFAULT_CENTER_TOL = 1e-12


def default_n_centers(n_data: int, n_total: int) -> int:
    """M grows with N_D: N_D / 4, clipped to [100, 3000] and to the number of points."""
    return int(min(n_total, np.clip(n_data // 4, 100, 3000)))


def kernel_width(sigma: float | None, reference: np.ndarray, weights: np.ndarray) -> float:
    """`sigma` if given, else the SIGMA_QUANTILE of pairwise distances between events of `reference`
    (already in the kernel's units, weighted by `weights`): kernels.pairwise_distance_quantiles, the
    one rule behind every default width."""
    if sigma is not None:
        return float(sigma)
    return pairwise_distance_quantiles(reference, [SIGMA_QUANTILE], weights)[0]


def reference_widths(x_ref: np.ndarray, w_ref: np.ndarray, quantiles: Sequence[float],
                     standardize: bool = True) -> list[float]:
    """Kernel widths at these quantiles of pairwise reference distances, in the units a kernel
    backend sees (standardised with the reference's weighted mean and spread when `standardize`):
    the rule of kernel_width, at other quantiles."""
    mean, scale = reference_standardization(x_ref, w_ref, standardize)
    return pairwise_distance_quantiles((x_ref - mean) / scale, quantiles, w_ref)


def uniform_candidates(pool: np.ndarray, n_centers: int, rng: np.random.Generator) -> np.ndarray:
    """min(n_centers, len(pool)) rows of `pool` drawn uniformly without replacement (in pool order)."""
    return pool[select_centers(len(pool), min(n_centers, len(pool)), rng)]


def nystrom_centers(candidates: np.ndarray, sigma: float, center_tol: float | None, device: torch.device,
                    max_centers: int | None = None) -> tuple[np.ndarray, NystromFactor]:
    """The candidates kept by pivoted_centers (at most max_centers, numerically independent ones),
    in their original order, and the Nystrom factor T = chol(K_MM) of the kept centres."""
    tol = DEFAULT_CENTER_TOL if center_tol is None else float(center_tol)
    candidates_t = torch.as_tensor(candidates, dtype=torch.float64, device=device)
    kept = np.sort(pivoted_centers(candidates_t, sigma, tol, max_centers))
    centers = candidates_t[torch.as_tensor(kept, device=device)]
    return candidates[kept], NystromFactor(gaussian_kernel(centers, centers, sigma))
