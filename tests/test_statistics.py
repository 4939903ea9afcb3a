"""The NPLM loss, p-value / Z conversions and calibration against known distributions."""

import numpy as np
import pytest
from scipy import stats

from nplm_kernel import FitError, InputError, chi2_p_value, nplm_loss, t_from_loss, z_score
from nplm_kernel.inference.calibration import CHI2_EXTRAPOLATION, EMPIRICAL, empirical_p_value, fit_chi2, significance


def test_nplm_loss_formula():
    f_data, f_ref = np.array([0.5, -0.2]), np.array([0.1, 0.0, -0.3])
    w_ref = np.array([0.5, 0.25, 0.25])
    expected = 0.5 * (np.e**0.1 - 1) + 0 + 0.25 * (np.e**-0.3 - 1) - 0.3
    assert nplm_loss(f_data, f_ref, w_ref) == pytest.approx(expected, rel=1e-14)
    shifted = nplm_loss(f_data, f_ref, w_ref, offset_data=0.1, offset_ref=0.1)
    assert shifted == pytest.approx(np.sum(w_ref * np.expm1(f_ref + 0.1)) - np.sum(f_data + 0.1), rel=1e-14)
    assert t_from_loss(-3.5) == 7.0


def test_nplm_loss_overflow_is_an_error_not_a_number():
    with pytest.raises(FitError, match="not finite"):
        nplm_loss(np.zeros(2), np.array([1e4]), np.ones(1))


def test_p_value_and_z_conversions():
    assert z_score(0.05) == pytest.approx(1.6448536, rel=1e-6)
    assert z_score(2.866515719e-7) == pytest.approx(5.0, rel=1e-6)
    assert chi2_p_value(3.841458821, 1) == pytest.approx(0.05, rel=1e-6)
    with pytest.raises(InputError):
        z_score(1.5)
    with pytest.raises(InputError):
        chi2_p_value(1.0, 0)


def test_chi2_fit_recovers_the_dof_of_a_known_sample(rng):
    sample = rng.chisquare(12.0, size=4000)
    fit = fit_chi2(sample)
    assert fit.dof == pytest.approx(12.0, rel=0.03)
    assert fit.ks_p_value > 0.01
    assert fit_chi2(rng.chisquare(3.0, size=4000)).ks_p_value > 0.01
    wrong = stats.kstest(sample, stats.chi2(8.0).cdf).pvalue
    assert wrong < 1e-6  # the KS check would catch a wrong dof


def test_empirical_p_values_of_a_known_chi2_sample_are_uniform(rng):
    null = rng.chisquare(5.0, size=2000)
    observed = rng.chisquare(5.0, size=500)
    p_values = np.array([empirical_p_value(t, null)[0] for t in observed])
    assert stats.kstest(p_values, "uniform").pvalue > 0.01


def test_clopper_pearson_interval_and_the_one_p_value_convention():
    """p = (k + 1) / (n + 1): 10 of 100 toys beyond t give 11/101; the interval is k / n's."""
    p, low, high = empirical_p_value(5.0, np.r_[np.zeros(90), np.full(10, 10.0)])
    assert p == 11 / 101
    exact = stats.beta.ppf([0.15865, 0.84135], [10, 11], [91, 90])
    assert low == pytest.approx(exact[0], rel=1e-3) and high == pytest.approx(exact[1], rel=1e-3)


def test_significance_extrapolates_only_beyond_the_toys(rng):
    null = rng.chisquare(4.0, size=200)
    inside = significance(float(np.quantile(null, 0.9)), null)
    assert inside.method == EMPIRICAL and not inside.is_extrapolated
    assert inside.p_value == pytest.approx((np.sum(null >= inside.t) + 1) / 201)
    assert inside.z == pytest.approx(stats.norm.isf(inside.p_value))
    beyond = significance(40.0, null)
    assert beyond.method == CHI2_EXTRAPOLATION and beyond.is_extrapolated
    assert beyond.p_value == pytest.approx(stats.chi2.sf(40.0, beyond.chi2_fit.dof))
    assert beyond.p_low == 0.0 and beyond.p_value < beyond.p_high
    bounded = significance(40.0, null, extrapolate=False)  # a statistic without a chi2 null: no tail to use
    assert bounded.is_bound and bounded.p_value == pytest.approx(1 - ((1 - 0.6827) / 2) ** (1 / 200))  # CP, k = 0
    assert significance(float(np.quantile(null, 0.9)), null, extrapolate=False).p_value == inside.p_value
    with pytest.raises(InputError, match="at least 2 null toys"):
        significance(1.0, [1.0])
    with pytest.raises(InputError, match="t_null contains"):
        significance(1.0, [1.0, np.nan, 2.0])


