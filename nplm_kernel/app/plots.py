"""Plots in the field's look (the mplhep CMS style when mplhep is installed), returned as
matplotlib Figures and saved when a path is given (the format from its extension: .png, .pdf,
.svg, ...). They never change matplotlib's global backend or style: figures are built with the
object API inside a style context, so they display in a notebook and save from a script alike.

plot_learned_f: per input variable, events per bin of data, reference and reference x e^f; the
data / reference ratio with reference x e^f / reference on it; and the curve f(x) (with the true
log-ratio when it is known), t and p annotated. learned_f_histograms gives the same binned counts
as `hist` objects. plot_null_distribution: the null t with the fitted chi2, the observed t, p and Z
(an extrapolated or bounded p-value marked as such), optionally on a log scale. plot_null_tail: the
null's survival fraction with its Clopper-Pearson band against the fitted chi2's, Z marked. plot_scan,
plot_monitoring and plot_power_curves draw hyperparameter scans, monitoring streams and power.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from ..core.exceptions import ConfigurationError
from ..core.samples import as_events, as_weights
from ..inference.calibration import Significance, empirical_p_value, fit_chi2, significance


def _matplotlib():
    try:
        return importlib.import_module("matplotlib.figure")
    except ImportError:
        raise ConfigurationError("plots need matplotlib: pip install 'nplm-kernel[plots]'") from None


def _style():
    """The mplhep CMS style for the figures built inside it (nothing global changes)."""
    matplotlib = importlib.import_module("matplotlib")
    try:
        mplhep = importlib.import_module("mplhep")
    except ImportError:
        return contextlib.nullcontext()
    return matplotlib.rc_context(mplhep.style.CMS)


def _figure(nrows: int, ncols: int, ax: Any, **options) -> tuple[Any, Any]:
    """(figure, axes): the given axes (and their figure), or a new figure of that grid."""
    if ax is not None:
        return np.asarray(ax).flat[0].figure, ax
    figure = _matplotlib().Figure(figsize=options.pop("figsize", (9, 7)))
    return figure, figure.subplots(nrows, ncols, squeeze=False, **options)


def _save(figure: Any, path: str | os.PathLike | None) -> Any:
    if path is not None:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    return figure


def _p_text(result: Significance) -> str:
    z = f"{result.z:.2f}" if np.isfinite(result.z) else ("inf" if result.z > 0 else "-inf")
    flag = " (chi2 extrapolation)" if result.is_extrapolated else (" (upper bound)" if result.is_bound else "")
    return f"p = {result.p_value:.3g}{flag}, Z = {z}"


def plot_null_distribution(
    t_null: Sequence[float],
    path: str | os.PathLike | None = None,
    t_observed: float | None = None,
    nominal_dof: float | None = None,
    bins: int = 30,
    log_y: bool = False,
    ax: Any = None,
) -> Any:
    """The null t (density) with its fitted chi2 (and the nominal chi2(nominal_dof)), and the
    observed t with its p-value and Z from these toys; log_y for the tail. Returns the Figure."""
    values = np.asarray(t_null, dtype=np.float64)
    fit = fit_chi2(values)
    with _style():
        figure, axes = _figure(1, 1, ax, figsize=(11, 8))
        axis = np.asarray(axes).flat[0]
        axis.hist(values, bins=bins, density=True, histtype="stepfilled", alpha=0.4, label=f"null toys ({len(values)})")
        upper = max(values.max(), t_observed or 0.0) * 1.1
        grid = np.linspace(1e-3 * upper, upper, 400)
        axis.plot(grid, stats.chi2.pdf(grid, fit.dof), label=f"fitted $\\chi^2_{{{fit.dof:.2f}}}$ (KS p = {fit.ks_p_value:.2f})")
        if nominal_dof is not None:
            axis.plot(grid, stats.chi2.pdf(grid, nominal_dof), linestyle="--", label=f"nominal $\\chi^2_{{{nominal_dof:g}}}$")
        if t_observed is not None:
            result = significance(t_observed, values)
            axis.axvline(t_observed, color="black", label=f"observed t = {t_observed:.2f}: {_p_text(result)}")
        if log_y:
            axis.set_yscale("log")
        axis.set_xlabel("t")
        axis.set_ylabel("probability density")
        axis.legend(fontsize="x-small")
    return _save(figure, path)


def plot_null_tail(
    t_null: Sequence[float],
    path: str | os.PathLike | None = None,
    dof: float | None = None,
    z_marks: Sequence[float] = (1.0, 2.0, 3.0, 3.5, 4.0),
    ax: Any = None,
) -> Any:
    """The null's survival fraction P(t_null >= t) on a log scale, with its 68% Clopper-Pearson band
    (calibration.empirical_p_value), against the chi2 with `dof` degrees of freedom (default: the
    fitted one), and the p-values of Z = z_marks (p = 1 - Phi(Z)) marked on the right: where the
    toys' tail leaves the chi2's, a chi2-extrapolated p is not to be trusted. Returns the Figure."""
    values = np.asarray(t_null, dtype=np.float64)
    dof = fit_chi2(values).dof if dof is None else dof
    n_toys = len(values)
    grid = np.unique(np.quantile(values, 1.0 - np.geomspace(1.0 / n_toys, 0.5, 200)))
    fraction, low, high = np.array([empirical_p_value(value, values) for value in grid]).T
    with _style():
        figure, axes = _figure(1, 1, ax, figsize=(10, 7))
        axis = np.asarray(axes).flat[0]
        axis.fill_between(grid, low, high, step="post", alpha=0.35, label="68% Clopper-Pearson band")
        axis.step(grid, fraction, where="post", label=f"null toys ({n_toys})")
        axis.plot(grid, stats.chi2.sf(grid, dof), linestyle="--", label=f"$\\chi^2_{{{dof:.2f}}}$")
        axis.set_yscale("log")
        axis.set_xlabel("t")
        axis.set_ylabel("P(t_null >= t)")
        right = axis.twinx()
        right.set_yscale("log")
        right.set_ylim(axis.get_ylim())
        bottom, top = axis.get_ylim()
        shown = [z for z in z_marks if bottom <= stats.norm.sf(z) <= top]
        right.set_yticks([stats.norm.sf(z) for z in shown], [f"Z = {z:g}" for z in shown])
        right.minorticks_off()
        axis.legend(fontsize="small", loc="lower left")
    return _save(figure, path)


def learned_f_histograms(estimator, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray,
                         names: Sequence[str] | None = None, bins: int = 40) -> list[dict[str, Any]]:
    """Per input variable, `hist` histograms (weighted storage) of the data, the reference and the
    reference reweighted by e^f, on common bins (0.05% to 99.95% quantiles of data + reference)."""
    try:
        hist = importlib.import_module("hist")
    except ImportError:
        raise ConfigurationError("histograms need the hist package: pip install 'nplm-kernel[plots]'") from None
    data = as_events(x_data, "x_data")
    ref = as_events(x_ref, "x_ref", data.shape[1])
    weights = as_weights(w_ref, len(ref))
    reweighted = weights * np.exp(estimator.decision_function(ref))
    names = list(names) if names is not None else [f"x{j}" for j in range(data.shape[1])]
    result = []
    for j, name in enumerate(names):
        low, high = np.quantile(np.concatenate([data[:, j], ref[:, j]]), [0.0005, 0.9995])
        axis = hist.axis.Regular(bins, low, high if high > low else low + 1.0, name=name)
        filled = {}
        for label, values, event_weights in (("data", data[:, j], None), ("reference", ref[:, j], weights),
                                             ("reference x e^f", ref[:, j], reweighted)):
            histogram = hist.Hist(axis, storage=hist.storage.Weight())
            histogram.fill(values, weight=event_weights)
            filled[label] = histogram
        result.append(filled)
    return result


def _f_curves(estimator, data: np.ndarray, ref: np.ndarray, column: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(grid, f on the grid, label): f along input `column`, the others at the reference medians."""
    grid = np.linspace(edges[0], edges[-1], 300)
    points = np.repeat(np.median(ref, axis=0)[None, :], len(grid), axis=0)
    points[:, column] = grid
    label = "learned f(x)" if data.shape[1] == 1 else "learned f (other inputs at reference medians)"
    return grid, estimator.decision_function(points), label


