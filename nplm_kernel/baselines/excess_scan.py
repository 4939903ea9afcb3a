"""The NPLM loss with the sparsest kernel model, scanned: a candidate default aimed at local excesses.

For one Gaussian kernel function of width h at a centre c, phi(x) = exp(-|x - c|^2 / (2 h^2)) in
features standardised with the reference, the model f = theta phi (theta >= 0: an excess) gives

    q(c, h) = -2 min_{theta >= 0} L[theta phi],   L[f] = sum_R w (e^f - 1) - sum_D f,

the NPLM test statistic of that one-parameter model (0 where the data lie at or below the
reference around c). The scan takes, at each width, the largest q over a set of n_h centres that
covers the reference, and penalises each width for its look-elsewhere effect as a Bonferroni
correction would (-2 log of n_h trials):

    t = max_h [ max_c q(c, h) - 2 log n_h ].

t can be negative; calibrate it with null toys (its null is not a chi2).

Cost: the reference is merged into small cells once (prepare); a toy evaluates the data's kernel
sums and a few safeguarded Newton steps per centre over the cells' kernel matrix. On the 1D
benchmark (2e5 reference events, about 400 centres in all) a toy takes 0.02 s; on the 5D dimuon
benchmark with 2e4 reference events (about 4,000 centres) 3.4 s. The number of centres that cover
a reference grows quickly with the number of variables; a scan whose kernel matrices would exceed
MAX_KERNEL_ENTRIES is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.exceptions import ConfigurationError, FitError
from ..core.samples import Samples, check_positive_number, reference_standardization, standardized
from ..solver import pairwise_distance_quantiles
from .base import Baseline

#: Default widths: quantiles of pairwise reference distances, from about a tenth of the typical
#: distance (a narrow resonance) to the 0.92 quantile (a broad excess).
DEFAULT_SCAN_QUANTILES = (0.1, 0.15, 0.22, 0.33, 0.47, 0.63, 0.8, 0.92)
#: The reference is merged into cells of this fraction of the smallest width (per standardised
#: variable), each cell a point at its weighted mean with the cell's total weight.
CELL_FRACTION = 0.1
#: The largest log-ratio theta a centre may reach: e^12 = 1.6e5 data events per expected reference
#: event. A fit stopped there has a q that is a lower bound (counted in capped_centers_).
MAX_LOG_RATIO = 12.0
#: Safeguarded Newton iterations per centre, and the step size at which they stop.
MAX_NEWTON_STEPS = 60
THETA_TOL = 1e-12
#: Largest number of entries of the kernel matrices (reference cells x centres) of all widths
#: together (2 GiB): every toy passes over them at each Newton step.
MAX_KERNEL_ENTRIES = 2**28


@dataclass(frozen=True)
class _ScanWidth:
    """One width of the scan: h (standardised units), the centres (n_h, d), the kernel matrix of the
    reference cells (cells, n_h) and the reference's expected events under each centre's kernel,
    sum_R w phi_c (n_h,)."""

    width: float
    centers: torch.Tensor
    kernel: torch.Tensor
    expected: torch.Tensor


@dataclass(frozen=True)
class _PreparedScan:
    """The reference's standardisation, its cells' weights (cells,) and the scan's widths."""

    mean: np.ndarray
    scale: np.ndarray
    weights: torch.Tensor
    widths: tuple[_ScanWidth, ...]


def _covering_centers(points: torch.Tensor, radius: float) -> torch.Tensor:
    """Indices of points such that every point lies within `radius` of one of them, taken in order
    (the first point not yet covered becomes a centre)."""
    uncovered = torch.ones(points.shape[0], dtype=torch.bool)
    chosen = []
    while bool(uncovered.any()):
        index = int(torch.nonzero(uncovered)[0, 0])
        chosen.append(index)
        near = ((points - points[index]) ** 2).sum(dim=1) <= radius * radius
        uncovered &= ~near
    return torch.tensor(chosen, dtype=torch.long)


