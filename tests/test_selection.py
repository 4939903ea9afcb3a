"""Hyperparameter scan: one row per setting, same toys for every setting, a choice by expected
sensitivity among the stable settings."""

import numpy as np
import pytest

from nplm_kernel import ConfigurationError
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.solver.kernels import pairwise_distance_quantiles
from nplm_kernel.toys import LocalExcessToys
from nplm_kernel.tuning.hyperparameters import ScanRow, _recommend, scan_hyperparameters


@pytest.mark.slow
def test_scan_on_a_tiny_grid(rng):
    benchmark = Exponential1D(n_expected=100.0, n_reference=3000)
    x_ref, w_ref = benchmark.reference(rng)
    result = scan_hyperparameters(x_ref, w_ref, benchmark.data, sigma_quantiles=(0.3, 0.9), n_centers=(10, 40),
                                  penalties=(1e-5,), n_toys=6, n_probe_toys=6, probe_events=30, seed=1,
                                  executor="serial")
    assert len(result.rows) == 4
    assert {(row.sigma_quantile, row.n_centers) for row in result.rows} == {(0.3, 10), (0.3, 40), (0.9, 10), (0.9, 40)}
    assert all(row.n_toys == 6 and row.failures == 0 and row.mean_t > 0 for row in result.rows)
    assert all(np.isfinite(row.probe_median_z) and 0 <= row.probe_power <= 1 for row in result.rows)
    standardised = (x_ref - x_ref.mean()) / x_ref.std()
    assert result.rows[2].sigma == pytest.approx(pairwise_distance_quantiles(standardised, [0.9])[0])
    assert result.recommended is not None and "probe median Z" in result.reason
    assert result.table().count("\n| ") == 4
    with pytest.raises(ConfigurationError, match="n_toys must be a >= 2 integer"):
        scan_hyperparameters(x_ref, w_ref, benchmark.data, n_toys=1)


def test_local_excess_toys_add_events_near_one_reference_event(rng):
    x_ref = np.arange(1000.0)[:, None]
    toys = LocalExcessToys(lambda generator: np.full((50, 1), -1.0), x_ref, n_events=20, n_neighbours=40)
    toy = toys(rng)
    excess = toy[50:, 0]
    assert toy.shape == (70, 1) and (toy[:50] == -1).all()
    assert len(np.unique(excess)) == 20 and np.ptp(excess) < 40  # 20 of the 40 nearest to one anchor
    with pytest.raises(ConfigurationError, match="n_events"):
        LocalExcessToys(lambda generator: x_ref, x_ref, n_events=50, n_neighbours=10)


def _row(n_centers, penalty, z, z_error=0.1, failures=0):
    return ScanRow(0.9, 1.0, n_centers, penalty, 20, 5.0, 0.2, 5.0, 0.5, failures, z, z_error, 0.5)


def test_recommendation_rule():
    rows = [_row(100, 1e-7, 2.0), _row(300, 1e-7, 3.0), _row(1000, 1e-7, 3.5, failures=2),
            _row(100, 1e-5, 1.5), _row(300, 1e-5, 2.45), _row(1000, 1e-5, 2.5)]
    chosen, reason = _recommend(rows)
    # lambda 1e-7 is unstable at M = 1000; at 1e-5, M = 300 is within one error of the best (M = 1000)
    assert chosen == rows[4]
    assert "lambda = 1e-05" in reason and "M = 300" in reason
    nothing, why = _recommend([_row(100, 1e-7, 2.0, failures=1)])
    assert nothing is None and "no lambda gives stable fits" in why
