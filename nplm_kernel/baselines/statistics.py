"""Classical and seed two-sample / goodness-of-fit statistics, on the same toys and calibration as
NPLM: each takes the same data, reference and weights, returns a statistic where large means a
departure, and plugs into toy campaigns through BaselineTest (run_toys, stores, executors,
resume, significance all work unchanged).

Each states its assumptions in `assumptions`; one-dimensional methods refuse d > 1, and methods
that cannot use per-event weights refuse non-uniform ones, with a clear error.

- BinnedLikelihoodRatio: the Poisson likelihood ratio (deviance) of data counts against the
  weighted reference counts, on a user binning or reference-quantile bins, summed over variables.
- BumpHunt: pyBumpHunter's 1D bump hunt (its local test statistic, -log of the smallest local
  p-value over windows); its own look-elsewhere-corrected global p-value when pseudo_experiments.
- MaximumMeanDiscrepancy: MMD with a Gaussian kernel, with Nystrom features (the package's own
  kernel and pivoted-Cholesky centres) for large samples; calibrate it on permutations or toys.
- SlicedKolmogorovSmirnov, SlicedWasserstein: scipy.stats' KS statistic and Wasserstein distance
  on random one-dimensional projections (max and mean over slices).
- GaussianProcessBumpSearch: a Gaussian-process fit (scikit-learn; kernel learned on the reference
  spectrum, then fixed) of the data spectrum, then the most significant local Poisson excess of
  the data over the fit in sliding windows (1D).
- GaussianMixtureScore: a Gaussian mixture (scikit-learn) fitted on the reference; the data's mean
  negative log-likelihood under it, against the reference's (semi-supervised anomaly score).
- KernelExcessScan (excess_scan.py): the NPLM loss with a one-kernel-function model f = theta
  phi_c, theta >= 0, scanned over centres covering the reference and over widths, each width
  penalised for its look-elsewhere effect (any number of variables).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

from ..core.exceptions import ConfigurationError, FitError
from ..core.samples import (
    Samples,
    check_positive_integer,
    check_positive_number,
    reference_standardization,
    standardized,
)
from ..kernel.geometry import nystrom_centers, uniform_candidates
from ..solver import gaussian_kernel, pairwise_distance_quantiles
from .base import Baseline
from .excess_scan import KernelExcessScan


def _quantile_edges(values: np.ndarray, weights: np.ndarray, bins: int) -> np.ndarray:
    """Edges with about equal reference weight in each bin (open outer edges)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    inner = np.interp(np.arange(1, bins) / bins, cumulative, values[order])
    return np.concatenate([[-np.inf], np.unique(inner), [np.inf]])


