"""Calibration of an observed t against null toys: empirical p-value with a Clopper-Pearson
interval, a chi2 fit of the null (fitted dof and its KS p-value), and Z = Phi^-1(1 - p).

One p-value convention everywhere (empirical_p_value, min-p over members, combined settings): with k
of n null toys at least as extreme as the observed value, p = (k + 1) / (n + 1). Under the null the
observed t is one more draw exchangeable with the toys, so P(p <= alpha) <= alpha exactly, for any n
(a valid Monte Carlo p-value, never 0); k / n is not valid at small n and is 0 beyond the last toy.
The Clopper-Pearson interval is that of the toys' fraction k / n.

When the observed t exceeds every null toy the empirical p-value is only bounded, so the p-value
is taken from the fitted chi2 tail and labelled as an extrapolation, provided the chi2 describes
the null (positive t, KS p-value of the fit at least MIN_CHI2_KS_P_VALUE); otherwise the
Clopper-Pearson upper bound is reported, labelled as a bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..core.exceptions import FitError, InputError
from ..core.samples import check_finite
from ..core.statistic import z_score

EMPIRICAL = "empirical"
CHI2_EXTRAPOLATION = "fitted chi2 tail (extrapolation: t exceeds every null toy)"
UPPER_BOUND = ("Clopper-Pearson upper bound (t beyond every null toy, and no chi2 tail extends the null: no "
               "acceptable chi2 fit, KS p >= 0.01 on positive t, or a statistic without a chi2 null): the true p is "
               "smaller, Z larger")
MIN_P = "min-p over the members, calibrated on the null toys"
MIN_P_EXTRAPOLATION = ("Bonferroni bound p_k / s_k from a member's fitted chi2 tail (s_k: its share of the "
                       "false-positive rate; extrapolation: t of that member, or the min-p, beyond every null toy)")


@dataclass(frozen=True)
class Chi2Fit:
    """Maximum-likelihood chi2 fit of a null sample of t: dof, and the KS test of the fitted chi2
    (statistic and p-value; the p-value is optimistic since dof was fitted on the same sample)."""

    dof: float
    ks_statistic: float
    ks_p_value: float
    n_toys: int


@dataclass(frozen=True)
class Significance:
    """p-value of an observed t and its one-sided Z = Phi^-1(1 - p).

    method is EMPIRICAL (p = (k + 1) / (n + 1) with k of the n null toys at t_null >= t; [p_low,
    p_high] is the Clopper-Pearson interval of k / n at `confidence`) or CHI2_EXTRAPOLATION (p from
    the fitted chi2 tail; p_high is then the empirical upper bound on p from having no toy above t).
    For a test of several members (t one value per kernel width, and the excess scan) method is
    MIN_P (p = (k + 1) / (n + 1) with k the null toys whose min_k p_k / s_k is at most the observed
    one, s_k = w_k / sum(w) the member's share of the false-positive rate, equal without weights;
    `member_p_values` holds the observed p-value of each member, `member_weights` the weights) or
    MIN_P_EXTRAPOLATION: the Bonferroni bound min_k p_k / s_k, with p_k from the fitted chi2 tail
    of member k (an acceptable fit), over the members beyond every one of their null toys, or over
    all members when the combined statistic is beyond every toy's (the true p is at most p_k / s_k
    for any k: the observed statistic is at most p_k / s_k, and P(min_j P_j / s_j <= c) <= c);
    used when it is below what the toys alone give (the empirical p, or the Clopper-Pearson upper
    bound beyond every toy). A member that alone is far beyond its toys then shows its evidence
    even when another member's toys hold most of the false-positive rate. chi2_fit is None.

    When t is beyond every toy and the null has non-positive t values (no chi2 fit), method is
    UPPER_BOUND and p_value the Clopper-Pearson upper bound."""

    t: float | tuple[float, ...]
    p_value: float
    p_low: float
    p_high: float
    z: float
    method: str
    n_toys: int
    chi2_fit: Chi2Fit | None  # None for min-p, or when the null has non-positive t
    member_p_values: tuple[float, ...] = ()
    member_weights: tuple[float, ...] = ()

    @property
    def is_extrapolated(self) -> bool:
        return self.method in (CHI2_EXTRAPOLATION, MIN_P_EXTRAPOLATION)

    @property
    def is_bound(self) -> bool:
        """p is only an upper bound (UPPER_BOUND): beyond every toy with no chi2 tail to use."""
        return self.method == UPPER_BOUND

    def __str__(self) -> str:
        """One line: t, p (with its Clopper-Pearson interval, or as a bound), how p was obtained and
        from how many null toys, and Z; the text every output of an analysis shows."""
        members = isinstance(self.t, tuple)
        t = "(" + ", ".join(f"{value:.3f}" for value in self.t) + ")" if members else f"{self.t:.3f}"
        weighted = "weighted " if len(set(self.member_weights)) > 1 else ""
        scope = f"{weighted}min-p over {len(self.t)} members, " if members else ""
        if self.is_bound:
            return (f"t = {t}: p < {self.p_value:.3g} ({scope}upper bound: t beyond all {self.n_toys} null toys), "
                    f"Z > {self.z:.2f}")
        if self.is_extrapolated:
            tail = (f"Bonferroni bound over {len(self.t)} members from chi2 tails" if members
                    else "chi2 extrapolation")
            return f"t = {t}: p = {self.p_value:.3g} ({tail} beyond all {self.n_toys} null toys), Z = {self.z:.2f}"
        return (f"t = {t}: p = {self.p_value:.3g}, interval [{self.p_low:.2g}, {self.p_high:.2g}] ({scope}empirical, "
                f"{self.n_toys} null toys), Z = {self.z:.2f}")


def _as_null_sample(t_null: object) -> np.ndarray:
    """The null toys' t of a one-number statistic, (n,); InputError for one column per member."""
    values = np.asarray(t_null, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] > 1:
        raise InputError(f"t_null has one column per member {values.shape} (the null of a test of several members: "
                         "kernel widths, the excess scan): calibrate it with one observed t per member "
                         "(significance(result.t, t_null)), or select one member's column.")
    values = values.reshape(-1)
    if values.size < 2:
        raise InputError(f"t_null needs at least 2 null toys, got {values.size}.")
    check_finite(values[:, None], "t_null")
    return values


