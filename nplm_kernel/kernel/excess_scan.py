"""The NPLM loss with the sparsest kernel model, scanned: the local-excess member of the default test.

For one Gaussian kernel function of width h at a centre c, phi(x) = exp(-|x - c|^2 / (2 h^2)) in
features standardised with the reference, the model f = theta phi (theta >= 0: an excess) gives

    q(c, h) = -2 min_{theta >= 0} L[theta phi],   L[f] = sum_R w (e^f - 1) - sum_D f,

the NPLM test statistic of that one-parameter model (0 where the data lie at or below the
reference around c). The scan takes, at each width, the largest q over a set of n_h centres that
covers the reference, and penalises each width for its look-elsewhere effect as a Bonferroni
correction would (-2 log of n_h trials):

    t = max_h [ max_c q(c, h) - 2 log n_h ].

t can be negative; calibrate it with null toys (its null is not a chi2).

Cost: once per reference (prepare), the reference is merged into small cells and, per width, the
moments m_n = sum_R w phi_c^n (n = 1 .. 64) of every centre are computed, so that
sum_R w e^(theta phi_c) is a power series in theta; a toy then costs the data's kernel sums and a
few Newton steps per centre, whatever the size of the reference. On the 1D benchmark (2e5
reference events, about 400 centres in all) a toy takes 0.02 s. In many variables a narrow width
takes many centres to cover the reference; max_centers caps them per width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.exceptions import ConfigurationError, FitError
from ..core.samples import check_positive_integer, check_positive_number, reference_standardization, standardized
from ..solver import gaussian_kernel, pairwise_distance_quantiles

#: Default widths: quantiles of pairwise reference distances, from about a tenth of the typical
#: distance (a narrow resonance) to the 0.92 quantile (a broad excess).
DEFAULT_SCAN_QUANTILES = (0.1, 0.15, 0.22, 0.33, 0.47, 0.63, 0.8, 0.92)
#: The reference is merged into cells of this fraction of the smallest width (per standardised
#: variable), each cell a point at its weighted mean with the cell's total weight.
CELL_FRACTION = 0.1
#: The largest log-ratio theta a centre may reach: e^12 = 1.6e5 data events per expected reference
#: event. A fit stopped there has a q that is a lower bound (counted in capped_centers_).
MAX_LOG_RATIO = 12.0
#: Terms of the power series sum_R w e^(theta phi) = sum_n theta^n m_n / n! kept (m_n = sum_R w
#: phi^n, phi <= 1): for theta <= MAX_LOG_RATIO the rest is below 1e-19 of the sum.
SERIES_TERMS = 64
#: Safeguarded Newton iterations per centre, and the step size at which they stop.
MAX_NEWTON_STEPS = 60
THETA_TOL = 1e-12
#: Reference cells per chunk when the moments are computed.
CHUNK_CELLS = 4096
#: A covering with more than max_centers centres is redone with its radius this much larger.
RADIUS_GROWTH = 1.25


@dataclass(frozen=True)
class _ScanWidth:
    """One width of the scan: h (standardised units), the centres (n_h, d) and the reference's
    moments under each centre's kernel, m_n = sum_R w phi_c^n for n = 1 .. SERIES_TERMS
    (n_h, SERIES_TERMS); m_1 is the number of reference events the kernel expects."""

    width: float
    centers: torch.Tensor
    moments: torch.Tensor


@dataclass(frozen=True)
class _PreparedScan:
    """The reference's standardisation and the scan's widths."""

    mean: np.ndarray
    scale: np.ndarray
    widths: tuple[_ScanWidth, ...]


def _covering_centers(points: torch.Tensor, radius: float, max_centers: int) -> torch.Tensor:
    """Indices of at most max_centers points such that every point lies within a radius of one of
    them, taken in order (the first point not yet covered becomes a centre): `radius`, or that
    radius grown by RADIUS_GROWTH until max_centers suffice."""
    while True:
        uncovered = torch.ones(points.shape[0], dtype=torch.bool)
        chosen: list[int] = []
        while bool(uncovered.any()) and len(chosen) <= max_centers:
            index = int(torch.nonzero(uncovered)[0, 0])
            chosen.append(index)
            uncovered &= ((points - points[index]) ** 2).sum(dim=1) > radius * radius
        if len(chosen) <= max_centers:
            return torch.tensor(chosen, dtype=torch.long)
        radius *= RADIUS_GROWTH


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


def _reference_moments(cells: torch.Tensor, weights: torch.Tensor, centers: torch.Tensor, width: float
                       ) -> torch.Tensor:
    """m_n = sum_R w phi_c^n, n = 1 .. SERIES_TERMS, for every centre c: (n_centers, SERIES_TERMS),
    one pass over the reference cells in chunks."""
    moments = torch.zeros((len(centers), SERIES_TERMS), dtype=torch.float64)
    for start in range(0, len(cells), CHUNK_CELLS):
        kernel = gaussian_kernel(cells[start : start + CHUNK_CELLS], centers, width)
        chunk_weights, power = weights[start : start + CHUNK_CELLS], kernel.clone()
        for term in range(SERIES_TERMS):
            moments[:, term] += chunk_weights @ power
            power *= kernel
    return moments


def _scaled_powers(theta: torch.Tensor) -> torch.Tensor:
    """theta^k / k! for k = 0 .. SERIES_TERMS, (len(theta), SERIES_TERMS + 1)."""
    steps = theta[:, None] / torch.arange(1, SERIES_TERMS + 1, dtype=torch.float64)
    return torch.cat([torch.ones_like(theta)[:, None], torch.cumprod(steps, dim=1)], dim=1)


def _fit_log_ratios(data_sums: torch.Tensor, moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """theta >= 0 maximising theta S_c - sum_R w (e^(theta phi_c) - 1) = theta S_c - sum_n theta^n
    m_n / n! for every centre c (S_c: the data's sum of phi_c; moments: m_n, (n_c, SERIES_TERMS)),
    by Newton's method kept inside a bracket [low, high] of the root of the derivative (bisection
    when a step leaves it); (theta, q = 2 x the maximum). FitError if a fit has not converged after
    MAX_NEWTON_STEPS steps."""
    expected = moments[:, 0]  # the derivative at theta = 0 is S - expected
    theta = torch.zeros_like(data_sums)
    excess = data_sums > expected
    theta[excess] = torch.log(data_sums[excess] / expected[excess]).clamp(max=MAX_LOG_RATIO)
    low = torch.zeros_like(theta)
    high = torch.full_like(theta, MAX_LOG_RATIO)
    running = torch.nonzero(excess)[:, 0]
    for _ in range(MAX_NEWTON_STEPS):
        if len(running) == 0:
            break
        current = theta[running]
        powers = _scaled_powers(current)
        slope = data_sums[running] - (moments[running] * powers[:, :-1]).sum(dim=1)
        curvature = (moments[running, 1:] * powers[:, :-2]).sum(dim=1)
        low[running] = torch.where(slope > 0, current, low[running])
        high[running] = torch.where(slope < 0, current, high[running])
        proposal = current + slope / curvature
        inside = (proposal > low[running]) & (proposal < high[running])
        proposal = torch.where(inside, proposal, 0.5 * (low[running] + high[running]))
        theta[running] = proposal
        running = running[(proposal - current).abs() > THETA_TOL * (1.0 + proposal)]
    if len(running):
        raise FitError(f"the kernel excess scan: the fits of {len(running)} centre(s) did not converge in "
                       f"{MAX_NEWTON_STEPS} Newton steps.")
    gain = theta * data_sums - (moments * _scaled_powers(theta)[:, 1:]).sum(dim=1)
    return theta, 2.0 * gain.clamp(min=0.0)


def excess_location(excess_center: list[float], log_ratio: float) -> str:
    """Where a scan's largest excess is, as every output says it: 'x = (c_1, ..., c_d), data /
    reference = e^theta at its centre' (input units)."""
    where = ", ".join(f"{value:.4g}" for value in excess_center)
    return f"x = ({where}), data / reference = {np.exp(log_ratio):.3g} at its centre"


