"""Model selection from reference data only, as the papers do it by hand, automated.

scan_hyperparameters runs a small null campaign for every (sigma quantile, M, lambda) of a grid,
on the same null toys, and tabulates the mean null t, the fitted chi2 dof and its KS p-value, and
the failures (errors or non-converged fits). The recommendation: sigma from the chosen percentile
of pairwise reference distances (the papers' 90th); lambda the smallest value whose fits are all
stable at every M; M the smallest value whose mean null t is on the plateau, i.e. within
max(10%, 2 standard errors) of the mean null t at the largest M.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .calibration import fit_chi2
from .campaign import ToyGenerator, run_toys
from .estimator import KernelNPLM
from .exceptions import ConfigurationError, FitError
from .hypothesis_test import NPLMTest
from .kernel import pairwise_distance_quantile
from .samples import as_events, as_weights, reference_standardization

PLATEAU_TOLERANCE = 0.10


@dataclass(frozen=True)
class ScanRow:
    """One setting of the grid and its null-campaign summary."""

    sigma_quantile: float
    sigma: float
    n_centers: int
    penalty: float
    n_toys: int
    mean_t: float
    t_error: float
    dof: float
    ks_p_value: float
    failures: int

    @property
    def stable(self) -> bool:
        return self.failures == 0 and np.isfinite(self.mean_t)


@dataclass(frozen=True)
class ScanResult:
    """The scan table, the recommended setting (a row, or None if nothing is stable) and why."""

    rows: tuple[ScanRow, ...]
    recommended: ScanRow | None
    reason: str

    def table(self) -> str:
        lines = ["| sigma quantile | sigma | M | lambda | toys | mean null t | fitted dof | KS p | failures |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for row in self.rows:
            mark = " **(recommended)**" if row == self.recommended else ""
            lines.append(f"| {row.sigma_quantile:g} | {row.sigma:.3f} | {row.n_centers} | {row.penalty:g} | "
                         f"{row.n_toys} | {row.mean_t:.2f} ± {row.t_error:.2f} | {row.dof:.2f} | "
                         f"{row.ks_p_value:.3f} | {row.failures} |{mark}")
        return "\n".join(lines + ["", f"Recommendation: {self.reason}"])


def _recommend(rows: list[ScanRow], sigma_quantile: float) -> tuple[ScanRow | None, str]:
    candidates = [row for row in rows if row.sigma_quantile == sigma_quantile]
    centers = sorted({row.n_centers for row in candidates})
    stable_penalties = [penalty for penalty in sorted({row.penalty for row in candidates})
                        if all(row.stable for row in candidates if row.penalty == penalty)]
    if not stable_penalties:
        return None, f"no lambda gives stable fits at every M for sigma quantile {sigma_quantile:g}; widen the grid."
    penalty = stable_penalties[0]
    by_centers = {row.n_centers: row for row in candidates if row.penalty == penalty}
    top = by_centers[centers[-1]]
    for n_centers in centers:
        row = by_centers[n_centers]
        if abs(row.mean_t - top.mean_t) <= max(PLATEAU_TOLERANCE * top.mean_t, 2 * np.hypot(row.t_error, top.t_error)):
            reason = (f"sigma = {row.sigma:.3f} (the {sigma_quantile:g} quantile of pairwise reference distances); "
                      f"lambda = {penalty:g}, the smallest with all fits converged at every M; M = {n_centers}, "
                      f"the smallest whose mean null t ({row.mean_t:.2f}) is within max({PLATEAU_TOLERANCE:.0%}, "
                      f"2 sigma) of the largest M's ({top.mean_t:.2f}).")
            return row, reason
    return top, "no plateau reached below the largest M: consider larger M."


def scan_hyperparameters(
    x_ref: np.ndarray,
    w_ref: float | np.ndarray,
    generator: ToyGenerator,
    sigma_quantiles: Sequence[float] = (0.5, 0.9),
    n_centers: Sequence[int] = (100, 300, 1000),
    penalties: Sequence[float] = (1e-5, 1e-7),
    n_toys: int = 20,
    seed: int = 0,
    executor=None,
    recommend_quantile: float = 0.9,
    progress: bool = False,
) -> ScanResult:
    """Scan the grid on null toys from `generator` (module docstring); every setting sees the same toys."""
    reference = as_events(x_ref, "x_ref")
    weights = as_weights(w_ref, len(reference))
    if recommend_quantile not in sigma_quantiles:
        raise ConfigurationError(f"recommend_quantile {recommend_quantile:g} must be one of sigma_quantiles {list(sigma_quantiles)}.")
    mean, scale = reference_standardization(reference, weights)
    sigmas = {quantile: pairwise_distance_quantile((reference - mean) / scale, quantile, seed=seed)
              for quantile in sigma_quantiles}
    rows = []
    for quantile, centers, penalty in itertools.product(sigma_quantiles, n_centers, penalties):
        sigma = sigmas[quantile]
        test = NPLMTest(KernelNPLM(n_centers=int(centers), sigma=sigma, penalty=float(penalty), seed=seed))
        try:
            campaign = run_toys(test, generator, reference, weights, n_toys=n_toys, seed=seed, executor=executor,
                                progress=progress, max_failure_fraction=1.0)
        except FitError:
            campaign = None
        t = campaign.t if campaign is not None else np.array([])
        failures = n_toys if campaign is None else campaign.n_failed + sum(
            not row.get("converged", True) for row in campaign.rows if row["status"] == "ok")
        fit = fit_chi2(t) if len(t) >= 2 and (t > 0).all() else None
        rows.append(ScanRow(
            sigma_quantile=float(quantile), sigma=sigma, n_centers=int(centers), penalty=float(penalty), n_toys=len(t),
            mean_t=float(t.mean()) if len(t) else float("nan"),
            t_error=float(t.std(ddof=1) / np.sqrt(len(t))) if len(t) > 1 else float("nan"),
            dof=fit.dof if fit else float("nan"), ks_p_value=fit.ks_p_value if fit else float("nan"),
            failures=int(failures),
        ))
    recommended, reason = _recommend(rows, float(recommend_quantile))
    return ScanResult(rows=tuple(rows), recommended=recommended, reason=reason)
