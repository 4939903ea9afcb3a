"""Systematic uncertainties: nuisance fits against closed forms, Taylor learners against the
analytic scale nuisance, tau >= Delta >= 0, and t that stays near the null when the reference is off."""

import numpy as np
import pytest
from scipy import optimize, stats

from nn_baseline import NNNPLM
from nn_baseline.taylor import NNTaylorLearner
from nplm_kernel import ConfigurationError, InputError, KernelNPLM
from nplm_kernel.benchmarks import Exponential1D, Exponential1DSystematics, ScaleCoefficients1D
from nplm_kernel.inference import NPLMTest
from nplm_kernel.io import load_model, save_model
from nplm_kernel.kernel.taylor import KernelTaylorLearner
from nplm_kernel.nuisance import NormalizationNuisance, NuisanceModel, ShapeNuisance
from nplm_kernel.toys import run_toys

SIGMA = 0.05


def scale_and_norm(coefficients=None) -> NuisanceModel:
    return NuisanceModel([ShapeNuisance("scale", SIGMA, coefficients or ScaleCoefficients1D()),
                          NormalizationNuisance("norm", SIGMA)])


@pytest.fixture(scope="module")
def shifted_samples():
    """Nominal and scale-shifted references of the 1D benchmark (nu = -0.2, -0.1, 0.1, 0.2)."""
    systematics = Exponential1DSystematics()
    rng = np.random.default_rng(7)
    nominal = systematics.shifted_reference(rng, 0.0, 40_000)
    shifted = [(nu, *systematics.shifted_reference(rng, nu, 40_000)) for nu in (-0.2, -0.1, 0.1, 0.2)]
    return nominal, shifted


def test_generator_shifts_match_the_exact_log_ratio(rng):
    systematics = Exponential1DSystematics()
    x = np.linspace(0.0, 8.0, 17)
    nu_scale, nu_norm = 0.07, -0.03
    expected = nu_norm + stats.expon.logpdf(x, scale=np.exp(nu_scale)) - stats.expon.logpdf(x)
    np.testing.assert_allclose(systematics.true_log_ratio(x, nu_scale, nu_norm), expected, atol=1e-12)
    sizes = [len(systematics.data(rng, 0.2, 0.1)) for _ in range(40)]
    assert np.mean(sizes) == pytest.approx(2000 * np.exp(0.1), rel=0.02)
    assert systematics.data(rng, 0.2).mean() == pytest.approx(np.exp(0.2), rel=0.06)


def test_delta_of_a_normalisation_nuisance_matches_its_closed_form():
    """J(nu) = N(R)(e^nu - 1) - N_D nu + ((nu - nu0)^2 - nu0^2) / (2 sigma^2): minimum by root finding."""
    n_expected, n_data, nu0 = 2000.0, 2113, 0.02
    model = NuisanceModel([NormalizationNuisance("norm", SIGMA, central_value=nu0)])
    x_ref = np.random.default_rng(0).exponential(size=(10_000, 1))
    terms = model.terms(np.ones((n_data, 1)), x_ref, n_expected / 10_000)
    fit = terms.fit(stage="Delta")
    nu_hat = optimize.brentq(lambda nu: n_expected * np.exp(nu) - n_data + (nu - nu0) / SIGMA**2, -1, 1, xtol=1e-14)
    objective = n_expected * np.expm1(nu_hat) - n_data * nu_hat + ((nu_hat - nu0) ** 2 - nu0**2) / (2 * SIGMA**2)
    assert fit.nu[0] == pytest.approx(nu_hat, abs=1e-9)
    assert fit.objective == pytest.approx(objective, rel=1e-9)
    assert -2 * fit.objective >= 0.0


