"""The Falkon solver against an independent dense float64 Newton solve of the documented objective."""

import numpy as np
import pytest
import torch
from reference_solver import PointLoss, dense_newton, gaussian_gram, greedy_pivots, objective

from nplm_kernel import FitError, KernelNPLM, nplm_loss
from nplm_kernel.solver import nystrom, point_loss


def _reference_problem(x_data, x_ref, w_ref, centers, sigma, loss):
    points = np.vstack([x_data, x_ref])
    return (gaussian_gram(points, centers, sigma), gaussian_gram(centers, centers, sigma),
            PointLoss(loss, len(x_data), np.full(len(x_ref), w_ref)))


@pytest.mark.filterwarnings("ignore::nplm_kernel.core.exceptions.ReferenceSupportWarning")  # lambda 1e-6: see below
@pytest.mark.parametrize("loss", ["nplm", "logistic"])
@pytest.mark.parametrize("penalty", [1e-3, 1e-6])
@pytest.mark.parametrize("with_offsets", [False, True])
@pytest.mark.parametrize("explicit_gram", [True, False])
def test_objective_and_t_match_dense_newton(gaussian_samples, rng, penalty, with_offsets, explicit_gram, loss,
                                            monkeypatch):
    """Both losses and both Hessian paths: the Gram matrix formed once per Newton step (few
    centres), and one pass over K_nM per CG iteration (forced here by lowering the threshold). At
    lambda = 1e-6 the NPLM fit raises f to about 20 at a data event in the sparse corner of the
    3000 reference events: the solver is right, and the fit warns that the reference cannot
    support that event (checked in test_statistics)."""
    if not explicit_gram:  # one pass over K_nM per CG iteration, whatever the cost model prefers
        monkeypatch.setattr(nystrom, "EXPLICIT_GRAM_MAX_CENTERS", 0)
        monkeypatch.setattr(point_loss, "prefers_explicit_gram", lambda rows, iterations: False)
    x_data, x_ref, w_ref = gaussian_samples
    centers = rng.normal(0.0, 1.2, size=(40, 2))
    sigma = 1.0
    offset_data = 0.2 * x_data[:, 0] if with_offsets else None
    offset_ref = 0.2 * x_ref[:, 0] if with_offsets else None
    offsets = np.r_[offset_data, offset_ref] if with_offsets else np.zeros(len(x_data) + len(x_ref))

    estimator = KernelNPLM(centers=centers, sigma=sigma, penalty=penalty, loss=loss, standardize=False)
    estimator.fit(x_data, x_ref, w_ref, offset_data=offset_data, offset_ref=offset_ref)

    knm, kmm, losses = _reference_problem(x_data, x_ref, w_ref, centers, sigma, loss)
    alpha_best, objective_best = dense_newton(knm, kmm, losses, offsets, penalty)
    objective_fit = objective(estimator.alpha_, knm, kmm, losses, offsets, penalty)
    assert abs(objective_fit - objective_best) <= 1e-6 * abs(objective_best)
    assert estimator.diagnostics_.converged

    f_best = knm @ alpha_best
    n_data = len(x_data)
    t_best = -2 * nplm_loss(f_best[:n_data], f_best[n_data:], w_ref, offsets[:n_data], offsets[n_data:])
    assert estimator.t_ == pytest.approx(t_best, rel=1e-2)
    assert estimator.t_ > 10  # a real departure (shift 0.5 with 300 events), so the 1% check has teeth