def plot_learned_f(
    estimator,
    x_data: np.ndarray,
    x_ref: np.ndarray,
    w_ref: float | np.ndarray,
    path: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
    bins: int = 40,
    units: Sequence[str] | None = None,
    true_log_ratio: Callable[[np.ndarray], np.ndarray] | None = None,
    result: Significance | None = None,
    ax: Any = None,
) -> Any:
    """One column per input variable: events per bin of data (with Poisson errors), reference and
    reference x e^f (top); data / reference and reference x e^f / reference (middle); the curve
    f(x) along the input, with `true_log_ratio(points)` overlaid when given (bottom). The first
    panel shows t (and p and Z when a Significance is given). ax: a (3, d) array of axes to draw
    into. Returns the Figure."""
    data = as_events(x_data, "x_data")
    ref = as_events(x_ref, "x_ref", data.shape[1])
    histograms = learned_f_histograms(estimator, data, ref, w_ref, names, bins)
    names = [next(iter(histogram["data"].axes)).name for histogram in histograms]
    units = list(units) if units is not None else [""] * len(names)
    with _style():
        figure, axes = _figure(3, data.shape[1], ax, figsize=(11 * data.shape[1], 13), sharex="col",
                               gridspec_kw={"height_ratios": [3, 1.2, 1.5]})
        for j, (name, unit, histogram) in enumerate(zip(names, units, histograms)):
            edges = histogram["data"].axes[0].edges
            centres, width = 0.5 * (edges[1:] + edges[:-1]), edges[1] - edges[0]
            counts = histogram["data"].values()
            reference = histogram["reference"].values()
            reweighted = histogram["reference x e^f"].values()
            top, middle, bottom = axes[0][j], axes[1][j], axes[2][j]
            top.errorbar(centres, counts, yerr=np.sqrt(counts), fmt="o", color="black", label="data")
            top.stairs(reference, edges, label="reference")
            top.stairs(reweighted, edges, label="reference $\\times e^{f}$")
            top.set_yscale("log")
            top.set_ylabel(f"events / {width:.3g}{' ' + unit if unit else ''}")
            top.legend(fontsize="x-small", loc="upper right")
            safe = np.where(reference > 0, reference, np.nan)
            middle.errorbar(centres, counts / safe, yerr=np.sqrt(counts) / safe, fmt="o", color="black", markersize=3)
            middle.stairs(reweighted / safe, edges, color="C1")
            middle.axhline(1.0, color="grey", linewidth=0.8)
            middle.set_ylabel("/ reference")
            grid, values, label = _f_curves(estimator, data, ref, j, edges)
            bottom.plot(grid, values, label=label)
            if true_log_ratio is not None:
                points = np.repeat(np.median(ref, axis=0)[None, :], len(grid), axis=0)
                points[:, j] = grid
                bottom.plot(grid, true_log_ratio(points), linestyle="--", color="black", label="true log-ratio")
            bottom.axhline(0.0, color="grey", linewidth=0.8)
            bottom.set_ylabel("f(x)")
            bottom.set_xlabel(f"{name}{' [' + unit + ']' if unit else ''}")
            bottom.legend(fontsize="x-small")
        annotation = f"t = {estimator.t_:.2f}" + (f"\n{_p_text(result)}" if result is not None else "")
        axes[0][0].text(0.03, 0.04, annotation, transform=axes[0][0].transAxes, fontsize="x-small", va="bottom")
    return _save(figure, path)


