"""Nuisance model: how systematic uncertainties deform the reference (docs/statistics.md).

A nuisance parameter nu_j changes the reference density by r(x; nu) = n(x|R_nu) / n(x|R_0) with
    log r(x; nu) = sum_{normalisation j} nu_j + sum_{shape j} sum_{k=1..K_j} delta_{j,k}(x) nu_j^k,
and is constrained by a Gaussian auxiliary measurement (central value nu0_j, width sigma_j):
    A(nu) = sum_j ((nu_j - nu0_j)^2 - nu0_j^2) / (2 sigma_j^2)      (A(0) = 0).
nu is in the units of its own definition (a log-normalisation, a log-scale, ...), sigma in the same.

With f fixed, the nuisance objective is
    J(nu) = L[f; log r(.; nu)] + A(nu)
          = sum_R w_R (exp(f + log r) - 1) - sum_D (f + log r) + A(nu),
a small smooth problem minimised here with scipy's exact trust-region Newton; f = 0 gives Delta.
The shape coefficients delta_{j,k}(x) come from a Taylor learner (nplm_kernel.KernelTaylorLearner,
nn_baseline.NNTaylorLearner, or an analytic model) with `degree` and `coefficients(x)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..core.exceptions import ConfigurationError, FitError, InputError
from ..core.optimize import LastEvaluation
from ..core.samples import as_events, as_weights, check_finite, check_positive_number
from ..core.statistic import extended_likelihood, extended_likelihood_slope
from .taylor_training import MAX_TAYLOR_DEGREE

#: Gradient tolerance of the nuisance minimisation, in loss units per sigma of each nuisance.
NUISANCE_GTOL = 1e-8


@runtime_checkable
class TaylorCoefficients(Protocol):
    """A model of delta_k(x), k = 1..degree: coefficients(x) returns an (n, degree) float64 array."""

    degree: int

    def coefficients(self, x: np.ndarray) -> np.ndarray: ...


def auxiliary_penalty(nu, central_values, sigmas):
    """A(nu) = sum_j ((nu_j - nu0_j)^2 - nu0_j^2) / (2 sigma_j^2) (A(0) = 0), for numpy arrays or
    torch tensors alike."""
    return (((nu - central_values) ** 2 - central_values**2) / (2.0 * sigmas**2)).sum()


@dataclass(frozen=True)
class NormalizationNuisance:
    """log r = nu: a relative normalisation exp(nu) of the whole reference, width sigma."""

    name: str
    sigma: float
    central_value: float = 0.0


@dataclass(frozen=True)
class ShapeNuisance:
    """log r = sum_k delta_k(x) nu^k with delta_k from `coefficients` (degree 1 or 2), width sigma."""

    name: str
    sigma: float
    coefficients: TaylorCoefficients = field(repr=False)
    central_value: float = 0.0


Nuisance = NormalizationNuisance | ShapeNuisance


@dataclass(frozen=True)
class NuisanceFit:
    """nu minimising J(nu) = L[f; log r(nu)] + A(nu) at fixed f: nu (n_nuisances,), objective J,
    loss L (without A), and the trust-region iterations used."""

    nu: np.ndarray
    objective: float
    loss: float
    iterations: int


class NuisanceModel:
    """A set of normalisation and shape nuisances with Gaussian auxiliary constraints.

    The per-event design matrix B(x) (n, P) has one column per (nuisance j, power k): 1 for a
    normalisation nuisance (k = 1), delta_{j,k}(x) for a shape nuisance; log r(x; nu) = B(x) m(nu)
    with the monomials m_p(nu) = nu_{j_p}^{k_p}.
    """

    def __init__(self, nuisances: Sequence[Nuisance]):
        nuisances = list(nuisances)
        if not nuisances:
            raise ConfigurationError("a NuisanceModel needs at least one nuisance.")
        names = [nuisance.name for nuisance in nuisances]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"nuisance names must be unique, got {names}.")
        columns = []
        for index, nuisance in enumerate(nuisances):
            if not isinstance(nuisance, (NormalizationNuisance, ShapeNuisance)):
                raise ConfigurationError(
                    f"nuisance {index} must be a NormalizationNuisance or ShapeNuisance, got {type(nuisance).__name__}."
                )
            check_positive_number(nuisance.sigma, f"sigma of nuisance {nuisance.name!r}")
            if not np.isfinite(nuisance.central_value):
                raise ConfigurationError(f"central_value of nuisance {nuisance.name!r} must be finite.")
            degree = 1
            if isinstance(nuisance, ShapeNuisance):
                if not isinstance(nuisance.coefficients, TaylorCoefficients):
                    raise ConfigurationError(
                        f"shape nuisance {nuisance.name!r} needs coefficients with `degree` and `coefficients(x)` "
                        "(a fitted KernelTaylorLearner or NNTaylorLearner)."
                    )
                degree = int(nuisance.coefficients.degree)
                if not 1 <= degree <= MAX_TAYLOR_DEGREE:
                    raise ConfigurationError(f"shape nuisance {nuisance.name!r}: degree must be 1 or 2, got {degree}.")
            columns.extend((index, power) for power in range(1, degree + 1))
        self.nuisances = nuisances
        self.names = names
        self.sigmas = np.array([nuisance.sigma for nuisance in nuisances], dtype=np.float64)
        self.central_values = np.array([nuisance.central_value for nuisance in nuisances], dtype=np.float64)
        self.column_nuisance = np.array([index for index, _ in columns])
        self.column_power = np.array([power for _, power in columns])

    @property
    def n_nuisances(self) -> int:
        return len(self.nuisances)

    def design(self, x: np.ndarray, name: str = "x") -> np.ndarray:
        """B(x), shape (n, P): the per-event factors of the monomials m(nu) in log r."""
        events = as_events(x, name)
        blocks = []
        for nuisance in self.nuisances:
            if isinstance(nuisance, NormalizationNuisance):
                blocks.append(np.ones((len(events), 1)))
                continue
            values = np.asarray(nuisance.coefficients.coefficients(events), dtype=np.float64)
            if values.shape != (len(events), nuisance.coefficients.degree):
                raise FitError(
                    f"shape nuisance {nuisance.name!r}: coefficients(x) returned shape {values.shape}, "
                    f"expected ({len(events)}, {nuisance.coefficients.degree})."
                )
            check_finite(values, f"delta_k(x) of shape nuisance {nuisance.name!r} on {name}")
            blocks.append(values)
        return np.concatenate(blocks, axis=1)

    def monomials(self, nu: np.ndarray) -> np.ndarray:
        """m_p(nu) = nu_{j_p}^{k_p}, shape (P,)."""
        return nu[self.column_nuisance] ** self.column_power

    def monomial_derivatives(self, nu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dm_p/dnu_{j_p}, d2m_p/dnu_{j_p}^2), each (P,)."""
        base, power = nu[self.column_nuisance], self.column_power
        first = power * base ** (power - 1)
        second = power * (power - 1) * base ** np.maximum(power - 2, 0)
        return first, second

    def log_ratio(self, x: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """log r(x; nu), shape (n,)."""
        return self.design(x) @ self.monomials(self.check_nu(nu))

    def auxiliary_penalty(self, nu: np.ndarray, central_values: np.ndarray) -> float:
        """A(nu) (auxiliary_penalty), float64."""
        return float(auxiliary_penalty(nu, central_values, self.sigmas))

    def check_nu(self, nu: object, name: str = "nu") -> np.ndarray:
        """nu as a finite float64 array of shape (n_nuisances,); InputError otherwise."""
        values = np.atleast_1d(np.asarray(nu, dtype=np.float64))
        if values.shape != (self.n_nuisances,):
            raise InputError(f"{name} must have one value per nuisance {self.names}, got shape {values.shape}.")
        check_finite(values, name)
        return values

    def terms(self, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray,
              central_values: np.ndarray | None = None) -> NuisanceTerms:
        """The per-event designs of one test (data, reference) with the auxiliary central values
        (None: the model's own central values)."""
        data, ref = as_events(x_data, "x_data"), as_events(x_ref, "x_ref")
        central = self.central_values if central_values is None else self.check_nu(central_values, "central_values")
        return NuisanceTerms(self, self.design(data, "x_data"), self.design(ref, "x_ref"),
                             as_weights(w_ref, len(ref)), central)


@dataclass(frozen=True)
class NuisanceTerms:
    """What a nuisance fit of one test needs: the model, the designs B(x_data) (N_D, P) and
    B(x_ref) (N_R, P), the reference weights and the auxiliary central values nu0."""

    model: NuisanceModel
    design_data: np.ndarray
    design_ref: np.ndarray
    w_ref: np.ndarray
    central_values: np.ndarray

    def offsets(self, nu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log r on the data, log r on the reference) at nu."""
        monomials = self.model.monomials(nu)
        return self.design_data @ monomials, self.design_ref @ monomials

    def objective(self, nu: np.ndarray, f_data: np.ndarray | float = 0.0, f_ref: np.ndarray | float = 0.0) -> float:
        """J(nu) = L[f; log r(nu)] + A(nu), float64."""
        return self._derivatives(nu, f_data, f_ref, order=0)[0]

    def _derivatives(self, nu, f_data, f_ref, order: int):
        model = self.model
        monomials = model.monomials(nu)
        with np.errstate(over="ignore", invalid="ignore"):
            z_data, z_ref = f_data + self.design_data @ monomials, f_ref + self.design_ref @ monomials
            scaled_exp = extended_likelihood_slope(z_ref, self.w_ref)
            loss = float(extended_likelihood(z_data, z_ref, self.w_ref))
        if not np.isfinite(loss):
            return np.inf, None, None, loss
        objective = loss + model.auxiliary_penalty(nu, self.central_values)
        if order == 0:
            return objective, None, None, loss
        first, second = model.monomial_derivatives(nu)
        by_column = scaled_exp @ self.design_ref - self.design_data.sum(axis=0)
        gradient = np.zeros(model.n_nuisances)
        np.add.at(gradient, model.column_nuisance, by_column * first)
        gradient += (nu - self.central_values) / model.sigmas**2
        event_gradient = np.zeros((len(self.design_ref), model.n_nuisances))
        for column, (index, slope) in enumerate(zip(model.column_nuisance, first)):
            event_gradient[:, index] += self.design_ref[:, column] * slope
        hessian = (event_gradient * scaled_exp[:, None]).T @ event_gradient
        curvature = np.zeros(model.n_nuisances)
        np.add.at(curvature, model.column_nuisance, by_column * second)
        hessian[np.diag_indices_from(hessian)] += curvature + 1.0 / model.sigmas**2
        return objective, gradient, hessian, loss

    def fit(self, f_data: np.ndarray | float = 0.0, f_ref: np.ndarray | float = 0.0,
            start: np.ndarray | None = None, stage: str = "nuisance fit") -> NuisanceFit:
        """Minimise J(nu) at fixed f (f = 0: the Delta term) from `start` (default nu0), in units of
        sigma; FitError naming `stage` if J is not finite at the start or the minimiser fails."""
        sigmas = self.model.sigmas
        start = self.central_values if start is None else np.asarray(start, dtype=np.float64)
        def scaled_derivatives(scaled: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            value, gradient, hessian, _ = self._derivatives(scaled * sigmas, f_data, f_ref, order=2)
            if gradient is None:
                return value, np.zeros_like(scaled), np.eye(len(scaled))
            return value, gradient * sigmas, hessian * np.outer(sigmas, sigmas)

        evaluate = LastEvaluation(scaled_derivatives)
        if not np.isfinite(evaluate(start / sigmas)[0]):
            raise FitError(f"{stage}: the objective L + A is not finite at the starting nu = {start}.")
        result = evaluate.minimize(start / sigmas, gtol=NUISANCE_GTOL, max_iter=200)
        value, gradient, _, loss = self._derivatives(result.x * sigmas, f_data, f_ref, order=2)
        if not np.isfinite(value) or np.max(np.abs(gradient * sigmas)) > 1e3 * NUISANCE_GTOL * max(1.0, abs(value)):
            raise FitError(f"{stage}: the minimisation over the nuisance parameters failed ({result.message}).")
        return NuisanceFit(nu=result.x * sigmas, objective=float(value), loss=float(loss), iterations=int(result.nit))

