"""Falkon-style Nystrom solver for kernel models trained on a per-point convex loss (the solver
only, no physics).

Minimises over alpha in R^M

    J(alpha) = (1/n) sum_i l_i(f_i + o_i) + (lambda/2) alpha^T K_MM alpha,   f = K_nM alpha,

for fixed offsets o_i and a smooth convex per-point loss given by a PointLoss: its value, first
derivatives l'_i and second derivatives l''_i >= 0. Two are provided: LogisticLoss (weighted
binary cross-entropy on logits, l = a (softplus(z) - y z)) and ExtendedLikelihoodLoss (the NPLM
loss, l = w (e^z - 1) on reference points and -z on data points). Newton steps run over a
decreasing penalty list (one step per intermediate penalty, then steps at the final penalty until
the Newton decrement is below tolerance). Each Newton system H d = g, with

    n g = K_nM^T l' + lambda n K_MM alpha,    n H = K_nM^T diag(l'') K_nM + lambda n K_MM,

is solved by conjugate gradient with Falkon's preconditioner B = T^-1 A^-1 / sqrt(n),
T = chol(K_MM), A = chol(T D_M T^T / M + lambda I), and the step is taken with a backtracking
(Armijo) line search, so J never increases from its value at alpha = 0. Centres whose kernel
functions are numerically dependent are dropped first (pivoted Cholesky, pivoted_centers),
which makes K_MM positive definite to float64 resolution (Falkon's eps M I jitter is then only a
fallback), and the iteration runs in Falkon's whitened coordinates gamma = T alpha, in which the
penalty is |gamma|^2: J stays a sum of terms computed without cancellation even for wide Gaussian
kernels. D_M are the loss curvatures at the centres; here they are kernel-smoothed
(Nadaraya-Watson) from all points, which also works for centres that are not training points and
is far less noisy than the curvature of the one point at each centre.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as functional
from scipy.linalg import lapack

from .exceptions import ConfigurationError, FitError
from .kernel import gaussian_kernel

#: Rows per kernel block are at least this many, whatever the memory budget.
MIN_BLOCK_ROWS = 64
#: Loosest CG tolerance of an early Newton step (inexact Newton forcing term, Eisenstat-Walker).
MAX_FORCING = 1e-2
#: Up to this many kept centres the Hessian's Gram matrix Phi^T D Phi is formed once per Newton step
#: (n M^2 flops at GEMM speed) instead of two passes over K_nM per CG iteration.
EXPLICIT_GRAM_MAX_CENTERS = 128
#: Up to this many centres, pivoted_centers prunes them by factorising their full kernel matrix (LAPACK).
DENSE_PIVOTING_MAX = 4096
#: Float64 vectors of one value per training point that a fit holds at its peak (the solver's
#: f, its step and trial, curvatures, labels, weights, offsets and the loss's temporaries), and the
#: copies of the (n, d) points (concatenated and standardised): the part of a fit's memory that
#: does not depend on the kernel. Measured with benchmarks/memory_budget.py.
PER_POINT_VECTORS = 18
POINT_COPIES = 2
#: Kernel-block copies alive at once in the blocked path when the rows are whitened for the
#: explicit Gram matrix (the block, its whitened copy and the weighted copy); 1 otherwise.
WHITENED_BLOCK_COPIES = 3
#: Armijo sufficient-decrease constant and the number of step halvings tried by the line search.
ARMIJO_SLOPE = 1e-4
MAX_STEP_HALVINGS = 30


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
    already kept (squared RKHS distance = the residual diagonal), until every residual is below
    tol * max_c K_cc or max_centers are kept. Dropped candidates add nothing that float arithmetic
    can resolve (their kernel functions lie within sqrt(tol) of the span of the kept ones), and the
    order covers the candidates' span greedily: far-away candidates (an isolated event) come early.
    Pruning a set of at most DENSE_PIVOTING_MAX centres (no max_centers) uses LAPACK's blocked
    dpstrf on K_CC; otherwise K_CC is never formed and one kernel column is computed per kept centre
    (time n_c r^2 and memory n_c r for r kept, far below n_c^2 when r is small).
    """
    n_candidates = candidates.shape[0]
    limit = n_candidates if max_centers is None else min(int(max_centers), n_candidates)
    if max_centers is None and n_candidates <= DENSE_PIVOTING_MAX:
        matrix = gaussian_kernel(candidates, candidates, sigma).cpu().numpy()
        threshold = max(tol * float(np.max(np.diag(matrix))), np.finfo(np.float64).tiny)
        _, pivots, rank, info = lapack.dpstrf(matrix, tol=threshold, lower=0)
        if info < 0:
            raise FitError(f"pivoted Cholesky of the centres' kernel matrix failed (LAPACK dpstrf info = {info}).")
        return pivots[: min(rank, limit)] - 1
    residual = torch.ones(n_candidates, dtype=torch.float64, device=candidates.device)  # k(x, x) = 1
    columns = torch.empty((limit, n_candidates), dtype=torch.float64, device=candidates.device)
    chosen: list[int] = []
    for step in range(limit):
        pivot = int(torch.argmax(residual))
        if float(residual[pivot]) <= tol:
            break
        column = gaussian_kernel(candidates, candidates[pivot : pivot + 1], sigma)[:, 0]
        column -= columns[:step].T @ columns[:step, pivot]
        columns[step] = column / torch.sqrt(residual[pivot])
        residual -= columns[step].square()
        residual[pivot] = 0.0
        chosen.append(pivot)
    return np.array(chosen, dtype=np.int64)


