"""Many fits on one shared reference sample, solved together: the NPLM extended likelihood of B toys
with the same centres, the same reference points and weights, and B different data samples.

Toy b minimises, in whitened coordinates gamma_b (f = Phi gamma_b, Phi = K T^-1),

    J_b = (1/n_b) [ sum_R w_R (exp(Phi_R gamma_b) - 1) - s_b . gamma_b ] + (lambda/2) |gamma_b|^2,

where s_b = sum over the toy's data events of Phi(x) and n_b = N_D,b + N_R: the data enter only
through s_b, because the NPLM loss is linear in f on data events. Each Newton step is one pass over
the reference for all toys at once: F = Phi_R Gamma and E = w exp(F) as (N_R, B) matrices,
gradients Phi_R^T E and Hessians from the products Phi_Rm Phi_Rk of every reference point (one
matrix product for all toys: compute-bound where one toy alone would be memory-bound), then B small
dense Cholesky solves and a per-toy Armijo line search. The stopping rule is the one of
newton.solve (Newton decrement below newton_tol |J|), so each toy's t agrees with its own
one-at-a-time fit to solver tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..exceptions import FitError
from .newton import ARMIJO_SLOPE, MAX_STEP_HALVINGS, SolverDiagnostics


class SharedReference:
    """The reference side of a batch: whitened features Phi_R (N_R, M), their transpose, and weights
    (N_R,), float64, and (lazily) the products Phi_Rm Phi_Rk, m <= k, of every reference point
    (N_R, M(M+1)/2, in float32: they only set the Newton direction, the gradient and objective
    stay float64)."""

    def __init__(self, features: torch.Tensor, weights: torch.Tensor):
        self.features = features
        self.features_t = features.T.contiguous()
        self.weights = weights
        n_centers = features.shape[1]
        self.rows, self.columns = torch.triu_indices(n_centers, n_centers, device=features.device)
        self._pairs: torch.Tensor | None = None

    @property
    def pairs(self) -> torch.Tensor:
        if self._pairs is None:
            self._pairs = (self.features[:, self.rows] * self.features[:, self.columns]).to(torch.float32)
        return self._pairs

    @staticmethod
    def pair_bytes(n_ref: int, n_centers: int) -> int:
        """Memory of the pair products for N_R points and M centres."""
        return 4 * n_ref * n_centers * (n_centers + 1) // 2

    def hessians(self, scaled_exp: torch.Tensor) -> torch.Tensor:
        """Phi_R^T diag(E_b) Phi_R for every row b of E (B, N_R): (B, M, M), float64."""
        n_centers = self.features.shape[1]
        packed = (scaled_exp.to(torch.float32) @ self.pairs).to(torch.float64)
        hessians = torch.zeros((scaled_exp.shape[0], n_centers, n_centers), dtype=torch.float64,
                               device=scaled_exp.device)
        hessians[:, self.rows, self.columns] = packed
        hessians[:, self.columns, self.rows] = packed
        return hessians


@dataclass(frozen=True)
class BatchSolution:
    """gamma (B, M), f on the reference points (B, N_R), and each toy's diagnostics."""

    gamma: torch.Tensor
    fitted_ref: torch.Tensor
    diagnostics: tuple[SolverDiagnostics, ...]


def _objectives(reference: SharedReference, shifted_exp: torch.Tensor, gamma: torch.Tensor, data_sums: torch.Tensor,
                n_points: torch.Tensor, penalty: float) -> torch.Tensor:
    """J_b for every row, from e^f - 1 on the reference (+inf where the exponential overflows)."""
    loss = shifted_exp @ reference.weights - (data_sums * gamma).sum(dim=1)
    values = loss / n_points + 0.5 * penalty * (gamma * gamma).sum(dim=1)
    return torch.where(torch.isfinite(values), values, torch.full_like(values, float("inf")))


