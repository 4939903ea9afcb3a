"""Data generators for the paper benchmarks (DESIGN.md section 7).

1D exponential benchmark: reference x ~ Exp(1) with expected yield N(R) = 2000 and a reference
sample of N_R = 200,000 events (w_R = N(R) / N_R); data = Poisson(N(R)) background events plus
Poisson(N(S)) signal events. x is dimensionless (the papers' Exp(1) units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .exceptions import ConfigurationError


@dataclass(frozen=True)
class GaussianSignal:
    """Resonant signal: Gaussian at `location` with `width`, truncated to x >= 0; N(S) = n_expected."""

    location: float
    width: float
    n_expected: float

    def sample(self, n_events: int, rng: np.random.Generator) -> np.ndarray:
        lower = (0.0 - self.location) / self.width
        return stats.truncnorm.rvs(lower, np.inf, loc=self.location, scale=self.width, size=n_events, random_state=rng)

    def log_density(self, x: np.ndarray) -> np.ndarray:
        lower = (0.0 - self.location) / self.width
        return stats.truncnorm.logpdf(x, lower, np.inf, loc=self.location, scale=self.width)


@dataclass(frozen=True)
class NonResonantSignal:
    """Non-resonant excess with density (1/2) x^2 e^-x (a Gamma(3, 1)); N(S) = n_expected."""

    n_expected: float

    def sample(self, n_events: int, rng: np.random.Generator) -> np.ndarray:
        return rng.gamma(3.0, 1.0, size=n_events)

    def log_density(self, x: np.ndarray) -> np.ndarray:
        return stats.gamma.logpdf(x, 3.0)


#: The 1D benchmark's signals: far tail, bulk, non-resonant (DESIGN.md section 7).
NP1 = GaussianSignal(location=6.4, width=0.16, n_expected=10.0)
NP2 = GaussianSignal(location=1.6, width=0.16, n_expected=90.0)
NP3 = NonResonantSignal(n_expected=90.0)
SIGNALS_1D = {"NP1": NP1, "NP2": NP2, "NP3": NP3}

Signal = GaussianSignal | NonResonantSignal


@dataclass(frozen=True)
class Exponential1D:
    """The 1D exponential benchmark. Samples are (n, 1) float64 arrays."""

    n_expected: float = 2000.0
    n_reference: int = 200_000

    def __post_init__(self) -> None:
        if not self.n_expected > 0:
            raise ConfigurationError(f"n_expected must be positive, got {self.n_expected}.")
        if not self.n_reference >= 1:
            raise ConfigurationError(f"n_reference must be at least 1, got {self.n_reference}.")

    @property
    def reference_weight(self) -> float:
        """w_R = N(R) / N_R, in events per reference event."""
        return self.n_expected / self.n_reference

    def reference(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x_ref (N_R, 1), w_ref (N_R,)) with sum w_ref = N(R)."""
        x_ref = rng.exponential(1.0, size=(self.n_reference, 1))
        return x_ref, np.full(self.n_reference, self.reference_weight)

    def data(self, rng: np.random.Generator, signal: Signal | None = None) -> np.ndarray:
        """A data sample: Poisson(N(R)) background events plus Poisson(N(S)) signal events, (N_D, 1)."""
        background = rng.exponential(1.0, size=rng.poisson(self.n_expected))
        if signal is None:
            return background[:, None]
        events = signal.sample(rng.poisson(signal.n_expected), rng)
        return np.concatenate([background, events])[:, None]

    def log_ratio(self, x: np.ndarray, signal: Signal | None = None) -> np.ndarray:
        """True log n(x|D) / n(x|R) = log(1 + N(S) p_S(x) / (N(R) e^-x)) for x >= 0."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if signal is None:
            return np.zeros_like(x)
        return np.logaddexp(0.0, np.log(signal.n_expected / self.n_expected) + signal.log_density(x) + x)
