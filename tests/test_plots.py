"""Plots: returned as Figures, saved by extension, never switching matplotlib's global backend, with
the quantities a physicist reads off them (units, t, p and Z, extrapolations flagged)."""

import hist
import matplotlib
import numpy as np
import pytest
from scipy import stats

from nplm_kernel import ConfigurationError, KernelNPLM, significance
from nplm_kernel.app.plots import learned_f_histograms, plot_learned_f, plot_null_distribution, plot_null_tail
from nplm_kernel.benchmarks import NP2, Exponential1D


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _texts(figure):
    found = [text.get_text() for axis in figure.axes for text in axis.texts]
    for axis in figure.axes:
        legend = axis.get_legend()
        found += [legend.get_title().get_text()] + [text.get_text() for text in legend.get_texts()] if legend else []
    return " ".join(found)


def _title(axis):
    return axis.get_legend().get_title().get_text().replace("\n", " ")


def _outside(figure, axis):
    """The axis' legend lies to the right of every data axis of the figure (covers no data)."""
    figure.draw_without_rendering()
    legend = axis.get_legend().get_window_extent()
    return all(legend.x0 >= other.get_window_extent().x1 - 1 for other in figure.axes)


def test_null_distribution_plot_shows_the_analysis_p_value(tmp_path, rng):
    backend = matplotlib.get_backend()
    null = rng.chisquare(5.0, size=300)
    figure = plot_null_distribution(null, tmp_path / "null.png", t_observed=18.0, nominal_dof=5)
    assert _is_png(tmp_path / "null.png") and matplotlib.get_backend() == backend
    assert "observed t = 18.00" in _texts(figure) and _title(figure.axes[0]) == str(significance(18.0, null))
    assert _outside(figure, figure.axes[0])
    beyond = plot_null_distribution(null, tmp_path / "null.pdf", t_observed=60.0, log_y=True)
    assert "chi2 extrapolation beyond all 300 null toys" in _title(beyond.axes[0])
    assert beyond.axes[0].get_yscale() == "log" and (tmp_path / "null.pdf").read_bytes()[:4] == b"%PDF"
    # a multi-scale analysis: one width's null and t drawn, the analysis' min-p shown, never recomputed
    analysis = significance([18.0, 4.0], np.column_stack([null, rng.chisquare(5.0, size=300)]))
    shown = plot_null_distribution(null, t_observed=18.0, result=analysis, description="width 0.5 shown")
    assert _title(shown.axes[0]) == f"{analysis} width 0.5 shown" and "min-p over 2 members" in str(analysis)
    with pytest.raises(ConfigurationError, match=r"one member's, t_null\[:, k\]"):
        plot_null_distribution(np.column_stack([null, null]), t_observed=18.0)
    negative = plot_null_distribution(null - 1.0, t_observed=3.0)  # no chi2 describes t <= 0: no fitted curve
    assert not any("fitted" in line.get_label() for line in negative.axes[0].get_lines())


def test_null_tail_plot_draws_the_toys_survival_fraction_against_the_chi2(tmp_path, rng):
    null = rng.chisquare(4.0, size=2000)
    figure = plot_null_tail(null, tmp_path / "tail.png", dof=4.0)
    assert _is_png(tmp_path / "tail.png")
    axis, right = figure.axes
    toys = next(line for line in axis.get_lines() if line.get_label() == "null toys (2000)")
    t_values, fractions = toys.get_data()
    assert fractions[0] == pytest.approx((np.sum(null >= t_values[0]) + 1) / 2001) and axis.get_yscale() == "log"
    chi2 = next(line for line in axis.get_lines() if "chi" in line.get_label())
    np.testing.assert_allclose(chi2.get_ydata(), stats.chi2.sf(chi2.get_xdata(), 4.0))
    marks = [float(tick.get_text().removeprefix("Z = ")) for tick in right.get_yticklabels()]
    bottom, top = axis.get_ylim()
    assert {1.0, 2.0, 3.0} <= set(marks) and all(bottom <= stats.norm.sf(z) <= top for z in marks)
    assert 4.0 not in marks  # 2000 toys reach p = 5e-4, not Z = 4's 3.2e-5