def test_blocked_kernel_path_gives_the_cached_solution(gaussian_samples):
    from nplm_kernel.solver.nystrom import MIN_BLOCK_ROWS, WHITENED_BLOCK_COPIES, fixed_fit_memory

    x_data, x_ref, w_ref = gaussian_samples
    cached = KernelNPLM(n_centers=60, penalty=1e-5).fit(x_data, x_ref, w_ref)
    n_points = len(x_data) + len(x_ref)
    smallest = fixed_fit_memory(n_points, 2) + MIN_BLOCK_ROWS * 60 * 8 * WHITENED_BLOCK_COPIES
    for budget in (smallest, smallest + n_points * 60 * 8 // 2):  # every row recomputed; about half stored
        blocked = KernelNPLM(n_centers=60, penalty=1e-5, memory_budget=budget).fit(x_data, x_ref, w_ref)
        assert cached.diagnostics_.kernel_cached and not blocked.diagnostics_.kernel_cached
        # alpha is ill-determined along near-null directions of K_MM, f is not: compare f.
        np.testing.assert_allclose(blocked.decision_function(x_data), cached.decision_function(x_data), atol=1e-6)
        assert blocked.t_ == pytest.approx(cached.t_, rel=1e-6)


def test_penalty_continuation_reaches_the_same_optimum(gaussian_samples):
    x_data, x_ref, w_ref = gaussian_samples
    direct = KernelNPLM(n_centers=60, penalty=1e-6).fit(x_data, x_ref, w_ref)
    continued = KernelNPLM(n_centers=60, penalty=1e-6, penalty_list=[1e-2, 1e-4, 1e-6]).fit(x_data, x_ref, w_ref)
    assert continued.diagnostics_.newton_steps >= 3  # one step at each intermediate penalty, then the final ones
    assert continued.t_ == pytest.approx(direct.t_, rel=1e-6)


def test_single_newton_step_schedule_stops_short_and_says_so(gaussian_samples):
    """The published FalkonHEP schedule (one Newton step from alpha = 0) is available, is not the
    minimiser, and is reported as not converged."""
    from nplm_kernel import ConvergenceWarning

    x_data, x_ref, w_ref = gaussian_samples
    full = KernelNPLM(n_centers=60, penalty=1e-6).fit(x_data, x_ref, w_ref)
    with pytest.warns(ConvergenceWarning, match="stopped before its tolerance"):
        one_step = KernelNPLM(n_centers=60, penalty=1e-6, max_newton_steps=1).fit(x_data, x_ref, w_ref)
    assert one_step.diagnostics_.newton_steps == 1
    assert not one_step.diagnostics_.converged
    assert one_step.diagnostics_.objective > full.diagnostics_.objective


def test_pruned_redundant_centres_lose_nothing(rng):
    """A wide kernel in 1D makes most of 150 centres numerically redundant: the fit keeps a few,
    and its objective still matches the dense optimum over all 150 centres. (The centres cover
    the data: beyond the last centre, near-null combinations of kernels are large and cheap, and
    the optimum there depends on eigenvalues below float64 resolution for any solver.)"""
    x_data = rng.exponential(1.0, size=(300, 1))
    x_data[:40, 0] = rng.normal(1.6, 0.16, size=40)
    x_ref = rng.exponential(1.0, size=(6000, 1))
    w_ref = 300 / 6000
    centers = np.linspace(0.0, max(x_data.max(), x_ref.max()), 150)[:, None]
    sigma, penalty = 1.0, 1e-6
    estimator = KernelNPLM(centers=centers, sigma=sigma, penalty=penalty, standardize=False).fit(x_data, x_ref, w_ref)
    assert estimator.n_centers_ < 50

    offsets = np.zeros(6300)
    knm_all, kmm_all, point_loss = _reference_problem(x_data, x_ref, w_ref, centers, sigma, "nplm")
    alpha_best, objective_best = dense_newton(knm_all, kmm_all, point_loss, offsets, penalty)
    knm, kmm, _ = _reference_problem(x_data, x_ref, w_ref, estimator.centers_, sigma, "nplm")
    objective_fit = objective(estimator.alpha_, knm, kmm, point_loss, offsets, penalty)
    assert abs(objective_fit - objective_best) <= 1e-6 * abs(objective_best)
    f_best = knm_all @ alpha_best
    assert estimator.t_ == pytest.approx(-2 * nplm_loss(f_best[:300], f_best[300:], w_ref), rel=1e-2)


@pytest.mark.parametrize("max_centers", [None, 40])
def test_blocked_pivoted_centers_take_the_greedy_pivots_in_order(rng, monkeypatch, max_centers):
    """Above DENSE_PIVOTING_MAX candidates the factor is built in predicted blocks; the pivots and
    their order are the textbook one-column-at-a-time greedy's (small blocks force predictions to
    miss and be refreshed). LAPACK's dense path below the threshold breaks ties (candidates far from
    every kept one all have residual 1) in its own order: its set differs, and covers every
    candidate to the same tolerance."""
    points = rng.normal(size=(700, 3))
    expected = greedy_pivots(points, 0.8, 1e-8, max_centers)
    assert 40 <= len(expected) < 700
    monkeypatch.setattr(nystrom, "DENSE_PIVOTING_MAX", 100)
    monkeypatch.setattr(nystrom, "PIVOT_BLOCK", 8)
    monkeypatch.setattr(nystrom, "PIVOT_LOOKAHEAD", 16)
    assert nystrom.pivoted_centers(torch.as_tensor(points), 0.8, 1e-8, max_centers).tolist() == expected
    monkeypatch.setattr(nystrom, "DENSE_PIVOTING_MAX", 4096)
    dense = nystrom.pivoted_centers(torch.as_tensor(points), 0.8, 1e-8, max_centers)
    if max_centers is None:
        kept = gaussian_gram(points, points[dense], 0.8)
        factor = np.linalg.cholesky(kept[dense])
        residual = 1.0 - (np.linalg.solve(factor, kept.T) ** 2).sum(axis=0)
        assert residual.max() <= 1e-7 and abs(len(dense) - len(expected)) <= 0.02 * len(expected)
    else:
        assert len(dense) == max_centers and dense[0] == expected[0]


def test_float32_cache_gives_the_float64_t(rng):
    """float32 stores whitened features, so its t matches float64 within 1e-3 and it converges."""
    x_data = rng.exponential(1.0, size=(500, 1))
    x_data[:60, 0] = rng.normal(1.6, 0.16, size=60)
    x_ref = rng.exponential(1.0, size=(20_000, 1))
    full = KernelNPLM(n_centers=200).fit(x_data, x_ref, 500 / 20_000)
    half = KernelNPLM(n_centers=200, dtype="float32").fit(x_data, x_ref, 500 / 20_000)
    assert half.diagnostics_.converged and half.diagnostics_.kernel_cached
    assert half.t_ == pytest.approx(full.t_, rel=1e-3)
    grid = np.linspace(0.0, 5.0, 51)
    np.testing.assert_allclose(half.decision_function(grid), full.decision_function(grid), atol=1e-3)


def test_an_ill_conditioned_fit_stops_at_its_cg_budget_and_says_why():
    """A very narrow kernel with a tiny penalty makes every Newton system need hundreds of CG
    iterations; the fit stops at max_total_cg_iter, unconverged, with the cause named."""
    from nplm_kernel import ConvergenceWarning
    from nplm_kernel.benchmarks import Exponential1D

    bench = Exponential1D(n_expected=200.0, n_reference=5000)
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    x_data = bench.data(np.random.default_rng(1))
    estimator = KernelNPLM(n_centers=200, sigma=0.01, penalty=1e-14, max_total_cg_iter=60)
    with pytest.warns(ConvergenceWarning, match="used its max_total_cg_iter .* ill-conditioned"):
        estimator.fit(x_data, x_ref, w_ref)
    report = estimator.diagnostics_
    assert report.stop_reason == "cg_budget" and not estimator.converged_
    assert sum(report.cg_iterations) == 60


def test_a_memory_budget_below_the_fits_fixed_memory_is_refused_with_the_budget_needed(gaussian_samples):
    from nplm_kernel import ConfigurationError
    from nplm_kernel.solver import fixed_fit_memory

    x_data, x_ref, w_ref = gaussian_samples
    fixed = fixed_fit_memory(len(x_data) + len(x_ref), 2)
    with pytest.raises(ConfigurationError, match=r"per-point vectors for n = 3300 points .* give memory_budget >= \d+"):
        KernelNPLM(n_centers=60, memory_budget=fixed // 2).fit(x_data, x_ref, w_ref)


@pytest.fixture(scope="module")
def exponential_reference():
    from nplm_kernel.benchmarks import Exponential1D

    bench = Exponential1D()
    return bench, *bench.reference(np.random.default_rng(0))


@pytest.mark.parametrize("penalty", [1e-6, 1e-8, 1e-10])
def test_the_nplm_loss_never_gives_a_negative_t(exponential_reference, penalty):
    """With loss='nplm' the fit minimises L + penalty from f = 0 with a descent method, so
    L(f_hat) <= 0 and t >= 0, at every penalty; toy 1005 is one on which the logistic surrogate at
    lambda = 1e-10 gives t of about -5400."""
    bench, x_ref, w_ref = exponential_reference
    for toy in (1005, 1060, 7):
        x_data = bench.data(np.random.default_rng(toy))
        estimator = KernelNPLM(n_centers=3000, sigma=2.4, penalty=penalty, seed=5).fit(x_data, x_ref, w_ref)
        assert estimator.t_ >= 0.0 and estimator.converged_


def test_the_logistic_surrogate_warns_when_its_f_raises_the_nplm_loss(exponential_reference):
    from nplm_kernel import FitConsistencyWarning

    bench, x_ref, w_ref = exponential_reference
    x_data = bench.data(np.random.default_rng(1005))
    with pytest.warns(FitConsistencyWarning, match=r"raises the NPLM loss above that of f = 0 .* Use loss='nplm'"):
        surrogate = KernelNPLM(n_centers=3000, sigma=2.4, penalty=1e-10, loss="logistic", seed=5).fit(x_data, x_ref,
                                                                                                       w_ref)
    assert surrogate.t_ < -100


def test_the_in_place_exp_is_torchs_and_overflows_to_inf_silently():
    import warnings

    import torch

    from nplm_kernel.solver.kernels import exp_

    own = torch.get_num_threads()
    try:
        for threads in (1, 4):  # NumPy's exp up to two torch threads, torch's beyond
            torch.set_num_threads(threads)
            values = torch.linspace(-700.0, 720.0, 1001, dtype=torch.float64)
            expected = torch.exp(values)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                result = exp_(values)
            assert result.data_ptr() == values.data_ptr()
            finite = torch.isfinite(expected)
            assert (~finite).any() and torch.isinf(result[~finite]).all()
            np.testing.assert_allclose(result[finite], expected[finite], rtol=1e-15)
            capped = exp_(torch.tensor([-1.0, 0.0, 1e-12, 3.0], dtype=torch.float64), ceiling=0.0)
            assert capped.tolist() == [np.exp(-1.0), 1.0, 1.0, 1.0]
    finally:
        torch.set_num_threads(own)


def test_the_kernel_block_is_the_gaussian_formula_and_a_blocked_matrix_stores_what_its_budget_allows(rng):
    import torch

    from nplm_kernel.solver.kernels import gaussian_kernel

    points, centers, sigma = rng.normal(size=(20_000, 3)), rng.normal(size=(300, 3)), 0.7
    block = gaussian_kernel(torch.as_tensor(points[:500]), torch.as_tensor(centers), sigma)
    np.testing.assert_allclose(block, gaussian_gram(points[:500], centers, sigma), rtol=1e-12, atol=1e-15)
    assert float(block.max()) <= 1.0
    rows = nystrom.NystromKernelRows(torch.as_tensor(points), torch.as_tensor(centers), sigma, memory_budget=30 * 2**20)
    assert not rows.cached and rows.block_rows * 300 * 8 <= rows.BLOCK_BYTES < 20_000 * 300 * 8
    stored_bytes = (20_000 - rows.n_recomputed) * 300 * 8
    block_copies = rows.n_threads + nystrom.WHITENED_BLOCK_COPIES - 1  # a buffer per thread, the Gram's copies
    assert 0 < rows.n_recomputed < 20_000 and stored_bytes + block_copies * rows.block_rows * 300 * 8 <= 30 * 2**20
    weights, vector = rng.uniform(0.5, 1.5, size=20_000), rng.normal(size=300)
    kernel = gaussian_gram(points, centers, sigma)
    np.testing.assert_allclose(rows.weighted_gram_matvec(torch.as_tensor(weights), torch.as_tensor(vector)),
                               kernel.T @ (weights * (kernel @ vector)), rtol=1e-10)
    np.testing.assert_allclose(rows.matvec(torch.as_tensor(vector)), kernel @ vector, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rows.rmatvec(torch.as_tensor(weights)), kernel.T @ weights, rtol=1e-10)


def test_recomputed_blocks_shared_among_threads_give_the_products_of_one_thread_to_the_same_bits_each_time(rng):
    import torch

    points, centers = torch.as_tensor(rng.normal(size=(6_000, 3))), torch.as_tensor(rng.normal(size=(200, 3)))
    weights, vector = torch.as_tensor(rng.uniform(0.5, 1.5, size=6_000)), torch.as_tensor(rng.normal(size=200))
    columns = torch.as_tensor(rng.normal(size=(6_000, 3)))
    own = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = nystrom.NystromKernelRows(points, centers, 0.8, memory_budget=3 * 2**20)
        torch.set_num_threads(2)
        shared = nystrom.NystromKernelRows(points, centers, 0.8, memory_budget=3 * 2**20)
        assert (serial.n_threads, shared.n_threads) == (1, 2) and not shared.cached
        assert shared.n_recomputed > 4 * shared.block_rows  # several blocks for each thread
        products = [(lambda rows: rows.weighted_gram_matvec(weights, vector)), (lambda rows: rows.matvec(vector)),
                    (lambda rows: rows.rmatvec(weights)), (lambda rows: rows.rmatvec(columns))]
        for product in products:
            np.testing.assert_allclose(product(shared), product(serial), rtol=1e-12, atol=1e-12)
            assert torch.equal(product(shared), product(shared))
        assert torch.get_num_threads() == 2  # the pool's threads did not change the caller's count
        block = nystrom.NystromKernelRows.BLOCK_BYTES
        for spare, threads in ((2 * block, 1), (4 * block, 2)):  # the cache's build: 2 blocks per thread
            cached = nystrom.NystromKernelRows(points, centers, 0.8, memory_budget=6_000 * 200 * 8 + spare)
            assert cached.cached and cached.n_threads == threads
            np.testing.assert_allclose(cached.matvec(vector), serial.matvec(vector), rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(own)


def test_cached_rows_shared_among_threads_give_every_product_of_one_thread(rng, monkeypatch):
    """A cached K_nM's blocks are shared among the threads for one-vector products (a column vector
    (M, 1) included) and stay in the calling thread for several vectors: every form equals the dense
    products, and repeats to the same bits."""
    import torch

    points, centers = rng.normal(size=(6_000, 3)), rng.normal(size=(200, 3))
    weights, vector = rng.uniform(0.5, 1.5, size=(6_000, 4)), rng.normal(size=(200, 4))
    kernel = gaussian_gram(points, centers, 0.8)
    monkeypatch.setattr(nystrom.NystromKernelRows, "BLOCK_BYTES", 2**18)  # 163 rows: several blocks per thread
    own = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        rows = nystrom.NystromKernelRows(torch.as_tensor(points), torch.as_tensor(centers), 0.8, memory_budget=10**8)
        assert rows.cached and rows.product_threads == 2 and rows.n_rows > 4 * rows.block_rows
        w, v = torch.as_tensor(weights), torch.as_tensor(vector)
        cases = [(rows.weighted_gram_matvec(w[:, 0], v[:, 0]), kernel.T @ (weights[:, 0] * (kernel @ vector[:, 0]))),
                 (rows.weighted_gram_matvec(w[:, :1], v[:, :1]), kernel.T @ (weights[:, :1] * (kernel @ vector[:, :1]))),
                 (rows.weighted_gram_matvec(w, v), kernel.T @ (weights * (kernel @ vector))),
                 (rows.matvec(v[:, 0]), kernel @ vector[:, 0]), (rows.matvec(v[:, :1]), kernel @ vector[:, :1]),
                 (rows.rmatvec(w[:, 0]), kernel.T @ weights[:, 0]), (rows.rmatvec(w[:, :1]), kernel.T @ weights[:, :1])]
        for product, expected in cases:
            assert product.shape == expected.shape
            np.testing.assert_allclose(product, expected, rtol=1e-10, atol=1e-12)
        assert torch.equal(rows.weighted_gram_matvec(w[:, 0], v[:, 0]), rows.weighted_gram_matvec(w[:, 0], v[:, 0]))
    finally:
        torch.set_num_threads(own)


def test_preconditioners_form_their_products_by_triangular_blocks_and_factorise_with_jitter_only_when_needed(
        rng, monkeypatch):
    import torch

    from nplm_kernel.solver import preconditioner

    monkeypatch.setattr(preconditioner, "CONGRUENCE_BLOCK", 7)  # several blocks, the last one partial
    upper = torch.triu(torch.as_tensor(rng.normal(size=(30, 30))))
    diagonal = torch.as_tensor(rng.uniform(-1.0, 2.0, size=30))  # negative curvatures too (negative weights)
    np.testing.assert_allclose(preconditioner.triangular_congruence(upper, diagonal), (upper * diagonal) @ upper.T,
                               rtol=1e-12, atol=1e-12)
    features = torch.as_tensor(rng.normal(size=(12, 30)))
    gram = torch.zeros((30, 30), dtype=torch.float64)
    preconditioner.add_upper_gram(gram, features * diagonal[:12, None], features)
    np.testing.assert_allclose(torch.triu(gram), torch.triu((features * diagonal[:12, None]).T @ features), atol=1e-12)
    blocks = torch.arange(30) // 7
    assert not gram[blocks[:, None] > blocks[None, :]].any()  # below the diagonal blocks: untouched
    singular = torch.ones((3, 3), dtype=torch.float64)
    factor = nystrom.stable_cholesky(singular, "test")
    assert torch.allclose(factor.T @ factor, singular, atol=1e-9) and float(factor.diagonal().min()) > 0
    exact = nystrom.stable_cholesky(torch.eye(3, dtype=torch.float64) * 4, "test")
    assert torch.equal(exact, torch.eye(3, dtype=torch.float64) * 2)
    with pytest.raises(FitError, match="test"):
        nystrom.stable_cholesky(-torch.eye(3, dtype=torch.float64), "test")


def test_block_threads_run_torch_single_threaded_in_order_and_leave_the_default_count_alone():
    import threading

    import torch

    from nplm_kernel.solver.kernels import run_in_threads

    own = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = run_in_threads([lambda job=job: (job, threading.get_ident(), torch.get_num_threads()) for job in range(4)])
        assert [job for job, _, _ in seen] == [0, 1, 2, 3]
        assert all(count == 1 and ident != threading.get_ident() for _, ident, count in seen)
        later: list[int] = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert torch.get_num_threads() == 2 and later == [2]  # a thread started afterwards takes the default

        def fails():
            raise ValueError("inside a block thread")

        with pytest.raises(ValueError, match="inside a block thread"):
            run_in_threads([int, fails])
    finally:
        torch.set_num_threads(own)


def test_the_cost_model_counts_the_threads_that_share_the_cg_passes_recomputed_blocks(rng):
    import torch

    points, centers = torch.as_tensor(rng.normal(size=(6_000, 5))), torch.as_tensor(rng.normal(size=(300, 5)))
    own = torch.get_num_threads()
    try:
        thresholds = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rows = nystrom.NystromKernelRows(points, centers, 2.0, memory_budget=3 * 2**20)
            assert rows.n_threads == threads and rows.n_recomputed > 0.8 * len(points)
            # the fewest expected CG iterations for which one Gram matrix is judged cheaper
            thresholds.append(next(k for k in range(1, 10_000) if nystrom.prefers_explicit_gram(rows, k)))
    finally:
        torch.set_num_threads(own)
    assert 1.5 * thresholds[0] <= thresholds[1] <= 2 * thresholds[0] + 1


def test_reference_preconditioner_is_exact_at_f_zero_when_it_samples_the_whole_reference(rng):
    """With at most 4 M reference points the preconditioner's sample is the whole reference, and at
    gamma = 0 (f = 0, N_D = sum w_R) P^T P is the Newton system itself: the first Newton step's CG
    takes one iteration (5 with the centres' smoothed curvatures, the former preconditioner), and
    the fit converges in fewer iterations than the former 33."""
    x_ref, x_data = rng.normal(size=(1000, 3)), rng.normal(size=(160, 3))
    fit = KernelNPLM(n_centers=400, sigma=1.5, penalty=1e-4, seed=1).fit(x_data, x_ref, 0.16)
    assert 4 * fit.n_centers_ >= 1000 and fit.n_centers_ > nystrom.EXPLICIT_GRAM_MAX_CENTERS
    assert fit.diagnostics_.cg_iterations[0] == 1
    assert fit.converged_ and sum(fit.diagnostics_.cg_iterations) < 33


def test_reference_gram_is_the_strided_sample_weighted_to_the_reference_total(rng):
    import torch

    from nplm_kernel.solver import preconditioner

    points, centers = torch.as_tensor(rng.normal(size=(1000, 2))), torch.as_tensor(rng.normal(size=(60, 2)))
    weights = torch.as_tensor(rng.uniform(0.1, 2.0, size=1000))
    factor = nystrom.NystromFactor(nystrom.gaussian_kernel(centers, centers, 0.7))
    gram = preconditioner.ReferenceGram(points, centers, 0.7, factor, weights)
    sample = np.arange(240) * 1000 // 240  # 4 points per centre, evenly strided
    sample_weights = weights.numpy()[sample] * weights.numpy().sum() / weights.numpy()[sample].sum()
    features = factor.whiten(nystrom.gaussian_kernel(points[sample], centers, 0.7)).numpy()
    expected = (features * sample_weights[:, None]).T @ features
    np.testing.assert_allclose(gram.gram(), expected, rtol=1e-12, atol=1e-12)
    upper = gram.preconditioner(1e-3, 1000).upper
    shifted = expected + 1e-3 * (1000 + weights.numpy().sum()) * np.eye(60)
    np.testing.assert_allclose(upper.T @ upper, shifted, rtol=1e-10, atol=1e-12)
    assert gram.preconditioner(1e-3, 1000) is gram.preconditioner(1e-3, 1000)
    assert gram.stored_bytes() == 2 * 8 * 60 * 60
    assert preconditioner.shared_sample_size(20_000, 528) == 20_000  # a moderate reference: all of it
    assert 4 * 2857 <= preconditioner.shared_sample_size(100_000, 2857) < 5 * 2857  # the paper's: the multiply-add cap


def test_a_prepared_reference_builds_its_preconditioner_once_for_fits_batches_and_offset_fits(rng, monkeypatch):
    from nplm_kernel.kernel import reference_cache
    from nplm_kernel.solver import preconditioner

    built = []
    original = preconditioner.ReferenceGram.gram

    def counted(self):
        if self._gram is None:
            built.append(self)
        return original(self)

    monkeypatch.setattr(preconditioner.ReferenceGram, "gram", counted)
    reference_cache.clear()
    x_ref = rng.normal(size=(2000, 3))
    toys = [rng.normal(size=(100, 3)) for _ in range(3)]
    estimator = KernelNPLM(n_centers=300, sigma=1.5, penalty=1e-4, reuse_reference=True)
    single = estimator.fit(toys[0], x_ref, 0.05)
    assert single.n_centers_ > nystrom.EXPLICIT_GRAM_MAX_CENTERS and sum(single.diagnostics_.cg_iterations) > 0
    batch = estimator.fit_batch(toys, x_ref, 0.05)
    assert batch[0].t_ == pytest.approx(single.t_, rel=1e-6)
    estimator.fit(toys[1], x_ref, 0.05, offset_ref=np.full(2000, 0.1))
    assert len(built) == 1 and built[0].n_sample == 2000  # shared by many fits: the whole (small) reference
    assert reference_cache.stored_bytes() >= 2 * 8 * single.n_centers_ ** 2  # G_S and one factor counted
    reference_cache.clear()


def test_a_prepared_reference_sets_newton_directions_from_float32_whitened_rows_and_keeps_the_float64_t(
        rng, monkeypatch):
    from nplm_kernel.kernel import estimator as estimator_module
    from nplm_kernel.kernel import reference_cache

    x_ref = rng.normal(size=(3000, 3))
    toys = [rng.normal(size=(150, 3)) + np.array([0.3, 0.0, 0.0]) * (i % 2) for i in range(4)]
    settings = dict(n_centers=400, sigma=1.5, penalty=1e-5, reuse_reference=True)
    offsets = np.full(3000, 0.05)
    hessian_products = []
    original = nystrom.NystromKernelRows.weighted_gram_matvec

    def recorded(rows, weights, vector):
        hessian_products.append(rows.dtype)
        return original(rows, weights, vector)

    monkeypatch.setattr(nystrom.NystromKernelRows, "weighted_gram_matvec", recorded)
    reference_cache.clear()
    mixed = KernelNPLM(**settings).fit_batch(toys, x_ref, 0.05)
    (prepared,) = reference_cache._entries.values()
    assert prepared.curvature_rows.dtype == torch.float32
    assert prepared.curvature_rows.shape == (3000, mixed[0].n_centers_) and mixed[0].n_centers_ > 128
    assert prepared.stored_bytes() >= 12 * 3000 * mixed[0].n_centers_  # float64 K_nM and the float32 copy counted
    single = KernelNPLM(**settings).fit(toys[1], x_ref, 0.05)
    assert single.t_ == pytest.approx(mixed[1].t_, rel=1e-6)
    shifted = KernelNPLM(**settings).fit(toys[1], x_ref, 0.05, offset_ref=offsets)  # per-fit reference weights
    assert hessian_products and set(hessian_products) == {torch.float32}  # CG read only the float32 rows

    monkeypatch.setattr(estimator_module.KernelNPLM, "_curvature_rows", lambda self, prepared, rows: None)
    reference_cache.clear()
    exact = KernelNPLM(**settings).fit_batch(toys, x_ref, 0.05)
    for with_float32, with_float64 in zip(mixed, exact):
        assert with_float32.diagnostics_.converged
        assert with_float32.t_ == pytest.approx(with_float64.t_, rel=1e-6)
    assert max(fit.t_ for fit in exact) > 5.0  # the shifted toys give a t that the comparison can resolve
    assert shifted.t_ == pytest.approx(KernelNPLM(**settings).fit(toys[1], x_ref, 0.05, offset_ref=offsets).t_,
                                       rel=1e-6)
    assert hessian_products[-1] == torch.float64
    reference_cache.clear()


def test_float32_curvature_rows_never_evict_another_prepared_reference(rng, monkeypatch):
    from nplm_kernel.kernel import estimator as estimator_module
    from nplm_kernel.kernel import reference_cache

    x_ref, x_data = rng.normal(size=(3000, 3)), rng.normal(size=(150, 3))
    prepared = []
    original = estimator_module.KernelNPLM._geometry

    def counted(self, *arguments):
        prepared.append(self.sigma)
        return original(self, *arguments)

    monkeypatch.setattr(estimator_module.KernelNPLM, "_geometry", counted)
    reference_cache.clear()
    for sigma in (1.5, 2.0):
        KernelNPLM(n_centers=400, sigma=sigma, penalty=1e-5, reuse_reference=True).fit(x_data, x_ref, 0.05)
    float64_bytes = sum(entry.stored_bytes() - entry.curvature_rows.numel() * 4
                        for entry in reference_cache._entries.values())
    budget = float64_bytes + 2**20  # both float64 entries, not their float32 copies
    reference_cache.clear()
    prepared.clear()
    for sigma in (1.5, 2.0, 1.5, 2.0):
        KernelNPLM(n_centers=400, sigma=sigma, penalty=1e-5, reuse_reference=True, memory_budget=budget).fit(
            x_data, x_ref, 0.05)
    assert prepared == [1.5, 2.0] and len(reference_cache) == 2  # each width prepared once, both kept
    reference_cache.clear()


def test_kernel_rows_whose_cached_tail_covers_every_row_keep_that_tail_itself(rng):
    points, centers = torch.as_tensor(rng.normal(size=(300, 2))), torch.as_tensor(rng.normal(size=(40, 2)))
    tail = nystrom.NystromKernelRows(points, centers, 1.0, 2**26).stored_rows()
    again = nystrom.NystromKernelRows(points, centers, 1.0, 2**26, cached_tail=tail)
    assert again.stored_rows() is tail
    torch.testing.assert_close(again.matvec(torch.ones(40, dtype=torch.float64)), tail.sum(dim=1))


def test_float32_curvature_rows_are_left_out_when_the_budget_cannot_hold_them(rng):
    from nplm_kernel.kernel import reference_cache

    x_ref, x_data = rng.normal(size=(20_000, 3)), rng.normal(size=(150, 3))
    settings = dict(n_centers=400, sigma=1.5, penalty=1e-5, reuse_reference=True)
    reference_cache.clear()
    kept = KernelNPLM(**settings).fit(x_data, x_ref, 0.05).n_centers_
    n_points = 20_000 + 1000  # the reference and room for a data sample of the expected size
    rows_bytes = nystrom.fixed_fit_memory(n_points, 3) + 8 * n_points * kept + 2 * nystrom.NystromKernelRows.BLOCK_BYTES
    budget = rows_bytes + 2**20  # K_nM cached; its float32 copy (4 N_R M bytes) would not fit beside it
    assert budget < 12 * 20_000 * kept
    reference_cache.clear()
    fit = KernelNPLM(**settings, memory_budget=budget).fit(x_data, x_ref, 0.05)
    (prepared,) = reference_cache._entries.values()
    assert fit.diagnostics_.converged and fit.diagnostics_.kernel_cached
    assert prepared.reference_rows is not None and prepared.curvature_rows is None
    reference_cache.clear()


def test_curvature_rows_must_be_whitened_rows_of_the_same_reference(rng):
    from nplm_kernel.solver import NystromFactor, NystromKernelRows, ReferenceProblem, gaussian_kernel

    points, centers = torch.as_tensor(rng.normal(size=(200, 2))), torch.as_tensor(rng.normal(size=(20, 2)))
    factor = NystromFactor(gaussian_kernel(centers, centers, 1.0))
    rows = NystromKernelRows(points, centers, 1.0, 2**26)
    sums, n_data = torch.zeros((1, 20), dtype=torch.float64), torch.tensor([10])
    with pytest.raises(FitError, match="curvature_rows"):
        ReferenceProblem(rows, factor, torch.full((200,), 0.05, dtype=torch.float64), sums, n_data, curvature_rows=rows)


def test_streamed_kernel_blocks_stay_in_the_caches_on_a_cpu_and_give_the_same_products(rng, monkeypatch):
    points, centers = torch.as_tensor(rng.normal(size=(3000, 4))), torch.as_tensor(rng.normal(size=(2857, 4)))
    coefficients = torch.as_tensor(rng.normal(size=(2857, 2)))
    assert nystrom.stream_block_rows(2857, torch.device("cpu")) * 2857 * 8 <= nystrom.NystromKernelRows.BLOCK_BYTES
    assert nystrom.stream_block_rows(10, torch.device("cpu")) * 10 * 8 <= nystrom.NystromKernelRows.BLOCK_BYTES
    assert nystrom.stream_block_rows(2857, torch.device("cuda")) == nystrom.GPU_STREAM_BLOCK_ROWS
    blocked = nystrom.kernel_products(points, centers, 1.3, coefficients), nystrom.kernel_products(points, centers, 1.3)
    full = nystrom.gaussian_kernel(points, centers, 1.3)
    torch.testing.assert_close(blocked[0], full @ coefficients, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(blocked[1], full.sum(dim=0), rtol=1e-12, atol=1e-10)