def test_nuisance_fit_is_a_minimum_of_the_objective_with_shape_terms(rng):
    terms = scale_and_norm().terms(rng.exponential(1.1, size=(500, 1)), rng.exponential(size=(20_000, 1)), 0.025,
                                   central_values=[0.03, -0.01])
    f_data, f_ref = rng.normal(0, 0.1, 500), rng.normal(0, 0.1, 20_000)
    fit = terms.fit(f_data, f_ref)
    step = 1e-5
    for direction in np.eye(2):
        plus = terms.objective(fit.nu + step * direction, f_data, f_ref)
        minus = terms.objective(fit.nu - step * direction, f_data, f_ref)
        assert (plus - minus) / (2 * step) == pytest.approx(0.0, abs=1e-3)
        assert min(plus, minus) >= fit.objective - 1e-9
    assert fit.objective == pytest.approx(terms.objective(fit.nu, f_data, f_ref), rel=1e-12)


@pytest.mark.parametrize("degree", [1, 2])
def test_kernel_taylor_learner_recovers_the_analytic_delta_1(shifted_samples, degree, tmp_path):
    (x_nominal, w_nominal), shifted = shifted_samples
    learner = KernelTaylorLearner(degree=degree, n_centers=100).fit(x_nominal, w_nominal, shifted)
    bulk = np.linspace(0.2, 3.0, 15)[:, None]
    learned = learner.coefficients(bulk)
    assert learned.shape == (15, degree)
    np.testing.assert_allclose(learned[:, 0], bulk[:, 0] - 1.0, atol=0.12)
    if degree == 2:  # delta_2 is statistically much weaker at these sizes: its bulk average only
        assert learned[:, 1].mean() == pytest.approx(-0.5 * bulk[:, 0].mean(), abs=0.3)
    save_model(learner, tmp_path / "delta.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "delta.npz").coefficients(bulk), learned)


@pytest.mark.slow
def test_nn_taylor_learner_recovers_the_analytic_delta_1(shifted_samples, tmp_path):
    (x_nominal, w_nominal), shifted = shifted_samples
    subset = [(nu, x[:8000], w[:8000] * 5) for nu, x, w in shifted]
    learner = NNTaylorLearner(degree=1, hidden=(8,), epochs=400).fit(x_nominal[:8000], w_nominal[:8000] * 5, subset)
    bulk = np.linspace(0.2, 3.0, 15)[:, None]
    learned = learner.coefficients(bulk)[:, 0]
    np.testing.assert_allclose(learned, bulk[:, 0] - 1.0, atol=0.2)
    save_model(learner, tmp_path / "delta_nn.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "delta_nn.npz").coefficients(bulk)[:, 0], learned)


@pytest.mark.slow
def test_tau_at_least_delta_at_least_zero_on_every_toy_with_the_kernel():
    systematics = Exponential1DSystematics(Exponential1D(n_reference=50_000))
    x_ref, w_ref = systematics.benchmark.reference(np.random.default_rng(1))
    test = NPLMTest(KernelNPLM(n_centers=200), scale_and_norm(), width_quantiles=None)
    toys = systematics.toys(nu_scale=SIGMA, nu_norm=-SIGMA)
    for index in range(4):
        toy = toys(np.random.default_rng(index))
        result = test.run(toy.x_data, x_ref, w_ref, central_values=toy.central_values)
        assert result.delta >= 0.0
        assert result.tau >= result.delta
        assert result.t == pytest.approx(result.tau - result.delta)
        assert result.nuisance_converged and 1 <= result.nuisance_iterations <= 10
        assert result.nu_hat_tau.shape == result.nu_hat_delta.shape == (2,)


@pytest.mark.slow
def test_with_a_shifted_reference_t_stays_near_the_null_while_the_plain_t_grows():
    """nu* = +1 sigma (scale and yield), no signal: the plain t grows with N, t = tau - Delta does not."""
    plain, profiled = {}, {}
    for n_expected in (1000.0, 10_000.0):
        systematics = Exponential1DSystematics(Exponential1D(n_expected=n_expected, n_reference=100_000))
        x_ref, w_ref = systematics.benchmark.reference(np.random.default_rng(2))
        backend = KernelNPLM(n_centers=200)
        toys = systematics.toys(nu_scale=SIGMA, nu_norm=SIGMA)
        drawn = [toys(np.random.default_rng(10 + index)) for index in range(3)]
        plain[n_expected] = np.median([NPLMTest(backend, width_quantiles=None).run(toy.x_data, x_ref, w_ref).t for toy in drawn])
        profiled[n_expected] = np.median([
            NPLMTest(backend, scale_and_norm(), width_quantiles=None).run(toy.x_data, x_ref, w_ref, central_values=toy.central_values).t
            for toy in drawn])
    assert plain[10_000.0] > 3 * plain[1000.0]
    assert plain[10_000.0] > 30
    assert max(profiled.values()) < stats.chi2.ppf(0.99, 6)


@pytest.mark.slow
def test_nn_trains_nuisances_jointly_and_tau_at_least_delta():
    systematics = Exponential1DSystematics(Exponential1D(n_reference=20_000))
    x_ref, w_ref = systematics.benchmark.reference(np.random.default_rng(3))
    toy = systematics.toys(nu_scale=SIGMA, nu_norm=SIGMA)(np.random.default_rng(4))
    result = NPLMTest(NNNPLM(epochs=1500), scale_and_norm()).run(toy.x_data, x_ref, w_ref,
                                                                 central_values=toy.central_values)
    assert result.tau >= result.delta >= 0.0
    assert result.estimator.nuisance_values_.shape == (2,)
    np.testing.assert_allclose(result.nu_hat_tau, result.estimator.nuisance_values_, atol=0.2 * SIGMA)


def test_campaign_rows_record_nu_hat_and_the_auxiliary_measurements():
    systematics = Exponential1DSystematics(Exponential1D(n_expected=500.0, n_reference=10_000))
    x_ref, w_ref = systematics.benchmark.reference(np.random.default_rng(5))
    test = NPLMTest(KernelNPLM(n_centers=100), scale_and_norm(), width_quantiles=None)
    campaign = run_toys(test, systematics.toys(nu_scale=-SIGMA), x_ref, w_ref, n_toys=2, seed=9, executor=None, progress=False)
    again = run_toys(test, systematics.toys(nu_scale=-SIGMA), x_ref, w_ref, n_toys=2, seed=9, executor=None, progress=False)
    for row in campaign.rows:
        assert row["status"] == "ok" and len(row["nu_hat_tau"]) == 2 and len(row["nu_hat_delta"]) == 2
        assert len(row["central_values"]) == 2 and row["nuisance_iterations"] >= 1
        assert row["tau"] >= row["delta"] >= 0.0
    np.testing.assert_array_equal(campaign.t, again.t)


def test_bad_nuisance_settings_are_named():
    with pytest.raises(ConfigurationError, match="unique"):
        NuisanceModel([NormalizationNuisance("a", 0.1), NormalizationNuisance("a", 0.1)])
    with pytest.raises(ConfigurationError, match="sigma of nuisance 'a'"):
        NuisanceModel([NormalizationNuisance("a", -0.1)])
    with pytest.raises(ConfigurationError, match="coefficients"):
        NuisanceModel([ShapeNuisance("s", 0.1, coefficients=np.ones(3))])
    model = scale_and_norm()
    x = np.ones((10, 1))
    with pytest.raises(InputError, match="central_values"):
        model.terms(x, np.ones((100, 1)), 0.1, central_values=[0.0])
    with pytest.raises(ConfigurationError, match="no nuisances"):
        NPLMTest(KernelNPLM()).run(x, np.ones((100, 1)), 0.1, central_values=[0.0, 0.0])
    with pytest.raises(InputError, match="distinct shifted nu"):
        KernelTaylorLearner(degree=2).fit(x, 1.0, [(0.1, x, 1.0)])
    with pytest.raises(InputError, match="non-zero"):
        KernelTaylorLearner(degree=1).fit(x, 1.0, [(0.0, x, 1.0)])
