"""Plots (matplotlib; the mplhep CMS style when mplhep is installed), saved to files.

plot_null_distribution: the null t histogram with the fitted and (optionally) nominal chi2 and the
observed t. plot_learned_f: for each input variable, data against the reference and against the
reconstructed data density n_R(x) e^f(x), and the mean learned f per bin. plot_scan: mean null t
against M for a hyperparameter scan.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Sequence

import numpy as np
from scipy import stats

from ..exceptions import ConfigurationError
from ..inference.calibration import fit_chi2
from ..samples import as_events, as_weights


def _pyplot():
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ConfigurationError("plots need matplotlib: pip install 'nplm-kernel[plots]'") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _style():
    try:
        mplhep = importlib.import_module("mplhep")
    except ImportError:
        return contextlib.nullcontext()
    return _pyplot().style.context(mplhep.style.CMS)


def plot_null_distribution(
    t_null: Sequence[float],
    path: str | os.PathLike,
    t_observed: float | None = None,
    nominal_dof: float | None = None,
    bins: int = 30,
) -> None:
    """Histogram of null t (density) with the fitted chi2, the nominal chi2(nominal_dof) and the observed t."""
    plt = _pyplot()
    values = np.asarray(t_null, dtype=np.float64)
    fit = fit_chi2(values)
    with _style():
        figure, axis = plt.subplots(figsize=(8, 6))
        axis.hist(values, bins=bins, density=True, histtype="stepfilled", alpha=0.4, label=f"null toys ({len(values)})")
        grid = np.linspace(0.0, max(values.max(), t_observed or 0.0) * 1.1, 400)
        axis.plot(grid, stats.chi2.pdf(grid, fit.dof), label=f"fitted $\\chi^2_{{{fit.dof:.2f}}}$ (KS p = {fit.ks_p_value:.2f})")
        if nominal_dof is not None:
            axis.plot(grid, stats.chi2.pdf(grid, nominal_dof), linestyle="--", label=f"nominal $\\chi^2_{{{nominal_dof:g}}}$")
        if t_observed is not None:
            axis.axvline(t_observed, color="black", label=f"observed t = {t_observed:.2f}")
        axis.set_xlabel("t")
        axis.set_ylabel("density")
        axis.legend()
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)


def plot_learned_f(
    estimator,
    x_data: np.ndarray,
    x_ref: np.ndarray,
    w_ref: float | np.ndarray,
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    bins: int = 40,
) -> None:
    """One column per input variable: data vs reference vs reference x e^f (top), mean f (bottom)."""
    plt = _pyplot()
    data = as_events(x_data, "x_data")
    ref = as_events(x_ref, "x_ref", data.shape[1])
    weights = as_weights(w_ref, len(ref))
    f_data, f_ref = estimator.decision_function(data), estimator.decision_function(ref)
    names = list(names) if names is not None else [f"x{j}" for j in range(data.shape[1])]
    with _style():
        figure, axes = plt.subplots(2, data.shape[1], figsize=(7 * data.shape[1], 8), squeeze=False,
                                    gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
        for j, name in enumerate(names):
            edges = np.quantile(np.concatenate([data[:, j], ref[:, j]]), [0.0005, 0.9995])
            edges = np.linspace(edges[0], edges[1], bins + 1)
            centres = 0.5 * (edges[1:] + edges[:-1])
            counts, _ = np.histogram(data[:, j], edges)
            reference, _ = np.histogram(ref[:, j], edges, weights=weights)
            reweighted, _ = np.histogram(ref[:, j], edges, weights=weights * np.exp(f_ref))
            top, bottom = axes[0, j], axes[1, j]
            top.errorbar(centres, counts, yerr=np.sqrt(counts), fmt="o", color="black", label="data")
            top.stairs(reference, edges, label="reference")
            top.stairs(reweighted, edges, label="reference $\\times e^{f}$")
            top.set_yscale("log")
            top.legend()
            sums, _ = np.histogram(data[:, j], edges, weights=f_data)
            filled = counts > 0
            bottom.plot(centres[filled], sums[filled] / counts[filled], "o-", markersize=3)
            bottom.axhline(0.0, color="grey", linewidth=0.8)
            bottom.set_xlabel(name)
            bottom.set_ylabel("mean f (data)")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)


def plot_scan(result, path: str | os.PathLike) -> None:
    """A selection.ScanResult against M, one line per (sigma quantile, lambda): the mean null t
    (left) and the probe toys' median Z, the expected sensitivity (right)."""
    plt = _pyplot()
    with _style():
        figure, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
        for quantile, penalty in sorted({(row.sigma_quantile, row.penalty) for row in result.rows}):
            selected = sorted((row for row in result.rows if (row.sigma_quantile, row.penalty) == (quantile, penalty)),
                              key=lambda row: row.n_centers)
            label = f"sigma q{quantile:g}, lambda {penalty:g}"
            centers = [row.n_centers for row in selected]
            left.errorbar(centers, [row.mean_t for row in selected], yerr=[row.t_error for row in selected],
                          marker="o", label=label)
            right.errorbar(centers, [row.probe_median_z for row in selected],
                           yerr=[row.probe_z_error for row in selected], marker="o", label=label)
        if result.recommended is not None:
            left.plot(result.recommended.n_centers, result.recommended.mean_t, "k*", markersize=18, label="recommended")
            right.plot(result.recommended.n_centers, result.recommended.probe_median_z, "k*", markersize=18,
                       label="recommended")
        for axis, label in ((left, "mean null t"), (right, "probe median Z (expected sensitivity)")):
            axis.set_xscale("log")
            axis.set_xlabel("M (Nystrom centres)")
            axis.set_ylabel(label)
            axis.legend(fontsize="small")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)


def plot_monitoring(z_values: Sequence[float], labels: Sequence[str], alarm_z: float, path: str | os.PathLike) -> None:
    """Z of each batch of a monitoring stream in order, coloured by its label (e.g. the injected
    effect, 'good' for none), with the alarm threshold Z as a dashed line."""
    if len(z_values) != len(labels):
        raise ConfigurationError(f"z_values and labels must have the same length, got {len(z_values)} and {len(labels)}.")
    plt = _pyplot()
    z = np.asarray(z_values, dtype=np.float64)
    with _style():
        figure, axis = plt.subplots(figsize=(10, 5))
        for label in dict.fromkeys(labels):
            chosen = np.flatnonzero(np.asarray(labels) == label)
            axis.plot(chosen, z[chosen], "o", label=label)
        axis.axhline(alarm_z, color="k", linestyle="--", label=f"alarm threshold (Z = {alarm_z:.2f})")
        axis.set_xlabel("batch")
        axis.set_ylabel("Z (calibrated on good-run batches)")
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)


def plot_power_curves(panels: Sequence[tuple[str, Sequence[float], dict[str, Sequence[float]]]],
                      path: str | os.PathLike) -> None:
    """Power against a scanned quantity, one panel per (x label, x values, {curve label: powers})."""
    plt = _pyplot()
    with _style():
        figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6), squeeze=False)
        for axis, (label, x_values, curves) in zip(axes[0], panels):
            for name, powers in curves.items():
                if len(powers) != len(x_values):
                    raise ConfigurationError(f"curve {name!r} has {len(powers)} values for {len(x_values)} scan points.")
                axis.plot(x_values, powers, "o-", label=name)
            axis.set_xlabel(label)
            axis.set_ylabel("power")
            axis.set_ylim(-0.02, 1.02)
            axis.legend(fontsize="small")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
