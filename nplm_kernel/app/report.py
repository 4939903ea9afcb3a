"""How the commands print calibrations: the chi2 fit, the p-value with its interval and method, Z,
and the toy counts of a null (extrapolated or bounded p-values flagged on every line)."""

from __future__ import annotations

import numpy as np

from ..inference.calibration import Chi2Fit, Significance
from ..kernel.excess_scan import excess_location
from ..toys import CampaignResult


def chi2_text(fit: Chi2Fit | None) -> str:
    if fit is None:
        return "none (the null of a test of several members, or non-positive null t)"
    return f"dof = {fit.dof:.2f}, KS p-value = {fit.ks_p_value:.3f}"


def p_value_lines(result: Significance) -> list[str]:
    """The p-value line (with its Clopper-Pearson interval, method and toy count) and the Z line,
    rounded as str(result) rounds them (the figures' text); an extrapolated or bounded p-value says
    so on both."""
    flag = "  [EXTRAPOLATED beyond every null toy]" if result.is_extrapolated else (
        "  [UPPER BOUND: the true p is smaller]" if result.is_bound else "")
    z_text = f"{result.z:.2f}" if np.isfinite(result.z) else ("-inf (p = 1: no toy is below t)" if result.z < 0 else
                                                                "inf")
    return [f"p-value:   {result.p_value:.3g}  (68.27% Clopper-Pearson [{result.p_low:.2g}, {result.p_high:.2g}]; "
            f"method: {result.method}; {result.n_toys} toys){flag}",
            f"Z:         {z_text}{flag}"]


def null_summary(campaign: CampaignResult) -> list[str]:
    """The toy counts of a stored null, with a warning line when some fits did not converge."""
    lines = [f"null:      {len(campaign.t)} toys ({campaign.n_failed} failed, {campaign.n_unconverged} not converged, "
             f"{campaign.n_unsupported} with data the reference cannot support)"]
    if campaign.n_unconverged:
        lines.append(f"warning:   {campaign.n_unconverged} null toy fit(s) stopped before their tolerance; their t is "
                     "included in the calibration (see the store rows' warnings)")
    if campaign.n_unsupported:
        lines.append(f"warning:   {campaign.n_unsupported} null toy fit(s) have data events the reference sample cannot "
                     "support (their t measures the reference's emptiness there); they are included in the calibration: "
                     "a larger penalty or reference sample removes them (docs: statistics, reference support)")
    return lines


def shown_width(result: Significance | None, n_widths: int, n_members: int) -> int | None:
    """Which kernel width's model a figure or a saved model shows, for a test of n_members members
    whose first n_widths are kernel widths: the width with the smallest p (the one that sees the
    data most; the first before calibration); None for a single fit."""
    if n_members < 2:
        return None
    return 0 if result is None else int(np.argmin(result.member_p_values[:n_widths]))


def member_lines(result: object) -> list[str]:
    """The t line of one test result: t, or one t per member (kernel widths in the units of sigma,
    the excess scan) with, for the scan, where its largest excess is."""
    if np.ndim(result.t) == 0:
        return [f"t:         {float(result.t):.4f}"]
    lines = [f"t:         {', '.join(f'{value:.4f}' for value in result.t)}  ({', '.join(result.members)}; widths "
             "in the units of sigma)"]
    if result.excess_scan is not None:
        where = excess_location(result.excess_scan.excess_center, result.excess_scan.log_ratio)
        lines.append(f"excess:    the scan's largest local excess is at {where}")
    return lines
