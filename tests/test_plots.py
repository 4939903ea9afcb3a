"""Plots: returned as Figures, saved by extension, never switching matplotlib's global backend, with
the quantities a physicist reads off them (units, t, p and Z, extrapolations flagged)."""

import matplotlib
import numpy as np
import pytest
from scipy import stats

from nplm_kernel import KernelNPLM, significance
from nplm_kernel.app.plots import learned_f_histograms, plot_learned_f, plot_null_distribution, plot_null_tail
from nplm_kernel.benchmarks import NP2, Exponential1D


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _texts(figure):
    found = [text.get_text() for axis in figure.axes for text in axis.texts]
    for axis in figure.axes:
        legend = axis.get_legend()
        found += [text.get_text() for text in legend.get_texts()] if legend else []
    return " ".join(found)


def test_null_distribution_plot(tmp_path, rng):
    backend = matplotlib.get_backend()
    null = rng.chisquare(5.0, size=300)
    figure = plot_null_distribution(null, tmp_path / "null.png", t_observed=18.0, nominal_dof=5)
    assert _is_png(tmp_path / "null.png") and matplotlib.get_backend() == backend
    assert "observed t = 18.00: p = " in _texts(figure) and "Z = " in _texts(figure)
    beyond = plot_null_distribution(null, tmp_path / "null.pdf", t_observed=60.0, log_y=True)
    assert "(chi2 extrapolation)" in _texts(beyond) and beyond.axes[0].get_yscale() == "log"
    assert (tmp_path / "null.pdf").read_bytes()[:4] == b"%PDF"


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


def test_learned_f_plot(tmp_path):
    bench = Exponential1D(n_expected=500.0, n_reference=20_000)
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    x_data = bench.data(np.random.default_rng(1), NP2)
    estimator = KernelNPLM(n_centers=50).fit(x_data, x_ref, w_ref)
    null = np.random.default_rng(2).chisquare(6.0, size=200)
    figure = plot_learned_f(estimator, x_data, x_ref, w_ref, tmp_path / "f.png", names=["mass"], units=["GeV"],
                            true_log_ratio=lambda points: bench.log_ratio(points, NP2),
                            result=significance(estimator.t_, null))
    assert _is_png(tmp_path / "f.png")
    texts = _texts(figure)
    assert f"t = {estimator.t_:.2f}" in texts and "p = " in texts and "true log-ratio" in texts
    assert figure.axes[0].get_ylabel().startswith("events / ") and figure.axes[0].get_ylabel().endswith("GeV")
    histograms = learned_f_histograms(estimator, x_data, x_ref, w_ref, ["mass"])
    assert histograms[0]["data"].sum().value == len(x_data) - np.sum(
        (x_data[:, 0] < histograms[0]["data"].axes[0].edges[0]) | (x_data[:, 0] >= histograms[0]["data"].axes[0].edges[-1]))
    assert histograms[0]["reference x e^f"].sum().value == pytest.approx(
        histograms[0]["reference"].sum().value, rel=0.2)  # the fit keeps the total yield near N_D


def test_plots_draw_into_given_axes(rng):
    from matplotlib.figure import Figure

    figure = Figure()
    axis = figure.subplots()
    assert plot_null_distribution(rng.chisquare(4.0, size=100), ax=axis) is figure
