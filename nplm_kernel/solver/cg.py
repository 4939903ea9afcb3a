"""Conjugate gradient for the symmetric positive (semi-)definite Newton systems."""

from __future__ import annotations

import torch

from ..core.exceptions import FitError


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
