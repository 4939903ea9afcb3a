"""Event weights: the removal of negative (NLO) weights by cell resampling (Andersen & Maier,
"Unbiased elimination of negative weights in Monte Carlo samples", Eur. Phys. J. C 82 (2022) 433,
arXiv:2109.07851), which keeps the weighted distribution (Kish's effective sample size of weighted
events is samples.effective_sample_size).

Cell resampling: each event with a negative weight seeds a cell; the cell takes the seed's nearest
events one at a time until the sum of its weights is no longer negative, and every weight in the
cell is then replaced by |w_i| (sum_cell w) / (sum_cell |w|). The weights of a cell keep their
sum, so the weighted distribution changes only within cells (which are small where events are
dense), the total sum of weights is kept, and events far from any negative weight are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .exceptions import InputError
from .samples import as_events, check_finite, effective_sample_size

#: What a reference with negative weights gets: refused (the default) or cell-resampled.
NEGATIVE_WEIGHT_TREATMENTS = ("refuse", "resample")
#: Nearest events looked up at once for each cell (more are looked up for a cell that needs them).
CELL_NEIGHBOURS = 32


@dataclass(frozen=True)
class CellResampling:
    """The result of resample_negative_weights: the events kept `x` (n, d) and their weights `w`
    (n,), all positive, with the original sum; one entry per cell in `cell_sizes` (events) and
    `cell_radii` (distance from the seed to the farthest event of its cell, in standard deviations
    of the features); `n_dropped` events left with weight 0 (cells whose weights summed to zero)
    are removed; `original_effective_size` is Kish's n_eff before resampling."""

    x: np.ndarray
    w: np.ndarray
    cell_sizes: np.ndarray
    cell_radii: np.ndarray
    n_dropped: int
    original_effective_size: float

    def summary(self) -> str:
        """One line: the cells, their sizes and radii, the events dropped and Kish's n_eff."""
        if len(self.cell_sizes) == 0:
            cells = "no negative weight, no cell"
        else:
            cells = (f"{len(self.cell_sizes)} cells of median {np.median(self.cell_sizes):g} events (largest "
                     f"{int(self.cell_sizes.max())}), median radius {np.median(self.cell_radii):.3g} (largest "
                     f"{self.cell_radii.max():.3g}) standard deviations")
        return (f"cell resampling: {cells}; {self.n_dropped} event(s) with weight 0 dropped; {len(self.w)} events, "
                f"sum of weights {self.w.sum():.6g}, Kish n_eff {self.original_effective_size:.0f} -> "
                f"{effective_sample_size(self.w):.0f}")


def resample_negative_weights(x: object, w: object) -> CellResampling:
    """Remove negative weights by cell resampling (module docstring), keeping the weighted
    distribution and the sum of weights. Distances are Euclidean in units of each feature's
    standard deviation over the events; seeds are taken from the most negative weight up, and an
    event already resampled into an earlier cell can join a later one. Events whose weight ends at
    zero are dropped. InputError when the weights do not sum to a positive number (no distribution
    to keep)."""
    events = as_events(x, "x_ref")
    weights = np.array(w, dtype=np.float64).reshape(-1)
    if weights.shape != (len(events),):
        raise InputError(f"w_ref must have one weight per event ({len(events)}), got shape {weights.shape}.")
    check_finite(weights, "w_ref")
    original_effective_size = effective_sample_size(weights)
    total = float(weights.sum())
    if not total > 0:
        raise InputError(f"the weights sum to {total:.6g}: a reference needs a positive expected yield, and cell "
                         "resampling keeps the sum of weights.")
    negative = np.flatnonzero(weights < 0)
    seeds = negative[np.argsort(weights[negative], kind="stable")]
    sizes, radii = [], []
    if len(seeds):
        scale = events.std(axis=0)
        points = (events - events.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
        tree = cKDTree(points)
        n_neighbours = min(CELL_NEIGHBOURS, len(events))
        neighbours = tree.query(points[seeds], k=n_neighbours)[1].reshape(len(seeds), n_neighbours)
        for seed, nearest in zip(seeds, neighbours):
            if weights[seed] >= 0:  # absorbed by an earlier cell
                continue
            cell = _cell(tree, points, weights, seed, nearest)
            cell_weights = weights[cell]
            weights[cell] = np.abs(cell_weights) * (cell_weights.sum() / np.abs(cell_weights).sum())
            sizes.append(len(cell))
            radii.append(float(np.linalg.norm(points[cell[-1]] - points[seed])))
    kept = weights > 0
    return CellResampling(x=events[kept], w=weights[kept], cell_sizes=np.array(sizes, dtype=np.int64),
                          cell_radii=np.array(radii), n_dropped=int(np.sum(~kept)),
                          original_effective_size=original_effective_size)


def _cell(tree: cKDTree, points: np.ndarray, weights: np.ndarray, seed: int, nearest: np.ndarray) -> np.ndarray:
    """The seed and its nearest events, in order of distance, up to the first at which the sum of
    their weights is no longer negative (more neighbours are looked up when those given do not
    suffice; all events together sum to a positive total, so a cell always closes)."""
    while True:
        members = np.concatenate([[seed], nearest[nearest != seed]])
        closed = np.flatnonzero(np.cumsum(weights[members]) >= 0)
        if len(closed):
            return members[: closed[0] + 1]
        if len(members) == len(points):
            raise InputError(f"no cell around event {seed} closes: the weights of all events sum to "
                             f"{weights.sum():.6g} in this order (rounding); the sum of weights must be clearly positive.")
        more = min(2 * len(nearest), len(points))
        nearest = np.atleast_1d(tree.query(points[seed], k=more)[1])
