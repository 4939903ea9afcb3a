import numpy as np
import pytest
from scipy import stats

from nplm_kernel import ConfigurationError
from nplm_kernel.benchmarks import (
    NP1,
    NP2,
    NP3,
    PUBLISHED_POWER_MULTIPLE_TESTING,
    SIGNALS_1D_MULTIPLE_TESTING,
    Exponential1D,
)


def test_reference_weights_sum_to_the_expected_yield(rng):
    benchmark = Exponential1D(n_expected=2000.0, n_reference=20_000)
    x_ref, w_ref = benchmark.reference(rng)
    assert x_ref.shape == (20_000, 1) and w_ref.sum() == pytest.approx(2000.0)
    assert stats.kstest(x_ref[:, 0], "expon").pvalue > 0.01


def test_data_sizes_are_poisson_and_signals_have_their_shapes(rng):
    benchmark = Exponential1D(n_expected=2000.0, n_reference=20_000)
    sizes = [benchmark.data(rng).shape[0] for _ in range(200)]
    assert np.mean(sizes) == pytest.approx(2000, abs=3 * np.sqrt(2000 / 200))
    assert np.var(sizes) == pytest.approx(2000, rel=0.3)
    assert stats.kstest(NP2.sample(3000, rng), "norm", args=(1.6, 0.16)).pvalue > 0.01
    assert stats.kstest(NP3.sample(3000, rng), "gamma", args=(3.0,)).pvalue > 0.01
    assert (NP1.sample(3000, rng) >= 0).all()


def test_multiple_testing_signals_have_their_yields_locations_and_widths(rng):
    benchmark = Exponential1D()
    expected = {"x4_w0.01": (0.01, 7.0), "x4_w0.16": (0.16, 18.0), "x4_w0.64": (0.64, 13.0)}
    assert set(SIGNALS_1D_MULTIPLE_TESTING) == set(PUBLISHED_POWER_MULTIPLE_TESTING) == set(expected)
    for name, signal in SIGNALS_1D_MULTIPLE_TESTING.items():
        width, n_expected = expected[name]
        assert (signal.location, signal.width, signal.n_expected) == (4.0, width, n_expected)
        events = signal.sample(20_000, rng)  # 4 / 0.64 = 6.25 widths above 0: the truncation is invisible
        assert np.mean(events) == pytest.approx(4.0, abs=4 * width / np.sqrt(20_000))
        assert np.std(events) == pytest.approx(width, rel=4 * np.sqrt(0.5 / 20_000))
    signal = SIGNALS_1D_MULTIPLE_TESTING["x4_w0.16"]
    near = [np.sum(np.abs(benchmark.data(rng, signal)[:, 0] - 4.0) < 0.48) for _ in range(400)]
    background = 2000 * (np.exp(-3.52) - np.exp(-4.48))  # Exp(1) events within 3 widths of x = 4
    assert np.mean(near) == pytest.approx(background + 18 * 0.9973, abs=4 * np.sqrt((background + 18) / 400))


def test_true_log_ratio(rng):
    benchmark = Exponential1D()
    x = np.array([1.6, 4.0])
    expected = np.log1p(90 * stats.norm.pdf(x, 1.6, 0.16) / (2000 * np.exp(-x)))
    np.testing.assert_allclose(benchmark.log_ratio(x, NP2), expected, rtol=1e-9)
    np.testing.assert_array_equal(benchmark.log_ratio(x), 0.0)


def test_bad_benchmark_settings():
    with pytest.raises(ConfigurationError, match="n_expected"):
        Exponential1D(n_expected=0.0)


def test_dqm_stream_effects_do_what_they_say():
    from nplm_kernel.benchmarks import DQMStream

    stream = DQMStream()
    rng = np.random.default_rng(3)
    good = stream.events(200_000, rng)
    dead = stream.events(200_000, rng, "dead_region")
    assert not np.any((dead[:, 1] >= 0.3) & (dead[:, 1] < 0.5))
    assert len(dead) / len(good) == pytest.approx(0.9, abs=0.01)  # 0.2 of the uniform [-1, 1) range is lost
    drifted = stream.events(200_000, rng, "gain_drift")
    assert np.median(drifted[:, 0]) / np.median(good[:, 0]) == pytest.approx(1.03, abs=0.01)
    in_window = lambda events: np.mean(np.abs(events[:, 0] - 1.0) < 0.1)  # noqa: E731
    background = 0.7 * (np.exp(-0.9) - np.exp(-1.1))
    expected = (0.3 * (2 * stats.norm.cdf(1 / 1.3) - 1) + background) / (0.3 * (2 * stats.norm.cdf(1) - 1) + background)
    assert in_window(stream.events(200_000, rng, "resolution")) / in_window(good) == pytest.approx(expected, abs=0.02)
