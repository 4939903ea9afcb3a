"""Toys fitted together give each toy the t of its own fit, in campaigns as alone."""

import numpy as np
import pytest
from campaign_helpers import PoisonedGenerator

from nplm_kernel import KernelNPLM, NPLMTest, run_toys
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.core.exceptions import SampleSizeWarning
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


def test_a_batch_keeps_each_toys_warnings_without_refitting_toy_by_toy(monkeypatch):
    import nplm_kernel.toys.worker as worker

    small = Exponential1D(n_expected=300.0, n_reference=1500)  # N_R = 5 N_D: toys above 300 events warn
    x_ref, w_ref = small.reference(np.random.default_rng(1))
    test = NPLMTest(KernelNPLM(n_centers=100, reuse_reference=True))
    single = run_toys(test, small.data, x_ref, w_ref, n_toys=8, seed=3, executor=None, progress=False, batch_size=1)
    refits = []
    monkeypatch.setattr(worker, "run_one_toy", lambda task, index: refits.append(index))
    batched = run_toys(test, small.data, x_ref, w_ref, n_toys=8, seed=3, executor=None, progress=False, batch_size=8)
    assert refits == []
    assert [row["warnings"] for row in batched.rows] == [row["warnings"] for row in single.rows]
    warned = [any("SampleSizeWarning" in text for text in row["warnings"]) for row in batched.rows]
    assert warned == [row["n_data"] > 300 for row in batched.rows] and 0 < sum(warned) < 8
    np.testing.assert_allclose(batched.t, single.t, rtol=1e-6)
    with pytest.warns(SampleSizeWarning):
        results = test.run_batch([small.data(np.random.default_rng(seed)) for seed in range(3)], x_ref, w_ref)
    assert all(result.batch_warnings == () or "SampleSizeWarning" in result.batch_warnings[0] for result in results)


def _random_reference(n_ref=3000, n_centers=6, seed=0):
    import torch

    from nplm_kernel.solver import PairProducts

    generator = torch.Generator().manual_seed(seed)
    features = torch.rand((n_ref, n_centers), generator=generator, dtype=torch.float64) - 0.5
    weights = torch.rand(n_ref, generator=generator, dtype=torch.float64) * 0.02 + 0.001
    gamma = (torch.rand((4, n_centers), generator=generator, dtype=torch.float64) - 0.5) * 3.0
    return PairProducts(features, weights), features, weights, gamma


def test_the_pair_products_give_the_direct_sums_for_the_rows_asked():
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
    other = weights.flip(0)[:, None].expand(-1, 4)
    np.testing.assert_allclose(reference.sums(gamma, weights=other)[1], (other.T * torch.exp(f)) @ features, rtol=1e-12)


def _reference_problem(n_batch=6, n_ref=4000, seed=1, pairs=True):
    """A ReferenceProblem of n_batch fits on a 1D reference with whitened rows (few centres)."""
    import torch

    from nplm_kernel.solver import NystromKernelRows, PairProducts, ReferenceProblem, kernel_products
    from nplm_kernel.solver.nystrom import NystromFactor

    generator = np.random.default_rng(seed)
    points = torch.as_tensor(generator.exponential(1.0, size=(n_ref, 1)))
    centers = torch.linspace(0.0, 4.0, 5, dtype=torch.float64)[:, None]
    factor = NystromFactor(torch.exp(-(centers - centers.T) ** 2 / 2.0))
    rows = NystromKernelRows(points, centers, 1.0, 10**8, torch.float64, factor)
    weights = torch.full((n_ref,), 40.0 / n_ref, dtype=torch.float64)
    data = [torch.as_tensor(generator.exponential(1.2, size=(40, 1))) for _ in range(n_batch)]
    sums = factor.transpose_solve(torch.stack([kernel_products(x, centers, 1.0) for x in data], dim=1)).T
    n_data = torch.full((n_batch,), 40.0, dtype=torch.float64)
    return ReferenceProblem(rows, factor, weights, sums, n_data, pairs=PairProducts(rows.stored_rows(), weights)
                            if pairs else None)


