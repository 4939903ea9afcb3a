"""Plots for slides and notebooks, returned as matplotlib Figures and saved when a path is given
(the format from its extension: .png, .pdf, .svg, ...). They never change matplotlib's global
backend or style: figures are built with the object API inside a neutral style context
(NEUTRAL_STYLE: matplotlib's own fonts, ticks inside, a colour-blind-safe cycle), so they display in a
notebook and save from a script alike; `experiment_label` adds an experiment's label above the
first panel ('CMS Simulation': CMS in bold, Simulation in italic) without an experiment's style.

Every figure of an analysis that shows a p-value shows the analysis' own Significance (str of it:
p, how it was obtained and from how many toys, Z), never one recomputed from part of the inputs.
Legends sit outside the axes, so they never cover data.

plot_learned_f: per input variable, events per bin of data (with Garwood Poisson intervals), the
reference and the reference x e^f; data / reference with reference x e^f / reference; and f (the
curve in 1D; in several dimensions its average over the reference events of each bin, a marginal),
with the true log-ratio when it is known. learned_f_histograms gives the binned counts as `hist`
objects. plot_null_distribution: the null t with the fitted chi2 and the observed t.
plot_null_tail: the null's survival fraction with its Clopper-Pearson band against the fitted
chi2's, Z marked. plot_scan, plot_monitoring and plot_power_curves draw hyperparameter scans,
monitoring streams and power.
"""

from __future__ import annotations

import importlib
import os
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from ..core.exceptions import ConfigurationError
from ..core.samples import as_events, as_weights
from ..inference.calibration import Significance, empirical_p_value, fit_chi2, significance

#: The figures' style: matplotlib's default fonts (no font lookups that can fail), ticks inside on
#: all four sides, no legend frames; colours from PETROFF_COLOURS.
NEUTRAL_STYLE = {
    "font.size": 14, "axes.labelsize": "medium", "axes.titlesize": "medium", "legend.fontsize": "small",
    "legend.frameon": False, "xtick.direction": "in", "ytick.direction": "in", "xtick.top": True,
    "ytick.right": True, "xtick.minor.visible": True, "ytick.minor.visible": True,
    "errorbar.capsize": 0, "savefig.facecolor": "white",
}
#: The colour-blind-safe six-colour cycle of M. A. Petroff (arXiv:2107.02270).
PETROFF_COLOURS = ("#5790fc", "#f89c20", "#e42536", "#964a8b", "#9c9ca1", "#7a21dd")
#: Bins with fewer expected reference events do not set the ratio panel's range (a ratio such as
#: 2 events / 0.1 expected is Poisson noise, not an excess); points outside the range are marked by
#: arrows at its edge.
RATIO_RANGE_MIN_EXPECTED = 5.0
#: Legends and their titles are wrapped at this many characters.
LEGEND_WIDTH = 42


def _matplotlib():
    try:
        return importlib.import_module("matplotlib.figure")
    except ImportError:
        raise ConfigurationError("plots need matplotlib: pip install 'nplm-kernel[plots]'") from None


def _style():
    """NEUTRAL_STYLE for the figures built inside it (nothing global changes)."""
    _matplotlib()
    matplotlib = importlib.import_module("matplotlib")
    cycler = importlib.import_module("cycler")
    return matplotlib.rc_context({**NEUTRAL_STYLE, "axes.prop_cycle": cycler.cycler(color=PETROFF_COLOURS)})


def _figure(nrows: int, ncols: int, ax: Any, **options) -> tuple[Any, Any]:
    """(figure, axes): the given axes (and their figure), or a new figure of that grid."""
    if ax is not None:
        return np.asarray(ax).flat[0].figure, ax
    figure = _matplotlib().Figure(figsize=options.pop("figsize", (9, 7)), layout="constrained")
    return figure, figure.subplots(nrows, ncols, squeeze=False, **options)


def _save(figure: Any, path: str | os.PathLike | None) -> Any:
    if path is not None:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    return figure


def _wrapped(text: str) -> str:
    """A legend title: t, p and Z of a Significance's text on lines of their own, wrapped."""
    text = re.sub(r", (Z [=>] )", r",\n\1", re.sub(r": (p [=<] )", r":\n\1", text))
    return "\n".join(textwrap.fill(line, LEGEND_WIDTH) for line in text.split("\n"))