def _correlated_settings(rng, n, k=3):
    """t of k settings on the same toys: chi2-like and strongly correlated across settings."""
    shared = rng.chisquare(4.0, size=(n, 1))
    return shared + rng.chisquare(2.0, size=(n, k)) * np.array([0.5, 1.0, 2.0])[:k]


def test_combined_multiple_testing_p_values_are_uniform_under_the_null(rng):
    from nplm_kernel.inference.calibration import combine_settings

    null = _correlated_settings(rng, 300)
    observed = _correlated_settings(rng, 300)
    results = [combine_settings(row, null) for row in observed]
    for name in ("min_p", "fisher"):
        p_values = np.array([getattr(result, name) for result in results])
        assert stats.kstest(p_values, "uniform").pvalue > 0.01, name
        assert np.mean(p_values <= 0.05) == pytest.approx(0.05, abs=0.035)  # the false-positive rate holds
    naive = np.array([min(result.p_values) for result in results])
    assert np.mean(naive <= 0.05) > 0.07  # the naive min over settings would not hold it


def test_combined_significance_sees_a_departure_in_one_setting(rng):
    from nplm_kernel.inference.calibration import combine_settings

    null = _correlated_settings(rng, 400)
    observed = np.array([3.0, 4.0, 60.0])  # only the third setting sees it
    result = combine_settings(observed, null)
    assert result.p_values[2] == pytest.approx(1 / 401)
    assert result.min_p < 0.01 and result.min_p < result.fisher  # min-p suits a one-setting departure
    everywhere = combine_settings(np.quantile(null, 0.95, axis=0), null)  # a moderate excess in all
    assert everywhere.fisher < 0.05 and everywhere.fisher < everywhere.min_p  # Fisher suits that one
    with pytest.raises(InputError, match=r"t_null must have shape \(n_toys, 3\)"):
        combine_settings(observed, null[:, :2])


def test_combined_p_values_hold_the_false_positive_rate_and_agree_with_combine_settings(rng):
    from nplm_kernel.inference.calibration import COMBINATIONS, combine_settings, combined_p_values

    null, observed = _correlated_settings(rng, 400), _correlated_settings(rng, 400)
    for combination in COMBINATIONS:
        p_values = combined_p_values(observed, null, combination)
        assert p_values.shape == (400,) and p_values.min() >= 1 / 401
        assert stats.kstest(p_values, "uniform").pvalue > 0.01, combination
    one = observed[:25]
    results = [combine_settings(row, null) for row in one]
    np.testing.assert_array_equal(combined_p_values(one, null, "min-p"), [result.min_p for result in results])
    np.testing.assert_array_equal(combined_p_values(one, null, "fisher"), [result.fisher for result in results])
    excess = np.quantile(null, 0.97, axis=0)[None, :]  # a moderate excess in every setting
    assert all(combined_p_values(excess, null, combination)[0] < 0.03 for combination in ("fisher", "stouffer"))
    with pytest.raises(InputError, match="combination must be one of"):
        combined_p_values(one, null, "harmonic")


def test_a_weighted_min_p_is_calibrated_and_leans_towards_its_heavier_setting(rng):
    from nplm_kernel.inference.calibration import combined_p_values

    null, observed = _correlated_settings(rng, 400), _correlated_settings(rng, 400)
    weighted = combined_p_values(observed, null, "min-p", weights=[3.0, 1.0, 1.0])
    assert stats.kstest(weighted, "uniform").pvalue > 0.01  # any weights keep the null uniform
    np.testing.assert_array_equal(combined_p_values(observed, null, "min-p", weights=[2.0, 2.0, 2.0]),
                                  combined_p_values(observed, null, "min-p"))  # only the ratios matter
    only_first = observed.copy()
    only_first[:, 1:] = np.median(null[:, 1:], axis=0)  # an excess in the first setting alone
    only_first[:, 0] = np.quantile(null[:, 0], 0.99)
    heavy, equal = (combined_p_values(only_first[:1], null, "min-p", weights=weights)[0]
                    for weights in ([3.0, 1.0, 1.0], None))
    assert heavy < equal
    for bad in ([1.0, 1.0], [1.0, 0.0, 1.0], [1.0, np.nan, 1.0]):
        with pytest.raises(InputError, match="weights must be 3 positive finite numbers"):
            combined_p_values(observed, null, "min-p", weights=bad)
    with pytest.raises(InputError, match="weights apply to the min-p combination only"):
        combined_p_values(observed, null, "fisher", weights=[1.0, 1.0, 1.0])