def test_the_kept_hessian_and_the_last_step_rule_leave_the_newton_solution_unchanged(monkeypatch):
    """With the Hessian recomputed at every point (HESSIAN_REFRESH = 0) the iteration is exact
    damped Newton; the default keeps a fit's Hessian near the minimum and gives a fit at tolerance
    no step halvings, and must reach the same gamma and objective, with one pass per Newton step; CG
    on the same fits reaches them too."""
    from nplm_kernel.solver import PairProducts, newton, solve

    passes = []
    sums = PairProducts.sums
    monkeypatch.setattr(PairProducts, "sums", lambda self, *args: passes.append(1) or sums(self, *args))
    kept = solve(_reference_problem(), [1e-4])
    kept_passes = len(passes)
    monkeypatch.setattr(newton, "HESSIAN_REFRESH", 0.0)
    exact = solve(_reference_problem(), [1e-4])
    by_cg = solve(_reference_problem(pairs=False), [1e-4])
    assert all(report.converged for report in kept.diagnostics + exact.diagnostics + by_cg.diagnostics)
    np.testing.assert_allclose(kept.gamma, exact.gamma, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(by_cg.gamma, exact.gamma, rtol=1e-5, atol=1e-8)
    for first, second in ((kept, exact), (by_cg, exact)):
        np.testing.assert_allclose([report.objective for report in first.diagnostics],
                                   [report.objective for report in second.diagnostics], rtol=1e-10)
    steps = max(report.newton_steps for report in kept.diagnostics)
    assert steps >= 3 and kept_passes <= 1 + steps + 1  # f = 0, one pass per step, at most one halving
    assert all(sum(report.cg_iterations) > 0 for report in by_cg.diagnostics)


def test_a_batch_spends_about_one_pass_over_the_reference_per_newton_step(reference, monkeypatch):
    """Toys at tolerance whose last step J rejects by rounding stop there instead of halving it
    pass after pass (which cost these 32 toys 7 extra passes before)."""
    from nplm_kernel.solver import PairProducts

    x_ref, w_ref = reference
    toys = [BENCHMARK.data(np.random.default_rng(seed)) for seed in range(32)]
    passes = []
    sums = PairProducts.sums
    monkeypatch.setattr(PairProducts, "sums", lambda self, *args: passes.append(1) or sums(self, *args))
    reference_cache.clear()
    fits = KernelNPLM(n_centers=200, reuse_reference=True).fit_batch(toys, x_ref, w_ref)
    steps = max(fit.diagnostics_.newton_steps for fit in fits)
    assert all(fit.converged_ for fit in fits)
    assert len(passes) <= 1 + steps + 2  # f = 0, one pass per Newton step, a couple of genuine halvings


def test_toys_with_many_centres_are_solved_together_by_conjugate_gradient(monkeypatch):
    """Beyond the centres whose Hessians are formed explicitly, a batch shares CG passes over the
    reference rows; each toy still gets the t of its own fit."""
    from nplm_kernel.solver import nystrom

    monkeypatch.setattr(nystrom, "EXPLICIT_GRAM_MAX_CENTERS", 0)
    bench = Exponential1D(n_expected=200.0, n_reference=6000)
    x_ref, w_ref = bench.reference(np.random.default_rng(3))
    toys = [bench.data(np.random.default_rng(seed)) for seed in range(5)]
    reference_cache.clear()
    together = KernelNPLM(n_centers=100, sigma=0.3, reuse_reference=True).fit_batch(toys, x_ref, w_ref)
    alone = [KernelNPLM(n_centers=100, sigma=0.3, reuse_reference=True).fit(toy, x_ref, w_ref) for toy in toys]
    assert together[0].n_centers_ > 10 and all(sum(fit.diagnostics_.cg_iterations) > 0 for fit in together)
    for batch_fit, single in zip(together, alone):
        assert batch_fit.converged_ and batch_fit.t_ == pytest.approx(single.t_, rel=1e-6)


def test_a_batched_campaigns_bar_is_drawn_at_the_end_of_every_batch(reference, capsys):
    x_ref, w_ref = reference  # rows arrive a batch at a time: the bar must show each batch's last toy
    run_toys(NPLMTest(KernelNPLM(n_centers=50, reuse_reference=True)), BENCHMARK.data, x_ref, w_ref, n_toys=10,
             seed=2, executor=None, batch_size=4)
    drawn = capsys.readouterr().err
    assert all(f"| {done}/10 [" in drawn for done in (4, 8, 10)), drawn
