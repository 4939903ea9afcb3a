"""Baselines: known answers, calibrated nulls on the campaign machinery, power on a strong signal,
and clear refusals of what a method cannot do."""

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from nplm_kernel import ConfigurationError, InputError, SampleSizeWarning, run_toys, significance
from nplm_kernel.baselines import (
    BASELINES,
    BaselineTest,
    BinnedLikelihoodRatio,
    BumpHunt,
    GaussianMixtureScore,
    KernelExcessScan,
    SlicedKolmogorovSmirnov,
    compare_methods,
)
from nplm_kernel.benchmarks import Exponential1D, GaussianSignal
from nplm_kernel.kernel.excess_scan import _fit_log_ratios, _reference_moments
from nplm_kernel.store import read_store

BENCHMARK = Exponential1D(n_expected=400.0, n_reference=20_000)
STRONG = GaussianSignal(location=1.6, width=0.1, n_expected=120.0)


@pytest.fixture(scope="module")
def reference():
    return BENCHMARK.reference(np.random.default_rng(0))


def test_the_binned_likelihood_ratio_matches_a_hand_computation():
    x_data = np.array([[0.5], [1.5], [1.6]])
    x_ref = np.array([[0.2], [0.7], [1.2], [1.7]])
    with pytest.warns(SampleSizeWarning):  # 4 reference events: tiny on purpose
        t = BinnedLikelihoodRatio(edges=[[0.0, 1.0, 2.0]]).fit(x_data, x_ref, 0.75).t_
    expected = 2 * ((1.5 - 1 + 1 * np.log(1 / 1.5)) + (1.5 - 2 + 2 * np.log(2 / 1.5)))
    assert t == pytest.approx(expected, rel=1e-12)


def test_bumphunter_finds_the_injected_resonance(reference):
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(1), STRONG)
    hunter = BumpHunt(bins=40, value_range=(0.0, 8.0), width_min=1, width_max=6, pseudo_experiments=50).fit(
        x_data, x_ref, w_ref)
    low, high = hunter.bump_range_
    assert low <= 1.6 <= high and high - low <= 1.0
    assert hunter.global_p_value_ < 0.05 and hunter.t_ > 5


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_has_a_calibrated_null_and_sees_a_strong_signal(name, reference, tmp_path):
    x_ref, w_ref = reference
    test = BaselineTest(BASELINES[name]())
    null = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=60, seed=1, executor=None, progress=False,
                    store=tmp_path / "null.jsonl")
    fresh = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=40, seed=2, executor=None, progress=False)
    p_values = [significance(t, null.t).p_value for t in fresh.t]
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    signal = test.run(BENCHMARK.data(np.random.default_rng(3), STRONG), x_ref, w_ref)
    assert significance(signal.t, null.t).p_value <= 0.05
    assert len(run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=60, seed=1, executor=None, progress=False,
                        store=tmp_path / "null.jsonl").t) == 60  # resumed from its store


def test_what_a_baseline_cannot_do_is_refused(reference):
    x_ref, w_ref = reference
    rng = np.random.default_rng(4)
    with pytest.raises(InputError, match="one-dimensional .* select one column"):
        BumpHunt().fit(rng.normal(size=(50, 2)), rng.normal(size=(500, 2)), 0.1)
    weights = np.full(len(x_ref), w_ref[0])
    weights[::2] *= 1.5
    for method in (SlicedKolmogorovSmirnov(), GaussianMixtureScore()):
        with pytest.raises(InputError, match="cannot use per-event reference weights"):
            method.fit(BENCHMARK.data(rng), x_ref, weights)


def test_a_campaign_reuses_the_prepared_reference_until_the_reference_changes(reference):
    x_ref, w_ref = reference
    test = BaselineTest(BinnedLikelihoodRatio(bins=12))
    x_data = BENCHMARK.data(np.random.default_rng(5), STRONG)
    assert test.run(x_data, x_ref, w_ref).t == pytest.approx(BinnedLikelihoodRatio(bins=12).fit(x_data, x_ref, w_ref).t_,
                                                             rel=1e-12)
    other_ref, other_w = BENCHMARK.reference(np.random.default_rng(6))
    assert test.run(x_data, other_ref, other_w).t == pytest.approx(
        BinnedLikelihoodRatio(bins=12).fit(x_data, other_ref, other_w).t_, rel=1e-12)  # not the first reference's bins
    assert len(test._prepared) == 1


