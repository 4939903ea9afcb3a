"""Data generators for the paper benchmarks (described in docs/benchmarks.md).

1D exponential benchmark: reference x ~ Exp(1) with expected yield N(R) = 2000 and a reference
sample of N_R = 200,000 events (w_R = N(R) / N_R); data = Poisson(N(R)) background events plus
Poisson(N(S)) signal events. x is dimensionless (the papers' Exp(1) units). NLOReference gives the
1D and 5D benchmarks an NLO-like reference with negative weights and the same weighted density.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .core.exceptions import ConfigurationError
from .toys import AuxiliaryToys, ToyGenerator


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


#: The 1D benchmark's signals: far tail, bulk, non-resonant.
NP1 = GaussianSignal(location=6.4, width=0.16, n_expected=10.0)
NP2 = GaussianSignal(location=1.6, width=0.16, n_expected=90.0)
NP3 = NonResonantSignal(n_expected=90.0)
SIGNALS_1D = {"NP1": NP1, "NP2": NP2, "NP3": NP3}

#: The harder resonances of Grosso & Letizia, "Multiple testing for signal-agnostic searches of new
#: physics with machine learning", Eur. Phys. J. C 85 (2025), arXiv:2408.12296, on the same 1D
#: benchmark (Exp(1) reference, N(R) = 2000): Gaussians at x = 4 with widths 0.01 (N(S) = 7), 0.16
#: (N(S) = 18) and 0.64 (N(S) = 13), so narrow or small that no single kernel width finds them often.
#: The location x = 4 is that of the authors' published test statistics (github.com/mletizia/
#: multiple-testing-nplm, test_statistics/univariate/*_NS7_loc4_std0.01_*, ...).
SIGNALS_1D_MULTIPLE_TESTING = {
    "x4_w0.01": GaussianSignal(location=4.0, width=0.01, n_expected=7.0),
    "x4_w0.16": GaussianSignal(location=4.0, width=0.16, n_expected=18.0),
    "x4_w0.64": GaussianSignal(location=4.0, width=0.64, n_expected=13.0),
}
#: Their published power at Z >= 2 on those signals (arXiv:2408.12296; kernel NPLM, M = 1000,
#: lambda = 1e-6): the best single kernel width of their scan, the min-p over the widths, and the
#: ideal test (the likelihood ratio of the true signal). The min-p values are those of the authors'
#: published results (powers.ipynb of the repository above).
PUBLISHED_POWER_MULTIPLE_TESTING = {
    "x4_w0.01": {"best single width": 0.083, "min-p": 0.063, "ideal test": 0.93},
    "x4_w0.16": {"best single width": 0.367, "min-p": 0.314, "ideal test": 0.907},
    "x4_w0.64": {"best single width": 0.082, "min-p": 0.0655, "ideal test": 0.294},
}

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

    def events(self, n_events: int, rng: np.random.Generator) -> np.ndarray:
        """n_events reference events x ~ Exp(1), (n_events, 1)."""
        return rng.exponential(1.0, size=(n_events, 1))

    def counter_events(self, n_events: int, rng: np.random.Generator) -> np.ndarray:
        """n_events from the softer density of NLOReference's cancelling pairs, x ~ Exp with mean
        1/2, (n_events, 1)."""
        return rng.exponential(0.5, size=(n_events, 1))

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


@dataclass(frozen=True)
class ScaleCoefficients1D:
    """The exact Taylor coefficients of the 1D benchmark's scale nuisance x -> x e^nu:
    log r(x; nu) = -nu + x (1 - e^-nu) = (x - 1) nu - (x / 2) nu^2 + ..., so delta_1 = x - 1 and
    delta_2 = -x / 2 (the analytic truth a learned model is checked against)."""

    degree: int = 2

    def coefficients(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        return np.column_stack([x - 1.0, -0.5 * x])[:, : self.degree]


@dataclass(frozen=True)
class Exponential1DSystematics:
    """The 1D exponential benchmark with a scale nuisance (x -> x e^nu_scale, width sigma_scale) and
    a normalisation nuisance (N(R) -> N(R) e^nu_norm, width sigma_norm).
    True values nu* generate the data; r(x; nu) is known exactly:
    log r = nu_norm - nu_scale + x (1 - e^-nu_scale)."""

    benchmark: Exponential1D = Exponential1D()
    sigma_scale: float = 0.05
    sigma_norm: float = 0.05

    def data(self, rng: np.random.Generator, nu_scale: float = 0.0, nu_norm: float = 0.0,
             signal: Signal | None = None) -> np.ndarray:
        """Background at the true nuisance values (scale and yield shifted) plus unshifted signal, (N_D, 1)."""
        background = rng.exponential(np.exp(nu_scale), size=rng.poisson(self.benchmark.n_expected * np.exp(nu_norm)))
        if signal is None:
            return background[:, None]
        return np.concatenate([background, signal.sample(rng.poisson(signal.n_expected), rng)])[:, None]

    def shifted_reference(self, rng: np.random.Generator, nu_scale: float, n_events: int) -> tuple[np.ndarray, np.ndarray]:
        """A reference sample simulated at scale nu_scale (for learning delta_k), weights summing to N(R)."""
        return rng.exponential(np.exp(nu_scale), size=(n_events, 1)), np.full(n_events, self.benchmark.n_expected / n_events)

    def true_log_ratio(self, x: np.ndarray, nu_scale: float, nu_norm: float) -> np.ndarray:
        """Exact log r(x; nu) = nu_norm - nu_scale + x (1 - e^-nu_scale)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return nu_norm - nu_scale + x * -np.expm1(-nu_scale)

    def toys(self, nu_scale: float = 0.0, nu_norm: float = 0.0, signal: Signal | None = None,
             fluctuate_auxiliary: bool = True) -> ToyGenerator:
        """A toy generator at the true values nu* = (nu_scale, nu_norm) for campaign.run_toys: each
        toy draws its data and, when fluctuate_auxiliary, its auxiliary measurements
        nu0 ~ N(nu*, sigma) (order: scale, norm) as a ToySample with central_values; otherwise the
        data only (for tests without nuisances, or with the nuisance model's fixed central values)."""
        data = functools.partial(self.data, nu_scale=nu_scale, nu_norm=nu_norm, signal=signal)
        if not fluctuate_auxiliary:
            return data
        return AuxiliaryToys(data, np.array([nu_scale, nu_norm]), np.array([self.sigma_scale, self.sigma_norm]))


