"""Gaussian kernel blocks and the kernel-width heuristic.

k(x, c) = exp(-|x - c|^2 / (2 sigma^2)), sigma in the units of the (standardised) inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.distance import pdist

from ..exceptions import ConfigurationError


def gaussian_kernel(points: torch.Tensor, centers: torch.Tensor, sigma: float,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel block K[i, m] = exp(-|x_i - c_m|^2 / (2 sigma^2)), shape (n, M), written into `out`
    when given (a buffer of that shape, reused across blocks).

    Uses one GEMM: -|x - c|^2 / 2 = x.c - |x|^2 / 2 - |c|^2 / 2 on inputs scaled by 1/sigma, the two
    squared norms carried by two extra columns ([x, -|x|^2/2, 1] . [c, 1, -|c|^2/2]), then an
    in-place exp; the exponent is clamped at 0 so rounding never gives k > 1.
    """
    scaled_points = points / sigma
    scaled_centers = centers / sigma
    ones = torch.ones((1,), dtype=points.dtype, device=points.device)
    augmented_points = torch.cat([scaled_points, -0.5 * scaled_points.square().sum(dim=1, keepdim=True),
                                  ones.expand(len(points), 1)], dim=1)
    augmented_centers = torch.cat([scaled_centers, ones.expand(len(centers), 1),
                                   -0.5 * scaled_centers.square().sum(dim=1, keepdim=True)], dim=1)
    block = torch.matmul(augmented_points, augmented_centers.T, out=out)
    return exp_(block.clamp_(max=0.0))


def exp_(values: torch.Tensor) -> torch.Tensor:
    """e^values in place, returned. On the CPU through NumPy's vectorised exp (the same values to
    rounding, about twice as fast as torch's float64 exp there); elsewhere torch's. Overflow gives
    inf, silently, as torch's does."""
    if values.device.type == "cpu" and not values.requires_grad:
        array = values.numpy()
        with np.errstate(over="ignore"):
            np.exp(array, out=array)
        return values
    return values.exp_()


def pairwise_distance_quantile(
    points: np.ndarray, quantile: float = 0.9, max_points: int = 2000, seed: int | None = 0
) -> float:
    """The `quantile` of Euclidean distances between pairs of rows of `points`.

    At most `max_points` rows (drawn without replacement with `seed`) are used, so the cost is
    bounded. This is the papers' kernel-width heuristic (default: the 90th percentile).
    """
    if not 0.0 < quantile < 1.0:
        raise ConfigurationError(f"quantile must lie in (0, 1), got {quantile}.")
    if points.shape[0] < 2:
        raise ConfigurationError("the kernel-width heuristic needs at least 2 events.")
    rng = np.random.default_rng(seed)
    if points.shape[0] > max_points:
        points = points[rng.choice(points.shape[0], size=max_points, replace=False)]
    width = float(np.quantile(pdist(points), quantile))
    if not width > 0.0:
        raise ConfigurationError(
            "the reference events are (almost) all identical: the pairwise-distance quantile is 0, "
            "so no kernel width can be derived; pass sigma explicitly."
        )
    return width
