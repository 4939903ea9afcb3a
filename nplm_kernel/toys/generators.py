"""Toy generators: what one toy's data are, drawn from a numpy Generator. A generator returns an
(N_D, d) array, or a ToySample that also carries the toy's own reference (resampling nulls such as
permutations) or its auxiliary measurements of the nuisance parameters."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.exceptions import ConfigurationError, InputError, SampleSizeWarning
from ..core.samples import as_events, as_weights, effective_sample_size

#: The null toys the command line and analysis configs offer, and what each is.
NULL_TOYS = {
    "pool": "held out from the reference (--pool-fraction) or a file (--pool); a weighted pool is unweighted by "
            "accept-reject in each toy",
    "permutation": "the data pooled with an unweighted reference and permuted (needs --data)",
}
#: A weighted pool is refused below this Kish n_eff per toy event, n_eff < MIN_WEIGHTED_POOL_RATIO N(R):
#: two toys would share over 10% of their events (fewer than 100 independent toys).
MIN_WEIGHTED_POOL_RATIO = 10.0


def _unweighted(weights: np.ndarray) -> bool:
    """All weights equal (to 1e-12 of their mean)."""
    return bool(np.ptp(weights) <= 1e-12 * abs(weights.mean()))


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

    @classmethod
    def from_reference(cls, x_data: np.ndarray, x_ref: np.ndarray, w_ref: np.ndarray) -> PermutationToys:
        """Permutation toys of the data and an unweighted reference, N(R) = sum w_ref (the observed t
        is then the test's on (x_data, x_ref, w_ref)). A weighted reference is refused: permuting
        exchanges events, which is valid only when data and reference events are drawn from one
        density event by event, and the events of a weighted sample follow the generator's own
        density, not the weighted one."""
        reference = as_events(x_ref, "x_ref")
        weights = as_weights(w_ref, len(reference), owner="permutation toys")
        if not _unweighted(weights):
            raise InputError(
                f"permutation toys need an unweighted reference (all w_ref equal; these range from {weights.min():.4g} "
                f"to {weights.max():.4g}): a permutation exchanges data and reference events, which is valid only "
                "when both are drawn from one density event by event, and the events of a weighted sample follow "
                "the generator's density, not the weighted one. Draw the null from a held-out pool instead "
                "(--null-toys pool with --pool-fraction or --pool; a weighted pool is unweighted by accept-reject).")
        return cls(x_data, reference, float(weights.sum()))

    def summary(self) -> str:
        """One line: what is permuted."""
        return (f"permutation toys: {self.n_data} data events pooled with {len(self.pooled) - self.n_data} reference "
                f"events, N(R) = {self.expected_yield:.6g}")

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


class _PoolSize:
    """What a held-out pool of effective size n_eff (`effective_size`) supports for toys of
    N(R) = `n_expected` events: two toys share about a fraction N(R) / n_eff of their events, so
    their t (quadratic in the data's fluctuations) are correlated by about rho = (N(R) / n_eff)^2,
    and n toys carry the information of n / (1 + (n - 1) rho) independent ones, at most
    (n_eff / N(R))^2 (docs/statistics.md)."""

    pool: np.ndarray
    effective_size: float
    n_expected: float

    @property
    def independent_toys(self) -> float:
        """(n_eff / N(R))^2: about the most independent toys' worth of information the pool holds."""
        return (self.effective_size / self.n_expected) ** 2

    def check_toys(self, n_toys: int) -> None:
        """SampleSizeWarning, with the figures, when n_toys exceed (n_eff / N(R))^2: more toys then
        add less than half their number's information."""
        if n_toys <= self.independent_toys:
            return
        effective = n_toys / (1.0 + (n_toys - 1) / self.independent_toys)
        warnings.warn(
            f"{n_toys} toys from a pool of effective size n_eff = {self.effective_size:.0f} (Kish) for toys of N(R) = "
            f"{self.n_expected:.6g} events: two toys share about N(R) / n_eff = {self.n_expected / self.effective_size:.1%} "
            f"of their events, their t are correlated by about (N(R) / n_eff)^2, and the {n_toys} toys carry the "
            f"information of about {effective:.0f} independent ones (at most (n_eff / N(R))^2 = "
            f"{self.independent_toys:.0f}). Hold out a larger pool for more.",
            SampleSizeWarning, stacklevel=2)

    def summary(self) -> str:
        """One line: the pool, its effective size and the independent toys it supports."""
        return (f"{self._kind()}: {len(self.pool)} events, Kish n_eff = {self.effective_size:.0f} = "
                f"{self.effective_size / self.n_expected:.1f} N(R); about (n_eff / N(R))^2 = "
                f"{self.independent_toys:.0f} independent toys")


class ReferencePoolToys(_PoolSize):
    """Null toys from a held-out pool of unweighted reference events (not the reference sample
    itself): each toy has N ~ Poisson(n_expected) events drawn from the pool without replacement."""

    def __init__(self, pool: np.ndarray, n_expected: float):
        self.pool = as_events(pool, "pool")
        if not (np.isfinite(n_expected) and n_expected > 0):
            raise ConfigurationError(f"n_expected must be positive and finite, got {n_expected!r}.")
        self.n_expected = float(n_expected)

    @property
    def effective_size(self) -> float:  # type: ignore[override]
        return float(len(self.pool))

    def _kind(self) -> str:
        return "held-out pool (unweighted, drawn without replacement)"

    @classmethod
    def split(
        cls, x_ref: np.ndarray, w_ref: np.ndarray, pool_fraction: float, seed: int
    ) -> tuple[ReferencePoolToys | WeightedPoolToys, np.ndarray, np.ndarray]:
        """Hold out a random `pool_fraction` of the reference sample as the toy pool
        (split_reference); returns (toys, x_rest, w_rest): toys draw Poisson(N(R)) events from the
        pool (pool_toys: a WeightedPoolToys when the weights differ), N(R) = sum w_ref."""
        x_pool, w_pool, x_rest, w_rest = split_reference(x_ref, w_ref, pool_fraction, seed)
        return pool_toys(x_pool, w_pool, float(np.sum(w_ref))), x_rest, w_rest

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        n_events = rng.poisson(self.n_expected)
        if n_events > len(self.pool):
            raise InputError(
                f"the held-out pool has {len(self.pool)} events but a toy needs {n_events}; the pool must hold "
                f"well above n_expected = {self.n_expected:g} events."
            )
        return self.pool[rng.choice(len(self.pool), size=n_events, replace=False)]


class WeightedPoolToys(_PoolSize):
    """Null toys from a held-out pool of weighted reference events, unweighted by accept-reject in
    each toy: event i is kept with probability a_i = w_i / max w, and N ~ Poisson(n_expected) of the
    kept events are drawn without replacement, so that P(i in a toy) = a_i n_expected
    E[1 / (1 + K_i)] (K_i: the other events kept), about n_expected w_i / sum w. When the pool's
    events are independent draws with positive weights (a generator's weighted events), the kept
    events are an independent sample of the weighted density, and each toy an exact sample of the
    null, as with an unweighted pool. Refused when the pool's Kish n_eff < MIN_WEIGHTED_POOL_RATIO
    N(R) (toys sharing over 10% of their events, fewer than 100 independent toys), or when
    accept-reject keeps on average sum w / max w < 2 N(R) events (too few for a toy).
    effective_size: for a pool whose weights came out of cell resampling, the Kish n_eff of its
    weights before it; such a pool is no independent sample (its statistical error is that of the
    weights before resampling), so its toys are conservative by about a fraction N(R) / n_eff of
    their fluctuation (more where the negative weights gathered)."""

    def __init__(self, pool: np.ndarray, weights: np.ndarray, n_expected: float, effective_size: float | None = None):
        self.pool = as_events(pool, "pool")
        self.weights = as_weights(weights, len(self.pool), "pool weights", owner="the weighted pool",
                                  reason="accept-reject keeps each event with probability proportional to its weight")
        if not (np.isfinite(n_expected) and n_expected > 0):
            raise ConfigurationError(f"n_expected must be positive and finite, got {n_expected!r}.")
        self.n_expected = float(n_expected)
        self.resampled = effective_size is not None
        self.effective_size = effective_sample_size(self.weights) if effective_size is None else float(effective_size)
        if self.effective_size < MIN_WEIGHTED_POOL_RATIO * self.n_expected:
            raise InputError(
                f"the weighted pool's effective size (Kish, (sum w)^2 / sum w^2) is n_eff = {self.effective_size:.0f} "
                f"events, {self.effective_size / self.n_expected:.1f} times the N(R) = {self.n_expected:.6g} events of a "
                f"toy: two toys would share about N(R) / n_eff = {self.n_expected / self.effective_size:.0%} of their "
                f"events, and the whole null hold the information of fewer than (n_eff / N(R))^2 = "
                f"{self.independent_toys:.0f} independent toys. A weighted pool needs n_eff >= "
                f"{MIN_WEIGHTED_POOL_RATIO:g} N(R) = {MIN_WEIGHTED_POOL_RATIO * self.n_expected:.0f}: hold out a larger "
                "fraction of the reference or a larger pool file.")
        if self.accepted < 2.0 * self.n_expected:
            raise InputError(
                f"accept-reject keeps each pool event with probability w / max w, on average sum w / max w = "
                f"{self.accepted:.0f} events (the largest weight is {self.weights.max() / self.weights.mean():.3g} "
                f"times the mean), fewer than the 2 N(R) = {2 * self.n_expected:.0f} a toy of N(R) = "
                f"{self.n_expected:.6g} events needs: check the largest weights, or hold out a larger pool.")

    @property
    def accepted(self) -> float:
        """sum w / max w: the events accept-reject keeps on average in a toy."""
        return float(self.weights.sum() / self.weights.max())

    def _kind(self) -> str:
        resampled = (f"; weights from cell resampling, toys conservative by about N(R) / n_eff = "
                     f"{self.n_expected / self.effective_size:.1%}" if self.resampled else "")
        return f"held-out pool (weighted: accept-reject keeps about {self.accepted:.0f} events per toy{resampled})"

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        kept = np.flatnonzero(rng.random(len(self.weights)) * self.weights.max() < self.weights)
        n_events = rng.poisson(self.n_expected)
        if n_events > len(kept):
            raise InputError(f"accept-reject kept {len(kept)} events of the weighted pool but the toy needs {n_events}; "
                             f"the pool must keep well above n_expected = {self.n_expected:g} events.")
        return self.pool[rng.choice(kept, size=n_events, replace=False)]


def split_reference(x_ref: np.ndarray, w_ref: np.ndarray, pool_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_pool, w_pool, x_rest, w_rest): each event goes to the pool with probability
    `pool_fraction` (the split depends only on `seed`, so a test and its toys use the same
    reference); the rest's weights are rescaled to sum to N(R) = sum w_ref, the pool's kept."""
    if not 0.0 < pool_fraction < 1.0:
        raise ConfigurationError(f"pool_fraction must lie in (0, 1), got {pool_fraction!r}.")
    weights = np.asarray(w_ref, dtype=np.float64)
    in_pool = np.random.default_rng(seed).random(len(x_ref)) < pool_fraction
    rest = weights[~in_pool]
    return x_ref[in_pool], weights[in_pool], x_ref[~in_pool], rest * (weights.sum() / rest.sum())


def pool_toys(pool: np.ndarray, weights: np.ndarray | None, n_expected: float,
              effective_size: float | None = None) -> ReferencePoolToys | WeightedPoolToys:
    """The null toys of a held-out pool for toys of N(R) = n_expected events: ReferencePoolToys
    when the weights are None or all equal, WeightedPoolToys otherwise or when `effective_size` is
    given (weights out of cell resampling: equal ones too, whose events are no independent sample)."""
    if weights is None or (effective_size is None and _unweighted(np.asarray(weights, dtype=np.float64))):
        return ReferencePoolToys(pool, n_expected)
    return WeightedPoolToys(pool, weights, n_expected, effective_size)


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