@dataclass(frozen=True)
class ZPrimeSignal:
    """Resonant dimuon signal: invariant mass ~ Gaussian(mass, relative_width * mass) (GeV), the
    same production and decay kinematics as the background; N(S) = n_expected."""

    n_expected: float
    mass: float = 300.0
    relative_width: float = 0.03

    def masses(self, n_events: int, rng: np.random.Generator, m_min: float, slope: float) -> np.ndarray:
        sigma = self.relative_width * self.mass
        return stats.truncnorm.rvs((m_min - self.mass) / sigma, np.inf, loc=self.mass, scale=sigma, size=n_events,
                                   random_state=rng)


@dataclass(frozen=True)
class ContactInteractionSignal:
    """Non-resonant tail excess (contact-interaction-like): the background mass spectrum multiplied
    by (m / m_min)^2, i.e. p(m) ~ m^-(slope - 2); N(S) = n_expected."""

    n_expected: float

    def masses(self, n_events: int, rng: np.random.Generator, m_min: float, slope: float) -> np.ndarray:
        return _pareto_masses(n_events, rng, m_min, slope - 2.0)


#: The 5D benchmark's signals: a Z' of 300 GeV (60 events) and a contact interaction (200 events).
SIGNALS_5D = {"Zprime300": ZPrimeSignal(n_expected=60.0), "contact": ContactInteractionSignal(n_expected=200.0)}


