"""Toy generators: what one toy's data are, drawn from a numpy Generator. A generator returns an
(N_D, d) array, or a ToySample that also carries the toy's own reference (resampling nulls such as
permutations) or its auxiliary measurements of the nuisance parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.exceptions import ConfigurationError, InputError
from ..core.samples import as_events


@dataclass(frozen=True)
class ToySample:
    """A toy's data with, optionally, its own reference sample (resampling nulls such as
    permutations; None: the campaign's reference) and its auxiliary measurements of the nuisance
    parameters (central_values nu0, one per nuisance; None: the nuisance model's own)."""

    x_data: np.ndarray
    x_ref: np.ndarray | None = None
    w_ref: np.ndarray | None = None
    central_values: np.ndarray | None = None


#: A toy generator: draws one data sample (N_D, d), or a ToySample, from a numpy Generator.
ToyGenerator = Callable[[np.random.Generator], "np.ndarray | ToySample"]


class PermutationToys:
    """Null toys without a generator (data-quality monitoring): the observed data and reference
    events are pooled, and each toy is a random permutation: N_D of them become the toy data and
    the rest the toy reference, weighted to sum to `expected_yield` = N(R). Valid for unweighted
    samples; the observed t must be computed with the same N(R)."""

    def __init__(self, x_data: np.ndarray, x_ref: np.ndarray, expected_yield: float):
        data = as_events(x_data, "x_data")
        self.pooled = np.concatenate([data, as_events(x_ref, "x_ref", data.shape[1])])
        self.n_data = len(data)
        if not (np.isfinite(expected_yield) and expected_yield > 0):
            raise ConfigurationError(f"expected_yield must be positive and finite, got {expected_yield!r}.")
        self.expected_yield = float(expected_yield)

    def __call__(self, rng: np.random.Generator) -> ToySample:
        order = rng.permutation(len(self.pooled))
        reference = self.pooled[order[self.n_data:]]
        return ToySample(self.pooled[order[: self.n_data]], reference,
                         np.full(len(reference), self.expected_yield / len(reference)))


@dataclass(frozen=True)
class AuxiliaryToys:
    """Wraps a data generator for tests with nuisances: each toy also draws its auxiliary
    measurements nu0 ~ N(truth, sigmas) (the true nuisance values of the generator, e.g. 0 for a
    pool of nominal reference events), returned as a ToySample with central_values."""

    generator: ToyGenerator
    truth: np.ndarray
    sigmas: np.ndarray

    def __call__(self, rng: np.random.Generator) -> ToySample:
        drawn = self.generator(rng)
        sample = drawn if isinstance(drawn, ToySample) else ToySample(drawn)
        return ToySample(sample.x_data, sample.x_ref, sample.w_ref, rng.normal(self.truth, self.sigmas))


class ReferencePoolToys:
    """Null toys from a held-out pool of unweighted reference events (not the reference sample
    itself): each toy has N ~ Poisson(n_expected) events drawn from the pool without replacement."""

    def __init__(self, pool: np.ndarray, n_expected: float):
        self.pool = as_events(pool, "pool")
        if not (np.isfinite(n_expected) and n_expected > 0):
            raise ConfigurationError(f"n_expected must be positive and finite, got {n_expected!r}.")
        self.n_expected = float(n_expected)

    @classmethod
    def split(
        cls, x_ref: np.ndarray, w_ref: np.ndarray, pool_fraction: float, seed: int
    ) -> tuple[ReferencePoolToys, np.ndarray, np.ndarray]:
        """Hold out a random `pool_fraction` of an unweighted reference sample as the toy pool.

        Returns (toys, x_rest, w_rest): toys draw Poisson(N(R)) events from the pool, N(R) = sum
        w_ref; the rest is the reference, its weights rescaled so that they still sum to N(R).
        The split depends only on `seed`, so a test and its toys use the same reference."""
        if not 0.0 < pool_fraction < 1.0:
            raise ConfigurationError(f"pool_fraction must lie in (0, 1), got {pool_fraction!r}.")
        weights = np.asarray(w_ref, dtype=np.float64)
        if np.ptp(weights) > 1e-12 * weights.mean():
            raise InputError("held-out pool toys need an unweighted reference sample (all w_ref equal).")
        in_pool = np.random.default_rng(seed).random(len(x_ref)) < pool_fraction
        rest = weights[~in_pool]
        return cls(x_ref[in_pool], weights.sum()), x_ref[~in_pool], rest * (weights.sum() / rest.sum())

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        n_events = rng.poisson(self.n_expected)
        if n_events > len(self.pool):
            raise InputError(
                f"the held-out pool has {len(self.pool)} events but a toy needs {n_events}; the pool must hold "
                f"well above n_expected = {self.n_expected:g} events."
            )
        return self.pool[rng.choice(len(self.pool), size=n_events, replace=False)]


class LocalExcessToys:
    """Generic anomaly toys for model selection: each toy is a null toy from `generator` plus
    `n_events` events drawn without replacement from the `n_neighbours` reference events nearest
    (in standardised units) to a reference event chosen at random. The excess has the reference's
    own local shape at a random place, so a setting's sensitivity to it measures how well the test
    sees localised departures anywhere, without assuming a signal model."""

    def __init__(self, generator: ToyGenerator, x_ref: np.ndarray, n_events: int, n_neighbours: int):
        self.generator = generator
        self.x_ref = as_events(x_ref, "x_ref")
        if not 1 <= n_events <= n_neighbours <= len(self.x_ref):
            raise ConfigurationError(f"need 1 <= n_events ({n_events}) <= n_neighbours ({n_neighbours}) <= N_R "
                                     f"({len(self.x_ref)}).")
        self.n_events, self.n_neighbours = int(n_events), int(n_neighbours)
        self.scale = np.where(self.x_ref.std(axis=0) > 0, self.x_ref.std(axis=0), 1.0)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        background = self.generator(rng)
        anchor = self.x_ref[rng.integers(len(self.x_ref))]
        distances = np.sum(((self.x_ref - anchor) / self.scale) ** 2, axis=1)
        nearest = np.argpartition(distances, self.n_neighbours - 1)[: self.n_neighbours]
        excess = self.x_ref[rng.choice(nearest, size=self.n_events, replace=False)]
        return np.concatenate([as_events(background, "generated data", self.x_ref.shape[1]), excess])