def fit_chi2(t_null: object) -> Chi2Fit:
    """Fit chi2(dof) (location 0, scale 1) to null t values by maximum likelihood (scipy.stats)."""
    values = _as_null_sample(t_null)
    if (values <= 0).any():
        raise FitError(
            f"cannot fit a chi2 to a null sample with {int((values <= 0).sum())} non-positive t value(s); "
            "the chi2 approximation does not hold for these toys."
        )
    dof, _, _ = stats.chi2.fit(values, floc=0.0, fscale=1.0)
    ks = stats.kstest(values, stats.chi2(dof).cdf)
    return Chi2Fit(dof=float(dof), ks_statistic=float(ks.statistic), ks_p_value=float(ks.pvalue), n_toys=values.size)


#: A chi2 fit whose KS p-value is below this does not describe the null: its tail is not used to
#: extrapolate beyond the last toy.
MIN_CHI2_KS_P_VALUE = 0.01


def _chi2_fit_or_none(values: np.ndarray) -> Chi2Fit | None:
    """The chi2 fit of a null sample, or None when it has non-positive t (no chi2 describes it)."""
    return fit_chi2(values) if (values > 0).all() else None


def _extends_tail(fit: Chi2Fit | None) -> bool:
    """Whether a chi2 fit may extend the null beyond its last toy (it exists and KS does not reject it)."""
    return fit is not None and fit.ks_p_value >= MIN_CHI2_KS_P_VALUE


def chi2_ks_test(t_null: object, dof: float) -> tuple[float, float]:
    """(KS statistic, KS p-value) of null t values against chi2(dof) with dof fixed in advance."""
    values = _as_null_sample(t_null)
    if not dof > 0:
        raise InputError(f"dof must be positive, got {dof}.")
    result = stats.kstest(values, stats.chi2(dof).cdf)
    return float(result.statistic), float(result.pvalue)


def monte_carlo_p_value(exceeding: int, n_toys: int) -> float:
    """(k + 1) / (n + 1) for k of n toys at least as extreme (the convention: module docstring)."""
    return (exceeding + 1.0) / (n_toys + 1.0)


def empirical_p_value(t: float, t_null: object, confidence: float = 0.6827) -> tuple[float, float, float]:
    """(p, p_low, p_high): p = (k + 1) / (n + 1) with k = #(t_null >= t) of n null toys, and the
    Clopper-Pearson interval of k / n."""
    values = _as_null_sample(t_null)
    exceeding = int(np.count_nonzero(values >= t))
    interval = stats.binomtest(exceeding, values.size).proportion_ci(confidence_level=confidence, method="exact")
    return monte_carlo_p_value(exceeding, values.size), float(interval.low), float(interval.high)


