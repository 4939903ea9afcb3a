"""Nystrom centres and the kernel matrix K_nM: centre selection (uniform draws, greedy pivoted
Cholesky), the factor T = chol(K_MM), the rows of K_nM cached or streamed in blocks within a
memory budget, and the accounting of a fit's memory."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import threadpoolctl
import torch
from scipy.linalg import lapack

from ..core.exceptions import ConfigurationError, FitError
from .kernels import (
    block_threads,
    exponent_columns,
    exponent_rows,
    gaussian_kernel,
    kernel_from_factors,
    run_in_threads,
    torch_threads,
)

#: Rows per kernel block are at least this many, whatever the memory budget.
MIN_BLOCK_ROWS = 64
#: Up to this many kept centres the Hessian's Gram matrix Phi^T D Phi is formed once per Newton step
#: (n M^2 flops at GEMM speed) instead of two passes over K_nM per CG iteration.
EXPLICIT_GRAM_MAX_CENTERS = 128
#: Matrices up to this size are factorised by dpstrf on one BLAS thread.
SMALL_DENSE_PIVOTING = 512
#: Up to this many candidates, pivoted_centers factorises their whole kernel matrix (LAPACK's dpstrf).
DENSE_PIVOTING_MAX = 4096
#: Beyond, it computes the residual columns of up to PIVOT_BLOCK candidates at once (one block of the
#: factor), chosen among the PIVOT_LOOKAHEAD candidates of largest residual.
PIVOT_BLOCK = 64
PIVOT_LOOKAHEAD = 256
#: Float64 vectors of one value per training point that a fit holds at its peak (the solver's
#: f, its step and trial, curvatures, labels, weights, offsets and the loss's temporaries), and the
#: copies of the (n, d) points (concatenated and standardised): the part of a fit's memory that
#: does not depend on the kernel. Measured with benchmarks/memory_budget.py.
PER_POINT_VECTORS = 18
POINT_COPIES = 2
#: Kernel-block copies alive at once in the blocked path when the rows are whitened for the
#: explicit Gram matrix (the block, its whitened copy and the weighted copy).
WHITENED_BLOCK_COPIES = 3


#: Cost-model constants (seconds, measured on a 2-core x86 CPU with the CPU kernel of kernels.py;
#: only their ratios matter): one kernel entry recomputed (distance, exp) by one thread, per input
#: variable and fixed, one multiply-add of a matrix-vector product reading its matrix from memory
#: and one on a block already in cache (one thread), one multiply-add of a matrix-matrix product
#: (all threads).
KERNEL_ENTRY_SECONDS = (4e-11, 1.4e-9)
GEMV_SECONDS = (4e-10, 1.6e-10)
GEMM_SECONDS = 3e-11
#: How much faster a pass of one-vector products over stored rows runs when its blocks are shared
#: among several threads (measured with 2 threads on 2 cores; memory bandwidth bounds more threads).
SHARED_PASS_SPEEDUP = 1.7
#: CG iterations expected of a Newton step before one has run.
EXPECTED_CG_ITERATIONS = 30


def prefers_explicit_gram(rows: NystromKernelRows, expected_iterations: int) -> bool:
    """Whether forming Phi^T D Phi once (one pass over K_nM in the calling thread, n M^2
    multiply-adds, plus whitening when the stored rows are not whitened) costs less than
    `expected_iterations` Hessian products by CG (each one pass with two matrix-vector products per
    block, the first reading a stored block from memory, plus the kernel of the recomputed rows,
    whose blocks rows.n_threads threads share; the stored blocks of a one-vector product shared by
    rows.product_threads threads, SHARED_PASS_SPEEDUP faster): the cost model of the Newton step."""
    n, m, d = rows.points.shape[0], rows.centers.shape[0], rows.points.shape[1]
    recomputed, (from_memory, in_cache) = rows.n_recomputed, GEMV_SECONDS
    kernel = recomputed * m * (KERNEL_ENTRY_SECONDS[0] * d + KERNEL_ENTRY_SECONDS[1])
    gram = kernel + n * m * m * GEMM_SECONDS * (1 if rows.whitened else 2)
    recomputed_products = (kernel + recomputed * m * 2 * in_cache) / rows.n_threads
    shared_pass = SHARED_PASS_SPEEDUP if rows.product_threads > 1 else 1.0
    products = (n - recomputed) * m * (from_memory + in_cache) / shared_pass + recomputed_products
    return rows.explicit_gram or gram < expected_iterations * products


def fixed_fit_memory(n_points: int, n_features: int) -> int:
    """Bytes of a fit that do not depend on the kernel matrix (PER_POINT_VECTORS, POINT_COPIES)."""
    return 8 * n_points * (PER_POINT_VECTORS + POINT_COPIES * n_features)


def kernel_memory_budget(memory_budget: int, n_points: int, n_features: int, n_centers: int) -> int:
    """What remains of `memory_budget` for K_nM (cached, or one row block at a time) once the
    fixed part of the fit is counted; ConfigurationError if not even the smallest row block fits."""
    remaining = memory_budget - fixed_fit_memory(n_points, n_features)
    smallest = MIN_BLOCK_ROWS * n_centers * 8 * WHITENED_BLOCK_COPIES
    if remaining < smallest:
        needed = fixed_fit_memory(n_points, n_features) + smallest
        raise ConfigurationError(
            f"memory_budget = {memory_budget / 2**20:.1f} MiB cannot hold this fit: its per-point vectors for "
            f"n = {n_points} points in {n_features} dimension(s) alone need {fixed_fit_memory(n_points, n_features) / 2**20:.1f} "
            f"MiB; give memory_budget >= {needed} bytes ({needed / 2**20:.1f} MiB).")
    return remaining


def select_centers(n_points: int, n_centers: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `n_centers` Nystrom centres drawn uniformly without replacement from n_points."""
    if not 1 <= n_centers <= n_points:
        raise FitError(f"cannot draw {n_centers} Nystrom centres from {n_points} points.")
    return np.sort(rng.choice(n_points, size=n_centers, replace=False))