def test_min_p_significance_matches_a_brute_force_count_and_is_uniform_under_the_null(rng):
    """A multi-scale t (one value per width): p = (k + 1) / (n + 1) with k the null toys whose min-p
    over the widths (each toy's p-values against the other toys) is at most the observed min-p; under
    the null it is uniform."""
    from nplm_kernel.inference.calibration import MIN_P, MIN_P_EXTRAPOLATION

    covariance = [[1.0, 0.7], [0.7, 1.0]]  # two correlated widths
    null = stats.chi2.ppf(stats.norm.cdf(rng.multivariate_normal([0, 0], covariance, size=300)), [4, 9])
    observed = np.array([7.5, 12.0])
    result = significance(observed, null)
    n = len(null)
    observed_p = [(np.sum(null[:, k] >= observed[k]) + 1) / (n + 1) for k in range(2)]
    null_min_p = [min(np.sum(null[:, k] >= null[j, k]) / n for k in range(2)) for j in range(n)]
    assert result.method == MIN_P and result.chi2_fit is None
    assert result.member_p_values == pytest.approx(observed_p)
    assert result.p_value == pytest.approx((np.sum(np.array(null_min_p) <= min(observed_p)) + 1) / (n + 1))
    assert result.z == pytest.approx(stats.norm.isf(result.p_value))
    beyond = significance(np.array([60.0, 80.0]), null)
    assert beyond.method == MIN_P_EXTRAPOLATION and beyond.is_extrapolated and 0 < beyond.p_value < 1 / n
    fresh = stats.chi2.ppf(stats.norm.cdf(rng.multivariate_normal([0, 0], covariance, size=400)), [4, 9])
    p_values = [significance(row, null).p_value for row in fresh]
    assert stats.kstest(p_values, "uniform").pvalue > 0.01


def test_min_p_beyond_every_toy_extrapolates_only_from_members_with_a_chi2_null(rng):
    """The default test's scan has a null with negative t (no chi2): beyond every toy the Bonferroni
    bound comes from the other member's chi2 tail alone, K p_width (the observed min-p is at most
    p_width), and is reported only when below the Clopper-Pearson upper bound."""
    from nplm_kernel.inference.calibration import MIN_P_EXTRAPOLATION, UPPER_BOUND, fit_chi2

    width = stats.chi2.rvs(5, size=400, random_state=rng)
    scan = rng.normal(-2.0, 3.0, size=400)  # t of either sign
    null = np.column_stack([width, scan])
    beyond = significance(np.array([70.0, 40.0]), null)
    dof = fit_chi2(width).dof
    assert beyond.method == MIN_P_EXTRAPOLATION and beyond.p_value == pytest.approx(2 * stats.chi2.sf(70.0, dof))
    scan_beyond = significance(np.array([np.median(width), scan.max() + 1.0]), null)  # only the scan is beyond
    assert 2 * stats.chi2.sf(np.median(width), dof) > scan_beyond.p_high  # the width's tail says less than the toys
    assert scan_beyond.method == UPPER_BOUND and scan_beyond.p_value == scan_beyond.p_high
    no_chi2 = significance(np.array([70.0, 40.0]), np.column_stack([scan, scan[::-1]]))
    assert no_chi2.method == UPPER_BOUND and no_chi2.is_bound
    weighted = significance(np.array([70.0, 40.0]), null, weights=[1.0, 3.0])  # the width holds 1/4 of the rate
    assert weighted.p_value == pytest.approx(4 * stats.chi2.sf(70.0, dof)) and weighted.member_weights == (1.0, 3.0)
    # only the full model is beyond its toys: the scan's top toys keep the weighted min-p inside the null,
    # where the toys alone would give p = 3 / (n + 1); the width's own tail still speaks
    only_width = significance(np.array([70.0, 0.0]), null, weights=[1.0, 3.0])
    assert only_width.method == MIN_P_EXTRAPOLATION and only_width.p_value == pytest.approx(4 * stats.chi2.sf(70.0, dof))


def test_the_weighted_min_p_of_significance_is_combined_p_values_and_says_so(rng):
    """significance(t, null, weights=w) is combined_p_values(..., weights=w) for one data set, its
    line says 'weighted min-p', and weights for a one-number t are refused."""
    from nplm_kernel.inference.calibration import combined_p_values

    null = np.column_stack([stats.chi2.rvs(5, size=300, random_state=rng), rng.normal(-2.0, 3.0, size=300)])
    for observed in (np.array([9.0, 1.0]), np.array([4.0, 3.0])):  # within the null toys: no extrapolation
        weighted = significance(observed, null, weights=[1.0, 3.0])
        assert weighted.p_value == pytest.approx(combined_p_values(observed, null, "min-p", weights=[1.0, 3.0])[0])
        assert "weighted min-p over 2 members" in str(weighted)
    assert "weighted" not in str(significance(np.array([9.0, 1.0]), null))
    with pytest.raises(InputError, match="weights .* this t is one number"):
        significance(3.0, null[:, 0], weights=[1.0])
