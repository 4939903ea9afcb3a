"""Hyperparameter scan: one row per setting, same toys for every setting, a reasoned choice."""

import pytest

from nplm_kernel import ConfigurationError
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.kernel import pairwise_distance_quantile
from nplm_kernel.selection import ScanRow, _recommend, scan_hyperparameters


def test_scan_on_a_tiny_grid(rng):
    benchmark = Exponential1D(n_expected=100.0, n_reference=3000)
    x_ref, w_ref = benchmark.reference(rng)
    result = scan_hyperparameters(x_ref, w_ref, benchmark.data, sigma_quantiles=(0.3, 0.9), n_centers=(10, 40),
                                  penalties=(1e-5,), n_toys=4, seed=1)
    assert len(result.rows) == 4
    assert {(row.sigma_quantile, row.n_centers) for row in result.rows} == {(0.3, 10), (0.3, 40), (0.9, 10), (0.9, 40)}
    assert all(row.n_toys == 4 and row.failures == 0 and row.mean_t > 0 for row in result.rows)
    standardised = (x_ref - x_ref.mean()) / x_ref.std()
    assert result.rows[2].sigma == pytest.approx(pairwise_distance_quantile(standardised, 0.9, seed=1))
    assert result.recommended is not None and result.recommended.sigma_quantile == 0.9
    assert "smallest" in result.reason and result.table().count("\n| ") == 4
    with pytest.raises(ConfigurationError, match="recommend_quantile 0.5 must be one of"):
        scan_hyperparameters(x_ref, w_ref, benchmark.data, sigma_quantiles=(0.9,), recommend_quantile=0.5)


def _row(n_centers, penalty, mean_t, failures=0):
    return ScanRow(0.9, 1.0, n_centers, penalty, 20, mean_t, 0.2, mean_t, 0.5, failures)


def test_recommendation_rule():
    rows = [_row(100, 1e-7, 5.0), _row(300, 1e-7, 8.0), _row(1000, 1e-7, 9.0, failures=2),
            _row(100, 1e-5, 4.0), _row(300, 1e-5, 6.2), _row(1000, 1e-5, 6.5)]
    chosen, reason = _recommend(rows, 0.9)
    assert chosen == rows[4]  # lambda 1e-7 is unstable at M = 1000; at 1e-5, M = 300 is on the plateau
    assert "lambda = 1e-05" in reason and "M = 300" in reason
    nothing, why = _recommend([_row(100, 1e-7, 5.0, failures=1)], 0.9)
    assert nothing is None and "no lambda gives stable fits" in why