def test_learned_f_plot(tmp_path, caplog):
    bench = Exponential1D(n_expected=500.0, n_reference=20_000)
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    x_data = bench.data(np.random.default_rng(1), NP2)
    estimator = KernelNPLM(n_centers=50).fit(x_data, x_ref, w_ref)
    result = significance(estimator.t_, np.random.default_rng(2).chisquare(6.0, size=200))
    figure = plot_learned_f(estimator, x_data, x_ref, w_ref, tmp_path / "f.png", names=["mass"], units=["GeV"],
                            true_log_ratio=lambda points: bench.log_ratio(points, NP2), result=result,
                            experiment_label="Toy Simulation")
    assert _is_png(tmp_path / "f.png")
    assert not [record for record in caplog.records if "findfont" in record.getMessage()]  # no missing fonts
    top, ratio, bottom = figure.axes[:3]
    assert _title(top) == str(result) and "true log-ratio" in _texts(figure)
    assert top.get_ylabel().startswith("events / ") and top.get_ylabel().endswith("GeV")
    assert bottom.get_xlabel() == "mass [GeV]" and ratio.get_ylabel() == "data / reference"
    assert all(_outside(figure, axis) for axis in (top, ratio, bottom))
    histograms = learned_f_histograms(estimator, x_data, x_ref, w_ref, ["mass"])
    assert histograms[0]["data"].sum().value == len(x_data) - np.sum(
        (x_data[:, 0] < histograms[0]["data"].axes[0].edges[0]) | (x_data[:, 0] >= histograms[0]["data"].axes[0].edges[-1]))
    assert histograms[0]["reference x e^f"].sum().value == pytest.approx(
        histograms[0]["reference"].sum().value, rel=0.2)  # the fit keeps the total yield near N_D
    # Garwood intervals: a bin with one event reaches down to 0.173 (a log axis keeps it), not to 0
    counts = histograms[0]["data"].values()
    data_bars = next(container for container in top.containers if container.get_label().startswith("data"))
    lower = np.array([segment[0][1] for segment in data_bars.lines[2][0].get_segments()])
    np.testing.assert_allclose(lower, hist.intervals.poisson_interval(counts[counts > 0])[0])
    assert 1 in counts and lower[counts[counts > 0] == 1][0] == pytest.approx(0.1727, abs=1e-3)


def test_the_ratio_range_follows_the_well_populated_bins():
    rng = np.random.default_rng(3)
    x_ref = rng.exponential(1.0, size=(20_000, 1))
    x_data = np.concatenate([rng.exponential(1.0, size=(2000, 1)), rng.normal(1.0, 0.05, size=(150, 1)),
                             [[8.5], [9.0]]])  # an excess in the bulk; two events where the reference has almost none
    estimator = KernelNPLM(n_centers=100).fit(x_data, x_ref, 0.1)
    ratio = plot_learned_f(estimator, x_data, x_ref, 0.1, bins=40).axes[1]
    low, high = ratio.get_ylim()
    assert 1.3 < high < 3.0 and low > 0.2  # the excess shows; the tail bins' ratios (~20) do not set the scale
    assert any(line.get_label() == "data beyond the axis range" for line in ratio.get_lines())


def test_f_in_several_dimensions_is_its_average_over_the_reference_events_of_each_bin():
    rng = np.random.default_rng(4)
    x_ref = rng.normal(size=(6000, 3))
    x_data = np.concatenate([rng.normal(size=(500, 3)), rng.normal([1.5, 0.0, 0.0], 0.2, size=(60, 3))])
    estimator = KernelNPLM(n_centers=100).fit(x_data, x_ref, 500 / 6000)
    figure = plot_learned_f(estimator, x_data, x_ref, 500 / 6000, bins=10, names=["a", "b", "c"],
                            true_log_ratio=lambda points: np.zeros(len(points)))
    edges = learned_f_histograms(estimator, x_data, x_ref, 500 / 6000, bins=10)[0]["data"].axes[0].edges
    f_ref = estimator.decision_function(x_ref)
    expected = [f_ref[(x_ref[:, 0] >= low) & (x_ref[:, 0] < high)].mean() for low, high in zip(edges[:-1], edges[1:])]
    learned = next(patch for patch in figure.axes[6].patches if patch.get_label().startswith("learned f"))
    np.testing.assert_allclose(learned.get_data().values, expected, rtol=1e-10)
    assert np.argmax(expected) in (5, 6, 7)  # the excess at a = 1.5 is where the marginal of f peaks
    with pytest.raises(ConfigurationError, match="units needs one entry per input variable"):
        plot_learned_f(estimator, x_data, x_ref, 500 / 6000, units=["GeV"])


def test_plots_draw_into_given_axes(rng):
    from matplotlib.figure import Figure

    figure = Figure()
    axis = figure.subplots()
    assert plot_null_distribution(rng.chisquare(4.0, size=100), ax=axis) is figure
