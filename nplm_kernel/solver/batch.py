"""Many fits on one shared reference sample, solved together: the NPLM extended likelihood of B toys
with the same centres, the same reference points and weights, and B different data samples.

Toy b minimises, in whitened coordinates gamma_b (f = Phi gamma_b, Phi = K T^-1),

    J_b = (1/n_b) [ sum_R w_R (exp(Phi_R gamma_b) - 1) - s_b . gamma_b ] + (lambda/2) |gamma_b|^2,

where s_b = sum over the toy's data events of Phi(x) and n_b = N_D,b + N_R: the data enter only
through s_b, because the NPLM loss is linear in f on data events. Each Newton step is one pass over
the reference for all toys at once, chunk by chunk so that the working arrays stay in cache:
F = Phi_R Gamma and E = w exp(F), the objective, the gradients Phi_R^T E and the Hessians from the
products Phi_Rm Phi_Rk of every reference point (one matrix product for all toys: compute-bound
where one toy alone would be memory-bound), then B small dense Cholesky solves and a per-toy
Armijo line search whose accepted trial brings the next step's gradient and Hessian with it. The
stopping rule is the one of newton.solve (Newton decrement below newton_tol |J|), so each toy's t
agrees with its own one-at-a-time fit to solver tolerance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..exceptions import FitError
from .newton import ARMIJO_SLOPE, MAX_STEP_HALVINGS, SolverDiagnostics

#: Reference points per chunk of a pass over the reference: the chunk's features and pair products
#: and its (chunk, B) working arrays stay in the CPU caches.
CHUNK_POINTS = 2048


class SharedReference:
    """The reference side of a batch: whitened features Phi_R (N_R, M) and weights (N_R,), float64,
    and (lazily) the products Phi_Rm Phi_Rk, m <= k, of every reference point (N_R, M(M+1)/2, in
    float32: they only set the Newton direction; the gradient and objective stay float64)."""

    def __init__(self, features: torch.Tensor, weights: torch.Tensor):
        self.features = features
        self.weights = weights
        n_centers = features.shape[1]
        self.rows, self.columns = torch.triu_indices(n_centers, n_centers, device=features.device)
        self._pairs: torch.Tensor | None = None
        self._at_zero: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def pairs(self) -> torch.Tensor:
        if self._pairs is None:
            self._pairs = (self.features[:, self.rows] * self.features[:, self.columns]).to(torch.float32)
        return self._pairs

    @staticmethod
    def pair_bytes(n_ref: int, n_centers: int) -> int:
        """Memory of the pair products for N_R points and M centres."""
        return 4 * n_ref * n_centers * (n_centers + 1) // 2

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(B, M(M+1)/2) upper triangles -> (B, M, M) symmetric matrices."""
        n_centers = self.features.shape[1]
        matrices = torch.zeros((packed.shape[0], n_centers, n_centers), dtype=torch.float64, device=packed.device)
        matrices[:, self.rows, self.columns] = packed
        matrices[:, self.columns, self.rows] = packed
        return matrices

    def sums(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each row gamma_b of gamma (B, M), with f = Phi_R gamma_b, in one pass over the
        reference chunk by chunk: (sum_R w (e^f - 1) (B,), Phi_R^T (w e^f) (B, M),
        Phi_R^T diag(w e^f) Phi_R (B, M, M)). Overflowing exponentials give inf, not an error."""
        loss = torch.zeros(gamma.shape[0], dtype=torch.float64, device=gamma.device)
        gradient = torch.zeros_like(gamma)
        packed = torch.zeros((gamma.shape[0], len(self.rows)), dtype=torch.float64, device=gamma.device)
        pairs, gamma_t = self.pairs, gamma.T.contiguous()
        for start in range(0, self.features.shape[0], CHUNK_POINTS):
            features = self.features[start : start + CHUNK_POINTS]
            weights = self.weights[start : start + CHUNK_POINTS, None]
            shifted = torch.expm1(features @ gamma_t)  # e^f - 1, (chunk, B)
            loss += (weights * shifted).sum(dim=0)
            scaled = weights * (shifted + 1.0)  # w e^f
            gradient += scaled.T @ features
            packed += (scaled.T.to(torch.float32) @ pairs[start : start + CHUNK_POINTS]).to(torch.float64)
        return loss, gradient, self._unpack(packed)

    def at_zero(self, n_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sums() at gamma = 0 (f = 0: loss 0, gradient Phi_R^T w, Hessian Phi_R^T diag(w) Phi_R),
        computed once per reference and expanded to n_batch rows."""
        if self._at_zero is None:
            _, gradient, hessian = self.sums(torch.zeros((1, self.features.shape[1]), dtype=torch.float64,
                                                         device=self.features.device))
            self._at_zero = gradient[0], hessian[0]
        gradient, hessian = self._at_zero
        return gradient.expand(n_batch, -1).clone(), hessian.expand(n_batch, -1, -1).clone()


@dataclass(frozen=True)
class BatchSolution:
    """gamma (B, M), f on the reference points (B, N_R), and each toy's diagnostics."""

    gamma: torch.Tensor
    fitted_ref: torch.Tensor
    diagnostics: tuple[SolverDiagnostics, ...]


def _objectives(loss: torch.Tensor, gamma: torch.Tensor, data_sums: torch.Tensor, n_points: torch.Tensor,
                penalty: float) -> torch.Tensor:
    """J_b for every row, from sum_R w (e^f - 1) (+inf where the exponential overflows)."""
    values = (loss - (data_sums * gamma).sum(dim=1)) / n_points + 0.5 * penalty * (gamma * gamma).sum(dim=1)
    return torch.where(torch.isfinite(values), values, torch.full_like(values, float("inf")))


def solve_extended_likelihood_batch(reference: SharedReference, data_sums: torch.Tensor, n_data: torch.Tensor,
                                    penalty: float, *, max_newton_steps: int = 30,
                                    newton_tol: float = 1e-7) -> BatchSolution:
    """Minimise every J_b (module docstring) from gamma = 0 by damped Newton. data_sums (B, M) are
    the s_b, n_data (B,) the data sizes. A toy stops when its Newton decrement is below
    newton_tol |J_b| (converged), when its line search finds no decrease (no_descent), or after
    max_newton_steps (unconverged). Each line-search trial is one pass over the reference
    (SharedReference.sums) that also gives the gradient and Hessian at the trial point, so an
    accepted step costs one pass; the pass at gamma = 0 is shared by every batch."""
    start = time.perf_counter()
    features = reference.features
    n_batch, n_centers = data_sums.shape
    n_points = n_data.to(torch.float64) + features.shape[0]
    gamma = torch.zeros((n_batch, n_centers), dtype=torch.float64, device=features.device)
    loss = torch.zeros(n_batch, dtype=torch.float64, device=features.device)
    sum_gradient, sum_hessian = reference.at_zero(n_batch)
    objective = _objectives(loss, gamma, data_sums, n_points, penalty)
    steps = np.zeros(n_batch, dtype=int)
    reasons = ["max_newton_steps"] * n_batch
    active = torch.arange(n_batch, device=features.device)
    identity = torch.eye(n_centers, dtype=torch.float64, device=features.device)
    for _ in range(max_newton_steps):
        if len(active) == 0:
            break
        ridge = (penalty * n_points[active])[:, None]
        gradients = sum_gradient[active] - data_sums[active] + ridge * gamma[active]
        factor, info = torch.linalg.cholesky_ex(sum_hessian[active] + ridge[:, :, None] * identity)
        if bool((info != 0).any()):
            raise FitError("batched Newton: a Hessian is not positive definite (non-finite f?).")
        step = torch.cholesky_solve(gradients[:, :, None], factor)[:, :, 0]
        decrement = (gradients * step).sum(dim=1) / n_points[active]
        if not bool(torch.isfinite(decrement).all()):
            raise FitError("batched Newton: a Newton step is not finite.")
        at_tolerance = decrement / 2.0 <= newton_tol * objective[active].abs()
        scale = torch.ones(len(active), dtype=torch.float64, device=features.device)
        accepted = torch.zeros(len(active), dtype=torch.bool, device=features.device)
        for _ in range(MAX_STEP_HALVINGS):
            pending = (~accepted).nonzero()[:, 0]
            if len(pending) == 0:
                break
            rows = active[pending]
            trial_gamma = gamma[rows] - scale[pending, None] * step[pending]
            trial_loss, trial_gradient, trial_hessian = reference.sums(trial_gamma)
            trial = _objectives(trial_loss, trial_gamma, data_sums[rows], n_points[rows], penalty)
            good = trial <= objective[rows] - ARMIJO_SLOPE * scale[pending] * decrement[pending]
            if bool(good.any()):
                chosen = rows[good]
                gamma[chosen], loss[chosen], objective[chosen] = trial_gamma[good], trial_loss[good], trial[good]
                sum_gradient[chosen], sum_hessian[chosen] = trial_gradient[good], trial_hessian[good]
                accepted[pending[good]] = True
            scale[pending] = torch.where(good, scale[pending], 0.5 * scale[pending])
        steps[active.cpu().numpy()] += 1
        finished = at_tolerance | ~accepted
        for index, converged in zip(active[finished].tolist(), at_tolerance[finished].tolist()):
            reasons[index] = "converged" if converged else "no_descent"
        active = active[~finished]
    gradient_norms = torch.linalg.vector_norm((sum_gradient - data_sums) / n_points[:, None] + penalty * gamma, dim=1)
    seconds = (time.perf_counter() - start) / n_batch
    diagnostics = tuple(SolverDiagnostics(
        newton_steps=int(steps[index]), cg_iterations=(0,) * int(steps[index]), objective=float(objective[index]),
        gradient_norm=float(gradient_norms[index]), converged=reasons[index] == "converged", kernel_cached=True,
        fit_time=seconds, stop_reason=reasons[index]) for index in range(n_batch))
    return BatchSolution(gamma=gamma, fitted_ref=gamma @ features.T, diagnostics=diagnostics)