def _legend_outside(axis: Any, title: str | None = None, offset: float = 1.02) -> Any:
    """The axis' legend to the right of it (never over the data), data first, with a wrapped title."""
    handles, labels = axis.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda index: not labels[index].startswith("data"))
    return axis.legend([handles[index] for index in order], [labels[index] for index in order], loc="upper left",
                       bbox_to_anchor=(offset, 1.0), borderaxespad=0.0, title=None if title is None else _wrapped(title),
                       alignment="left")


def _experiment_label(axis: Any, label: str | None) -> None:
    """`label` above the axis, left-aligned: its first word bold (the experiment), the rest italic."""
    if not label:
        return
    offsetbox = importlib.import_module("matplotlib.offsetbox")
    experiment, _, text = label.partition(" ")
    words = [offsetbox.TextArea(experiment, textprops={"weight": "bold", "size": "large"})]
    words += [offsetbox.TextArea(text, textprops={"style": "italic"})] if text else []
    box = offsetbox.HPacker(children=words, align="baseline", pad=0, sep=6)
    axis.add_artist(offsetbox.AnchoredOffsetbox("lower left", child=box, pad=0, borderpad=0, frameon=False,
                                                bbox_to_anchor=(0.0, 1.01), bbox_transform=axis.transAxes))


def _per_variable(values: Sequence[str] | None, n_variables: int, name: str, default: list[str]) -> list[str]:
    if values is None:
        return default
    values = list(values)
    if len(values) != n_variables:
        raise ConfigurationError(f"{name} needs one entry per input variable ({n_variables}), got {len(values)}: "
                                 f"{values}.")
    return values


def plot_null_distribution(
    t_null: Sequence[float],
    path: str | os.PathLike | None = None,
    t_observed: float | None = None,
    nominal_dof: float | None = None,
    bins: int = 30,
    log_y: bool = False,
    ax: Any = None,
    result: Significance | None = None,
    description: str | None = None,
    experiment_label: str | None = None,
) -> Any:
    """The null t (density) with its fitted chi2 (when every t is positive) and the nominal
    chi2(nominal_dof), and the observed t with the p-value and Z of `result`: pass the analysis'
    Significance, so that the figure shows the p the analysis reports (for a test of several
    members, the min-p over the members while t_null and t_observed are one member's: say which in
    `description`).
    Without `result`, p and Z of t_observed against these toys (calibration.significance).
    log_y for the tail. Returns the Figure."""
    values = np.asarray(t_null, dtype=np.float64)
    if values.ndim != 1:
        raise ConfigurationError(f"t_null must hold one t per toy, got shape {values.shape}: the null of a test of "
                                 "several members has one column per member; draw one member's, t_null[:, k].")
    if result is not None and t_observed is None:
        if isinstance(result.t, tuple):
            raise ConfigurationError("a multi-scale Significance needs t_observed: the t of the width whose null "
                                     "toys are drawn.")
        t_observed = result.t
    if t_observed is not None and result is None:
        result = significance(t_observed, values)
    with _style():
        figure, axes = _figure(1, 1, ax, figsize=(11, 6))
        axis = np.asarray(axes).flat[0]
        upper = max(values.max(), t_observed or 0.0) * 1.05
        axis.hist(values, bins=bins, density=True, histtype="stepfilled", alpha=0.4, label=f"null toys ({len(values)})")
        grid = np.linspace(1e-3 * upper, upper, 400)
        if (values > 0).all():
            fit = fit_chi2(values)
            axis.plot(grid, stats.chi2.pdf(grid, fit.dof),
                      label=f"fitted $\\chi^2$, dof = {fit.dof:.2f} (KS p = {fit.ks_p_value:.2f})")
        if nominal_dof is not None:
            axis.plot(grid, stats.chi2.pdf(grid, nominal_dof), linestyle="--", label=f"nominal $\\chi^2$, dof = {nominal_dof:g}")
        if t_observed is not None:
            axis.axvline(t_observed, color="black", label=f"observed t = {t_observed:.2f}")
        if log_y:
            axis.set_yscale("log")
        axis.set_xlim(min(0.0, values.min()), upper)
        axis.set_xlabel("t")
        axis.set_ylabel("probability density")
        _experiment_label(axis, experiment_label)
        title = "\n".join(part for part in (None if result is None else str(result), description) if part)
        _legend_outside(axis, title or None)
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
        _legend_outside(axis, offset=1.15)
    return _save(figure, path)


