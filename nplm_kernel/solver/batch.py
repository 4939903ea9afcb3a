"""Many fits on one shared reference sample, solved together: the NPLM extended likelihood of B toys
with the same centres, the same reference points and weights, and B different data samples.

Toy b minimises, in whitened coordinates gamma_b (f = Phi gamma_b, Phi = K T^-1),

    J_b = (1/n_b) [ sum_R w_R (exp(Phi_R gamma_b) - 1) - s_b . gamma_b ] + (lambda/2) |gamma_b|^2,

where s_b = sum over the toy's data events of Phi(x) and n_b = N_D,b + N_R: the data enter only
through s_b, because the NPLM loss is linear in f on data events. Each Newton step is one pass over
the reference for all toys at once, chunk by chunk so that the working arrays stay in cache:
F = Phi_R Gamma and E = w exp(F), the objectives and gradients from [Phi_R^T; 1] E, and the
Hessians from the products Phi_Rm Phi_Rk of every reference point (one matrix product for all toys:
compute-bound where one toy alone would be memory-bound), then B small dense Cholesky solves and a
per-toy Armijo line search whose accepted trial brings the next step's gradient (and Hessian) with
it. The stopping rule is the one of newton.solve (Newton decrement below newton_tol |J|), so each
toy's t agrees with its own one-at-a-time fit to solver tolerance. Two savings keep the iterates
those of exact Newton to rounding: a toy's Hessian is recomputed only while its decrement is above
HESSIAN_REFRESH times its threshold, and a toy already at tolerance takes its last full step or
none (no step halvings, which near the minimum only chase rounding in J).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..core.exceptions import FitError
from .kernels import exp_
from .newton import ARMIJO_SLOPE, MAX_STEP_HALVINGS, SolverDiagnostics

#: Reference points per chunk of a pass over the reference: the chunk's features and pair products
#: and its (chunk, B) working arrays stay in the CPU caches.
CHUNK_POINTS = 2048
#: A toy's Hessian is recomputed at its next point only while its Newton decrement exceeds this
#: multiple of its stopping threshold (newton_tol |J|). Nearer the minimum the Hessian changes by
#: about the step's relative size, and the step with the Hessian already in hand contracts the error
#: almost as much as a fresh one: on 512 toys of the 1D benchmark t stays within 1.2e-7 of a solve
#: to 1e-15, exactly as with a fresh Hessian at every step.
HESSIAN_REFRESH = 10.0


class SharedReference:
    """The reference side of a batch: whitened features Phi_R (N_R, M) and weights (N_R,), float64,
    and (lazily) [Phi_R^T; 1] (M + 1, N_R), which gives a chunk's gradients and sums of w e^f in one
    product, and the products Phi_Rm Phi_Rk, m <= k, of every reference point (N_R, M(M+1)/2, in
    float32: they only set the Newton direction; the gradient and objective stay float64)."""

    def __init__(self, features: torch.Tensor, weights: torch.Tensor):
        self.features = features
        self.weights = weights
        self.total_weight = weights.sum()
        n_centers = features.shape[1]
        self.rows, self.columns = torch.triu_indices(n_centers, n_centers, device=features.device)
        self._moments: torch.Tensor | None = None
        self._pairs: torch.Tensor | None = None
        self._at_zero: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def moments(self) -> torch.Tensor:
        if self._moments is None:
            ones = torch.ones((1, self.features.shape[0]), dtype=torch.float64, device=self.features.device)
            self._moments = torch.cat([self.features.T, ones]).contiguous()
        return self._moments

    @property
    def pairs(self) -> torch.Tensor:
        if self._pairs is None:
            self._pairs = (self.features[:, self.rows] * self.features[:, self.columns]).to(torch.float32)
        return self._pairs

    @staticmethod
    def derived_bytes(n_ref: int, n_centers: int) -> int:
        """Memory of the arrays derived for batched fits (pair products and [Phi_R^T; 1]) for N_R
        points and M centres."""
        return 4 * n_ref * n_centers * (n_centers + 1) // 2 + 8 * n_ref * (n_centers + 1)

    def stored_bytes(self) -> int:
        """Memory of the derived arrays built so far."""
        return sum(array.numel() * array.element_size() for array in (self._moments, self._pairs) if array is not None)

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(B, M(M+1)/2) upper triangles -> (B, M, M) symmetric matrices."""
        n_centers = self.features.shape[1]
        matrices = torch.zeros((packed.shape[0], n_centers, n_centers), dtype=torch.float64, device=packed.device)
        matrices[:, self.rows, self.columns] = packed
        matrices[:, self.columns, self.rows] = packed
        return matrices

    def sums(self, gamma: torch.Tensor, hessian_rows: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """For each row gamma_b of gamma (B, M), with f = Phi_R gamma_b, in one pass over the
        reference chunk by chunk: sum_R w (e^f - 1) (B,) and Phi_R^T (w e^f) (B, M), and
        Phi_R^T diag(w e^f) Phi_R (H, M, M) for the H rows indexed by hessian_rows (every row when
        None; None is returned when it is empty). Overflowing exponentials give inf, not an error."""
        n_batch = gamma.shape[0]
        n_hessians = n_batch if hessian_rows is None else len(hessian_rows)
        totals = torch.zeros((self.features.shape[1] + 1, n_batch), dtype=torch.float64, device=gamma.device)
        packed = torch.zeros((n_hessians, len(self.rows)), dtype=torch.float64, device=gamma.device)
        moments, pairs, gamma_t = self.moments, self.pairs if n_hessians else None, gamma.T.contiguous()
        for start in range(0, self.features.shape[0], CHUNK_POINTS):
            chunk = slice(start, start + CHUNK_POINTS)
            scaled = exp_(self.features[chunk] @ gamma_t).mul_(self.weights[chunk, None])  # w e^f, (chunk, B)
            totals += moments[:, chunk] @ scaled
            if n_hessians:
                wanted = scaled if hessian_rows is None else scaled[:, hessian_rows]
                packed += (wanted.T.to(torch.float32) @ pairs[chunk]).to(torch.float64)
        loss = totals[-1] - self.total_weight
        return loss, totals[:-1].T.contiguous(), self._unpack(packed) if n_hessians else None

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
        threshold = newton_tol * objective[active].abs()
        at_tolerance = decrement / 2.0 <= threshold
        refresh = (decrement / 2.0 > HESSIAN_REFRESH * threshold).nonzero()[:, 0]
        scale = torch.ones(len(active), dtype=torch.float64, device=features.device)
        accepted = torch.zeros(len(active), dtype=torch.bool, device=features.device)
        searching = torch.ones(len(active), dtype=torch.bool, device=features.device)
        for _ in range(MAX_STEP_HALVINGS):
            pending = searching.nonzero()[:, 0]
            if len(pending) == 0:
                break
            rows = active[pending]
            trial_gamma = gamma[rows] - scale[pending, None] * step[pending]
            wanted = torch.isin(pending, refresh).nonzero()[:, 0]
            trial_loss, trial_gradient, trial_hessian = reference.sums(
                trial_gamma, None if len(wanted) == len(pending) else wanted)
            trial = _objectives(trial_loss, trial_gamma, data_sums[rows], n_points[rows], penalty)
            good = trial <= objective[rows] - ARMIJO_SLOPE * scale[pending] * decrement[pending]
            if bool(good.any()):
                chosen = rows[good]
                gamma[chosen], loss[chosen], objective[chosen] = trial_gamma[good], trial_loss[good], trial[good]
                sum_gradient[chosen] = trial_gradient[good]
                if trial_hessian is not None:
                    sum_hessian[rows[wanted][good[wanted]]] = trial_hessian[good[wanted]]
                accepted[pending[good]] = True
            # a toy already at tolerance tries its full step only: a rejection there is rounding
            searching[pending] = ~good & ~at_tolerance[pending]
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
