"""Conjugate gradient for the symmetric positive (semi-)definite Newton systems of several fits at
once (one system per row)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.exceptions import FitError


def conjugate_gradient(apply_operator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                       max_iter: torch.Tensor, tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve S_b x_b = rhs_b from x = 0 for every row b of rhs (B, M), each S_b symmetric positive
    (semi-)definite. apply_operator(vectors (k, M), rows (k,)) returns S_b v for the given rows b;
    each iteration calls it once for the rows still running. Row b stops when |r_b| <= tol_b |rhs_b|,
    after max_iter_b iterations, or at a direction of non-positive curvature (not counted).
    Returns (x (B, M), iterations (B,))."""
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    residual_sq = (residual * residual).sum(dim=1)
    target = tol * torch.sqrt(residual_sq)
    iterations = torch.zeros(rhs.shape[0], dtype=torch.long, device=rhs.device)
    running = torch.nonzero(max_iter > 0)[:, 0]
    while len(running):
        image = apply_operator(direction[running], running)
        curvature = (direction[running] * image).sum(dim=1)
        if not bool(torch.isfinite(curvature).all()):
            raise FitError("conjugate gradient: non-finite Hessian product.")
        positive = curvature > 0
        running, image, curvature = running[positive], image[positive], curvature[positive]
        step = residual_sq[running] / curvature
        solution[running] += step[:, None] * direction[running]
        residual[running] -= step[:, None] * image
        iterations[running] += 1
        new_residual_sq = (residual[running] * residual[running]).sum(dim=1)
        going = (torch.sqrt(new_residual_sq) > target[running]) & (iterations[running] < max_iter[running])
        ratio = new_residual_sq / residual_sq[running]
        residual_sq[running] = new_residual_sq
        running, ratio = running[going], ratio[going]
        direction[running] = residual[running] + ratio[:, None] * direction[running]
    return solution, iterations
