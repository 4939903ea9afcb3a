"""The kernel excess scan (nplm_kernel.kernel.excess_scan) on its own, as a baseline: a member of the
default test, compared alone with the other methods on the same toys."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.samples import Samples
from ..kernel.excess_scan import DEFAULT_SCAN_QUANTILES, ExcessScan
from .base import Baseline


class KernelExcessScan(Baseline):
    """The NPLM loss with a one-kernel-function model, scanned over centres and widths:
    t = max_h [max_c q(c, h) - 2 log n_h], q the NPLM statistic of f = theta phi_c, theta >= 0
    (nplm_kernel.kernel.excess_scan.ExcessScan, whose settings these are). Details: width_maxima_,
    n_centers_, excess_center_ (input units), excess_width_ (standardised), log_ratio_,
    capped_centers_."""

    name = "kernel excess scan"
    assumptions = "a local excess of data over the reference (deficits are not sought); calibrate on null toys"

    def __init__(self, width_quantiles: Sequence[float] = DEFAULT_SCAN_QUANTILES, spacing: float = 0.5,
                 max_centers: int = 256, min_expected: float = 0.5):
        self.width_quantiles = width_quantiles
        self.spacing = spacing
        self.max_centers = max_centers
        self.min_expected = min_expected

    def _scan(self) -> ExcessScan:
        return ExcessScan(tuple(self.width_quantiles), self.spacing, self.max_centers, self.min_expected)

    def prepare(self, samples: Samples):
        """The reference's standardisation, and per width its covering centres and their moments."""
        return self._scan().prepare(samples.x_ref, samples.w_ref)

    def _statistic(self, samples: Samples, prepared) -> float:
        outcome = self._scan().scan(samples.x_data, prepared)
        for name, value in outcome.details().items():
            setattr(self, f"{name}_", value)
        return outcome.t
