"""Model selection from reference data only, as the papers do it by hand, automated, with the
expected sensitivity of each setting beside the stability of its null.

scan_hyperparameters runs, for every (sigma quantile, M, lambda) of a grid, a small null campaign
and a probe campaign on the same toys: the probe toys add a generic localised excess (campaign.
LocalExcessToys: `probe_events` events drawn near a random reference event, so the excess has the
reference's local shape at a random place). Per setting it tabulates the mean null t, the fitted
chi2 dof and its KS p-value, the failures (errors or non-converged fits), and the probe toys'
median Z (calibrated on that setting's null toys) and power at Z >= 2.

The recommendation: lambda the smallest value whose fits are all stable at every (sigma, M); then,
among the settings at that lambda, the highest probe median Z, taking the cheapest setting
(smallest M) within one standard error of the best.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from ..core.exceptions import ConfigurationError, FitError
from ..core.samples import as_events, as_weights, check_positive_integer
from ..inference import NPLMTest
from ..inference.calibration import fit_chi2, significance
from ..kernel import KernelNPLM
from ..kernel.geometry import reference_widths
from ..toys import DEFAULT_EXECUTOR, LocalExcessToys, ToyGenerator, run_toys

#: The scan's default grids: widths (quantiles of pairwise reference distances), M and lambda.
DEFAULT_SIGMA_QUANTILES_GRID = (0.5, 0.9)
DEFAULT_N_CENTERS_GRID = (100, 300, 1000)
DEFAULT_PENALTIES_GRID = (1e-5, 1e-7)


@dataclass(frozen=True)
class ScanRow:
    """One setting of the grid: its null-campaign summary and its probe sensitivity."""

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
    probe_median_z: float = float("nan")
    probe_z_error: float = float("nan")
    probe_power: float = float("nan")

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
        """Markdown table of the scan, one row per setting, then the recommendation."""
        lines = ["| sigma quantile | sigma | M | lambda | toys | mean null t | fitted dof | KS p | failures | "
                 "probe median Z | probe power Z >= 2 | choice |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in self.rows:
            mark = "**recommended**" if row == self.recommended else ""
            lines.append(f"| {row.sigma_quantile:g} | {row.sigma:.3f} | {row.n_centers} | {row.penalty:g} | "
                         f"{row.n_toys} | {row.mean_t:.2f} ± {row.t_error:.2f} | {row.dof:.2f} | "
                         f"{row.ks_p_value:.3f} | {row.failures} | {row.probe_median_z:.2f} ± {row.probe_z_error:.2f} | "
                         f"{row.probe_power:.2f} | {mark} |")
        return "\n".join(lines + ["", f"Recommendation: {self.reason}"])


def _recommend(rows: list[ScanRow]) -> tuple[ScanRow | None, str]:
    stable_penalties = [penalty for penalty in sorted({row.penalty for row in rows})
                        if all(row.stable for row in rows if row.penalty == penalty)]
    if not stable_penalties:
        return None, "no lambda gives stable fits at every sigma and M; widen the grid."
    penalty = stable_penalties[0]
    candidates = [row for row in rows if row.penalty == penalty and np.isfinite(row.probe_median_z)]
    if not candidates:
        return None, f"no setting at lambda = {penalty:g} has probe toys to measure its sensitivity."
    best = max(candidates, key=lambda row: row.probe_median_z)
    close = [row for row in candidates if row.probe_median_z >= best.probe_median_z - best.probe_z_error]
    chosen = min(close, key=lambda row: (row.n_centers, -row.probe_median_z))
    reason = (f"lambda = {penalty:g}, the smallest with all fits converged at every sigma and M; sigma = "
              f"{chosen.sigma:.3f} (the {chosen.sigma_quantile:g} quantile of pairwise reference distances) and "
              f"M = {chosen.n_centers}: probe median Z {chosen.probe_median_z:.2f}, the cheapest setting within one "
              f"standard error of the best ({best.probe_median_z:.2f} ± {best.probe_z_error:.2f}). Several widths can "
              "also be combined in one calibrated test: NPLMTest(widths=...) (the default test, when sigma is not "
              "fixed, combines the 0.9 quantile's fit with the excess scan).")
    return chosen, reason


def _median_with_error(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    if len(values) == 0:
        return float("nan"), float("nan")
    clipped = np.clip(values, -8.0, 8.0)
    boot = [np.median(rng.choice(clipped, size=len(clipped))) for _ in range(200)]
    return float(np.median(clipped)), float(np.std(boot))


def scan_hyperparameters(
    x_ref: np.ndarray,
    w_ref: float | np.ndarray,
    generator: ToyGenerator,
    sigma_quantiles: Sequence[float] = DEFAULT_SIGMA_QUANTILES_GRID,
    n_centers: Sequence[int] = DEFAULT_N_CENTERS_GRID,
    penalties: Sequence[float] = DEFAULT_PENALTIES_GRID,
    n_toys: int = 20,
    n_probe_toys: int = 20,
    probe_events: int | None = None,
    seed: int = 0,
    executor: Any = DEFAULT_EXECUTOR,
    progress: bool = False,
    estimator: KernelNPLM | None = None,
) -> ScanResult:
    """Scan the grid on null toys from `generator` and on probe toys (module docstring); every
    setting sees the same toys. probe_events: events of the local excess (None: 3% of N(R), at
    least 5), drawn from the 4 x probe_events nearest reference events of a random one.
    estimator: the kernel settings every grid point starts from (device, dtype, loss,
    memory_budget, ...; default KernelNPLM()); the grid sets sigma, n_centers and penalty, `seed`
    its seed, so it must not have a penalty_list."""
    base = KernelNPLM() if estimator is None else estimator
    if not isinstance(base, KernelNPLM):
        raise ConfigurationError(f"estimator must be a KernelNPLM (the scan's grid is the kernel's), got "
                                 f"{type(base).__name__}.")
    if base.penalty_list is not None:
        raise ConfigurationError("estimator has a penalty_list; the scan's penalties grid sets lambda: leave it None.")
    reference = as_events(x_ref, "x_ref")
    weights = as_weights(w_ref, len(reference))
    check_positive_integer(n_toys, "n_toys", minimum=2)
    check_positive_integer(n_probe_toys, "n_probe_toys")
    if not sigma_quantiles:
        raise ConfigurationError("sigma_quantiles must list at least one quantile.")
    n_events = probe_events or max(5, int(round(0.03 * weights.sum())))
    probe = LocalExcessToys(generator, reference, n_events, min(len(reference), 4 * n_events))
    sigmas = dict(zip(sigma_quantiles, reference_widths(reference, weights, sigma_quantiles)))
    rng = np.random.default_rng(seed)
    rows = []
    for quantile, centers, penalty in itertools.product(sigma_quantiles, n_centers, penalties):
        sigma = sigmas[quantile]
        test = NPLMTest(clone(base).set_params(n_centers=int(centers), sigma=sigma, penalty=float(penalty), seed=seed))
        campaigns = {}
        for name, toys, count, toy_seed in (("null", generator, n_toys, seed), ("probe", probe, n_probe_toys, seed + 1)):
            try:
                campaigns[name] = run_toys(test, toys, reference, weights, n_toys=count, seed=toy_seed,
                                           executor=executor, progress=progress, max_failure_fraction=1.0)
            except FitError:
                campaigns[name] = None
        null = campaigns["null"]
        t = null.t if null is not None else np.array([])
        failures = n_toys if null is None else null.n_failed + null.n_unconverged
        fit = fit_chi2(t) if len(t) >= 2 and (t > 0).all() else None
        z_values = np.array([])
        if campaigns["probe"] is not None and len(t) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                z_values = np.array([significance(value, t).z for value in campaigns["probe"].t])
        median_z, z_error = _median_with_error(z_values, rng)
        rows.append(ScanRow(
            sigma_quantile=float(quantile), sigma=sigma, n_centers=int(centers), penalty=float(penalty), n_toys=len(t),
            mean_t=float(t.mean()) if len(t) else float("nan"),
            t_error=float(t.std(ddof=1) / np.sqrt(len(t))) if len(t) > 1 else float("nan"),
            dof=fit.dof if fit else float("nan"), ks_p_value=fit.ks_p_value if fit else float("nan"),
            failures=int(failures), probe_median_z=median_z, probe_z_error=z_error,
            probe_power=float(np.mean(z_values >= 2.0)) if len(z_values) else float("nan"),
        ))
    recommended, reason = _recommend(rows)
    return ScanResult(rows=tuple(rows), recommended=recommended, reason=reason)
