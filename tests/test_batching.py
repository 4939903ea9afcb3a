"""Toys fitted together give each toy the t of its own fit, in campaigns as alone."""

import numpy as np
import pytest
from campaign_helpers import PoisonedGenerator

from nplm_kernel import KernelNPLM, NPLMTest, run_toys
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.kernel.estimator import clear_reference_cache

BENCHMARK = Exponential1D(n_expected=300.0, n_reference=30_000)


@pytest.fixture(scope="module")
def reference():
    return BENCHMARK.reference(np.random.default_rng(0))


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_a_batch_fit_gives_every_toy_the_t_of_its_own_fit(reference, sigma):
    x_ref, w_ref = reference
    toys = [BENCHMARK.data(np.random.default_rng(seed)) for seed in range(7)]
    estimator = KernelNPLM(n_centers=200, sigma=sigma, reuse_reference=True)
    clear_reference_cache()
    batch = estimator.fit_batch(toys, x_ref, w_ref)
    alone = [KernelNPLM(n_centers=200, sigma=sigma, reuse_reference=True).fit(toy, x_ref, w_ref) for toy in toys]
    assert estimator.fits_batches and len(batch) == 7
    for together, single in zip(batch, alone):
        assert together.t_ == pytest.approx(single.t_, rel=1e-6)
        assert together.converged_ and together.fit_.f_data.shape == (len(together.fit_.f_data),)
        np.testing.assert_allclose(together.decision_function(x_ref[:100]), single.decision_function(x_ref[:100]),
                                   rtol=1e-5, atol=1e-7)
    assert not KernelNPLM(n_centers=200).fits_batches  # centres drawn with the data: one fit per toy


def test_a_batched_campaign_stores_the_rows_of_one_toy_at_a_time(reference):
    x_ref, w_ref = reference
    test = NPLMTest(KernelNPLM(n_centers=200, reuse_reference=True))
    together = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=10, seed=4, executor=None, progress=False,
                        batch_size=4)
    alone = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=10, seed=4, executor=None, progress=False,
                     batch_size=1)
    assert [row["toy"] for row in together.rows] == list(range(10))
    np.testing.assert_allclose(together.t, alone.t, rtol=1e-6)
    assert [row["n_data"] for row in together.rows] == [row["n_data"] for row in alone.rows]
    multi = run_toys(NPLMTest(KernelNPLM(n_centers=200, reuse_reference=True), widths=[0.4, 2.0]), BENCHMARK.data,
                     x_ref, w_ref, n_toys=6, seed=4, executor=None, progress=False, batch_size=3)
    np.testing.assert_allclose(multi.t[:, 1], [KernelNPLM(n_centers=200, sigma=2.0, reuse_reference=True).fit(
        BENCHMARK.data(np.random.default_rng(np.random.SeedSequence(4, spawn_key=(i,)))), x_ref, w_ref).t_
        for i in range(6)], rtol=1e-6)


def test_a_failing_toy_in_a_batch_is_recorded_against_itself(reference):
    x_ref, w_ref = reference
    test = NPLMTest(KernelNPLM(n_centers=100, reuse_reference=True))
    generator = PoisonedGenerator(0.3)
    batched = run_toys(test, generator, x_ref, w_ref, n_toys=12, seed=2, executor=None, progress=False,
                       batch_size=6, max_failure_fraction=1.0)
    single = run_toys(test, generator, x_ref, w_ref, n_toys=12, seed=2, executor=None, progress=False,
                      batch_size=1, max_failure_fraction=1.0)
    assert [row["status"] for row in batched.rows] == [row["status"] for row in single.rows]
    assert 1 <= batched.n_failed < 12
    np.testing.assert_allclose(batched.t, single.t, rtol=1e-6)