def _merged_cells(points: np.ndarray, weights: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference merged on a grid of this cell size: (weighted mean position (k, d), total
    weight (k,)) of every occupied cell."""
    keys = np.floor(points / cell).astype(np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    totals = np.bincount(inverse, weights=weights)
    positions = np.stack([np.bincount(inverse, weights=weights * points[:, k]) for k in range(points.shape[1])],
                         axis=1) / totals[:, None]
    return positions, totals


def _gaussian(points: torch.Tensor, centers: torch.Tensor, width: float) -> torch.Tensor:
    """exp(-|x - c|^2 / (2 h^2)), (n_points, n_centers)."""
    return torch.exp(-0.5 * torch.cdist(points, centers).square() / (width * width))


def _fit_log_ratios(data_sums: torch.Tensor, scan: _ScanWidth, weights: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """theta >= 0 maximising theta S_c - sum_R w (e^(theta phi_c) - 1) for every centre c (S_c: the
    data's sum of phi_c; weights: the reference cells' (cells,)), by Newton's method kept inside a bracket [low, high] of the root of the
    derivative (bisection when a step leaves it); (theta, q = 2 x the maximum)."""
    expected = scan.expected  # the derivative at theta = 0 is S - expected
    theta = torch.where(data_sums > expected, torch.log(data_sums / expected), torch.zeros_like(data_sums))
    theta = theta.clamp(max=MAX_LOG_RATIO)
    low = torch.zeros_like(theta)
    high = torch.full_like(theta, MAX_LOG_RATIO)
    running = torch.nonzero(data_sums > expected)[:, 0]
    for _ in range(MAX_NEWTON_STEPS):
        if len(running) == 0:
            break
        kernel, current = scan.kernel[:, running], theta[running]
        scaled = weights[:, None] * torch.exp(current * kernel)
        slope = data_sums[running] - (scaled * kernel).sum(dim=0)
        curvature = (scaled * kernel.square()).sum(dim=0)
        low[running] = torch.where(slope > 0, current, low[running])
        high[running] = torch.where(slope < 0, current, high[running])
        proposal = current + slope / curvature
        inside = (proposal > low[running]) & (proposal < high[running])
        proposal = torch.where(inside, proposal, 0.5 * (low[running] + high[running]))
        theta[running] = proposal
        running = running[(proposal - current).abs() > THETA_TOL * (1.0 + proposal)]
    gain = theta * data_sums - (weights[:, None] * torch.expm1(theta * scan.kernel)).sum(dim=0)
    return theta, 2.0 * gain.clamp(min=0.0)


class KernelExcessScan(Baseline):
    """The NPLM loss with a one-kernel-function model, scanned over centres and widths (module
    docstring): t = max_h [max_c q(c, h) - 2 log n_h], q the NPLM statistic of f = theta phi_c,
    theta >= 0.

    Parameters
    ----------
    width_quantiles
        the widths h, as quantiles of pairwise distances between reference events (standardised).
    spacing
        centres cover the reference's cells within spacing x h (in standardised units).
    min_expected
        a centre is scanned only where the reference expects at least this many events under its
        kernel (sum_R w phi_c): one data event where the reference expects almost none is not an
        excess that a reference sample can resolve.
    """

    name = "kernel excess scan"
    assumptions = "a local excess of data over the reference (deficits are not sought); calibrate on null toys"

    def __init__(self, width_quantiles: Sequence[float] = DEFAULT_SCAN_QUANTILES, spacing: float = 0.5,
                 min_expected: float = 0.5):
        self.width_quantiles = width_quantiles
        self.spacing = spacing
        self.min_expected = min_expected

    def prepare(self, samples: Samples) -> _PreparedScan:
        check_positive_number(self.spacing, "spacing")
        check_positive_number(self.min_expected, "min_expected")
        quantiles = sorted(float(quantile) for quantile in self.width_quantiles)
        if not quantiles:
            raise ConfigurationError("width_quantiles must list at least one quantile in (0, 1).")
        mean, scale = reference_standardization(samples.x_ref, samples.w_ref)
        points = standardized(samples.x_ref, mean, scale, "x_ref")
        widths = pairwise_distance_quantiles(points, quantiles, samples.w_ref)
        cell_points, cell_weights = _merged_cells(points, samples.w_ref, CELL_FRACTION * min(widths))
        cells = torch.as_tensor(cell_points)
        weights = torch.as_tensor(cell_weights)
        covering = [cells[_covering_centers(cells, self.spacing * width)] for width in widths]
        entries = len(cells) * sum(len(centers) for centers in covering)
        if entries > MAX_KERNEL_ENTRIES:
            raise ConfigurationError(
                f"the scan needs {[len(centers) for centers in covering]} centres at its widths over {len(cells)} "
                f"reference cells: {entries:.3g} kernel entries, more than {MAX_KERNEL_ENTRIES:.3g}; give larger "
                "width_quantiles, a larger spacing or a smaller reference sample.")
        prepared = []
        for width, centers in zip(widths, covering):
            kernel = _gaussian(cells, centers, width)
            expected = weights @ kernel
            kept = expected >= self.min_expected
            if bool(kept.any()):
                prepared.append(_ScanWidth(width, centers[kept], kernel[:, kept].contiguous(), expected[kept]))
        if not prepared:
            raise ConfigurationError(f"no centre expects min_expected = {self.min_expected:g} reference events at any "
                                     "width: lower min_expected or give wider width_quantiles.")
        return _PreparedScan(mean, scale, weights, tuple(prepared))

    def _statistic(self, samples: Samples, prepared: _PreparedScan) -> float:
        data = torch.as_tensor(standardized(samples.x_data, prepared.mean, prepared.scale, "x_data"))
        penalised, maxima, capped, best = [], [], 0, None
        for scan in prepared.widths:
            data_sums = _gaussian(data, scan.centers, scan.width).sum(dim=0)
            theta, q = _fit_log_ratios(data_sums, scan, prepared.weights)
            if not bool(torch.isfinite(q).all()):
                raise FitError(f"KernelExcessScan: a centre's statistic is not finite at width {scan.width:.3g}.")
            capped += int((theta >= MAX_LOG_RATIO).sum())
            index = int(torch.argmax(q))
            maxima.append(float(q[index]))
            penalised.append(maxima[-1] - 2.0 * np.log(len(q)))
            if best is None or penalised[-1] > penalised[best[0]]:
                best = (len(penalised) - 1, scan, index, float(theta[index]))
        chosen, scan, index, log_ratio = best
        self.width_maxima_ = maxima
        self.n_centers_ = [len(scan_width.centers) for scan_width in prepared.widths]
        self.excess_center_ = (scan.centers[index].numpy() * prepared.scale + prepared.mean).tolist()
        self.excess_width_ = float(scan.width)
        self.log_ratio_ = log_ratio
        self.capped_centers_ = capped
        return float(penalised[chosen])