def _pareto_masses(n_events: int, rng: np.random.Generator, m_min: float, slope: float) -> np.ndarray:
    """m ~ m^-slope for m > m_min (inverse-CDF sampling)."""
    return m_min * rng.uniform(size=n_events) ** (-1.0 / (slope - 1.0))


@dataclass(frozen=True)
class Dimuon5D:
    """5D two-body (Drell-Yan-like dimuon) benchmark; features (pT1, pT2, eta1, eta2, delta-phi),
    pT in GeV, leading muon first, delta-phi in [0, pi]. The invariant mass is not an input.

    Per event: dimuon mass m ~ m^-slope above m_min (GeV); dimuon rapidity y ~ N(0, 1); dimuon
    transverse momentum qT ~ Gamma(1.5, 8 GeV) at a uniform azimuth; decay angle in the rest frame
    with density (1 + cos^2 theta*) and uniform phi*. The back-to-back muons (momentum m/2) are
    boosted to the lab, and events pass when both muons have pT > pt_min and |eta| < eta_max.
    Yields count events after that acceptance."""

    n_expected: float = 2000.0
    n_reference: int = 100_000
    m_min: float = 100.0
    slope: float = 4.5
    pt_min: float = 20.0
    eta_max: float = 2.4

    @property
    def reference_weight(self) -> float:
        return self.n_expected / self.n_reference

    def reference(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x_ref (N_R, 5), w_ref (N_R,)) with sum w_ref = N(R)."""
        return self.events(self.n_reference, rng), np.full(self.n_reference, self.reference_weight)

    def data(self, rng: np.random.Generator, signal: ZPrimeSignal | ContactInteractionSignal | None = None) -> np.ndarray:
        """Poisson(N(R)) background events plus Poisson(N(S)) signal events, (N_D, 5)."""
        parts = [self.events(rng.poisson(self.n_expected), rng)]
        if signal is not None:
            parts.append(self.events(rng.poisson(signal.n_expected), rng, signal))
        return np.concatenate(parts)

    def events(self, n_events: int, rng: np.random.Generator, signal=None) -> np.ndarray:
        """n_events accepted events (background, or `signal`'s mass spectrum), (n_events, 5)."""
        accepted, count = [], 0
        while count < n_events:
            batch = max(1024, 2 * (n_events - count))
            masses = (_pareto_masses(batch, rng, self.m_min, self.slope) if signal is None
                      else signal.masses(batch, rng, self.m_min, self.slope))
            features = self._kinematics(masses, rng)
            accepted.append(features)
            count += len(features)
        return np.concatenate(accepted)[:n_events] if n_events else np.empty((0, 5))

    def counter_events(self, n_events: int, rng: np.random.Generator) -> np.ndarray:
        """n_events from the softer spectrum of NLOReference's cancelling pairs: the same process
        with the mass spectrum steeper by m^-2 (m^-(slope + 2)), (n_events, 5)."""
        return dataclasses.replace(self, slope=self.slope + 2.0).events(n_events, rng)

    def _kinematics(self, masses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = len(masses)
        cos_theta = np.empty(0)
        while len(cos_theta) < n:  # density (1 + c^2) on [-1, 1] by rejection (efficiency 2/3)
            trial = rng.uniform(-1.0, 1.0, size=2 * n)
            cos_theta = np.concatenate([cos_theta, trial[rng.uniform(0.0, 2.0, size=2 * n) < 1.0 + trial**2]])
        cos_theta = cos_theta[:n]
        sin_theta, phi_star = np.sqrt(1.0 - cos_theta**2), rng.uniform(0.0, 2 * np.pi, size=n)
        momentum = 0.5 * masses[:, None] * np.column_stack(
            [sin_theta * np.cos(phi_star), sin_theta * np.sin(phi_star), cos_theta])
        rapidity, q_t, phi = rng.normal(0.0, 1.0, size=n), rng.gamma(1.5, 8.0, size=n), rng.uniform(0, 2 * np.pi, size=n)
        transverse_mass = np.sqrt(masses**2 + q_t**2)
        system = np.column_stack([q_t * np.cos(phi), q_t * np.sin(phi), transverse_mass * np.sinh(rapidity)])
        beta = system / (transverse_mass * np.cosh(rapidity))[:, None]
        muons = [_boost(0.5 * masses, sign * momentum, beta) for sign in (1.0, -1.0)]
        pt = [np.hypot(p[:, 0], p[:, 1]) for p in muons]
        eta = [np.arcsinh(p[:, 2] / t) for p, t in zip(muons, pt)]
        azimuth = [np.arctan2(p[:, 1], p[:, 0]) for p in muons]
        keep = (np.minimum(pt[0], pt[1]) > self.pt_min) & (np.maximum(abs(eta[0]), abs(eta[1])) < self.eta_max)
        first_leads = pt[0] >= pt[1]
        delta_phi = np.abs((azimuth[0] - azimuth[1] + np.pi) % (2 * np.pi) - np.pi)
        features = np.column_stack([
            np.where(first_leads, pt[0], pt[1]), np.where(first_leads, pt[1], pt[0]),
            np.where(first_leads, eta[0], eta[1]), np.where(first_leads, eta[1], eta[0]), delta_phi])
        return features[keep]


@dataclass(frozen=True)
class NLOReference:
    """An NLO-like reference of a benchmark (Exponential1D or Dimuon5D): negative weights, and the
    benchmark's density as its weighted density. Of its N_R = benchmark.n_reference events, a
    fraction 1 - 2f is drawn from the benchmark's density p(x) with weight +W, and a fraction f
    each from the benchmark's softer counter-event density c(x) (`counter_events`) with weights +W
    and -W, pairs that cancel in expectation (f = negative_fraction; the kinds drawn as a
    multinomial, in random order). So the expected weighted density is (1 - 2f) N_R W p(x), and
    W = N(R) / (n_+ - n_-) makes the weights sum to N(R) exactly. Kish's n_eff is (1 - 2f)^2 N_R.
    The data of this reference are the benchmark's own (`benchmark.data`)."""

    benchmark: Exponential1D | Dimuon5D = Exponential1D()
    negative_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_fraction < 0.5:
            raise ConfigurationError(f"negative_fraction must lie in [0, 0.5), got {self.negative_fraction!r}.")

    def reference(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x_ref (N_R, d), w_ref (N_R,)) with sum w_ref = N(R); a fraction about f of w_ref < 0."""
        n_events, fraction = self.benchmark.n_reference, self.negative_fraction
        kind = rng.choice(3, size=n_events, p=[1.0 - 2.0 * fraction, fraction, fraction])  # p(x) +W, c(x) +W, c(x) -W
        central = self.benchmark.events(int(np.sum(kind == 0)), rng)
        counter = self.benchmark.counter_events(int(np.sum(kind > 0)), rng)
        x_ref = np.empty((n_events, central.shape[1]))
        x_ref[kind == 0], x_ref[kind > 0] = central, counter
        sign = np.where(kind == 2, -1.0, 1.0)
        if not sign.sum() > 0:
            raise ConfigurationError(f"n_reference = {n_events} is too small: the drawn weights do not sum to a "
                                     "positive number.")
        return x_ref, sign * (self.benchmark.n_expected / sign.sum())


#: The 5D dimuon problem at the size of the Falkon-NPLM paper (arXiv 2204.02317): N(R) = 2e4 expected
#: events and N_R = 1e5 reference events, fitted there with PAPER_SCALE_KERNEL (44.9 s per toy on
#: two GPUs; benchmarks/paper_scale_5d.py measures it here).
PAPER_SCALE_DIMUON = Dimuon5D(n_expected=20_000.0, n_reference=100_000)
#: The paper's kernel hyperparameters at that size: M = 2e4 centres drawn, sigma = 3 on standardised
#: features, lambda = 1e-6 (the kernel keeps the numerically independent centres, about 2,800).
PAPER_SCALE_KERNEL = {"n_centers": 20_000, "sigma": 3.0, "penalty": 1e-6}

def _boost(energy: np.ndarray, momentum: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Lab momentum of (energy, momentum) boosted by velocity beta (rows): p + ((g-1)/b^2 (b.p) + g E) b."""
    beta_sq = np.sum(beta**2, axis=1)
    gamma = 1.0 / np.sqrt(1.0 - beta_sq)
    beta_dot_p = np.sum(beta * momentum, axis=1)
    factor = np.where(beta_sq > 0, (gamma - 1.0) / np.where(beta_sq > 0, beta_sq, 1.0), 0.0) * beta_dot_p + gamma * energy
    return momentum + factor[:, None] * beta


def dimuon_mass(features: np.ndarray) -> np.ndarray:
    """Invariant mass (GeV) of massless muons from (pT1, pT2, eta1, eta2, delta-phi):
    m^2 = 2 pT1 pT2 (cosh(eta1 - eta2) - cos(delta-phi))."""
    pt1, pt2, eta1, eta2, delta_phi = features.T
    return np.sqrt(2.0 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(delta_phi)))


#: The detector effects a DQMStream can inject into a batch.
DQM_EFFECTS = ("resolution", "dead_region", "gain_drift")


@dataclass(frozen=True)
class DQMStream:
    """Data-quality monitoring stream: batches of a 2D detector observable,
    (energy, position). Good run: energy = a Gaussian peak (mean 1, width `resolution`, fraction
    `peak_fraction`) on an Exp(1) background, position ~ Uniform(-1, 1); N(R) events per batch.
    Effects: 'resolution' widens the peak by `resolution_factor`; 'dead_region' loses the events
    with position in `dead_region`; 'gain_drift' multiplies every energy by (1 + gain_shift)."""

    n_expected: float = 1000.0
    n_reference: int = 100_000
    peak_fraction: float = 0.3
    resolution: float = 0.1
    resolution_factor: float = 1.3
    dead_region: tuple[float, float] = (0.3, 0.5)
    gain_shift: float = 0.03

    @property
    def reference_weight(self) -> float:
        return self.n_expected / self.n_reference

    def events(self, n_events: int, rng: np.random.Generator, effect: str | None = None) -> np.ndarray:
        """n_events good-run events with `effect` applied (dead region: fewer are returned), (n, 2)."""
        if effect is not None and effect not in DQM_EFFECTS:
            raise ConfigurationError(f"effect must be one of {DQM_EFFECTS} or None, got {effect!r}.")
        width = self.resolution * (self.resolution_factor if effect == "resolution" else 1.0)
        in_peak = rng.random(n_events) < self.peak_fraction
        energy = np.where(in_peak, rng.normal(1.0, width, n_events), rng.exponential(1.0, n_events))
        position = rng.uniform(-1.0, 1.0, n_events)
        if effect == "gain_drift":
            energy = energy * (1.0 + self.gain_shift)
        events = np.column_stack([energy, position])
        if effect == "dead_region":
            low, high = self.dead_region
            events = events[(position < low) | (position >= high)]
        return events

    def reference(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x_ref (N_R, 2), w_ref) of the good run, sum w_ref = N(R)."""
        return self.events(self.n_reference, rng), np.full(self.n_reference, self.reference_weight)

    def batch(self, rng: np.random.Generator, effect: str | None = None) -> np.ndarray:
        """One batch: Poisson(N(R)) events of the good run with `effect` applied."""
        return self.events(rng.poisson(self.n_expected), rng, effect)