def learned_f_histograms(estimator, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray,
                         names: Sequence[str] | None = None, bins: int = 40) -> list[dict[str, Any]]:
    """Per input variable, `hist` histograms (weighted storage) of the data, the reference and the
    reference reweighted by e^f, on common bins (0.05% to 99.95% quantiles of data + reference)."""
    data = as_events(x_data, "x_data")
    ref = as_events(x_ref, "x_ref", data.shape[1])
    return _histograms(data, ref, as_weights(w_ref, len(ref)), estimator.decision_function(ref), names, bins)


def _histograms(data: np.ndarray, ref: np.ndarray, weights: np.ndarray, f_ref: np.ndarray,
                names: Sequence[str] | None, bins: int) -> list[dict[str, Any]]:
    try:
        hist = importlib.import_module("hist")
    except ImportError:
        raise ConfigurationError("histograms need the hist package: pip install 'nplm-kernel[plots]'") from None
    reweighted = weights * np.exp(f_ref)
    names = _per_variable(names, data.shape[1], "names", [f"x{j}" for j in range(data.shape[1])])
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


def _binned_average(values: np.ndarray, column: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The weighted average of `values` over the events of each bin of `column` (NaN in empty bins)."""
    total = np.histogram(column, edges, weights=weights)[0]
    summed = np.histogram(column, edges, weights=weights * values)[0]
    return np.divide(summed, total, out=np.full(len(total), np.nan), where=total > 0)


def _ratio_limits(ratios: list[np.ndarray], expected: np.ndarray) -> tuple[float, float]:
    """The ratio panel's range: the ratios of the bins with at least RATIO_RANGE_MIN_EXPECTED
    reference events (all bins with reference events when none has), 1 included, padded by 10%."""
    reliable = expected >= RATIO_RANGE_MIN_EXPECTED
    chosen = reliable if reliable.any() else expected > 0
    values = np.concatenate([ratio[chosen] for ratio in ratios] + [np.ones(1)])
    values = values[np.isfinite(values)]
    low, high = values.min(), values.max()
    pad = 0.1 * max(high - low, 0.1)
    return max(0.0, low - pad), high + pad


def _draw_variable(axes: tuple[Any, Any, Any], histogram: dict[str, Any], label: str, unit: str,
                   f_curve: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
                   f_average: tuple[np.ndarray, np.ndarray | None], interval: Callable) -> None:
    """One input variable's column of plot_learned_f: counts, ratios and f."""
    top, middle, bottom = axes
    edges = histogram["data"].axes[0].edges
    centres, width = 0.5 * (edges[1:] + edges[:-1]), edges[1] - edges[0]
    counts, reference = histogram["data"].values(), histogram["reference"].values()
    reweighted = histogram["reference x e^f"].values()
    low, high = interval(counts)
    shown = counts > 0  # a log axis has no place for an empty bin
    top.errorbar(centres[shown], counts[shown], yerr=[(counts - low)[shown], (high - counts)[shown]], fmt="o",
                 color="black", markersize=4, label="data (Garwood 68% intervals)")
    top.stairs(reference, edges, label="reference")
    top.stairs(reweighted, edges, label="reference $\\times\\ e^{f}$ (the fit)")
    top.set_yscale("log")
    top.set_ylabel(f"events / {width:.3g}{' ' + unit if unit else ''}")
    safe = np.where(reference > 0, reference, np.nan)
    data_ratio, model_ratio = counts / safe, reweighted / safe
    middle.errorbar(centres[shown], data_ratio[shown], yerr=[((counts - low) / safe)[shown], ((high - counts) / safe)[shown]],
                    fmt="o", color="black", markersize=4, label="data")
    middle.stairs(model_ratio, edges, color="C1", label="reference $\\times\\ e^{f}$")
    middle.axhline(1.0, color="grey", linewidth=0.8)
    bottom_limit, top_limit = _ratio_limits([np.where(shown, data_ratio, np.nan), model_ratio], reference)
    middle.set_ylim(bottom_limit, top_limit)
    beyond_label = "data beyond the axis range"
    for beyond, edge, marker in ((data_ratio > top_limit, top_limit, "^"), (data_ratio < bottom_limit, bottom_limit, "v")):
        if (beyond & shown).any():
            middle.plot(centres[beyond & shown], np.full(int((beyond & shown).sum()), edge), marker, color="black",
                        clip_on=False, label=beyond_label)
            beyond_label = "_"  # one legend entry for both edges
    middle.set_ylabel("data / reference")
    if f_curve is not None:
        grid, learned, truth = f_curve
        bottom.plot(grid, learned, label="learned f")
        if truth is not None:
            bottom.plot(grid, truth, linestyle="--", color="black", label="true log-ratio")
    else:
        learned, truth = f_average
        bottom.stairs(learned, edges, baseline=None, label="learned f, averaged over the reference events of each bin")
        if truth is not None:
            bottom.stairs(truth, edges, baseline=None, linestyle="--", color="black",
                          label="true log-ratio, averaged the same way")
    bottom.axhline(0.0, color="grey", linewidth=0.8)
    bottom.set_ylabel("f")
    bottom.set_xlabel(f"{label}{' [' + unit + ']' if unit else ''}")


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
    description: str | None = None,
    experiment_label: str | None = None,
) -> Any:
    """One column per input variable (names: axis labels, default x0, x1, ...; units: one per
    variable): events per bin of data (Garwood Poisson intervals), reference and reference x e^f
    (top); data / reference and reference x e^f / reference, its range set by the bins with enough
    reference events (middle); f (bottom): in 1D the curve f(x), in several dimensions its average
    over the reference events of each bin (the marginal a histogram of the variable sees), with
    `true_log_ratio(points)` drawn the same way when given. The legend's title gives t, or the
    p-value and Z of `result` (the analysis' Significance) when given, then `description`. ax: a
    (3, d) array of axes to draw into. Returns the Figure."""
    data = as_events(x_data, "x_data")
    ref = as_events(x_ref, "x_ref", data.shape[1])
    weights = as_weights(w_ref, len(ref))
    n_variables = data.shape[1]
    learned_on_reference = estimator.decision_function(ref)
    histograms = _histograms(data, ref, weights, learned_on_reference, names, bins)
    labels = [next(iter(histogram["data"].axes)).name for histogram in histograms]
    units = _per_variable(units, n_variables, "units", [""] * n_variables)
    interval = importlib.import_module("hist.intervals").poisson_interval
    truth_on_reference = None if true_log_ratio is None or n_variables == 1 else true_log_ratio(ref)
    with _style():
        figure, axes = _figure(3, n_variables, ax, figsize=(7.5 * n_variables + 3.5, 10), sharex="col",
                               gridspec_kw={"height_ratios": [3, 1.4, 1.4]})
        for j, (label, unit, histogram) in enumerate(zip(labels, units, histograms)):
            edges = histogram["data"].axes[0].edges
            f_curve, f_average = None, (None, None)
            if n_variables == 1:
                grid = np.linspace(edges[0], edges[-1], 400)[:, None]
                f_curve = (grid[:, 0], estimator.decision_function(grid),
                           None if true_log_ratio is None else true_log_ratio(grid))
            else:
                f_average = (_binned_average(learned_on_reference, ref[:, j], weights, edges),
                             None if truth_on_reference is None else
                             _binned_average(truth_on_reference, ref[:, j], weights, edges))
            _draw_variable((axes[0][j], axes[1][j], axes[2][j]), histogram, label, unit, f_curve, f_average, interval)
        _experiment_label(axes[0][0], experiment_label)
        summary = "\n".join(part for part in (f"t = {estimator.t_:.2f}" if result is None else str(result), description)
                            if part)
        for row in range(3):
            _legend_outside(axes[row][n_variables - 1], summary if row == 0 else None)
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
        _legend_outside(right)
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
        _legend_outside(axis)
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
            _legend_outside(axis)
    return _save(figure, path)