def solve_extended_likelihood_batch(reference: SharedReference, data_sums: torch.Tensor, n_data: torch.Tensor,
                                    penalty: float, *, max_newton_steps: int = 30,
                                    newton_tol: float = 1e-7) -> BatchSolution:
    """Minimise every J_b (module docstring) from gamma = 0 by damped Newton. data_sums (B, M) are
    the s_b, n_data (B,) the data sizes. A toy stops when its Newton decrement is below
    newton_tol |J_b| (converged), when its line search finds no decrease (no_descent), or after
    max_newton_steps (unconverged). f and e^f - 1 on the reference are kept per toy (B, N_R rows),
    so that each Newton step costs one exponential per toy (its line-search trial)."""
    start = time.perf_counter()
    features, weights = reference.features, reference.weights
    n_batch, n_centers = data_sums.shape
    n_ref = features.shape[0]
    n_points = n_data.to(torch.float64) + n_ref
    gamma = torch.zeros((n_batch, n_centers), dtype=torch.float64, device=features.device)
    fitted = torch.zeros((n_batch, n_ref), dtype=torch.float64, device=features.device)
    shifted_exp = torch.zeros_like(fitted)
    objective = _objectives(reference, shifted_exp, gamma, data_sums, n_points, penalty)
    steps = np.zeros(n_batch, dtype=int)
    reasons = ["max_newton_steps"] * n_batch
    active = torch.arange(n_batch, device=features.device)
    identity = torch.eye(n_centers, dtype=torch.float64, device=features.device)
    for _ in range(max_newton_steps):
        if len(active) == 0:
            break
        scaled_exp = (shifted_exp[active] + 1.0) * weights
        ridge = (penalty * n_points[active])[:, None]
        gradients = scaled_exp @ features - data_sums[active] + ridge * gamma[active]
        hessians = reference.hessians(scaled_exp) + ridge[:, :, None] * identity
        factor, info = torch.linalg.cholesky_ex(hessians)
        if bool((info != 0).any()):
            raise FitError("batched Newton: a Hessian is not positive definite (non-finite f?).")
        step = torch.cholesky_solve(gradients[:, :, None], factor)[:, :, 0]
        decrement = (gradients * step).sum(dim=1) / n_points[active]
        if not bool(torch.isfinite(decrement).all()):
            raise FitError("batched Newton: a Newton step is not finite.")
        at_tolerance = decrement / 2.0 <= newton_tol * objective[active].abs()
        fitted_step = step @ reference.features_t
        scale = torch.ones(len(active), dtype=torch.float64, device=features.device)
        accepted = torch.zeros(len(active), dtype=torch.bool, device=features.device)
        for _ in range(MAX_STEP_HALVINGS):
            pending = (~accepted).nonzero()[:, 0]
            if len(pending) == 0:
                break
            rows = active[pending]
            trial_gamma = gamma[rows] - scale[pending, None] * step[pending]
            trial_fitted = fitted[rows] - scale[pending, None] * fitted_step[pending]
            trial_exp = torch.expm1(trial_fitted)
            trial = _objectives(reference, trial_exp, trial_gamma, data_sums[rows], n_points[rows], penalty)
            good = trial <= objective[rows] - ARMIJO_SLOPE * scale[pending] * decrement[pending]
            if bool(good.any()):
                chosen = rows[good]
                gamma[chosen], fitted[chosen], shifted_exp[chosen] = trial_gamma[good], trial_fitted[good], trial_exp[good]
                objective[chosen] = trial[good]
                accepted[pending[good]] = True
            scale[pending] = torch.where(good, scale[pending], 0.5 * scale[pending])
        steps[active.cpu().numpy()] += 1
        finished = at_tolerance | ~accepted
        for index, converged in zip(active[finished].tolist(), at_tolerance[finished].tolist()):
            reasons[index] = "converged" if converged else "no_descent"
        active = active[~finished]
    final_exp = (shifted_exp + 1.0) * weights
    gradient_norms = torch.linalg.vector_norm((final_exp @ features - data_sums) / n_points[:, None]
                                              + penalty * gamma, dim=1)
    seconds = (time.perf_counter() - start) / n_batch
    diagnostics = tuple(SolverDiagnostics(
        newton_steps=int(steps[index]), cg_iterations=(0,) * int(steps[index]), objective=float(objective[index]),
        gradient_norm=float(gradient_norms[index]), converged=reasons[index] == "converged", kernel_cached=True,
        fit_time=seconds, stop_reason=reasons[index]) for index in range(n_batch))
    return BatchSolution(gamma=gamma, fitted_ref=fitted, diagnostics=diagnostics)