def test_compare_methods_runs_every_method_on_the_same_toys(reference, tmp_path):
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(7), STRONG)
    comparison = compare_methods(x_data, x_ref, w_ref, BENCHMARK.data, methods=["kernel", "binned", "mmd"],
                                 settings={"kernel": {"n_centers": 60, "reuse_reference": True}, "binned": {"bins": 15}},
                                 n_toys=8, seed=3, executor=None, store_dir=tmp_path, progress=False)
    assert [outcome.method for outcome in comparison.outcomes] == ["kernel", "binned", "mmd"]
    toys = {name: [(row["toy"], row["n_data"]) for row in read_store(tmp_path / f"{name}.jsonl").rows]
            for name in ("kernel", "binned", "mmd")}
    assert toys["kernel"] == toys["binned"] == toys["mmd"] and len(toys["kernel"]) == 8
    binned = comparison.outcomes[1]
    assert binned.t == pytest.approx(BinnedLikelihoodRatio(bins=15).fit(x_data, x_ref, w_ref).t_, rel=1e-12)
    assert binned.significance.is_bound and not binned.significance.is_extrapolated  # no chi2 tail for a baseline
    table = comparison.table()
    assert table.count("\n") == 4 and "| binned |" in table and "upper bound" in table


def test_compare_methods_skips_or_refuses_what_cannot_run(tmp_path):
    rng = np.random.default_rng(8)
    x_ref, x_data = rng.normal(size=(3000, 2)), rng.normal(size=(100, 2))

    def null(generator):
        return generator.normal(size=(generator.poisson(100), 2))

    comparison = compare_methods(x_data, x_ref, 100 / 3000, null, methods=None, n_toys=3, executor=None,
                                 progress=False, settings={"kernel": {"n_centers": 30}})
    assert set(comparison.skipped) == {"bumphunter", "gp"}
    assert "one-dimensional" in comparison.skipped["gp"] and "skipped" in comparison.table()
    with pytest.raises(InputError, match="'bumphunter' is one-dimensional"):
        compare_methods(x_data, x_ref, 100 / 3000, null, methods=["bumphunter"], n_toys=3, executor=None)
    with pytest.raises(ConfigurationError, match="unknown method\\(s\\) 'ks'"):
        compare_methods(x_data, x_ref, 100 / 3000, null, methods=["ks"], n_toys=3, executor=None)


def test_compare_reports_bumphunters_own_look_elsewhere_correction_beside_the_toy_calibration(reference):
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(9), STRONG)
    comparison = compare_methods(x_data, x_ref, w_ref, BENCHMARK.data, methods=["bumphunter"],
                                 settings={"bumphunter": {"value_range": (0.0, 8.0)}}, n_toys=6, executor=None,
                                 progress=False)
    (outcome,) = comparison.outcomes
    assert outcome.t == pytest.approx(BumpHunt(value_range=(0.0, 8.0)).fit(x_data, x_ref, w_ref).t_, rel=1e-12)
    assert any("pyBumpHunter's own global Z" in note for note in outcome.notes)
    low, high = map(float, next(note for note in outcome.notes if note.startswith("bump [")).strip("bump []").split(","))
    assert low <= 1.6 <= high


def test_the_excess_scan_solves_each_centres_one_parameter_fit_exactly():
    rng = np.random.default_rng(10)
    cells, centers = torch.as_tensor(rng.uniform(0, 4, size=(50, 1))), torch.as_tensor(rng.uniform(0, 4, size=(6, 1)))
    kernel = torch.exp(-0.5 * (cells - centers.T).square() / 0.7**2)  # (50 cells, 6 centres), width 0.7
    weights = torch.as_tensor(rng.uniform(0.5, 2.0, size=50))
    moments = _reference_moments(cells, weights, centers, 0.7)
    powers = kernel.T[:, :, None] ** torch.arange(1, moments.shape[1] + 1)
    assert torch.allclose(moments, (weights[None, :, None] * powers).sum(dim=1), rtol=1e-12, atol=0)  # sum_R w phi^n
    data_sums = moments[:, 0] * torch.tensor([0.5, 1.0, 1.05, 2.0, 8.0, 40.0], dtype=torch.float64)
    theta, q = _fit_log_ratios(data_sums, moments)
    for column in range(6):
        def minus_gain(value, c=column):
            return -(value * float(data_sums[c]) - float(weights @ torch.expm1(value * kernel[:, c])))
        best = optimize.minimize_scalar(minus_gain, bounds=(0.0, 12.0), method="bounded",
                                        options={"xatol": 1e-12})
        assert float(theta[column]) == pytest.approx(best.x, abs=1e-6)
        assert float(q[column]) == pytest.approx(-2 * min(best.fun, 0.0), rel=1e-9, abs=1e-12)
    assert float(q[0]) == 0.0 and float(theta[0]) == 0.0  # a deficit is not an excess
    assert float(theta[5]) > 4.0  # a 40-fold excess: the power series holds far from theta = 0


