"""One fit of a per-point convex loss on all its points: the Newton problem of a loss that is not
linear on any of them (the logistic surrogate), J = (1/n) sum_i l_i(f_i + o_i) + (lambda/2) |gamma|^2
with f = K_nM T^-1 gamma on the n points (data and reference) and fixed offsets o."""

from __future__ import annotations

import torch

from .cg import conjugate_gradient
from .losses import PointLoss
from .newton import forcing_tolerances
from .nystrom import EXPECTED_CG_ITERATIONS, NystromFactor, NystromKernelRows, prefers_explicit_gram
from .preconditioner import FalkonPreconditioner


class PointLossProblem:
    """The Newton problem (newton.NewtonProblem) of one fit of `loss` on the rows of K_nM, with
    fixed offsets (float64 (n,)). Newton systems are solved by CG with Falkon's preconditioner, the
    Hessian applied by passes over K_nM or formed once per step (nystrom.prefers_explicit_gram)."""

    def __init__(self, kernel_rows: NystromKernelRows, factor: NystromFactor, loss: PointLoss, offsets: torch.Tensor):
        self.kernel_rows = kernel_rows
        self.factor = factor
        self.point_loss = loss
        self.offsets = offsets
        n_centers = factor.upper.shape[0]
        device = offsets.device
        self.n_points = torch.tensor([float(offsets.shape[0])], dtype=torch.float64, device=device)
        self.kernel_cached = kernel_rows.cached
        self.gamma = torch.zeros((1, n_centers), dtype=torch.float64, device=device)
        self.fitted = torch.zeros(offsets.shape[0], dtype=torch.float64, device=device)
        self.loss = (self.point_loss.total(offsets) / self.n_points).reshape(1)
        self.loss_gradient = torch.zeros((1, n_centers), dtype=torch.float64, device=device)
        self._stale = True
        self._first_norm: torch.Tensor | None = None
        self._last_iterations = EXPECTED_CG_ITERATIONS

    def row_coefficients(self, gamma: torch.Tensor) -> torch.Tensor:
        """The vector(s) the kernel rows multiply to give f: gamma for whitened rows, T^-1 gamma otherwise."""
        return gamma if self.kernel_rows.whitened else self.factor.to_alpha(gamma)

    def gamma_gradient(self, projected: torch.Tensor) -> torch.Tensor:
        """Rows^T u mapped to gamma: itself for whitened rows, T^-T (K_nM^T u) otherwise."""
        return projected if self.kernel_rows.whitened else self.factor.transpose_solve(projected)

    def refresh(self, toys: torch.Tensor) -> None:
        """n * dloss/dgamma, the per-point curvatures l'' and the curvatures at the centres
        (kernel-smoothed: (K^T l'' + mean l'') / (K^T 1 + 1); K^T u = T^T Phi^T u for whitened rows),
        in one pass over K_nM."""
        if not self._stale:
            return
        slope, self.curvature = self.point_loss.slope_and_curvature(self.fitted + self.offsets)
        projected = self.kernel_rows.rmatvec(torch.stack([slope, self.curvature, torch.ones_like(slope)], dim=1))
        self.loss_gradient = self.gamma_gradient(projected[:, 0])[None, :]
        kernel_sums = self.factor.upper.T @ projected[:, 1:] if self.kernel_rows.whitened else projected[:, 1:]
        self.center_curvature = (kernel_sums[:, 0] + self.curvature.mean()) / (kernel_sums[:, 1] + 1.0)
        self._stale = False

    def directions(self, toys: torch.Tensor, gradient: torch.Tensor, penalty: float, max_cg: torch.Tensor,
                   cg_tol: float) -> tuple[torch.Tensor, torch.Tensor]:
        preconditioner = FalkonPreconditioner(self.factor, self.center_curvature, penalty, float(self.n_points[0]))
        rhs = preconditioner.apply_transpose(gradient)
        norms = torch.linalg.vector_norm(rhs, dim=1)
        if self._first_norm is None:
            self._first_norm = norms
        hessian = self._hessian_operator(penalty, self._last_iterations)

        def apply(vectors: torch.Tensor, _rows: torch.Tensor) -> torch.Tensor:
            return preconditioner.apply_transpose(hessian(preconditioner.apply(vectors)))

        beta, iterations = conjugate_gradient(apply, rhs, max_cg, forcing_tolerances(norms, self._first_norm, cg_tol))
        self._last_iterations = int(iterations[0])
        return preconditioner.apply(beta), iterations

    def _hessian_operator(self, penalty: float, expected_iterations: int):
        """Rows v -> n H_gamma v = T^-T K_nM^T diag(l'') K_nM T^-1 v + lambda n v. Where the cost model
        says so (few centres, or K_nM streamed in blocks and many CG iterations expected), Phi^T
        diag(l'') Phi (M x M, Phi = K_nM T^-1) is formed once, in one pass, and every product is then
        a small matrix product; otherwise each product is one pass over the rows of K_nM."""
        ridge = penalty * float(self.n_points[0])
        if prefers_explicit_gram(self.kernel_rows, expected_iterations):
            gram = self.kernel_rows.whitened_weighted_gram(self.curvature, self.factor)
            return lambda vectors: vectors @ gram + ridge * vectors

        def apply(vectors: torch.Tensor) -> torch.Tensor:
            image = self.kernel_rows.weighted_gram_matvec(self.curvature, self.row_coefficients(vectors[0]))
            return (self.gamma_gradient(image) + ridge * vectors[0])[None, :]

        return apply

    def prepare_steps(self, toys: torch.Tensor, steps: torch.Tensor, fresh_hessian: torch.Tensor) -> None:
        """f moves along K_nM T^-1 step: computed once for the line search."""
        self._step = steps[0]
        self._fitted_step = self.kernel_rows.matvec(self.row_coefficients(self._step))

    def try_steps(self, toys: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        self._scale = float(scales[0])
        self._trial = self.fitted - self._scale * self._fitted_step
        value = self.point_loss.total(self._trial + self.offsets) / self.n_points
        return torch.where(torch.isfinite(value), value, torch.full_like(value, float("inf")))

    def accept(self, toys: torch.Tensor) -> None:
        if len(toys):
            self.gamma = self.gamma - self._scale * self._step[None, :]
            self.fitted = self._trial
            self.loss = (self.point_loss.total(self._trial + self.offsets) / self.n_points).reshape(1)
            self._stale = True