class NystromKernelRows:
    """The n x M kernel matrix K_nM = k(x_i, c_m) (float64 points and centres), cached when it fits
    `memory_budget` bytes in `storage_dtype`, otherwise recomputed in float64 block by block on
    every product, into one reused buffer whose size (with the copies a block needs) stays within
    `memory_budget`.

    A float32 cache stores the whitened features Phi = K_nM T^-1 (T from `factor`, computed
    blockwise in float64) instead of K_nM: rounding K_nM to float32 and then applying T^-1 would
    amplify the rounding by the conditioning of T, while Phi's rows have norm at most about 1, so
    float32 costs only its own precision. A float64 cache stores Phi too when there are at most
    EXPLICIT_GRAM_MAX_CENTERS centres (the whitening then costs little, and the solver forms
    Phi^T D Phi from it directly). `whitened` says which one the products use. Products
    take and return float64 tensors and are accumulated in float64 across row blocks of about
    CACHED_BLOCK_BYTES; the Hessian product is one pass over the blocks."""

    CACHED_BLOCK_BYTES = 4 * 1024**2

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
        bytes_per_row = n_cols * torch.empty((), dtype=storage_dtype).element_size()
        self.cached = n_rows * bytes_per_row + 2 * self.CACHED_BLOCK_BYTES <= memory_budget
        if self.cached and storage_dtype != torch.float64 and factor is None:
            raise FitError("a float32 kernel cache needs the Nystrom factor T to store whitened features.")
        self.whitened = self.cached and factor is not None and (
            storage_dtype != torch.float64 or n_cols <= EXPLICIT_GRAM_MAX_CENTERS)
        if not self.cached:
            cached_tail = None
        if cached_tail is not None and not (cached_tail.dtype == storage_dtype and cached_tail.shape[1] == n_cols
                                            and len(cached_tail) <= n_rows):
            raise FitError("cached kernel rows do not match this kernel matrix (size or dtype).")
        self.dtype = storage_dtype if self.cached else torch.float64
        self._parts: list[torch.Tensor] = []
        if self.cached:
            self.block_rows = max(MIN_BLOCK_ROWS, self.CACHED_BLOCK_BYTES // bytes_per_row)
            n_computed = n_rows - (0 if cached_tail is None else len(cached_tail))
            computed = torch.empty((n_computed, n_cols), dtype=storage_dtype, device=points.device)
            for start in range(0, n_computed, self.block_rows):
                rows = slice(start, min(start + self.block_rows, n_computed))
                block = gaussian_kernel(points[rows], centers, sigma)
                if self.whitened:
                    block = torch.linalg.solve_triangular(factor.upper, block, upper=True, left=False)
                computed[rows] = block
            self._parts = [computed] if cached_tail is None else [computed, cached_tail]
        else:
            copies = WHITENED_BLOCK_COPIES if n_cols <= EXPLICIT_GRAM_MAX_CENTERS else 1
            self.block_rows = int(min(n_rows, max(MIN_BLOCK_ROWS, memory_budget // (n_cols * 8 * copies))))

    @property
    def n_rows(self) -> int:
        return self.points.shape[0]

    def stored_rows(self) -> torch.Tensor | None:
        """The cached rows (K_nM, or Phi when whitened), to be passed as cached_tail later; None
        when K_nM is recomputed block by block."""
        if not self._parts:
            return None
        return self._parts[0] if len(self._parts) == 1 else torch.cat(self._parts)

    def _blocks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        if self.cached:
            offset = 0
            for part in self._parts:
                for start in range(0, len(part), self.block_rows):
                    block = part[start : start + self.block_rows]
                    yield slice(offset + start, offset + start + len(block)), block
                offset += len(part)
            return
        buffer = torch.empty((self.block_rows, self.centers.shape[0]), dtype=torch.float64, device=self.points.device)
        for start in range(0, self.n_rows, self.block_rows):
            rows = slice(start, min(start + self.block_rows, self.n_rows))
            yield rows, gaussian_kernel(self.points[rows], self.centers, self.sigma, out=buffer[: rows.stop - start])

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """K_nM v for v of shape (M,), as float64 (n,)."""
        v = vector.to(self.dtype)
        if self.cached:
            return torch.cat([part @ v for part in self._parts]).to(torch.float64)
        out = torch.empty(self.n_rows, dtype=torch.float64, device=vector.device)
        for rows, block in self._blocks():
            out[rows] = block @ v
        return out

    def rmatvec(self, values: torch.Tensor) -> torch.Tensor:
        """K_nM^T u for u of shape (n,) or (n, k), as float64 (M,) or (M, k).

        With k columns it is computed as (u^T K_nM)^T: one streaming pass over K_nM, where
        K_nM^T @ u is several times slower on CPU BLAS."""
        out = torch.zeros((self.centers.shape[0],) + values.shape[1:], dtype=torch.float64, device=values.device)
        u = values.to(self.dtype)
        for rows, block in self._blocks():
            out += block.T @ u[rows] if u.ndim == 1 else (u[rows].T @ block).T
        return out

    def whitened_weighted_gram(self, weights: torch.Tensor, factor: NystromFactor) -> torch.Tensor:
        """Phi^T diag(weights) Phi with Phi = K_nM T^-1 (the stored rows when whitened), one pass
        over row blocks, as float64 (M, M). Formed in whitened coordinates, where Phi's rows have
        norm at most about 1: K_nM^T D K_nM itself would carry the conditioning of K_MM."""
        out = torch.zeros((self.centers.shape[0],) * 2, dtype=torch.float64, device=weights.device)
        for rows, block in self._blocks():
            features = block.to(torch.float64)
            if not self.whitened:
                features = torch.linalg.solve_triangular(factor.upper, features, upper=True, left=False)
            out += (features * weights[rows, None]).T @ features
        return out

    def weighted_gram_matvec(self, weights: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """K_nM^T diag(weights) K_nM v, one pass over row blocks, as float64 (M,)."""
        out = torch.zeros(self.centers.shape[0], dtype=torch.float64, device=vector.device)
        v = vector.to(self.dtype)
        w = weights.to(self.dtype)
        for rows, block in self._blocks():
            out += block.T @ (w[rows] * (block @ v))
        return out


def stable_cholesky(matrix: torch.Tensor, stage: str, max_attempts: int = 12) -> torch.Tensor:
    """Upper Cholesky factor U (U^T U = matrix + jitter I) in float64, escalating jitter by 10x
    from 1e-14 * mean(diag) until the factorisation succeeds; FitError names `stage` if it never does."""
    matrix = matrix.to(torch.float64)
    identity = torch.eye(matrix.shape[0], dtype=torch.float64, device=matrix.device)
    scale = float(matrix.diagonal().abs().mean())
    if not np.isfinite(scale):
        raise FitError(f"{stage}: matrix has non-finite entries, cannot factorise.")
    jitter = 0.0
    for _ in range(max_attempts):
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * identity)
        if int(info) == 0:
            return factor.mT
        jitter = max(10.0 * jitter, 1e-14 * max(scale, 1e-300))
    raise FitError(f"{stage}: Cholesky factorisation failed even with jitter {jitter:.3g}.")


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
        """alpha = T^-1 gamma."""
        return torch.linalg.solve_triangular(self.upper, gamma[:, None], upper=True)[:, 0]

    def transpose_solve(self, vector: torch.Tensor) -> torch.Tensor:
        """T^-T v (maps a gradient in alpha to one in gamma)."""
        return torch.linalg.solve_triangular(self.upper.mT, vector[:, None], upper=False)[:, 0]


class FalkonPreconditioner:
    """Falkon's preconditioner in the whitened coordinates: with A^T A = T diag(d) T^T / M + lambda I,
    n A^T A approximates the Hessian n H_gamma = T^-T K_nM^T D K_nM T^-1 + lambda n I (using
    K_nM^T D K_nM ~ (n/M) K_MM D_M K_MM), so B = A^-1 / sqrt(n) makes B^T (n H_gamma) B close to the
    identity (in alpha: Falkon's T^-1 A^-1 / sqrt(n); Rudi et al. 2017, Meanti et al. 2020)."""

    def __init__(self, factor: NystromFactor, center_curvature: torch.Tensor, penalty: float, n_points: int):
        upper = factor.upper
        n_centers = upper.shape[0]
        inner = (upper * center_curvature) @ upper.T / n_centers
        inner += penalty * torch.eye(n_centers, dtype=torch.float64, device=inner.device)
        self.inner_factor = stable_cholesky(inner, "preconditioner factor A")
        self.scale = 1.0 / np.sqrt(n_points)

    def apply(self, vector: torch.Tensor) -> torch.Tensor:
        """B v = A^-1 v / sqrt(n)."""
        return torch.linalg.solve_triangular(self.inner_factor, vector[:, None], upper=True)[:, 0] * self.scale

    def apply_transpose(self, vector: torch.Tensor) -> torch.Tensor:
        """B^T v = A^-T v / sqrt(n)."""
        return torch.linalg.solve_triangular(self.inner_factor.mT, vector[:, None], upper=False)[:, 0] * self.scale


def conjugate_gradient(apply_operator, rhs: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
    """Solve S x = rhs for symmetric positive (semi-)definite S by CG from x = 0.

    Stops when |r| <= tol |rhs| or after max_iter iterations; returns (x, iterations)."""
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    residual_sq = residual @ residual
    target = tol * torch.sqrt(residual_sq)
    for iteration in range(1, max_iter + 1):
        image = apply_operator(direction)
        curvature = direction @ image
        if not torch.isfinite(curvature):
            raise FitError("conjugate gradient: non-finite Hessian product.")
        if curvature <= 0:
            return solution, iteration - 1
        step = residual_sq / curvature
        solution += step * direction
        residual -= step * image
        new_residual_sq = residual @ residual
        if torch.sqrt(new_residual_sq) <= target:
            return solution, iteration
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return solution, max_iter


#: Why the Newton iteration stopped (SolverDiagnostics.stop_reason).
STOP_REASONS = {
    "converged": "the Newton decrement fell below newton_tol * |J|",
    "max_newton_steps": "max_newton_steps Newton steps were taken at the final penalty",
    "cg_budget": "the fit used its max_total_cg_iter conjugate-gradient iterations",
    "no_descent": "the line search found no step that lowers J (J is at its floating-point floor)",
}


@dataclass(frozen=True)
class SolverDiagnostics:
    """What the solver did: Newton steps taken, CG iterations per step, the final objective J and
    gradient norm |dJ/dgamma| (whitened coordinates gamma = T alpha), whether the final Newton
    decrement met tolerance, why the iteration stopped (a key of STOP_REASONS), whether K_nM was
    cached, and the wall time in seconds."""

    newton_steps: int
    cg_iterations: tuple[int, ...]
    objective: float
    gradient_norm: float
    converged: bool
    kernel_cached: bool
    fit_time: float
    stop_reason: str = "converged"


@dataclass(frozen=True)
class Solution:
    """alpha (M,) and the fitted f = K_nM alpha on the training points (n,), float64 tensors."""

    alpha: torch.Tensor
    fitted: torch.Tensor
    diagnostics: SolverDiagnostics


class PointLoss(Protocol):
    """A smooth convex loss summed over training points, as a function of z = f + o (float64)."""

    def total(self, logits: torch.Tensor) -> torch.Tensor:
        """sum_i l_i(z_i) (+inf where it overflows)."""

    def slope_and_curvature(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(l'_i(z_i), l''_i(z_i)), each (n,)."""


class LogisticLoss:
    """l_i = a_i (softplus(z_i) - y_i z_i): weighted binary cross-entropy on logits, labels y in
    {0, 1}, weights a > 0 (bounded slope, so f may grow linearly where only one class is)."""

    def __init__(self, labels: torch.Tensor, weights: torch.Tensor):
        self.labels = labels
        self.weights = weights

    def total(self, logits: torch.Tensor) -> torch.Tensor:
        return (self.weights * (functional.softplus(logits) - self.labels * logits)).sum()

    def slope_and_curvature(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probability = torch.sigmoid(logits)
        return self.weights * (probability - self.labels), self.weights * probability * (1.0 - probability)


class ExtendedLikelihoodLoss:
    """The NPLM loss on points ordered data first: l_i = -z_i on the n_data data points and
    l_i = w_i (e^z_i - 1) on the reference points (weights w > 0). Its curvature is w e^z on the
    reference and 0 on the data; sum_i l_i(f_i) at f = 0 is the loss of the reference model."""

    def __init__(self, n_data: int, reference_weights: torch.Tensor):
        self.n_data = n_data
        self.reference_weights = reference_weights

    def total(self, logits: torch.Tensor) -> torch.Tensor:
        return (self.reference_weights * torch.expm1(logits[self.n_data :])).sum() - logits[: self.n_data].sum()

    def slope_and_curvature(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled_exp = self.reference_weights * torch.exp(logits[self.n_data :])
        data = torch.zeros(self.n_data, dtype=logits.dtype, device=logits.device)
        return torch.cat([data - 1.0, scaled_exp]), torch.cat([data, scaled_exp])


class _Problem:
    """The objective J and its derivatives in whitened coordinates gamma = T alpha, for a fixed
    per-point loss and offsets: J = (1/n) sum_i l_i(f_i + o_i) + (lambda/2) |gamma|^2."""

    def __init__(self, kernel_rows: NystromKernelRows, factor: NystromFactor, loss: PointLoss, offsets: torch.Tensor):
        self.kernel_rows = kernel_rows
        self.factor = factor
        self.loss = loss
        self.offsets = offsets
        self.n_points = offsets.shape[0]

    def row_coefficients(self, gamma: torch.Tensor) -> torch.Tensor:
        """The vector the kernel rows multiply to give f: gamma for whitened rows, T^-1 gamma otherwise."""
        return gamma if self.kernel_rows.whitened else self.factor.to_alpha(gamma)

    def gamma_gradient(self, projected: torch.Tensor) -> torch.Tensor:
        """Rows^T u mapped to gamma: itself for whitened rows, T^-T (K_nM^T u) otherwise."""
        return projected if self.kernel_rows.whitened else self.factor.transpose_solve(projected)

    def objective(self, fitted: torch.Tensor, gamma: torch.Tensor, penalty: float) -> float:
        """J at (f, gamma); +inf where the loss overflows (a line-search trial is then rejected)."""
        value = float(self.loss.total(fitted + self.offsets) / self.n_points + 0.5 * penalty * (gamma @ gamma))
        return value if np.isfinite(value) else np.inf

    def derivatives(self, fitted: torch.Tensor, gamma: torch.Tensor, penalty: float):
        """n * gradient in gamma, the per-point curvatures l'', and the curvatures at the centres
        (kernel-smoothed: (K^T l'' + mean l'') / (K^T 1 + 1); K^T u = T^T Phi^T u for whitened rows)."""
        slope, curvature = self.loss.slope_and_curvature(fitted + self.offsets)
        stacked = torch.stack([slope, curvature, torch.ones_like(slope)], dim=1)
        projected = self.kernel_rows.rmatvec(stacked)
        scaled_gradient = self.gamma_gradient(projected[:, 0]) + penalty * self.n_points * gamma
        if not torch.isfinite(scaled_gradient).all():
            raise FitError("gradient of J is not finite.")
        kernel_sums = self.factor.upper.T @ projected[:, 1:] if self.kernel_rows.whitened else projected[:, 1:]
        center_curvature = (kernel_sums[:, 0] + curvature.mean()) / (kernel_sums[:, 1] + 1.0)
        return scaled_gradient, curvature, center_curvature

    def gradient_norm(self, fitted: torch.Tensor, gamma: torch.Tensor, penalty: float) -> float:
        """|dJ/dgamma| (one single-column pass over K_nM)."""
        slope, _ = self.loss.slope_and_curvature(fitted + self.offsets)
        gradient = self.gamma_gradient(self.kernel_rows.rmatvec(slope)) / self.n_points + penalty * gamma
        return float(torch.linalg.vector_norm(gradient))

    def hessian_operator(self, curvature: torch.Tensor, penalty: float):
        """v -> n H_gamma v = T^-T K_nM^T diag(a l'') K_nM T^-1 v + lambda n v. With at most
        EXPLICIT_GRAM_MAX_CENTERS centres, Phi^T diag(a l'') Phi (M x M, Phi = K_nM T^-1) is formed
        once, in one pass, and every product is then a small matrix product; otherwise each
        product is one pass over the rows of K_nM."""
        ridge = penalty * self.n_points
        if self.kernel_rows.centers.shape[0] <= EXPLICIT_GRAM_MAX_CENTERS:
            gram = self.kernel_rows.whitened_weighted_gram(curvature, self.factor)
            return lambda vector: gram @ vector + ridge * vector

        def apply(vector: torch.Tensor) -> torch.Tensor:
            image = self.kernel_rows.weighted_gram_matvec(curvature, self.row_coefficients(vector))
            return self.gamma_gradient(image) + ridge * vector

        return apply


def solve(
    kernel_rows: NystromKernelRows,
    factor: NystromFactor,
    loss: PointLoss,
    offsets: torch.Tensor,
    penalties: Sequence[float],
    *,
    max_newton_steps: int = 30,
    newton_tol: float = 1e-7,
    max_cg_iter: int = 200,
    cg_tol: float = 1e-6,
    max_total_cg_iter: int = 1000,
) -> Solution:
    """Minimise J (module docstring) by preconditioned Newton-CG over `penalties` (decreasing; the
    last one is the lambda of J). `offsets` is a float64 (n,) tensor, `loss` the per-point loss of
    the same points, and `factor` holds T = chol(K_MM) of the same centres as `kernel_rows`. Converged means the Newton decrement g^T H^-1 g / 2, an estimate
    of J - min J, fell below newton_tol * |J| at the final penalty. CG runs to a relative residual
    min(1e-2, |g_k| / |g_0|), never below cg_tol (inexact Newton: loose early, tight at the end).
    The reported gradient norm is |dJ/dgamma| in the whitened coordinates gamma = T alpha. The
    whole fit uses at most max_total_cg_iter CG iterations (each one or two passes over K_nM), so
    an ill-conditioned problem (very narrow kernel, tiny lambda) stops in bounded time, unconverged,
    with stop_reason 'cg_budget'."""
    start = time.perf_counter()
    problem = _Problem(kernel_rows, factor, loss, offsets)
    n_points, n_centers = problem.n_points, factor.upper.shape[0]
    gamma = torch.zeros(n_centers, dtype=torch.float64, device=offsets.device)
    fitted = torch.zeros(n_points, dtype=torch.float64, device=offsets.device)
    cg_iterations: list[int] = []
    stop_reason = "max_newton_steps"
    first_gradient_norm = None
    for stage, penalty in enumerate(penalties):
        final_stage = stage == len(penalties) - 1
        for _ in range(max_newton_steps if final_stage else 1):
            cg_budget = max_total_cg_iter - sum(cg_iterations)
            if cg_budget <= 0:
                stop_reason = "cg_budget"
                break
            objective = problem.objective(fitted, gamma, penalty)
            if not np.isfinite(objective):
                raise FitError("the objective J is not finite at the start of a Newton step (the offsets overflow the "
                               "loss).")
            scaled_gradient, curvature, center_curvature = problem.derivatives(fitted, gamma, penalty)
            preconditioner = FalkonPreconditioner(factor, center_curvature, penalty, n_points)

            rhs = preconditioner.apply_transpose(scaled_gradient)
            gradient_norm = float(torch.linalg.vector_norm(rhs))
            first_gradient_norm = first_gradient_norm or gradient_norm
            forcing = min(MAX_FORCING, max(cg_tol, gradient_norm / first_gradient_norm))
            operator = _preconditioned_hessian(problem, curvature, penalty, preconditioner)
            beta, iterations = conjugate_gradient(operator, rhs, min(max_cg_iter, cg_budget), forcing)
            cg_iterations.append(iterations)
            step = preconditioner.apply(beta)
            decrement = float(scaled_gradient @ step) / n_points
            if not np.isfinite(decrement):
                raise FitError("Newton step is not finite.")
            at_tolerance = decrement / 2.0 <= newton_tol * abs(objective)
            accepted = _line_search(problem, fitted, gamma, step, penalty, objective, decrement)
            if accepted is not None:
                fitted, gamma = accepted
            if final_stage and (at_tolerance or accepted is None):
                stop_reason = "converged" if at_tolerance else "no_descent"
                break
        if stop_reason == "cg_budget":
            break
    final_penalty = penalties[-1]
    diagnostics = SolverDiagnostics(
        newton_steps=len(cg_iterations),
        cg_iterations=tuple(cg_iterations),
        objective=problem.objective(fitted, gamma, final_penalty),
        gradient_norm=problem.gradient_norm(fitted, gamma, final_penalty),
        converged=stop_reason == "converged",
        kernel_cached=kernel_rows.cached,
        fit_time=time.perf_counter() - start,
        stop_reason=stop_reason,
    )
    return Solution(alpha=factor.to_alpha(gamma), fitted=fitted, diagnostics=diagnostics)


def _preconditioned_hessian(problem: _Problem, curvature, penalty: float, preconditioner: FalkonPreconditioner):
    """v -> B^T (n H_gamma) B v, the operator CG inverts at one Newton step."""
    hessian = problem.hessian_operator(curvature, penalty)

    def apply(beta: torch.Tensor) -> torch.Tensor:
        return preconditioner.apply_transpose(hessian(preconditioner.apply(beta)))

    return apply


def _line_search(problem: _Problem, fitted, gamma, step, penalty: float, objective: float, decrement: float):
    """Backtracking (Armijo) along gamma - s * step; f moves along K_nM T^-1 step, computed once.
    Returns (fitted, gamma) at the accepted s, or None when no s decreases J."""
    fitted_step = problem.kernel_rows.matvec(problem.row_coefficients(step))
    scale = 1.0
    for _ in range(MAX_STEP_HALVINGS):
        trial_fitted = fitted - scale * fitted_step
        trial_gamma = gamma - scale * step
        trial = problem.objective(trial_fitted, trial_gamma, penalty)
        if trial <= objective - ARMIJO_SLOPE * scale * decrement:
            return trial_fitted, trial_gamma
        scale *= 0.5
    return None
