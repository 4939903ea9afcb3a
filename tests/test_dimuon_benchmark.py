"""The 5D dimuon benchmark generator: acceptance, exact kinematics, signal shapes."""

import numpy as np
import pytest
from scipy import stats

from nplm_kernel.benchmarks import ContactInteractionSignal, Dimuon5D, ZPrimeSignal, dimuon_mass


def test_features_respect_the_acceptance_and_ordering(rng):
    x = Dimuon5D().events(20_000, rng)
    assert x.shape == (20_000, 5) and np.isfinite(x).all()
    pt1, pt2, eta1, eta2, delta_phi = x.T
    assert (pt2 > 20).all() and (pt1 >= pt2).all()
    assert (np.abs(eta1) < 2.4).all() and (np.abs(eta2) < 2.4).all()
    assert (delta_phi >= 0).all() and (delta_phi <= np.pi).all()


def test_boosted_muons_keep_the_generated_mass_spectrum(rng):
    """Without acceptance cuts the mass rebuilt from the 5 features follows m^-slope exactly."""
    generator = Dimuon5D(pt_min=0.0, eta_max=np.inf, slope=4.5)
    masses = dimuon_mass(generator.events(20_000, rng))
    assert stats.kstest(masses, stats.pareto(b=3.5, scale=100.0).cdf).pvalue > 0.01
    wrong = stats.kstest(masses, stats.pareto(b=3.0, scale=100.0).cdf).pvalue
    assert wrong < 1e-6


def test_signals_and_yields(rng):
    benchmark = Dimuon5D(n_expected=500.0, n_reference=5_000)
    x_ref, w_ref = benchmark.reference(rng)
    assert x_ref.shape == (5_000, 5) and w_ref.sum() == pytest.approx(500.0)
    zprime = dimuon_mass(benchmark.events(3_000, rng, ZPrimeSignal(n_expected=50.0)))
    assert np.median(zprime) == pytest.approx(300.0, abs=2.0)
    assert np.mean(np.abs(zprime - 300.0) < 3 * 9.0) > 0.99
    contact = dimuon_mass(benchmark.events(3_000, rng, ContactInteractionSignal(n_expected=50.0)))
    background = dimuon_mass(benchmark.events(3_000, rng))
    assert np.mean(contact > 300) > 4 * np.mean(background > 300)
    sizes = [len(benchmark.data(rng, ZPrimeSignal(n_expected=50.0))) for _ in range(40)]
    assert np.mean(sizes) == pytest.approx(550, abs=4 * np.sqrt(550 / 40))
