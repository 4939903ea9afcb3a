"""Known-answer tests: the learned f against analytic log-ratios."""

import numpy as np

from nplm_kernel import KernelNPLM
from nplm_kernel.benchmarks import Exponential1D, GaussianSignal


def test_f_tracks_the_analytic_log_ratio_of_shifted_gaussians(rng):
    """Data N(0.3, 1) vs reference N(0, 1) with equal expected yields: log ratio = 0.3 x - 0.045."""
    n_expected, n_reference = 20_000, 200_000
    x_data = rng.normal(0.3, 1.0, size=(rng.poisson(n_expected), 1))
    x_ref = rng.normal(0.0, 1.0, size=(n_reference, 1))
    estimator = KernelNPLM(n_centers=200, penalty=1e-6).fit(x_data, x_ref, n_expected / n_reference)

    grid = np.linspace(-1.96, 1.96, 401)  # central 95% of the reference
    truth = 0.3 * grid - 0.045
    rmse = np.sqrt(np.mean((estimator.decision_function(grid) - truth) ** 2))
    assert rmse < 0.1
    assert estimator.t_ > 100  # a large-sample departure is detected


def test_argmax_of_f_locates_a_resonance(rng):
    benchmark = Exponential1D(n_reference=100_000)
    signal = GaussianSignal(location=1.6, width=0.16, n_expected=300.0)
    x_ref, w_ref = benchmark.reference(rng)
    x_data = benchmark.data(rng, signal)
    estimator = KernelNPLM(n_centers=300, sigma=0.3, penalty=1e-6).fit(x_data, x_ref, w_ref)

    grid = np.linspace(0.0, 6.0, 1201)
    peak = grid[np.argmax(estimator.decision_function(grid))]
    assert abs(peak - signal.location) < signal.width