def _reference_spectrum(samples: Samples, bins: int,
                        value_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(edges of `bins` equal bins over value_range, or over the 0.1%-99.9% reference quantiles,
    weighted reference counts in them) of a one-variable sample."""
    low, high = value_range or tuple(np.quantile(samples.x_ref[:, 0], [0.001, 0.999]))
    if not low < high:
        raise ConfigurationError(f"value_range must be (low, high) with low < high, got {(low, high)}.")
    edges = np.linspace(float(low), float(high), bins + 1)
    return edges, np.histogram(samples.x_ref[:, 0], edges, weights=samples.w_ref)[0]


class BinnedLikelihoodRatio(Baseline):
    """Poisson likelihood ratio of binned counts, t = 2 sum_b [nu_b - n_b + n_b log(n_b / nu_b)]
    per variable (data counts n_b, weighted reference counts nu_b), summed over variables.

    Parameters
    ----------
    bins
        number of bins per variable, with equal expected counts (reference quantiles).
    edges
        explicit bin edges, one increasing sequence per variable (events outside are ignored);
        overrides bins.
    """

    name = "binned Poisson LR"
    assumptions = ("counts in fixed bins per variable (marginals only); a bin with data but no reference events "
                   "is an error; weights supported")

    def __init__(self, bins: int = 20, edges: Sequence[Sequence[float]] | None = None):
        self.bins = bins
        self.edges = edges

    def prepare(self, samples: Samples) -> list[tuple[np.ndarray, np.ndarray]]:
        """(edges, weighted reference counts) per variable."""
        if self.edges is not None and len(self.edges) != samples.n_features:
            raise ConfigurationError(f"edges must give one binning per variable ({samples.n_features}), "
                                     f"got {len(self.edges)}.")
        if self.edges is None:
            check_positive_integer(self.bins, "bins")
        binnings = []
        for j in range(samples.n_features):
            edges = (np.asarray(self.edges[j], dtype=np.float64) if self.edges is not None
                     else _quantile_edges(samples.x_ref[:, j], samples.w_ref, int(self.bins)))
            binnings.append((edges, np.histogram(samples.x_ref[:, j], edges, weights=samples.w_ref)[0]))
        return binnings

    def _statistic(self, samples: Samples, prepared: list[tuple[np.ndarray, np.ndarray]]) -> float:
        total = 0.0
        for j, (edges, expected) in enumerate(prepared):
            observed, _ = np.histogram(samples.x_data[:, j], edges)
            if np.any((expected <= 0) & (observed > 0)):
                raise FitError(f"{self.name}: a bin of variable {j} holds data events but no reference events; "
                               "choose wider bins.")
            used = expected > 0
            n, nu = observed[used], expected[used]
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.where(n > 0, n * np.log(n / nu), 0.0)
            total += 2.0 * float(np.sum(nu - n + logs))
        return total


class BumpHunt(Baseline):
    """pyBumpHunter's 1D bump hunt: t is its local test statistic, -log of the smallest local
    Poisson p-value over windows of width_min..width_max bins (excesses only).

    Parameters
    ----------
    bins
        histogram bins over the range.
    value_range
        (low, high) of the histogram; None: the 0.1% and 99.9% reference quantiles.
    width_min, width_max
        window widths in bins (width_max None: half the bins).
    pseudo_experiments
        pyBumpHunter's own background-only pseudo-experiments for its
        look-elsewhere-corrected global p-value (global_p_value_, global_significance_); 0: none.
    seed
        seed of those pseudo-experiments.
    """

    name = "BumpHunter (pyBumpHunter)"
    assumptions = "one variable, a resonant excess in contiguous bins; weights supported (background histogram)"
    one_dimensional = True

    def __init__(self, bins: int = 40, value_range: tuple[float, float] | None = None, width_min: int = 1,
                 width_max: int | None = None, pseudo_experiments: int = 0, seed: int = 0):
        self.bins = bins
        self.value_range = value_range
        self.width_min = width_min
        self.width_max = width_max
        self.pseudo_experiments = pseudo_experiments
        self.seed = seed

    def prepare(self, samples: Samples) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges, weighted reference histogram)."""
        check_positive_integer(self.bins, "bins")
        return _reference_spectrum(samples, int(self.bins), self.value_range)

    def _statistic(self, samples: Samples, prepared: tuple[np.ndarray, np.ndarray]) -> float:
        try:
            import pyBumpHunter
        except ImportError:
            raise ConfigurationError("BumpHunt needs pyBumpHunter: pip install 'nplm-kernel[baselines]'") from None
        edges, background = prepared
        hunter = pyBumpHunter.BumpHunter1D(
            rang=(float(edges[0]), float(edges[-1])), mode="excess", width_min=int(self.width_min),
            width_max=int(self.width_max or max(self.width_min, self.bins // 2)), bins=int(self.bins),
            npe=max(1, int(self.pseudo_experiments)), nworker=1, seed=self.seed)
        with contextlib.redirect_stdout(io.StringIO()):
            hunter.bump_scan(np.histogram(samples.x_data[:, 0], edges)[0], background, is_hist=True,
                             do_pseudo=self.pseudo_experiments > 0)
        location, width = int(hunter.min_loc_ar[0]), int(hunter.min_width_ar[0])
        self.bump_range_ = (float(edges[location]), float(edges[min(location + width, len(edges) - 1)]))
        self.local_p_value_ = float(hunter.min_Pval_ar[0])
        if self.pseudo_experiments > 0:
            self.global_p_value_ = float(hunter.global_Pval)
            self.global_significance_ = float(hunter.significance)
        return float(hunter.t_ar[0])


@dataclass
class _MeanEmbedding:
    """Nystrom features Phi(x) = K(x, C) T^-1 in standardised units, and the reference's mean."""

    mean: np.ndarray
    scale: np.ndarray
    sigma: float
    centers: torch.Tensor
    factor: Any
    reference: torch.Tensor

    def __call__(self, points: np.ndarray, weights: np.ndarray) -> torch.Tensor:
        """Weighted mean of Phi over `points` (already standardised)."""
        features = self.factor.whiten(gaussian_kernel(torch.as_tensor(points), self.centers, self.sigma))
        return torch.as_tensor(weights / weights.sum()) @ features


class MaximumMeanDiscrepancy(Baseline):
    """Squared MMD with a Gaussian kernel between the data and the weighted reference, in
    Nystrom features Phi = K(x, C) T^-1 on pivoted-Cholesky centres C from the reference
    (standardised inputs): t = N_D |mean_D Phi - weighted mean_R Phi|^2.

    Parameters
    ----------
    sigma
        kernel width in standardised units; None: the median pairwise reference distance.
    n_centers
        Nystrom centres drawn from the reference (fewer are kept when they are redundant).
    seed
        seed of the centres and of the width subsample.
    """

    name = "MMD (Gaussian kernel, Nystrom)"
    assumptions = "a kernel two-sample distance, sensitive to broad differences; weights supported"

    def __init__(self, sigma: float | None = None, n_centers: int = 300, seed: int = 0):
        self.sigma = sigma
        self.n_centers = n_centers
        self.seed = seed

    def prepare(self, samples: Samples) -> _MeanEmbedding:
        """The Nystrom feature map and the reference's weighted mean embedding."""
        check_positive_integer(self.n_centers, "n_centers")
        if self.sigma is not None:
            check_positive_number(self.sigma, "sigma")
        rng = np.random.default_rng(self.seed)
        mean, scale = reference_standardization(samples.x_ref, samples.w_ref)
        reference = standardized(samples.x_ref, mean, scale, "x_ref")
        sigma = float(self.sigma if self.sigma is not None else
                      pairwise_distance_quantiles(reference, [0.5], samples.w_ref)[0])
        centers, factor = nystrom_centers(uniform_candidates(reference, int(self.n_centers), rng), sigma, None,
                                          torch.device("cpu"))
        embedding = _MeanEmbedding(mean, scale, sigma, torch.as_tensor(centers), factor, torch.zeros(0))
        embedding.reference = embedding(reference, samples.w_ref)
        return embedding

    def _statistic(self, samples: Samples, prepared: _MeanEmbedding) -> float:
        data = standardized(samples.x_data, prepared.mean, prepared.scale, "x_data")
        difference = prepared(data, np.ones(len(data))) - prepared.reference
        self.sigma_ = prepared.sigma
        return float(len(data) * (difference @ difference))


def _directions(n_slices: int, n_features: int, seed: int) -> np.ndarray:
    """Unit vectors for the slices (the coordinate axes first, then random directions); in one
    dimension the only slice is the variable itself."""
    if n_features == 1:
        return np.ones((1, 1))
    axes = np.eye(n_features)[: min(n_slices, n_features)]
    extra = np.random.default_rng(seed).normal(size=(max(0, n_slices - n_features), n_features))
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([axes, extra])


class _SlicedStatistic(Baseline):
    """A statistic of one-dimensional projections (the input axes, then random directions) of the
    standardised samples.

    Parameters
    ----------
    n_slices
        projections.
    seed
        seed of the random directions.
    """

    def __init__(self, n_slices: int = 20, seed: int = 0):
        self.n_slices = n_slices
        self.seed = seed

    def _projections(self, samples: Samples) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(data, reference) projected on each direction, in standardised units."""
        check_positive_integer(self.n_slices, "n_slices")
        mean, scale = reference_standardization(samples.x_ref, samples.w_ref)
        data, reference = (samples.x_data - mean) / scale, (samples.x_ref - mean) / scale
        for direction in _directions(int(self.n_slices), samples.n_features, self.seed):
            yield data @ direction, reference @ direction


class SlicedKolmogorovSmirnov(_SlicedStatistic):
    """The largest scipy.stats.ks_2samp statistic over projections, times sqrt(N_D):
    t = sqrt(N_D) max_slices sup |F_D - F_R| (parameters: _SlicedStatistic)."""

    name = "sliced KS"
    assumptions = "marginal distributions along projections; the KS statistic takes no weights (uniform only)"
    uses_weights = False

    def _statistic(self, samples: Samples, prepared: None) -> float:
        return max(stats.ks_2samp(data, reference).statistic for data, reference in self._projections(samples)) \
            * np.sqrt(samples.n_data)


class SlicedWasserstein(_SlicedStatistic):
    """The mean scipy.stats.wasserstein_distance over projections (reference weighted), times
    sqrt(N_D), in standardised units (parameters: _SlicedStatistic)."""

    name = "sliced Wasserstein"
    assumptions = "marginal distributions along projections (1-Wasserstein); weights supported"

    def _statistic(self, samples: Samples, prepared: None) -> float:
        distances = [stats.wasserstein_distance(data, reference, v_weights=samples.w_ref)
                     for data, reference in self._projections(samples)]
        return float(np.mean(distances)) * np.sqrt(samples.n_data)


class GaussianProcessBumpSearch(Baseline):
    """A Gaussian-process fit (scikit-learn, RBF kernel on log counts, Poisson noise per bin) of the
    data spectrum in `bins` bins, then the most significant local excess over the fit:
    t = max over windows of `window` consecutive bins of -log P(N >= n | mu), N ~ Poisson(mu), n the
    data counts and mu the fitted ones summed over the window (windows with n <= mu give 0).

    The kernel's amplitude and length scale are learned once on the reference spectrum (smooth by
    construction) and then kept fixed, so the fit to the data follows the background's shape and
    cannot bend into a narrow excess; its normalisation and slope come from the data alone.

    Parameters
    ----------
    bins
        histogram bins over the 0.1%-99.9% reference quantiles.
    window
        bins summed in each local excess.
    min_length_scale
        smallest RBF length scale, in units of the range (a smooth background).
    """

    name = "GP fit + residual search"
    assumptions = ("one variable; a smooth spectrum (GP length scale, learned on the reference, at least "
                   "min_length_scale of the range) and a narrower local excess; weights supported (reference spectrum)")
    one_dimensional = True

    def __init__(self, bins: int = 40, window: int = 3, min_length_scale: float = 0.2):
        self.bins = bins
        self.window = window
        self.min_length_scale = min_length_scale

    @staticmethod
    def _log_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log(n + 1), its Poisson variance 1 / (n + 1)) per bin."""
        return np.log(counts + 1.0), 1.0 / (counts + 1.0)

    def prepare(self, samples: Samples) -> tuple[np.ndarray, np.ndarray, Any]:
        """(bin edges over the 0.1%-99.9% reference quantiles, scaled bin centres, the kernel
        learned on the weighted reference spectrum)."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel

        check_positive_integer(self.bins, "bins", minimum=2)
        check_positive_integer(self.window, "window")
        if self.window > self.bins:
            raise ConfigurationError(f"window = {self.window} bins cannot exceed bins = {self.bins}: a local excess is "
                                     "a few consecutive bins of the spectrum.")
        check_positive_number(self.min_length_scale, "min_length_scale")
        edges, expected = _reference_spectrum(samples, int(self.bins))
        low, high = edges[0], edges[-1]
        centres = ((0.5 * (edges[1:] + edges[:-1]) - low) / (high - low))[:, None]
        target, variance = self._log_counts(expected)
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(1.0, (float(self.min_length_scale), 10.0))
        process = GaussianProcessRegressor(kernel, alpha=variance, random_state=0)
        with warnings.catch_warnings():  # an optimiser stopping short only changes the fit every toy shares
            warnings.simplefilter("ignore", SklearnConvergenceWarning)
            process.fit(centres, target - target.mean())
        return edges, centres, process.kernel_

    def _statistic(self, samples: Samples, prepared: tuple[np.ndarray, np.ndarray, Any]) -> float:
        from sklearn.gaussian_process import GaussianProcessRegressor

        edges, centres, kernel = prepared
        counts, _ = np.histogram(samples.x_data[:, 0], edges)
        target, variance = self._log_counts(counts)
        process = GaussianProcessRegressor(kernel, alpha=variance, optimizer=None).fit(centres, target - target.mean())
        expected = np.maximum(np.exp(process.predict(centres) + target.mean()) - 1.0, 1e-6)
        window = np.ones(int(self.window))
        observed_sums = np.convolve(counts, window, mode="valid")
        expected_sums = np.convolve(expected, window, mode="valid")
        log_p = np.where(observed_sums > expected_sums, stats.poisson.logsf(observed_sums - 1, expected_sums), 0.0)
        best = int(np.argmin(log_p))
        self.excess_range_ = (float(edges[best]), float(edges[best + int(self.window)]))
        return float(-log_p[best])


class GaussianMixtureScore(Baseline):
    """A Gaussian mixture (scikit-learn) fitted on the standardised reference; t is the data's mean
    negative log-likelihood under it minus the reference's, in units of its standard error:
    t = (mean_D s - mean_R s) / (std_R s / sqrt(N_D)), s = -log p(x).

    Parameters
    ----------
    n_components
        mixture components.
    seed
        seed of the mixture's initialisation.
    """

    name = "Gaussian-mixture anomaly score"
    assumptions = ("semi-supervised: sees data that are less typical of the reference (tails, new regions), hardly "
                   "an excess where the reference is dense; GaussianMixture takes no weights (uniform only)")
    uses_weights = False

    def __init__(self, n_components: int = 8, seed: int = 0):
        self.n_components = n_components
        self.seed = seed

    def prepare(self, samples: Samples) -> tuple[Any, np.ndarray, np.ndarray, float, float]:
        """(mixture, standardisation mean and scale, mean and standard deviation of the reference's s)."""
        from sklearn.mixture import GaussianMixture

        check_positive_integer(self.n_components, "n_components")
        mean, scale = reference_standardization(samples.x_ref, samples.w_ref)
        reference = (samples.x_ref - mean) / scale
        with warnings.catch_warnings():  # an optimiser stopping short only changes the fit every toy shares
            warnings.simplefilter("ignore", SklearnConvergenceWarning)
            mixture = GaussianMixture(int(self.n_components), random_state=self.seed).fit(reference)
        reference_scores = -mixture.score_samples(reference)
        return mixture, mean, scale, float(reference_scores.mean()), float(reference_scores.std())

    def _statistic(self, samples: Samples, prepared: tuple[Any, np.ndarray, np.ndarray, float, float]) -> float:
        mixture, mean, scale, reference_mean, reference_std = prepared
        data_scores = -mixture.score_samples((samples.x_data - mean) / scale)
        return float((data_scores.mean() - reference_mean) / (reference_std / np.sqrt(samples.n_data)))


#: The baselines by name (nplm compare --methods, studies/baselines.py).
BASELINES: dict[str, type[Baseline]] = {
    "binned": BinnedLikelihoodRatio,
    "bumphunter": BumpHunt,
    "mmd": MaximumMeanDiscrepancy,
    "sliced_ks": SlicedKolmogorovSmirnov,
    "sliced_wasserstein": SlicedWasserstein,
    "gp": GaussianProcessBumpSearch,
    "gmm": GaussianMixtureScore,
    "excess_scan": KernelExcessScan,
}
