"""Per-point convex losses the Newton solver minimises: their value, slopes and curvatures as
functions of z = f + o (float64 torch tensors)."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as functional

from ..core.statistic import extended_likelihood, extended_likelihood_slope


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
        return extended_likelihood(logits[: self.n_data], logits[self.n_data :], self.reference_weights)

    def slope_and_curvature(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled_exp = extended_likelihood_slope(logits[self.n_data :], self.reference_weights)
        data = torch.zeros(self.n_data, dtype=logits.dtype, device=logits.device)
        return torch.cat([data - 1.0, scaled_exp]), torch.cat([data, scaled_exp])
