"""How the commands print calibrations: the chi2 fit, the p-value with its interval and method, Z,
and the toy counts of a null (extrapolated or bounded p-values flagged on every line)."""

from __future__ import annotations

import numpy as np

from ..inference.calibration import Chi2Fit, Significance
from ..toys import CampaignResult


def chi2_text(fit: Chi2Fit | None) -> str:
    if fit is None:
        return "none (a multi-scale null, or non-positive null t)"
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


def shown_width(result: Significance | None, n_widths: int) -> int | None:
    """Which width of a multi-scale test a figure or a saved model shows: the one with the smallest
    p (the one that sees the data most; the first before calibration); None for a one-width test."""
    if n_widths < 2:
        return None
    return 0 if result is None else int(np.argmin(result.width_p_values))


def width_lines(t: np.ndarray, widths: tuple[float, ...] | None) -> list[str]:
    """The t line of one test: t, or one t per width of a multi-scale test."""
    if not widths:
        return [f"t:         {float(t):.4f}"]
    return [f"t:         {', '.join(f'{value:.4f}' for value in t)}  (kernel widths "
            f"{', '.join(f'{width:.3g}' for width in widths)}, in the units of sigma)"]