def pivoted_centers(candidates: torch.Tensor, sigma: float, tol: float, max_centers: int | None = None) -> np.ndarray:
    """Indices of the candidate points chosen, in order, by a greedy pivoted Cholesky
    factorisation of their kernel matrix K_CC (float64).

    Each step keeps the candidate whose kernel function k(., c) is farthest from the span of those
    already kept (squared RKHS distance = the residual diagonal; the first of equal ones), until every
    residual is below tol * max_c K_cc (= tol: k(c, c) = 1) or max_centers are kept. Dropped
    candidates add nothing that float arithmetic can resolve (their kernel functions lie within
    sqrt(tol) of the span of the kept ones), and the order covers the candidates' span greedily:
    far-away candidates (an isolated event) come early.

    Up to DENSE_PIVOTING_MAX candidates, LAPACK's blocked dpstrf factorises K_CC. Beyond, K_CC is
    never formed and the factor L (r x n_c) is built left-looking in blocks: a block predicts the
    next PIVOT_BLOCK pivots (a small dpstrf on the residual matrix of the PIVOT_LOOKAHEAD candidates
    of largest residual) and computes their residual columns at once (a kernel block and one matrix
    product with the rows already kept); each greedy step then takes the candidate of largest
    residual (from the block, or its own column when the prediction missed it) and updates every
    candidate's residual exactly. The pivots are those of the one-column-at-a-time algorithm, at
    matrix-product speed: about n_c r^2 / 2 multiply-adds and n_c r floats for r kept of n_c
    candidates. Rounding can change the choice between candidates whose residuals differ by
    rounding only, near the tolerance, as it does between LAPACK's and a one-column-at-a-time
    factorisation (on the 5D benchmark both keep sets that differ by a few of about 1,700 centres
    and give fits whose objective J agrees to 1.3e-5 relative)."""
    n_candidates = candidates.shape[0]
    limit = n_candidates if max_centers is None else min(int(max_centers), n_candidates)
    if n_candidates <= DENSE_PIVOTING_MAX:
        return _dense_pivots(gaussian_kernel(candidates, candidates, sigma), tol)[:limit]
    residual = torch.ones(n_candidates, dtype=torch.float64, device=candidates.device)  # k(x, x) = 1
    rows = torch.empty((limit, n_candidates), dtype=torch.float64, device=candidates.device)  # touched as filled
    factors = exponent_rows(candidates, sigma)

    def residual_columns(indices: torch.Tensor, kept: int, threads: int = 1) -> torch.Tensor:
        """Columns of K_CC - L^T L (rows kept so far) at these candidates, (n_c, len(indices)), the
        product on `threads` threads."""
        columns = kernel_from_factors(factors, exponent_columns(candidates[indices], sigma))
        if not kept:
            return columns
        with torch_threads(threads):
            return columns - rows[:kept].T @ rows[:kept, indices]

    threads = torch.get_num_threads()
    with torch_threads(1):  # the steps are small operations, which several threads only slow down
        return _greedy_pivots(candidates, sigma, tol, limit, residual, rows, residual_columns, threads)


