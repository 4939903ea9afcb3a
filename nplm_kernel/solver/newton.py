"""Newton-CG over a decreasing penalty list with Falkon's preconditioner and an Armijo line
search: the solve itself, its diagnostics and its stopping reasons."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.exceptions import FitError
from .cg import conjugate_gradient
from .losses import PointLoss
from .nystrom import EXPECTED_CG_ITERATIONS, NystromFactor, NystromKernelRows, prefers_explicit_gram
from .preconditioner import FalkonPreconditioner

#: Loosest CG tolerance of an early Newton step (inexact Newton forcing term, Eisenstat-Walker).
MAX_FORCING = 1e-2
#: Armijo sufficient-decrease constant and the number of step halvings tried by the line search.
ARMIJO_SLOPE = 1e-4
MAX_STEP_HALVINGS = 30


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

    def hessian_operator(self, curvature: torch.Tensor, penalty: float, expected_iterations: int):
        """v -> n H_gamma v = T^-T K_nM^T diag(l'') K_nM T^-1 v + lambda n v. Where the cost model
        says so (nystrom.prefers_explicit_gram: few centres, or K_nM streamed in blocks and many CG
        iterations expected), Phi^T diag(l'') Phi (M x M, Phi = K_nM T^-1) is formed once, in one
        pass, and every product is then a small matrix product; otherwise each product is one pass
        over the rows of K_nM."""
        ridge = penalty * self.n_points
        if prefers_explicit_gram(self.kernel_rows, expected_iterations):
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
            expected = cg_iterations[-1] if cg_iterations else EXPECTED_CG_ITERATIONS
            operator = _preconditioned_hessian(problem, curvature, penalty, preconditioner, expected)
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


def _preconditioned_hessian(problem: _Problem, curvature, penalty: float, preconditioner: FalkonPreconditioner,
                            expected_iterations: int):
    """v -> B^T (n H_gamma) B v, the operator CG inverts at one Newton step."""
    hessian = problem.hessian_operator(curvature, penalty, expected_iterations)

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
