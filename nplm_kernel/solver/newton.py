"""Newton's method for Falkon objectives, one loop for one fit or many fits solved together.

Each fit b minimises, in whitened coordinates gamma_b = T alpha_b,

    J_b(gamma_b) = (1/n_b) sum_i l_i(f_i) + (lambda/2) |gamma_b|^2,

by damped Newton over a decreasing penalty list (one step per intermediate penalty, then steps at
the final penalty until the Newton decrement is below tolerance), with a backtracking (Armijo) line
search, so J never increases from its value at gamma = 0. Fits stop on their own and leave the
batch: a fit is converged when its Newton decrement g^T H^-1 g / 2 (an estimate of J - min J) falls
below newton_tol |J| at the final penalty. A fit already at tolerance takes its last full step
unless J, as computed, rises by more than half its decrement (the step's predicted decrease) or
above its value at gamma = 0. Such a step lies in the region where J is quadratic, and its
predicted decrease can be smaller than what the float64 evaluation of J resolves (f passes through
the ill-conditioned T^-1: a paper-scale 5D toy's last step, predicted to lower J by 7.6e-9 of |J|,
showed a rise of 3.6e-10), which Armijo's test would read as a rise. Taking it costs at most
newton_tol |J| in J, and t = -2 n loss, which moves at first order where J is flat, comes closer to
its minimum: that toy's t was 1.8e-6 from it without the step and 6e-8 with it. No halvings there:
they would only chase the evaluation's error. The problem (point_loss.py: any per-point loss on
all points, one fit; shared_reference.py: the NPLM loss of fits sharing one reference sample) holds
each fit's point and what it computed there, and gives the Newton directions (conjugate gradient
with Falkon's preconditioner, or a dense solve of explicit Hessians).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..core.exceptions import FitError

#: Loosest CG tolerance of an early Newton step (inexact Newton forcing term, Eisenstat-Walker).
MAX_FORCING = 1e-2
#: Armijo sufficient-decrease constant and the number of step halvings tried by the line search.
ARMIJO_SLOPE = 1e-4
MAX_STEP_HALVINGS = 30
#: A fit's explicit Hessian (where the problem forms one) is recomputed at its next point only while
#: its Newton decrement exceeds this multiple of its stopping threshold (newton_tol |J|): nearer the
#: minimum the Hessian changes by about the step's relative size, and the step with the Hessian
#: already in hand contracts the error almost as much as a fresh one (on 512 toys of the 1D benchmark
#: t stays within 1.2e-7 of a solve to 1e-15, exactly as with a fresh Hessian at every step).
HESSIAN_REFRESH = 10.0

#: Why the Newton iteration stopped (SolverDiagnostics.stop_reason).
STOP_REASONS = {
    "converged": "the Newton decrement fell below newton_tol * |J|",
    "max_newton_steps": "max_newton_steps Newton steps were taken at the final penalty",
    "cg_budget": "the fit used its max_total_cg_iter conjugate-gradient iterations",
    "no_descent": "the line search found no step that lowers J (J is at its floating-point floor)",
}


@dataclass(frozen=True)
class SolverDiagnostics:
    """What the solver did for one fit: Newton steps taken, CG iterations per step, the final
    objective J and gradient norm |dJ/dgamma| (whitened coordinates gamma = T alpha), whether the
    final Newton decrement met tolerance, why the iteration stopped (a key of STOP_REASONS), whether
    K_nM was cached, and the wall time in seconds (a batch's time shared among its fits)."""

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
    """gamma (B, M), the fits' whitened coordinates, and each fit's diagnostics."""

    gamma: torch.Tensor
    diagnostics: tuple[SolverDiagnostics, ...]


class NewtonProblem(Protocol):
    """B objectives J_b = loss_b + (lambda/2) |gamma_b|^2 minimised together. The problem keeps each
    fit's point gamma (B, M), its loss_b = (1/n_b) sum_i l_i and loss_gradient_b = n_b d loss_b /
    d gamma_b there; `toys` below index the fits (a long tensor)."""

    gamma: torch.Tensor
    loss: torch.Tensor
    loss_gradient: torch.Tensor
    n_points: torch.Tensor
    kernel_cached: bool

    def refresh(self, toys: torch.Tensor) -> None:
        """Bring loss_gradient (and the curvature behind the Newton directions) of these fits up to
        date at their current points, where an accepted step left them stale."""

    def directions(self, toys: torch.Tensor, gradient: torch.Tensor, penalty: float, max_cg: torch.Tensor,
                   cg_tol: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Newton directions d solving (n H) d = n g for these fits, g = `gradient` / n (rows), and the
        CG iterations each took (0 for a dense solve); CG stops at the forcing tolerance
        min(MAX_FORCING, max(cg_tol, |g| / |g at the fit's first step|)) or after max_cg."""

    def prepare_steps(self, toys: torch.Tensor, steps: torch.Tensor, fresh_hessian: torch.Tensor) -> None:
        """Get ready to try gamma - s * step for these fits; fresh_hessian says which fits want
        their explicit Hessian recomputed at the point they accept."""

    def try_steps(self, toys: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """loss_b at gamma_b - s_b * step_b for these fits (+inf where the loss overflows)."""

    def accept(self, toys: torch.Tensor) -> None:
        """Move these fits to the point of their last try."""


def solve(problem: NewtonProblem, penalties: Sequence[float], *, max_newton_steps: int = 30, newton_tol: float = 1e-7,
          max_cg_iter: int = 200, cg_tol: float = 1e-6, max_total_cg_iter: int = 1000) -> Solution:
    """Minimise every J_b (module docstring) from gamma = 0 over `penalties` (decreasing; the last
    one is the lambda of J). Each fit uses at most max_total_cg_iter CG iterations in all, so an
    ill-conditioned problem (a very narrow kernel, a tiny lambda) stops in bounded time, unconverged,
    with stop_reason 'cg_budget'."""
    start = time.perf_counter()
    n_batch = problem.gamma.shape[0]
    device = problem.gamma.device
    at_zero = problem.loss.clone()  # J at gamma = 0, which no accepted step may exceed
    cg_used = torch.zeros(n_batch, dtype=torch.long, device=device)
    history: list[list[int]] = [[] for _ in range(n_batch)]
    reasons = ["max_newton_steps"] * n_batch
    active = torch.arange(n_batch, device=device)
    for stage, penalty in enumerate(penalties):
        final_stage = stage == len(penalties) - 1
        for _ in range(max_newton_steps if final_stage else 1):
            out_of_budget = cg_used[active] >= max_total_cg_iter
            for toy in active[out_of_budget].tolist():
                reasons[toy] = "cg_budget"
            active = active[~out_of_budget]
            if len(active) == 0:
                break
            accepted, at_tolerance, iterations = _newton_step(problem, active, penalty, newton_tol,
                                                              torch.clamp(max_total_cg_iter - cg_used[active],
                                                                          max=max_cg_iter), cg_tol, at_zero[active])
            cg_used[active] += iterations
            for toy, count in zip(active.tolist(), iterations.tolist()):
                history[toy].append(count)
            if final_stage:
                finished = at_tolerance | ~accepted
                for toy, converged in zip(active[finished].tolist(), at_tolerance[finished].tolist()):
                    reasons[toy] = "converged" if converged else "no_descent"
                active = active[~finished]
    everyone = torch.arange(n_batch, device=device)
    problem.refresh(everyone)
    penalty = penalties[-1]
    objective = problem.loss + 0.5 * penalty * (problem.gamma * problem.gamma).sum(dim=1)
    gradient = problem.loss_gradient / problem.n_points[:, None] + penalty * problem.gamma
    norms = torch.linalg.vector_norm(gradient, dim=1)
    seconds = (time.perf_counter() - start) / n_batch
    diagnostics = tuple(SolverDiagnostics(
        newton_steps=len(history[toy]), cg_iterations=tuple(history[toy]), objective=float(objective[toy]),
        gradient_norm=float(norms[toy]), converged=reasons[toy] == "converged", kernel_cached=problem.kernel_cached,
        fit_time=seconds, stop_reason=reasons[toy]) for toy in range(n_batch))
    return Solution(gamma=problem.gamma, diagnostics=diagnostics)


def _newton_step(problem: NewtonProblem, toys: torch.Tensor, penalty: float, newton_tol: float,
                 max_cg: torch.Tensor, cg_tol: float, at_zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One damped Newton step of these fits: (accepted, at tolerance, CG iterations), each (k,);
    at_zero: their J at gamma = 0 (module docstring)."""
    problem.refresh(toys)
    gamma = problem.gamma[toys]
    objective = problem.loss[toys] + 0.5 * penalty * (gamma * gamma).sum(dim=1)
    if not bool(torch.isfinite(objective).all()):
        raise FitError("the objective J is not finite at the start of a Newton step (the offsets overflow the loss).")
    n_points = problem.n_points[toys]
    gradient = problem.loss_gradient[toys] + penalty * n_points[:, None] * gamma
    if not bool(torch.isfinite(gradient).all()):
        raise FitError("gradient of J is not finite.")
    steps, iterations = problem.directions(toys, gradient, penalty, max_cg, cg_tol)
    decrement = (gradient * steps).sum(dim=1) / n_points
    if not bool(torch.isfinite(decrement).all()):
        raise FitError("Newton step is not finite.")
    threshold = newton_tol * objective.abs()
    at_tolerance = decrement / 2.0 <= threshold
    problem.prepare_steps(toys, steps, decrement / 2.0 > HESSIAN_REFRESH * threshold)
    scale = torch.ones(len(toys), dtype=torch.float64, device=toys.device)
    accepted = torch.zeros(len(toys), dtype=torch.bool, device=toys.device)
    searching = torch.ones(len(toys), dtype=torch.bool, device=toys.device)
    for _ in range(MAX_STEP_HALVINGS):
        pending = searching.nonzero()[:, 0]
        if len(pending) == 0:
            break
        trial_gamma = gamma[pending] - scale[pending, None] * steps[pending]
        trial = problem.try_steps(toys[pending], scale[pending]) + 0.5 * penalty * (trial_gamma * trial_gamma).sum(dim=1)
        good = trial <= objective[pending] - ARMIJO_SLOPE * scale[pending] * decrement[pending]
        # at tolerance, a rise within half the decrement is the error of evaluating J (module docstring)
        final = at_tolerance[pending] & (trial <= objective[pending] + decrement[pending] / 2.0) & (
            trial <= at_zero[pending])
        good |= final
        problem.accept(toys[pending[good]])
        accepted[pending[good]] = True
        # a fit already at tolerance tries its full step only
        searching[pending] = ~good & ~at_tolerance[pending]
        scale[pending] = torch.where(good, scale[pending], 0.5 * scale[pending])
    return accepted, at_tolerance, iterations


def forcing_tolerances(norms: torch.Tensor, first_norms: torch.Tensor, cg_tol: float) -> torch.Tensor:
    """CG tolerances of a Newton step (inexact Newton: loose early, tight at the end):
    min(MAX_FORCING, max(cg_tol, |g| / |g_0|)), |g| the preconditioned gradient norms."""
    return torch.clamp(norms / first_norms, min=cg_tol, max=MAX_FORCING)
