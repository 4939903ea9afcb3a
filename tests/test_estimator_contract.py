"""The sklearn-style estimator contract of KernelNPLM (scikit-learn conventions)."""

import numpy as np
import pytest
from sklearn.base import clone

from nplm_kernel import KernelNPLM, nplm_loss


def test_constructor_only_stores_hyperparameters():
    estimator = KernelNPLM(n_centers=7, sigma=-1.0, dtype="nonsense")  # validated in fit, not here
    assert estimator.get_params()["n_centers"] == 7
    assert clone(estimator).get_params() == estimator.get_params()
    assert not hasattr(estimator, "alpha_")


def test_fit_returns_self_and_sets_fitted_attributes(gaussian_samples):
    x_data, x_ref, w_ref = gaussian_samples
    estimator = KernelNPLM(n_centers=30, penalty=1e-5)
    assert estimator.fit(x_data, x_ref, w_ref) is estimator
    kept = estimator.n_centers_
    assert estimator.centers_.shape == (kept, 2) and estimator.alpha_.shape == (kept,)
    assert 25 <= kept <= 30 and estimator.sigma_ > 0
    assert estimator.t_ == -2 * estimator.loss_
    report = estimator.diagnostics_
    assert report.converged and report.newton_steps == len(report.cg_iterations) >= 1
    assert report.gradient_norm < 1e-6 and report.fit_time > 0


def test_t_is_the_nplm_loss_of_the_returned_f(gaussian_samples):
    """t_ must equal -2 L evaluated from decision_function (offsets included)."""
    x_data, x_ref, w_ref = gaussian_samples
    offset_data, offset_ref = 0.1 * x_data[:, 1], 0.1 * x_ref[:, 1]
    estimator = KernelNPLM(n_centers=30).fit(x_data, x_ref, w_ref, offset_data=offset_data, offset_ref=offset_ref)
    f_data, f_ref = estimator.decision_function(x_data), estimator.decision_function(x_ref)
    by_hand = np.sum(w_ref * (np.exp(f_ref + offset_ref) - 1)) - np.sum(f_data + offset_data)
    assert estimator.loss_ == pytest.approx(by_hand, rel=1e-9)
    assert nplm_loss(f_data, f_ref, w_ref, offset_data, offset_ref) == pytest.approx(by_hand, rel=1e-12)


def test_same_seed_same_t_other_seed_other_centres(gaussian_samples):
    x_data, x_ref, w_ref = gaussian_samples
    first = KernelNPLM(n_centers=30, seed=3).fit(x_data, x_ref, w_ref)
    again = KernelNPLM(n_centers=30, seed=3).fit(x_data, x_ref, w_ref)
    other = KernelNPLM(n_centers=30, seed=4).fit(x_data, x_ref, w_ref)
    assert first.t_ == again.t_
    np.testing.assert_array_equal(first.centers_, again.centers_)
    assert not np.array_equal(first.centers_, other.centers_)


def test_standardisation_and_centres_space(gaussian_samples):
    x_data, x_ref, w_ref = gaussian_samples
    centers = x_ref[:20] * 10.0 + 3.0  # inputs far from unit scale
    raw = KernelNPLM(centers=centers, standardize=False, sigma=5.0).fit(x_data * 10 + 3, x_ref * 10 + 3, w_ref)
    np.testing.assert_array_equal(raw.centers_, centers)
    scaled = KernelNPLM(centers=centers, sigma=0.5).fit(x_data * 10 + 3, x_ref * 10 + 3, w_ref)
    np.testing.assert_allclose(scaled.centers_, (centers - scaled.input_mean_) / scaled.input_scale_)
    np.testing.assert_allclose(scaled.input_mean_, 10 * x_ref.mean(axis=0) + 3)
    assert scaled.input_scale_ == pytest.approx(10 * x_ref.std(axis=0))


def test_the_default_sigma_is_the_90th_percentile_of_reference_distances(rng):
    """One rule for every default width: the single width and the multi-scale widths come from the
    same pairs (weighted by the reference weights), whatever the estimator's seed."""
    x_ref = rng.exponential(size=(20_000, 1))
    x_data = rng.exponential(size=(200, 1))
    estimator = KernelNPLM(n_centers=20, standardize=False, seed=7).fit(x_data, x_ref, 0.01)
    # |x - y| for independent Exp(1) variables is Exp(1): its 90th percentile is ln 10
    assert estimator.sigma_ == pytest.approx(np.log(10.0), rel=0.01)
    assert KernelNPLM(standardize=False).reference_widths(x_ref, 0.01, [0.5, 0.9])[1] == estimator.sigma_
    # weights count like repeated events: doubling the weight of the events below the median of x
    weights = np.where(x_ref[:, 0] < np.log(2.0), 2.0, 1.0)
    repeated = np.concatenate([x_ref, x_ref[x_ref[:, 0] < np.log(2.0)]])
    weighted = KernelNPLM(standardize=False).reference_widths(x_ref, weights, [0.9])[0]
    assert weighted == pytest.approx(KernelNPLM(standardize=False).reference_widths(repeated, 1.0, [0.9])[0], rel=0.01)
    assert weighted < 0.97 * estimator.sigma_


def test_per_event_weights_are_used(gaussian_samples):
    """Doubling every reference weight is the same as halving the data yield: f shifts by -log 2."""
    x_data, x_ref, w_ref = gaussian_samples
    base = KernelNPLM(n_centers=40, penalty=1e-7).fit(x_data, x_ref, np.full(len(x_ref), w_ref))
    doubled = KernelNPLM(n_centers=40, penalty=1e-7).fit(x_data, x_ref, np.full(len(x_ref), 2 * w_ref))
    grid = np.zeros((1, 2))
    assert doubled.decision_function(grid)[0] - base.decision_function(grid)[0] == pytest.approx(-np.log(2), abs=0.05)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reusing_the_reference_across_toys_changes_no_t(dtype):
    """reuse_reference keeps the reference's rows between fits: a toy fitted after another (warm
    cache) gives the t it gives alone (cold cache), and the t of a plain fit with the same centres."""
    from nplm_kernel.benchmarks import Exponential1D
    from nplm_kernel.kernel import reference_cache

    bench = Exponential1D(n_reference=20_000)
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    toys = [bench.data(np.random.default_rng(seed)) for seed in (1, 2)]
    reusing = KernelNPLM(n_centers=200, dtype=dtype, reuse_reference=True)
    reference_cache.clear()
    warm = [clone(reusing).fit(toy, x_ref, w_ref) for toy in toys]
    reference_cache.clear()
    cold = clone(reusing).fit(toys[1], x_ref, w_ref)
    assert warm[1].t_ == cold.t_
    np.testing.assert_array_equal(warm[0].centers_, warm[1].centers_)
    plain = KernelNPLM(centers=cold.centers_ * cold.input_scale_ + cold.input_mean_, sigma=cold.sigma_,
                       dtype=dtype).fit(toys[1], x_ref, w_ref)
    assert plain.n_centers_ == cold.n_centers_
    # equal up to the solver tolerance (newton_tol 1e-7 of J) and the centres' round trip through input
    # units (rounding ~1e-16, amplified to ~1e-6 in t by the nearly singular K_MM of this wide 1D kernel)
    assert plain.t_ == pytest.approx(cold.t_, rel=1e-4)
    reference_cache.clear()
    other_reference = clone(reusing).fit(toys[1], x_ref[:10_000], w_ref[:10_000] * 2)  # new content: new geometry
    assert other_reference.sigma_ != cold.sigma_
    reference_cache.clear()