def significance(t: float | Sequence[float], t_null: object, confidence: float = 0.6827,
                 extrapolate: bool = True, weights: Sequence[float] | None = None) -> Significance:
    """Calibrate an observed t against null toys (module docstring); for a test of several members, t
    has one value per member and t_null is (n_toys, K): min-p over the members (Significance),
    weighted by `weights` (one per member: min_k p_k / w_k; the default test's are its result's
    member_weights, the scan weighted 3 : 1; None: equal weights).
    extrapolate=False never uses a chi2 tail (statistics without a chi2 null): beyond every null
    toy, p is the Clopper-Pearson upper bound."""
    if np.ndim(t) == 1:
        return _min_p_significance(np.asarray(t, dtype=np.float64), t_null, confidence, extrapolate, weights)
    if weights is not None:
        raise InputError(f"weights ({weights!r}) combine the members of a test of several members; this t is one "
                         "number.")
    if not np.isfinite(t):
        raise InputError(f"observed t must be finite, got {t}.")
    values = _as_null_sample(t_null)
    chi2_fit = _chi2_fit_or_none(values)
    p_value, p_low, p_high = empirical_p_value(t, values, confidence)
    method = EMPIRICAL
    if not (values >= t).any():
        p_value, method = ((float(stats.chi2.sf(t, chi2_fit.dof)), CHI2_EXTRAPOLATION)
                           if extrapolate and _extends_tail(chi2_fit) else (p_high, UPPER_BOUND))
    return Significance(
        t=float(t),
        p_value=p_value,
        p_low=p_low,
        p_high=p_high,
        z=z_score(p_value),
        method=method,
        n_toys=values.size,
        chi2_fit=chi2_fit,
    )


@dataclass(frozen=True)
class CombinedSignificance:
    """Several hyperparameter settings tested on the same data, combined into one p-value.

    p_values: per-setting empirical p-values of the observed t ((k + 1) / (n + 1) form);
    min_p / fisher: the toy-calibrated p-values of the statistics min_k p_k and -2 sum_k log p_k
    (the fraction of null toys at least as extreme, each toy's p-values computed against the other
    toys); z_min_p / z_fisher the matching Z."""

    p_values: tuple[float, ...]
    min_p: float
    fisher: float
    z_min_p: float
    z_fisher: float
    n_toys: int