def _greedy_pivots(candidates: torch.Tensor, sigma: float, tol: float, limit: int, residual: torch.Tensor,
                   rows: torch.Tensor, residual_columns: Callable[..., torch.Tensor], threads: int) -> np.ndarray:
    """The greedy steps of pivoted_centers, block after block (its docstring); the blocks' matrix
    products on `threads` threads."""
    chosen: list[int] = []
    while len(chosen) < limit:
        block = _next_pivots(candidates, sigma, tol, residual, rows[: len(chosen)])
        if block is None:
            break
        start = len(chosen)
        columns = residual_columns(block, start, threads)
        position = {int(index): column for column, index in enumerate(block.tolist())}
        misses = 0
        while len(chosen) < min(limit, start + PIVOT_BLOCK) and misses <= PIVOT_BLOCK // 4:
            pivot = int(torch.argmax(residual))
            if float(residual[pivot]) <= tol:
                break
            if pivot in position:
                column = columns[:, position[pivot]]
            else:  # the greedy step left the predicted block: this one column alone
                column, misses = residual_columns(torch.tensor([pivot], device=residual.device), start)[:, 0], misses + 1
            row = column - rows[start : len(chosen)].T @ rows[start : len(chosen), pivot]
            rows[len(chosen)] = row / torch.sqrt(residual[pivot])
            residual -= rows[len(chosen)].square()
            residual[pivot] = 0.0
            chosen.append(pivot)
        if len(chosen) == start:
            raise FitError("pivoted Cholesky of the centres' kernel matrix made no progress (non-finite residuals).")
    return np.array(chosen, dtype=np.int64)


def _next_pivots(candidates: torch.Tensor, sigma: float, tol: float, residual: torch.Tensor,
                 rows: torch.Tensor) -> torch.Tensor | None:
    """The candidates the greedy steps are expected to take next, in order (None when every
    residual is at most tol): among the PIVOT_LOOKAHEAD candidates of largest residual, the first
    PIVOT_BLOCK that a pivoted Cholesky of their own residual kernel matrix (K - L^T L on them,
    LAPACK's dpstrf) takes. They are the next greedy pivots as long as no other candidate overtakes
    them, which pivoted_centers checks step by step."""
    top = torch.sort(residual, descending=True, stable=True).indices[:PIVOT_LOOKAHEAD]
    if float(residual[top[0]]) <= tol:
        return None
    points = candidates[top]
    gram = gaussian_kernel(points, points, sigma)
    if len(rows):
        gram -= rows[:, top].T @ rows[:, top]
    return top[torch.as_tensor(_dense_pivots(gram, tol)[:PIVOT_BLOCK], device=top.device)]