@dataclass(frozen=True)
class ScanOutcome:
    """One scan: t (dimensionless), the largest q per width (width_maxima), the centres scanned per
    width (n_centers), the largest excess (its centre in input units, its width in standardised
    units, its log-ratio theta = log(data / reference) at the centre) and the centres whose fit
    stopped at MAX_LOG_RATIO (capped_centers)."""

    t: float
    width_maxima: list[float]
    n_centers: list[int]
    excess_center: list[float]
    excess_width: float
    log_ratio: float
    capped_centers: int

    def details(self) -> dict:
        """Everything but t, JSON-safe (a campaign row's details)."""
        return {name: value for name, value in vars(self).items() if name != "t"}


@dataclass(frozen=True)
class ExcessScan:
    """The NPLM loss with a one-kernel-function model, scanned over centres and widths (module
    docstring): t = max_h [max_c q(c, h) - 2 log n_h], q the NPLM statistic of f = theta phi_c,
    theta >= 0. prepare() holds what depends on the reference alone; scan() is one data sample.

    width_quantiles : the widths h, as quantiles of pairwise distances between reference events
        (standardised).
    spacing : centres cover the reference's cells within spacing x h (in standardised units) ...
    max_centers : ... unless that takes more than max_centers centres at a width: the covering
        radius then grows until max_centers suffice (in many variables, where covering a reference
        at a narrow width takes thousands of centres).
    min_expected : a centre is scanned only where the reference expects at least this many events
        under its kernel (sum_R w phi_c): one data event where the reference expects almost none is
        not an excess that a reference sample can resolve.
    """

    width_quantiles: tuple[float, ...] = DEFAULT_SCAN_QUANTILES
    spacing: float = 0.5
    max_centers: int = 256
    min_expected: float = 0.5

    def prepare(self, x_ref: np.ndarray, w_ref: np.ndarray) -> _PreparedScan:
        """The reference's standardisation, and per width its covering centres and their moments
        (validated reference events (N_R, d) and weights (N_R,))."""
        check_positive_number(self.spacing, "spacing")
        check_positive_integer(self.max_centers, "max_centers")
        check_positive_number(self.min_expected, "min_expected")
        quantiles = sorted(float(quantile) for quantile in self.width_quantiles)
        if not quantiles or not all(0.0 < quantile < 1.0 for quantile in quantiles):
            raise ConfigurationError(f"width_quantiles must list at least one quantile, each in (0, 1); got "
                                     f"{list(self.width_quantiles)}.")
        mean, scale = reference_standardization(x_ref, w_ref)
        points = standardized(x_ref, mean, scale, "x_ref")
        widths = pairwise_distance_quantiles(points, quantiles, w_ref)
        cell_points, cell_weights = _merged_cells(points, w_ref, CELL_FRACTION * min(widths))
        cells, weights = torch.as_tensor(cell_points), torch.as_tensor(cell_weights)
        prepared = []
        for width in widths:
            centers = cells[_covering_centers(cells, self.spacing * width, int(self.max_centers))]
            moments = _reference_moments(cells, weights, centers, width)
            kept = moments[:, 0] >= self.min_expected
            if bool(kept.any()):
                prepared.append(_ScanWidth(width, centers[kept], moments[kept]))
        if not prepared:
            raise ConfigurationError(f"no centre expects min_expected = {self.min_expected:g} reference events at any "
                                     "width: lower min_expected or give wider width_quantiles.")
        return _PreparedScan(mean, scale, tuple(prepared))

    def scan(self, x_data: np.ndarray, prepared: _PreparedScan) -> ScanOutcome:
        """The scan of validated data events (N_D, d) against prepare()'s reference."""
        data = torch.as_tensor(standardized(x_data, prepared.mean, prepared.scale, "x_data"))
        penalised, maxima, capped, best = [], [], 0, None
        for scan in prepared.widths:
            data_sums = gaussian_kernel(data, scan.centers, scan.width).sum(dim=0)
            theta, q = _fit_log_ratios(data_sums, scan.moments)
            if not bool(torch.isfinite(q).all()):
                raise FitError(f"the kernel excess scan: a centre's statistic is not finite at width {scan.width:.3g}.")
            capped += int((theta >= MAX_LOG_RATIO).sum())
            index = int(torch.argmax(q))
            maxima.append(float(q[index]))
            penalised.append(maxima[-1] - 2.0 * np.log(len(q)))
            if best is None or penalised[-1] > penalised[best[0]]:
                best = (len(penalised) - 1, scan, index, float(theta[index]))
        chosen, scan, index, log_ratio = best
        return ScanOutcome(t=float(penalised[chosen]), width_maxima=maxima,
                           n_centers=[len(scan_width.centers) for scan_width in prepared.widths],
                           excess_center=(scan.centers[index].numpy() * prepared.scale + prepared.mean).tolist(),
                           excess_width=float(scan.width), log_ratio=log_ratio, capped_centers=capped)