def test_the_excess_scan_finds_the_injected_bump_and_a_deficit_never_raises_it(reference):
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(11), STRONG)
    scan = KernelExcessScan().fit(x_data, x_ref, w_ref)
    assert abs(scan.excess_center_[0] - 1.6) < 0.15 and scan.excess_width_ < 0.5 and scan.log_ratio_ > 0.5
    assert scan.t_ == pytest.approx(max(q - 2 * np.log(n) for q, n in zip(scan.width_maxima_, scan.n_centers_)))
    null = BENCHMARK.data(np.random.default_rng(12))
    with_hole = null[(null[:, 0] < 1.4) | (null[:, 0] > 1.8)]
    full, holed = (KernelExcessScan().fit(sample, x_ref, w_ref) for sample in (null, with_hole))
    assert all(a <= b + 1e-9 for a, b in zip(holed.width_maxima_, full.width_maxima_))
    assert holed.t_ <= full.t_ + 1e-9 and full.t_ < scan.t_ - 20


def test_the_excess_scan_works_in_several_variables_and_refuses_what_it_cannot_do():
    rng = np.random.default_rng(13)
    x_ref = rng.normal(size=(4000, 2))
    x_data = np.concatenate([rng.normal(size=(400, 2)), rng.normal([1.0, -1.0], 0.15, size=(40, 2))])
    scan = KernelExcessScan().fit(x_data, x_ref, 0.1)
    assert np.linalg.norm(np.array(scan.excess_center_) - [1.0, -1.0]) < 0.4 and scan.capped_centers_ == 0
    with pytest.raises(ConfigurationError, match="spacing"):
        KernelExcessScan(spacing=0.0).fit(x_data, x_ref, 0.1)
    with pytest.raises(ConfigurationError, match="width_quantiles must list .* in \\(0, 1\\); got \\[0.5, 1.5\\]"):
        KernelExcessScan(width_quantiles=(0.5, 1.5)).fit(x_data, x_ref, 0.1)
    with pytest.raises(ConfigurationError, match="min_expected"):
        KernelExcessScan(min_expected=1e9).fit(x_data, x_ref, 0.1)


def test_compare_says_where_the_excess_scan_found_its_excess(reference):
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(14), STRONG)
    comparison = compare_methods(x_data, x_ref, w_ref, BENCHMARK.data, methods=["excess_scan"], n_toys=4, executor=None,
                                 progress=False)
    (outcome,) = comparison.outcomes
    (note,) = [note for note in outcome.notes if note.startswith("largest excess at x = (")]
    assert abs(float(note.split("(")[1].split(")")[0]) - 1.6) < 0.15 and "kernel width" in note


def test_the_excess_scan_reads_the_expected_counts_from_the_reference_weights(reference):
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(15), STRONG)
    whole = KernelExcessScan().fit(x_data, x_ref, w_ref)
    heavier = KernelExcessScan().fit(x_data, x_ref, 1.5 * w_ref)  # the same widths, 1.5x the expectation
    assert heavier.t_ < whole.t_ - 10 and sum(heavier.n_centers_) > sum(whole.n_centers_)  # more reach min_expected
    bump = np.abs(x_ref[:, 0] - 1.6) < 0.3
    covered = KernelExcessScan().fit(x_data, x_ref, np.where(bump, 2.0 * w_ref, w_ref))  # the reference expects the bump
    assert covered.t_ < whole.t_ - 10