def _dense_pivots(matrix: torch.Tensor, tol: float) -> np.ndarray:
    """The pivots, in order, of LAPACK's pivoted Cholesky (dpstrf) of a symmetric positive
    semi-definite matrix, until every residual diagonal is at most tol (at least one pivot). A small
    matrix is factorised on one BLAS thread (several threads make it 15x slower at 256 x 256)."""
    limits = _blas_controller().limit(limits=1, user_api="blas") if len(matrix) <= SMALL_DENSE_PIVOTING else None
    try:
        _, pivots, rank, info = lapack.dpstrf(matrix.cpu().numpy(), tol=max(tol, np.finfo(np.float64).tiny), lower=0)
    finally:
        if limits is not None:
            limits.restore_original_limits()
    if info < 0:
        raise FitError(f"pivoted Cholesky of the centres' kernel matrix failed (LAPACK dpstrf info = {info}).")
    return pivots[: max(1, rank)] - 1


@functools.cache
def _blas_controller() -> threadpoolctl.ThreadpoolController:
    """The BLAS libraries of this process (found once)."""
    return threadpoolctl.ThreadpoolController()


class NystromKernelRows:
    """The n x M kernel matrix K_nM = k(x_i, c_m) (float64 points and centres), cached when it fits
    `memory_budget` bytes in `storage_dtype`. Otherwise ("blocked") the first rows that the budget
    leaves room for are stored in float64 and the others recomputed in float64 block by block on
    every product, the blocks shared among `n_threads` CPU threads (kernels.run_in_threads), each
    with one reused buffer; stored rows and buffers (with the copies a block needs) stay within
    `memory_budget`, and a product's cost falls smoothly as the budget grows (n_recomputed rows
    are recomputed). The cached rows are computed by the same threads.

    A float32 cache stores the whitened features Phi = K_nM T^-1 (T from `factor`, computed
    blockwise in float64) instead of K_nM: rounding K_nM to float32 and then applying T^-1 would
    amplify the rounding by the conditioning of T, while Phi's rows have norm at most about 1, so
    float32 costs only its own precision. A float64 cache stores Phi too when there are at most
    EXPLICIT_GRAM_MAX_CENTERS centres (the whitening then costs little, and the solver forms
    Phi^T D Phi from it directly). `whitened` says which one the products use, `explicit_gram`
    whether the solver forms the Hessian's Gram matrix (at most EXPLICIT_GRAM_MAX_CENTERS centres).
    Products take and return float64 tensors and are accumulated in float64 across row blocks of
    about BLOCK_BYTES (smaller when the budget is; on a GPU, recomputed blocks as large as the budget
    allows): a recomputed block then stays in the CPU caches from its computation through both
    products with it, where a block of many MiB would go through memory at every step. The Hessian
    product is one pass over the blocks."""

    BLOCK_BYTES = 4 * 1024**2

    def __init__(self, points: torch.Tensor, centers: torch.Tensor, sigma: float, memory_budget: int,
                 storage_dtype: torch.dtype = torch.float64, factor: NystromFactor | None = None,
                 cached_tail: torch.Tensor | None = None):
        """memory_budget: bytes for K_nM (a fit's other memory is counted by kernel_memory_budget).
        cached_tail: the stored rows (K_nM, or Phi when whitened) of the last len(cached_tail)
        points, computed earlier with the same centres, sigma, dtype and factor (a reference sample
        reused across toys); when the matrix is cached, only the other rows are computed (when it
        is recomputed block by block, the tail is not needed and is ignored)."""
        self.points = points
        self.centers = centers
        self.sigma = sigma
        n_rows, n_cols = points.shape[0], centers.shape[0]
        self.explicit_gram = n_cols <= EXPLICIT_GRAM_MAX_CENTERS
        bytes_per_row = n_cols * torch.empty((), dtype=storage_dtype).element_size()
        self.n_threads = self.product_threads = block_threads(points.device)
        self.cached = n_rows * bytes_per_row + 2 * self.BLOCK_BYTES <= memory_budget
        if self.cached:  # building the cache holds up to 2 blocks per thread (a block and its whitened copy)
            spare_blocks = (memory_budget - n_rows * bytes_per_row) // (2 * self.BLOCK_BYTES)
            self.n_threads = int(max(1, min(self.n_threads, spare_blocks)))
        if self.cached and storage_dtype != torch.float64 and factor is None:
            raise FitError("a float32 kernel cache needs the Nystrom factor T to store whitened features.")
        self.whitened = self.cached and factor is not None and (
            storage_dtype != torch.float64 or self.explicit_gram)
        if not self.cached:
            cached_tail = None
        if cached_tail is not None and not (cached_tail.dtype == storage_dtype and cached_tail.shape[1] == n_cols
                                            and len(cached_tail) <= n_rows):
            raise FitError("cached kernel rows do not match this kernel matrix (size or dtype).")
        self.dtype = storage_dtype if self.cached else torch.float64
        self._parts: list[torch.Tensor] = []
        self._stored = torch.empty((0, n_cols), dtype=torch.float64, device=points.device)
        self._buffers: list[torch.Tensor] = []
        self._exponent_columns = exponent_columns(centers, sigma)
        if self.cached:
            self.block_rows = self.cache_block_rows(n_cols)  # a float64 kernel block
            n_computed = n_rows - (0 if cached_tail is None else len(cached_tail))
            computed = torch.empty((n_computed, n_cols), dtype=storage_dtype, device=points.device)
            self._compute_rows(computed, factor if self.whitened else None)
            self._parts = [part for part in (computed, cached_tail) if part is not None and len(part)]
        else:
            # one buffer per thread, and the Newton step may form the Gram matrix (prefers_explicit_gram), whose
            # whitened and weighted copies of a block add WHITENED_BLOCK_COPIES - 1 blocks; fewer threads when the
            # budget cannot hold a smallest block for each (kernel_memory_budget guarantees one)
            extra_copies = WHITENED_BLOCK_COPIES - 1
            self.n_threads = int(max(1, min(self.n_threads, memory_budget // (MIN_BLOCK_ROWS * n_cols * 8) - extra_copies)))
            copies = self.n_threads + extra_copies
            self.block_rows = int(min(n_rows, max(MIN_BLOCK_ROWS, memory_budget // (n_cols * 8 * copies))))
            if points.device.type == "cpu":
                self.block_rows = min(self.block_rows, self.cache_block_rows(n_cols))
            spare = memory_budget - copies * self.block_rows * n_cols * 8
            n_stored = int(min(n_rows, max(0, spare) // (n_cols * 8)))
            self._buffers = [torch.empty((self.block_rows, n_cols), dtype=torch.float64, device=points.device)
                             for _ in range(self.n_threads)]
            self._stored = torch.empty((n_stored, n_cols), dtype=torch.float64, device=points.device)
            self._compute_rows(self._stored)

    @classmethod
    def cache_block_rows(cls, n_cols: int) -> int:
        """Rows of a float64 kernel block of about BLOCK_BYTES (at least MIN_BLOCK_ROWS) for n_cols
        centres: what stays in the CPU caches from its computation through its products."""
        return max(MIN_BLOCK_ROWS, cls.BLOCK_BYTES // (n_cols * 8))

    @property
    def n_rows(self) -> int:
        return self.points.shape[0]

    @property
    def n_recomputed(self) -> int:
        """Rows recomputed on every product (0 when cached)."""
        return 0 if self.cached else self.n_rows - len(self._stored)

    def stored_rows(self) -> torch.Tensor | None:
        """The cached rows (K_nM, or Phi when whitened), to be passed as cached_tail later; None
        when K_nM is recomputed block by block."""
        if not self._parts:
            return None
        return self._parts[0] if len(self._parts) == 1 else torch.cat(self._parts)

    def _compute_rows(self, target: torch.Tensor, factor: NystromFactor | None = None):
        """Writes the kernel rows of the first len(target) points (whitened with `factor` when given)
        into `target`, block by block, the blocks shared among the threads."""
        def compute(_, share: range) -> None:
            for start in share:
                rows = slice(start, min(start + self.block_rows, len(target)))
                if factor is None:
                    self._kernel_block(rows, out=target[rows])
                else:
                    target[rows] = factor.whiten(self._kernel_block(rows))

        self._share_blocks(range(0, len(target), self.block_rows), compute)

    def _share_blocks(self, starts: range, work: Callable[[int, range], Any], threads: bool = True,
                      n_threads: int | None = None) -> list[Any]:
        """work(job, starts[job::n_jobs]) for each of n_jobs = min(n_threads (self.n_threads when
        None), len(starts)) jobs, run at once on the block threads (block j on job j mod n_jobs; one
        job when threads is False), and their results in job order."""
        n_jobs = min((self.n_threads if n_threads is None else n_threads) if threads else 1, len(starts))
        return run_in_threads([partial(work, job, starts[job::n_jobs]) for job in range(n_jobs)])

    def _kernel_block(self, rows: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        return kernel_from_factors(exponent_rows(self.points[rows], self.sigma), self._exponent_columns, out=out)

    def _stored_blocks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        offset = 0
        for part in self._parts or [self._stored]:
            for start in range(0, len(part), self.block_rows):
                block = part[start : start + self.block_rows]
                yield slice(offset + start, offset + start + len(block)), block
            offset += len(part)

    def _each_block(self, work: Callable[[slice, torch.Tensor, torch.Tensor | None], None],
                    shape: tuple[int, ...] | None = None, threads: bool = True,
                    share_stored: bool = False) -> torch.Tensor | None:
        """Calls work(rows, block, accumulator) on every row block of K_nM (the stored rows in the
        calling thread, or shared among product_threads single-threaded threads when share_stored;
        the recomputed rows computed into each thread's buffer, block j on thread j mod n_threads,
        unless threads is False) and returns the sum of the float64 accumulators of the given shape,
        added in a fixed order (the same bits whatever the threads' timing); None without a shape.

        Share the stored blocks for matrix-vector work: one BLAS call on a block is memory-bound and
        one thread cannot draw the memory bandwidth that two reach (1.7x per pass over a 2.3 GB
        K_nM on 2 cores); matrix-matrix work is faster in the calling thread, whose BLAS calls
        use every thread."""
        def zeros() -> torch.Tensor | None:
            return None if shape is None else torch.zeros(shape, dtype=torch.float64, device=self.points.device)

        total = zeros()
        stored = list(self._stored_blocks())

        def each_stored(_, share: range) -> torch.Tensor | None:
            accumulator = total if len(share) == len(stored) else zeros()
            for index in share:
                work(*stored[index], accumulator)
            return accumulator

        for accumulator in self._share_blocks(range(len(stored)), each_stored, threads and share_stored,
                                              self.product_threads):
            if total is not None and accumulator is not total:
                total += accumulator

        def recompute(job: int, share: range) -> torch.Tensor | None:
            accumulator = zeros()
            for start in share:
                rows = slice(start, min(start + self.block_rows, self.n_rows))
                block = self._kernel_block(rows, out=self._buffers[job][: rows.stop - start])
                work(rows, block, accumulator)
            return accumulator

        recomputed = range(self.n_rows - self.n_recomputed, self.n_rows, self.block_rows)
        for accumulator in self._share_blocks(recomputed, recompute, threads):
            if total is not None:
                total += accumulator
        return total

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """K_nM v for v of shape (M,) or (M, k), as float64 (n,) or (n, k)."""
        if vector.ndim == 2 and vector.shape[1] == 1:
            return self.matvec(vector[:, 0])[:, None]
        v = vector.to(self.dtype)
        if self.cached and (v.ndim == 2 or self.product_threads == 1):
            return torch.cat([part @ v for part in self._parts]).to(torch.float64)
        out = torch.empty((self.n_rows, *vector.shape[1:]), dtype=torch.float64, device=vector.device)

        def image(rows: slice, block: torch.Tensor, _) -> None:
            out[rows] = block @ v

        self._each_block(image, share_stored=v.ndim == 1)
        return out

    def rmatvec(self, values: torch.Tensor) -> torch.Tensor:
        """K_nM^T u for u of shape (n,) or (n, k), as float64 (M,) or (M, k).

        With k columns it is computed as (u^T K_nM)^T: one streaming pass over K_nM, where
        K_nM^T @ u is several times slower on CPU BLAS."""
        n_cols = self.centers.shape[0]
        if values.ndim == 2 and values.shape[1] == 1:
            return self.rmatvec(values[:, 0])[:, None]
        if values.ndim == 1:
            u = values.to(self.dtype)

            def project(rows: slice, block: torch.Tensor, out: torch.Tensor) -> None:
                out += block.T @ u[rows]

            return self._each_block(project, (n_cols,), share_stored=True)
        u_t = values.T.to(self.dtype).contiguous()

        def project_columns(rows: slice, block: torch.Tensor, out_t: torch.Tensor) -> None:
            out_t += u_t[:, rows] @ block

        return self._each_block(project_columns, (values.shape[1], n_cols)).T

    def whitened_weighted_gram(self, weights: torch.Tensor, factor: NystromFactor) -> torch.Tensor:
        """Phi^T diag(weights) Phi with Phi = K_nM T^-1 (the stored rows when whitened), one pass
        over row blocks in the calling thread (matrix products, which torch's threads share), as
        float64 (M, M). Formed in whitened coordinates, where Phi's rows have norm at most about 1:
        K_nM^T D K_nM itself would carry the conditioning of K_MM."""
        def add_block(rows: slice, block: torch.Tensor, out: torch.Tensor) -> None:
            features = block.to(torch.float64)
            if not self.whitened:
                features = factor.whiten(features)
            out += (features * weights[rows, None]).T @ features

        return self._each_block(add_block, (self.centers.shape[0],) * 2, threads=False)

    def weighted_gram_matvec(self, weights: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """K_nM^T diag(weights) K_nM v, one pass over row blocks, as float64 (M,); for several
        vectors at once, v (M, k) with one column of weights each (n, k), as (M, k): one pass for
        all (matrix products where one vector would be memory-bound), accumulated as
        (u^T K_nM)^T like rmatvec's."""
        if vector.ndim == 2 and vector.shape[1] == 1:
            return self.weighted_gram_matvec(weights[:, 0], vector[:, 0])[:, None]
        v = vector.to(self.dtype)
        w = weights.to(self.dtype)
        if v.ndim == 1:
            def add_block(rows: slice, block: torch.Tensor, out: torch.Tensor) -> None:
                out += block.T @ (w[rows] * (block @ v))

            return self._each_block(add_block, (self.centers.shape[0],), share_stored=True)

        def add_block_columns(rows: slice, block: torch.Tensor, out_t: torch.Tensor) -> None:
            out_t += (w[rows] * (block @ v)).T @ block

        return self._each_block(add_block_columns, (vector.shape[1], self.centers.shape[0])).T


#: Rows of a kernel block on a GPU when K(x, C) of points that are not stored is streamed
#: (kernel_products); on a CPU a block is about NystromKernelRows.BLOCK_BYTES, so that it stays in the
#: caches from its exponent through its product (4x faster than 8192 rows at M = 2857).
GPU_STREAM_BLOCK_ROWS = 8192


def stream_block_rows(n_centers: int, device: torch.device) -> int:
    """Rows per block of kernel_products for M = n_centers centres on this device."""
    if device.type != "cpu":
        return GPU_STREAM_BLOCK_ROWS
    return NystromKernelRows.cache_block_rows(n_centers)


def kernel_products(points: torch.Tensor, centers: torch.Tensor, sigma: float,
                    coefficients: torch.Tensor | None = None) -> torch.Tensor:
    """K(x, C) @ coefficients, (n,) or (n, k) for coefficients (M,) or (M, k), or the column sums
    sum_i k(x_i, c) (M,) without them: the kernel computed block by block (stream_block_rows) and
    never stored, in float64. For points that enter a fit only through such products (the NPLM loss
    is linear in f on data events) and for predictions."""
    columns = exponent_columns(centers, sigma)
    step = stream_block_rows(centers.shape[0], points.device)
    if coefficients is None:
        total = torch.zeros(centers.shape[0], dtype=torch.float64, device=points.device)
        for start in range(0, points.shape[0], step):
            total += kernel_from_factors(exponent_rows(points[start : start + step], sigma), columns).sum(dim=0)
        return total
    values = torch.empty((points.shape[0], *coefficients.shape[1:]), dtype=torch.float64, device=points.device)
    for start in range(0, points.shape[0], step):
        block = kernel_from_factors(exponent_rows(points[start : start + step], sigma), columns)
        values[start : start + len(block)] = block @ coefficients
    return values

def stable_cholesky(matrix: torch.Tensor, stage: str, max_attempts: int = 12) -> torch.Tensor:
    """Upper Cholesky factor U (U^T U = matrix + jitter I) in float64, escalating jitter by 10x
    from 1e-14 * mean(diag) until the factorisation succeeds; FitError names `stage` if it never does."""
    matrix = matrix.to(torch.float64)
    scale = float(matrix.diagonal().abs().mean())
    if not np.isfinite(scale):
        raise FitError(f"{stage}: matrix has non-finite entries, cannot factorise.")
    jitter, shifted = 0.0, matrix
    for _ in range(max_attempts):
        factor, info = torch.linalg.cholesky_ex(shifted)
        if int(info) == 0:
            return factor.mT
        jitter = max(10.0 * jitter, 1e-14 * max(scale, 1e-300))
        shifted = matrix.clone()  # the jitter on a copy: the caller's matrix stays as it is
        shifted.diagonal().add_(jitter)
    raise FitError(f"{stage}: Cholesky factorisation failed even with jitter {jitter / 10.0:.3g}.")


class NystromFactor:
    """T upper-triangular with T^T T = K_MM (float64). The solver works in whitened coordinates
    gamma = T alpha, where the penalty alpha^T K_MM alpha = |gamma|^2 is an exact sum of squares.
    Falkon adds a jitter eps M I to make K_MM factorisable; after pruning redundant centres
    (pivoted_centers) K_MM is positive definite to float64 resolution, so no jitter is added
    (stable_cholesky's escalating jitter remains the fallback) and the solver minimises exactly
    the documented J."""

    def __init__(self, kmm: torch.Tensor):
        self.upper = stable_cholesky(kmm, "Nystrom factor T = chol(K_MM)")

    def to_alpha(self, gamma: torch.Tensor) -> torch.Tensor:
        """alpha = T^-1 gamma, for gamma of shape (M,) or (M, k)."""
        if gamma.ndim == 2:
            return torch.linalg.solve_triangular(self.upper, gamma, upper=True)
        return torch.linalg.solve_triangular(self.upper, gamma[:, None], upper=True)[:, 0]

    def whiten(self, block: torch.Tensor) -> torch.Tensor:
        """Phi = K T^-1 for kernel rows K (n, M): the whitened features, rows of norm at most about 1."""
        return torch.linalg.solve_triangular(self.upper, block, upper=True, left=False)

    def transpose_solve(self, vector: torch.Tensor) -> torch.Tensor:
        """T^-T v (maps a gradient in alpha to one in gamma), for v of shape (M,) or (M, k)."""
        if vector.ndim == 2:
            return torch.linalg.solve_triangular(self.upper.mT, vector, upper=False)
        return torch.linalg.solve_triangular(self.upper.mT, vector[:, None], upper=False)[:, 0]