def plot_scan(result, path: str | os.PathLike | None = None, ax: Any = None) -> Any:
    """A selection.ScanResult against M, one line per (sigma quantile, lambda): the mean null t
    (left) and the probe toys' median Z, the expected sensitivity (right). Returns the Figure."""
    with _style():
        figure, axes = _figure(1, 2, ax, figsize=(14, 6))
        left, right = np.asarray(axes).flat
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
    return _save(figure, path)


def plot_monitoring(z_values: Sequence[float], labels: Sequence[str], alarm_z: float,
                    path: str | os.PathLike | None = None, ax: Any = None) -> Any:
    """Z of each batch of a monitoring stream in order, coloured by its label (e.g. the injected
    effect, 'good' for none), with the alarm threshold Z as a dashed line. Returns the Figure."""
    if len(z_values) != len(labels):
        raise ConfigurationError(f"z_values and labels must have the same length, got {len(z_values)} and {len(labels)}.")
    z = np.asarray(z_values, dtype=np.float64)
    with _style():
        figure, axes = _figure(1, 1, ax, figsize=(10, 5))
        axis = np.asarray(axes).flat[0]
        for label in dict.fromkeys(labels):
            chosen = np.flatnonzero(np.asarray(labels) == label)
            axis.plot(chosen, z[chosen], "o", label=label)
        axis.axhline(alarm_z, color="k", linestyle="--", label=f"alarm threshold (Z = {alarm_z:.2f})")
        axis.set_xlabel("batch")
        axis.set_ylabel("Z (calibrated on good-run batches)")
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(figure, path)


#: Each curve of a power plot has its own marker (and line style past the markers), so that curves
#: stay apart where the colour cycle repeats.
CURVE_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
CURVE_LINESTYLES = ("-", "--", ":")


def plot_power_curves(panels: Sequence[tuple[str, Sequence[float], dict[str, Sequence[float]]]],
                      path: str | os.PathLike | None = None, ax: Any = None) -> Any:
    """Power against a scanned quantity, one panel per (x label, x values, {curve label: powers}).
    Returns the Figure."""
    with _style():
        figure, axes = _figure(1, len(panels), ax, figsize=(7 * len(panels), 6))
        for axis, (label, x_values, curves) in zip(np.asarray(axes).flat, panels):
            for index, (name, powers) in enumerate(curves.items()):
                if len(powers) != len(x_values):
                    raise ConfigurationError(f"curve {name!r} has {len(powers)} values for {len(x_values)} scan points.")
                axis.plot(x_values, powers, marker=CURVE_MARKERS[index % len(CURVE_MARKERS)],
                          linestyle=CURVE_LINESTYLES[index // len(CURVE_MARKERS) % len(CURVE_LINESTYLES)], label=name)
            axis.set_xlabel(label)
            axis.set_ylabel("power")
            axis.set_ylim(-0.02, 1.02)
            axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(figure, path)
