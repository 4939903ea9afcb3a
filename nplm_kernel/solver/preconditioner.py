"""Falkon's preconditioner of the Newton systems, in the whitened coordinates gamma = T alpha."""

from __future__ import annotations

import numpy as np
import torch

from .nystrom import NystromFactor, stable_cholesky


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