def _settings_p_values(t_observed: object, t_null: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observed (m, K), per-setting p-values of the observed t (m, K), of each null toy against the
    other n - 1 toys (n, K)), after checking shapes and finiteness; t_observed is (K,) for one data
    set or (m, K) for m of them. Columns: sorted null t, so the cost is O((m + n) K log n)."""
    null, observed = np.asarray(t_null, dtype=np.float64), np.asarray(t_observed, dtype=np.float64)
    n_settings = observed.shape[-1] if observed.ndim else 1
    if null.ndim != 2 or observed.ndim not in (1, 2) or null.shape[1] != n_settings:
        raise InputError(f"t_null must have shape (n_toys, {n_settings}), one column per setting, got {null.shape}.")
    observed = observed.reshape(-1, n_settings)
    if null.shape[0] < 2:
        raise InputError(f"t_null needs at least 2 null toys, got {null.shape[0]}.")
    check_finite(observed, "t_observed")
    check_finite(null, "t_null")
    n_toys = null.shape[0]
    ordered = np.sort(null, axis=0)
    at_least, observed_at_least = np.empty_like(null), np.empty_like(observed)
    for column in range(n_settings):
        at_least[:, column] = n_toys - np.searchsorted(ordered[:, column], null[:, column], side="left")
        observed_at_least[:, column] = n_toys - np.searchsorted(ordered[:, column], observed[:, column], side="left")
    # (k + 1) / (n + 1) for the observed; (k + 1) / n with k = the others at least as large for a null toy
    return observed, monte_carlo_p_value(observed_at_least, n_toys), at_least / n_toys


#: The combinations of K per-setting p-values (rows of an (m, K) array) that combined_p_values
#: calibrates, each a statistic that grows with the evidence: min-p (-min_k p_k), Fisher
#: (-2 sum_k log p_k), Stouffer (sum_k Phi^-1(1 - p_k) / sqrt(K); -inf when a p_k is 1, i.e. t below
#: every null toy) and Cauchy (mean_k tan((1/2 - p_k) pi), Liu & Xie 2020).
COMBINATIONS = {
    "min-p": lambda p: -p.min(axis=1),
    "fisher": lambda p: -2.0 * np.log(p).sum(axis=1),
    "stouffer": lambda p: stats.norm.isf(p).sum(axis=1) / np.sqrt(p.shape[1]),
    "cauchy": lambda p: np.tan((0.5 - p) * np.pi).mean(axis=1),
}


def _combination_exceeding(observed_p: np.ndarray, null_p: np.ndarray, combination: str) -> np.ndarray:
    """Per observed row, the null toys whose combined statistic is at least as extreme."""
    if combination not in COMBINATIONS:
        raise InputError(f"combination must be one of {sorted(COMBINATIONS)}, got {combination!r}.")
    statistic = COMBINATIONS[combination]
    null_statistic = np.sort(statistic(null_p))
    return null_statistic.size - np.searchsorted(null_statistic, statistic(observed_p), side="left")


def combined_p_values(t_observed: object, t_null: object, combination: str = "min-p",
                      weights: Sequence[float] | None = None) -> np.ndarray:
    """Calibrated p-values of K settings combined, for m data sets at once: t_observed (m, K) (or
    (K,)), t_null (n_toys, K) with row j = null toy j fitted with every setting. Each setting's p is
    (k + 1) / (n + 1) on the null toys (each null toy's against the other n - 1); the combined
    statistic (COMBINATIONS) of a data set is then calibrated on the null toys' own combined
    statistics, p = (k + 1) / (n + 1). weights (min-p only): a weighted min-p, min_k p_k / w_k, which
    gives setting k about the share w_k / sum(w) of the false-positive rate. Returns (m,)."""
    _, observed_p, null_p = _settings_p_values(t_observed, t_null)
    if weights is not None:
        if combination != "min-p":
            raise InputError(f"weights apply to the min-p combination only, got combination {combination!r}.")
        shares = _weight_shares(weights, observed_p.shape[1])
        observed_p, null_p = observed_p / shares, null_p / shares
    return monte_carlo_p_value(_combination_exceeding(observed_p, null_p, combination), null_p.shape[0])


def _weight_shares(weights: Sequence[float] | None, n_settings: int) -> np.ndarray:
    """The weights of a weighted min-p normalised to sum to 1 (equal shares for None)."""
    if weights is None:
        return np.full(n_settings, 1.0 / n_settings)
    shares = np.asarray(weights, dtype=np.float64)
    if shares.shape != (n_settings,) or not (np.isfinite(shares).all() and (shares > 0).all()):
        raise InputError(f"weights must be {n_settings} positive finite numbers (one per setting), got {weights!r}.")
    return shares / shares.sum()


def _min_p_significance(observed_t: np.ndarray, t_null: object, confidence: float, extrapolate: bool,
                        weights: Sequence[float] | None) -> Significance:
    observed, observed_p, null_p = _settings_p_values(observed_t, t_null)
    observed, n_toys = observed[0], null_p.shape[0]
    shares = _weight_shares(weights, observed.size)
    count = int(_combination_exceeding(observed_p / shares, null_p / shares, "min-p")[0])
    interval = stats.binomtest(count, n_toys).proportion_ci(confidence_level=confidence, method="exact")
    p_value, method = monte_carlo_p_value(count, n_toys), MIN_P
    null = np.asarray(t_null, dtype=np.float64)
    beyond = observed > null.max(axis=0)  # members whose own p is only bounded by the toys
    if count == 0 or beyond.any():
        fits = [_chi2_fit_or_none(null[:, column]) if count == 0 or beyond[column] else None
                for column in range(observed.size)]
        bounds = [stats.chi2.sf(value, fit.dof) / share for value, fit, share in zip(observed, fits, shares)
                  if _extends_tail(fit)]
        bound = float(min(bounds)) if extrapolate and bounds else np.inf
        limit = float(interval.high) if count == 0 else p_value  # what the toys alone say
        if bound < limit:
            p_value, method = bound, MIN_P_EXTRAPOLATION
        elif count == 0:
            p_value, method = float(interval.high), UPPER_BOUND
    return Significance(t=tuple(float(value) for value in observed), p_value=p_value, p_low=float(interval.low),
                        p_high=float(interval.high), z=z_score(p_value), method=method, n_toys=n_toys,
                        chi2_fit=None, member_p_values=tuple(float(p) for p in observed_p[0]),
                        member_weights=() if weights is None else tuple(float(weight) for weight in weights))


def combine_settings(t_observed: object, t_null: object) -> CombinedSignificance:
    """Combine K settings: t_observed (K,) on the data, t_null (n_toys, K) on the same null toys
    (row j = toy j fitted with every setting). Never a naive min: both combined statistics are
    calibrated on the null toys, so the combination holds its false-positive rate."""
    _, observed_p, null_p = _settings_p_values(t_observed, t_null)
    n_toys = null_p.shape[0]
    min_p, fisher = (float(monte_carlo_p_value(_combination_exceeding(observed_p, null_p, combination)[0], n_toys))
                     for combination in ("min-p", "fisher"))
    return CombinedSignificance(
        p_values=tuple(float(p) for p in observed_p[0]),
        min_p=min_p,
        fisher=fisher,
        z_min_p=z_score(min_p),
        z_fisher=z_score(fisher),
        n_toys=n_toys,
    )
