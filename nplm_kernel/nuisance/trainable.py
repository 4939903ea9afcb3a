"""nu as a trainable torch parameter, for backends that train f and nu jointly (the NN)."""

from __future__ import annotations

import numpy as np
import torch

from .model import NuisanceTerms, auxiliary_penalty


class TrainableNuisances:
    """nu as a trainable torch parameter, for backends that train f and nu jointly (NNNPLM).

    The parameter is u = nu / sigma (so that one optimiser step moves every nuisance alike);
    offsets() gives log r(nu) on the data and reference events, and set_gradient() sets u.grad to
    d(L + A)/du from dL/do_R = w_R exp(f + o_R) (dL/do_D = -1 for every data event)."""

    def __init__(self, terms: NuisanceTerms, start: np.ndarray, dtype: torch.dtype, device: torch.device):
        model = terms.model

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=dtype, device=device)

        self.design_data, self.design_ref = tensor(terms.design_data), tensor(terms.design_ref)
        self.design_data_sum = self.design_data.sum(dim=0)
        self.sigmas, self.central_values = tensor(model.sigmas), tensor(terms.central_values)
        self.column_nuisance = torch.as_tensor(model.column_nuisance, device=device)
        self.column_power = tensor(model.column_power)
        self.parameter = torch.nn.Parameter(tensor(model.check_nu(start, "nuisance_start") / model.sigmas))

    def _nu(self) -> torch.Tensor:
        return self.parameter.detach() * self.sigmas

    def offsets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log r on the data, log r on the reference) at the current nu."""
        monomials = self._nu()[self.column_nuisance] ** self.column_power
        return self.design_data @ monomials, self.design_ref @ monomials

    def auxiliary_penalty(self) -> torch.Tensor:
        """A(nu) at the current nu."""
        return auxiliary_penalty(self._nu(), self.central_values, self.sigmas)

    def set_gradient(self, loss_by_offset_ref: torch.Tensor) -> None:
        """u.grad = sigma * d(L + A)/dnu."""
        nu = self._nu()
        by_column = loss_by_offset_ref @ self.design_ref - self.design_data_sum
        slope = self.column_power * nu[self.column_nuisance] ** (self.column_power - 1)
        gradient = torch.zeros_like(nu).index_add_(0, self.column_nuisance, by_column * slope)
        self.parameter.grad = (gradient + (nu - self.central_values) / self.sigmas**2) * self.sigmas

    def nu(self) -> np.ndarray:
        """The current nu, float64."""
        return self._nu().cpu().numpy().astype(np.float64)
