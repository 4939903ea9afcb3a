"""Toys fitted together give each toy the t of its own fit, in campaigns as alone."""

import numpy as np
import pytest
from campaign_helpers import PoisonedGenerator

from nplm_kernel import KernelNPLM, NPLMTest, run_toys
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.kernel import reference_cache

BENCHMARK = Exponential1D(n_expected=300.0, n_reference=30_000)


@pytest.fixture(scope="module")
def reference():
    return BENCHMARK.reference(np.random.default_rng(0))


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_a_batch_fit_gives_every_toy_the_t_of_its_own_fit(reference, sigma):
    x_ref, w_ref = reference
    toys = [BENCHMARK.data(np.random.default_rng(seed)) for seed in range(7)]
    estimator = KernelNPLM(n_centers=200, sigma=sigma, reuse_reference=True)
    reference_cache.clear()
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


def _random_reference(n_ref=3000, n_centers=6, seed=0):
    import torch

    from nplm_kernel.solver.batch import SharedReference

    generator = torch.Generator().manual_seed(seed)
    features = torch.rand((n_ref, n_centers), generator=generator, dtype=torch.float64) - 0.5
    weights = torch.rand(n_ref, generator=generator, dtype=torch.float64) * 0.02 + 0.001
    gamma = (torch.rand((4, n_centers), generator=generator, dtype=torch.float64) - 0.5) * 3.0
    return SharedReference(features, weights), features, weights, gamma


def test_the_shared_reference_sums_are_the_direct_ones_for_the_rows_asked():
    import torch

    reference, features, weights, gamma = _random_reference()
    loss, gradient, hessians = reference.sums(gamma)
    f = gamma @ features.T  # (B, N_R)
    scaled = weights * torch.exp(f)
    np.testing.assert_allclose(loss, (weights * torch.expm1(f)).sum(dim=1), rtol=1e-12)
    np.testing.assert_allclose(gradient, scaled @ features, rtol=1e-12)
    direct = torch.einsum("bn,nm,nk->bmk", scaled, features, features)
    np.testing.assert_allclose(hessians, direct, rtol=1e-5, atol=1e-6)  # float32 pair products
    partial_loss, partial_gradient, some = reference.sums(gamma, torch.tensor([2, 0]))
    np.testing.assert_array_equal(partial_loss, loss)
    np.testing.assert_array_equal(partial_gradient, gradient)
    np.testing.assert_allclose(some, direct[[2, 0]], rtol=1e-5, atol=1e-6)
    assert reference.sums(gamma, torch.tensor([], dtype=torch.long))[2] is None


def test_the_kept_hessian_and_the_last_step_rule_leave_the_newton_solution_unchanged(monkeypatch):
    """With the Hessian recomputed at every point (HESSIAN_REFRESH = 0) the iteration is exact
    damped Newton; the default keeps a toy's Hessian near the minimum and gives a toy at tolerance
    no step halvings, and must reach the same gamma and objective, with one pass per Newton step."""
    import torch

    from nplm_kernel.solver import batch

    reference, features, weights, _ = _random_reference(n_ref=4000, n_centers=5, seed=1)
    generator = torch.Generator().manual_seed(2)
    n_data = torch.full((6,), 40.0, dtype=torch.float64)
    data_sums = (torch.rand((6, 5), generator=generator, dtype=torch.float64) - 0.3) * 40.0
    passes = []
    sums = batch.SharedReference.sums
    monkeypatch.setattr(batch.SharedReference, "sums", lambda self, *args: passes.append(1) or sums(self, *args))
    kept = batch.solve_extended_likelihood_batch(reference, data_sums, n_data, 1e-4)
    kept_passes = len(passes)
    monkeypatch.setattr(batch, "HESSIAN_REFRESH", 0.0)
    exact = batch.solve_extended_likelihood_batch(batch.SharedReference(features, weights), data_sums, n_data, 1e-4)
    assert all(report.converged for report in kept.diagnostics + exact.diagnostics)
    np.testing.assert_allclose(kept.gamma, exact.gamma, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose([report.objective for report in kept.diagnostics],
                               [report.objective for report in exact.diagnostics], rtol=1e-12)
    steps = max(report.newton_steps for report in kept.diagnostics)
    assert steps >= 3 and kept_passes <= 1 + steps + 1  # f = 0, one pass per step, at most one halving


def test_a_batch_spends_about_one_pass_over_the_reference_per_newton_step(reference, monkeypatch):
    """Toys at tolerance whose last step J rejects by rounding stop there instead of halving it
    pass after pass (which cost these 32 toys 7 extra passes before)."""
    from nplm_kernel.solver import batch

    x_ref, w_ref = reference
    toys = [BENCHMARK.data(np.random.default_rng(seed)) for seed in range(32)]
    passes = []
    sums = batch.SharedReference.sums
    monkeypatch.setattr(batch.SharedReference, "sums", lambda self, *args: passes.append(1) or sums(self, *args))
    reference_cache.clear()
    fits = KernelNPLM(n_centers=200, reuse_reference=True).fit_batch(toys, x_ref, w_ref)
    steps = max(fit.diagnostics_.newton_steps for fit in fits)
    assert all(fit.converged_ for fit in fits)
    assert len(passes) <= 1 + steps + 2  # f = 0, one pass per Newton step, a couple of genuine halvings


def test_a_batched_campaigns_bar_is_drawn_at_the_end_of_every_batch(reference, capsys):
    x_ref, w_ref = reference  # rows arrive a batch at a time: the bar must show each batch's last toy
    run_toys(NPLMTest(KernelNPLM(n_centers=50, reuse_reference=True)), BENCHMARK.data, x_ref, w_ref, n_toys=10,
             seed=2, executor=None, batch_size=4)
    drawn = capsys.readouterr().err
    assert all(f"| {done}/10 [" in drawn for done in (4, 8, 10)), drawn
