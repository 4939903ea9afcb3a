"""The one entry point that wraps any backend: NPLMTest(backend, nuisances).run(x_data, x_ref, w_ref).

The backend is any implementation of the backend contract (nplm_kernel.contract.Backend).
t = tau - Delta, with the auxiliary constraint A(nu) of nuisance.py:
    Delta = -2 min_nu      (L[0; log r(nu)] + A(nu))     (scipy, exact Newton),
    tau   = -2 min_{f, nu} (L[f; log r(nu)] + A(nu)).
tau is found either by the backend itself (joint gradient training: a backend with
`fits_nuisances_jointly = True`, i.e. NNNPLM), followed by a final minimisation over nu at its f,
or by alternating a backend fit with offsets log r(nu) and a minimisation over nu at fixed f,
until nu moves by less than `nuisance_tol` sigma (KernelNPLM). Both start from the Delta fit's nu.
Without nuisances t = tau and Delta = 0. The result records the backend, its hyperparameters,
nu_hat of both terms and the iteration count, so that every t can be traced to how it was obtained.

The default test (a backend whose kernel width is not fixed, no nuisances) has two members,
calibrated together by a weighted min-p on null toys of the same test: the full model at the width
found at the 0.9 quantile of pairwise reference distances, and the backend's scan for a local
excess (the contract's excess_scan: for the kernel, the NPLM loss of one kernel function at a
time), weighted DEFAULT_SCAN_WEIGHT : 1 against each width.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from ..contract import contract_gaps, role_setting
from ..core.exceptions import ConfigurationError, ConvergenceWarning, FitConsistencyWarning, warning_text
from ..core.identity import describe, qualified_name, sample_digest
from ..core.samples import as_events, as_weights, check_positive_integer, check_positive_number, validate_samples
from ..nuisance import NuisanceFit, NuisanceModel, NuisanceTerms

#: Number of past iterates in the Anderson-accelerated alternation.
ANDERSON_DEPTH = 3
#: tau may fall below Delta by this much (relative to max(1, |Delta|)) from rounding alone.
TAU_BELOW_DELTA_TOLERANCE = 1e-6
#: The kernel widths of the default test, as quantiles of pairwise reference distances, when the
#: backend's width is not fixed (multi_scale_widths).
DEFAULT_WIDTH_QUANTILES = (0.9,)
#: The excess scan's weight in the default test's min-p, against 1 for each kernel width (min_k p_k /
#: w_k: with one width the scan holds about 3/4 of the false-positive rate).
DEFAULT_SCAN_WEIGHT = 3.0
#: Widths found on a reference closer than this (relative) are one width: the test would fit it twice.
WIDTH_RESOLUTION = 1e-6


@dataclass(frozen=True)
class NPLMResult:
    """One NPLM test: t = tau - Delta (dimensionless), the fitted estimator (f via its
    decision_function), the backend's name and hyperparameters, the wall time in seconds, and with
    nuisances nu_hat of the tau and Delta terms (model order), the tau iterations and whether the
    nuisance fit converged (without nuisances: empty arrays, 0 iterations). From run_batch, the
    warnings this sample's fit raised ('Category: message'; run_batch raises them too)."""

    t: float
    tau: float
    delta: float
    backend: str
    hyperparameters: dict[str, Any]
    wall_time: float
    estimator: BaseEstimator = field(repr=False)
    nu_hat_tau: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nu_hat_delta: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nuisance_iterations: int = 0
    nuisance_converged: bool = True
    batch_warnings: tuple[str, ...] = ()

    #: A single t is calibrated alone: no members, and no weights for significance().
    members = ()
    member_weights = None

    @property
    def converged(self) -> bool | None:
        """Whether every fit behind t met its tolerance: the backend's own verdict (None when the
        backend has no convergence criterion, e.g. the NN's fixed number of epochs) and, with
        nuisances, the tau alternation's."""
        backend = self.estimator.fit_.converged
        if backend is None:
            return None if self.nuisance_converged else False
        return bool(backend) and self.nuisance_converged

    @property
    def diagnostics(self) -> Any:
        """The backend's fit diagnostics (KernelNPLM: SolverDiagnostics; NNNPLM: loss history)."""
        return self.estimator.fit_.diagnostics

    @property
    def unsupported_events(self) -> int:
        """Data events of the final fit that the reference sample cannot support (contract.finish_fit)."""
        return len(self.estimator.fit_.unsupported_events)

    def row_fields(self) -> dict[str, Any]:
        """What a campaign stores of this test (JSON-safe)."""
        return {"t": self.t, "tau": self.tau, "delta": self.delta, "nu_hat_tau": self.nu_hat_tau.tolist(),
                "nu_hat_delta": self.nu_hat_delta.tolist(), "nuisance_iterations": self.nuisance_iterations,
                "converged": self.converged, "unsupported_events": self.unsupported_events}


@dataclass(frozen=True)
class MultiScaleResult:
    """A test of several members on the same data: one NPLMResult per kernel width (`widths`, the
    backend's width setting) and, in the default test, the backend's excess scan (its outcome and
    wall time in seconds) as the last member. `t` is the vector of their t (one per member, in the
    order of `members`); calibrated jointly against null toys of the same test by
    calibration.significance (min-p over the members)."""

    widths: tuple[float, ...]
    results: tuple[NPLMResult, ...]
    excess_scan: Any = None
    excess_scan_time: float = 0.0
    scan_weight: float = DEFAULT_SCAN_WEIGHT

    @property
    def member_weights(self) -> tuple[float, ...] | None:
        """The weights of the members in the min-p that calibrates t (significance(..., weights=)):
        1 per width and scan_weight for the scan; None (equal) without a scan."""
        return _member_weights(len(self.widths), self.scan_weight) if self.excess_scan else None

    @property
    def members(self) -> tuple[str, ...]:
        """What each entry of t is: 'width <sigma>' per kernel width, then 'excess scan'."""
        return tuple(f"width {width:.3g}" for width in self.widths) + (("excess scan",) if self.excess_scan else ())

    @property
    def t(self) -> np.ndarray:
        return np.array([result.t for result in self.results] + self._scan_t)

    @property
    def tau(self) -> np.ndarray:
        """tau per member (the scan's is its t: it takes no nuisances)."""
        return np.array([result.tau for result in self.results] + self._scan_t)

    @property
    def _scan_t(self) -> list[float]:
        """The scan's t as the last member, or nothing without a scan."""
        return [self.excess_scan.t] if self.excess_scan else []

    @property
    def delta(self) -> float:
        return self.results[0].delta

    @property
    def nu_hat_tau(self) -> np.ndarray:
        """Per width (rows), the nuisances' values at the tau fit (model order)."""
        return np.array([result.nu_hat_tau for result in self.results])

    @property
    def nu_hat_delta(self) -> np.ndarray:
        """The nuisances' values at the Delta fit (f = 0: the same for every width)."""
        return self.results[0].nu_hat_delta

    @property
    def converged(self) -> bool | None:
        verdicts = [result.converged for result in self.results]
        return False if False in verdicts else (None if None in verdicts else True)

    @property
    def wall_time(self) -> float:
        return sum(result.wall_time for result in self.results) + self.excess_scan_time

    @property
    def unsupported_events(self) -> list[int]:
        """Per width, the data events the reference sample cannot support."""
        return [result.unsupported_events for result in self.results]

    @property
    def batch_warnings(self) -> tuple[str, ...]:
        """From run_batch, the warnings of this sample's fits, width after width."""
        return tuple(text for result in self.results for text in result.batch_warnings)

    @property
    def estimator(self) -> BaseEstimator:
        """The first width's fitted estimator (each width's: results[k].estimator)."""
        return self.results[0].estimator

    @property
    def backend(self) -> str:
        return self.results[0].backend

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The first width's hyperparameters with every width, and the scan's settings."""
        scan = {"excess_scan": describe(self.estimator.excess_scan())} if self.excess_scan else {}
        return {**self.results[0].hyperparameters, role_setting(self.estimator, "width"): list(self.widths), **scan}

    def row_fields(self) -> dict[str, Any]:
        """What a campaign stores of this test: t and tau per member (lists), the widths, and the
        scan's details (where its largest excess is)."""
        scan = {"excess_scan": self.excess_scan.details()} if self.excess_scan else {}
        return {"t": self.t.tolist(), "tau": self.tau.tolist(), "delta": self.delta, "widths": list(self.widths),
                "nu_hat_tau": [result.nu_hat_tau.tolist() for result in self.results],
                "nu_hat_delta": self.results[0].nu_hat_delta.tolist(),
                "nuisance_iterations": sum(result.nuisance_iterations for result in self.results),
                "converged": self.converged, "unsupported_events": self.unsupported_events, **scan}


def backend_identity(backend: BaseEstimator) -> dict[str, Any]:
    """The backend's class and the hyperparameters that define its fit (described; execution
    settings such as the device, which change how but not what is computed, are left out), and what
    else defines it (the contract's optional identity_details, e.g. the rule behind a default)."""
    execution = set(getattr(type(backend), "execution_settings", ()))
    parameters = {name: value for name, value in backend.get_params(deep=False).items() if name not in execution}
    identity = {"class": qualified_name(type(backend)), "hyperparameters": describe(parameters)}
    details = backend.identity_details() if hasattr(backend, "identity_details") else {}
    return identity | ({"details": describe(details)} if details else {})


def json_safe_parameters(estimator: BaseEstimator) -> dict[str, Any]:
    """The estimator's hyperparameters with arrays summarised, so that they serialise to JSON."""
    safe = {}
    for name, value in estimator.get_params(deep=False).items():
        if isinstance(value, np.ndarray):
            safe[name] = f"array{value.shape}"
        elif isinstance(value, (np.integer, np.floating)):
            safe[name] = value.item()
        elif isinstance(value, tuple):
            safe[name] = list(value)
        else:
            safe[name] = value if isinstance(value, (str, int, float, bool, list, type(None))) else repr(value)
    return safe


class NPLMTest:
    """Runs the NPLM test with `backend`, an unfitted estimator with the shared contract
    (KernelNPLM or NNNPLM): each run fits a fresh clone, so one NPLMTest serves many toys.

    nuisances : a NuisanceModel (None: no systematic uncertainties, t = tau).
    nuisance_tol : alternating tau fit stops when nu moves by less than this many sigma.
    max_alternations : cap on the alternating fits (ConvergenceWarning when reached).
    widths : kernel widths of a multi-scale test (the backend's width setting, e.g. KernelNPLM's sigma,
        in its input units): each run fits the backend once per width on the same data and returns a
        MultiScaleResult whose t has one entry per width; significance() calibrates it by min-p over
        the widths on null toys of the same test. None: the widths come from width_quantiles.
    width_quantiles : without widths, and when the backend has a kernel width that is not fixed (e.g.
        KernelNPLM() with sigma=None), one fit per width at these quantiles of pairwise reference
        distances (the backend's reference_widths), found on each run's reference. None or (): one
        fit with the backend's own width. A backend without a kernel width (the NN) or with a fixed
        one always fits once.
    excess_scan : when the test finds its widths (width_quantiles) and has no nuisances, also run
        the backend's scan for a local excess (the contract's optional excess_scan) as a member of
        the min-p. With the defaults this is the default test, the same in Python, `nplm test`,
        `nplm toys` and `nplm run`: the full model at the 0.9 quantile and the scan (a
        MultiScaleResult of two members). With nuisances (the scan takes none) the default is the
        one fit at the 0.9 quantile.
    scan_weight : the scan's weight in the min-p against 1 for each width (the result's
        member_weights; part of the test's identity).
    """

    def __init__(self, backend: BaseEstimator, nuisances: NuisanceModel | None = None,
                 nuisance_tol: float = 1e-3, max_alternations: int = 30, widths: Sequence[float] | None = None,
                 width_quantiles: Sequence[float] | None = DEFAULT_WIDTH_QUANTILES, excess_scan: bool = True,
                 scan_weight: float = DEFAULT_SCAN_WEIGHT):
        missing = contract_gaps(backend)
        if missing:
            raise ConfigurationError(
                f"backend must implement the backend contract (nplm_kernel.backends.Backend), such as KernelNPLM(...) "
                f"or NNNPLM(...); {type(backend).__name__} lacks {missing}."
            )
        if nuisances is not None and not isinstance(nuisances, NuisanceModel):
            raise ConfigurationError(f"nuisances must be a NuisanceModel or None, got {type(nuisances).__name__}.")
        check_positive_number(nuisance_tol, "nuisance_tol")
        check_positive_integer(max_alternations, "max_alternations")
        if widths is not None:
            widths = tuple(float(width) for width in widths)
            if len(widths) < 2 or len(set(widths)) != len(widths):
                raise ConfigurationError(f"widths must list at least 2 different kernel widths, got {widths}.")
            for width in widths:
                check_positive_number(width, "each of widths")
            if role_setting(backend, "width") is None:
                raise ConfigurationError(f"widths need a backend with a kernel width; {type(backend).__name__} has "
                                         "none.")
        quantiles = tuple(float(quantile) for quantile in (width_quantiles or ()))
        if quantiles and (len(set(quantiles)) != len(quantiles) or not all(0.0 < quantile < 1.0
                                                                             for quantile in quantiles)):
            raise ConfigurationError(f"width_quantiles must list different quantiles in (0, 1), or be None for the "
                                     f"backend's own width; got {width_quantiles}.")
        if not isinstance(excess_scan, (bool, np.bool_)):
            raise ConfigurationError(f"excess_scan must be True or False, got {excess_scan!r}.")
        check_positive_number(scan_weight, "scan_weight")
        self.widths = widths
        self.width_quantiles = quantiles or None
        self.backend = backend
        self.nuisances = nuisances
        self.nuisance_tol = float(nuisance_tol)
        self.max_alternations = int(max_alternations)
        self.excess_scan = bool(excess_scan)
        self.scan_weight = float(scan_weight)
        #: The scan of this test (found with its widths on the reference), or None; its reference
        #: preparation, kept for one reference at a time ({reference digest: prepared}).
        self._scan = (backend.excess_scan() if self.excess_scan and nuisances is None and self.finds_widths
                      and hasattr(backend, "excess_scan") else None)
        self._prepared_scan: dict[str, Any] = {}

    def with_quiet_fits(self) -> NPLMTest:
        """This test with its backend's per-fit progress bar (the contract's progress role) off: a
        campaign fits many toys at once and draws one bar for them all. The same t (progress is an
        execution setting)."""
        setting = role_setting(self.backend, "progress")
        if setting is None or not self.backend.get_params(deep=False)[setting]:
            return self
        quiet = copy.copy(self)
        quiet.backend = clone(self.backend).set_params(**{setting: False})
        return quiet

    @property
    def finds_widths(self) -> bool:
        """Whether each run finds its kernel widths on its reference (width_quantiles; see for_reference)."""
        return self.widths is None and _width_is_free(self.backend, self.width_quantiles)

    def for_reference(self, x_ref: np.ndarray | None, w_ref: float | np.ndarray | None) -> NPLMTest:
        """This test with its widths found on this reference (a copy with explicit widths), or itself
        when its widths are given, it fits once or there is no reference (toys that bring their own):
        what a campaign runs and identifies."""
        if x_ref is None or not self.finds_widths:
            return self
        advice = "pass width_quantiles=None (nplm test/toys --width-quantiles none) for one fit, or fix the width"
        try:
            widths = tuple(multi_scale_widths(self.backend, x_ref, w_ref, self.width_quantiles))
        except ConfigurationError as error:
            raise ConfigurationError(f"the default test's kernel widths cannot be found on this reference: {error} "
                                     f"Or {advice}.") from error
        if len(widths) > 1 and np.any(np.diff(widths) <= WIDTH_RESOLUTION * np.asarray(widths[1:])):
            raise ConfigurationError(f"the quantiles {list(self.width_quantiles)} of pairwise reference distances give "
                                     f"the same kernel width ({widths}): the reference takes few distinct values. "
                                     f"Give other width_quantiles or widths, or {advice}.")
        found = copy.copy(self)
        found.widths = widths
        return found

    def identity(self, x_ref: np.ndarray | None = None, w_ref: float | np.ndarray | None = None) -> dict[str, Any]:
        """What defines this test's t on a given reference: the backend and its hyperparameters, the
        nuisance model and its settings, the kernel widths (found on this reference when the test
        finds them), and a digest of the reference sample and weights."""
        if x_ref is not None and self.finds_widths:
            return self.for_reference(x_ref, w_ref).identity(x_ref, w_ref)
        reference = None
        if x_ref is not None:
            events = as_events(x_ref, "x_ref")
            reference = sample_digest(events, as_weights(w_ref, len(events)))
        nuisances = None
        if self.nuisances is not None:
            nuisances = {"model": describe(self.nuisances.nuisances), "nuisance_tol": self.nuisance_tol,
                         "max_alternations": self.max_alternations}
        backend = backend_identity(self.backend)
        if self.widths is not None or self.finds_widths:  # they replace the backend's width and its default rule
            backend.pop("details", None)
        widths = None if self.widths is None else list(self.widths)
        if widths is None and self.finds_widths:
            widths = {"reference_quantiles": list(self.width_quantiles)}
        scan = {} if self._scan is None else {"excess_scan": describe(self._scan), "scan_weight": self.scan_weight}
        return {"backend": backend, "nuisances": nuisances, "reference": reference, "widths": widths, **scan}

    def run(self, x_data: np.ndarray, x_ref: np.ndarray, w_ref: float | np.ndarray,
            central_values: np.ndarray | None = None) -> NPLMResult | MultiScaleResult:
        """Fit the backend on (data, reference, weights) and return t = tau - Delta (a
        MultiScaleResult, with one t per member, for a test of several widths or with the scan).

        central_values : the auxiliary measurements nu0 (one per nuisance) of this data set; None:
        the nuisance model's own. Only with nuisances."""
        if central_values is not None and self.nuisances is None:
            raise ConfigurationError("central_values were given but this NPLMTest has no nuisances.")
        if self.finds_widths:
            return self.for_reference(x_ref, w_ref).run(x_data, x_ref, w_ref, central_values)
        results = tuple(self._run(backend, x_data, x_ref, w_ref, central_values) for backend in self._backends())
        return self._combined(results, x_data, x_ref, w_ref)

    @property
    def single_fit(self) -> bool:
        """Whether a run is one fit (an NPLMResult): no widths, or one width and no scan."""
        return self.widths is None or (len(self.widths) == 1 and self._scan is None)

    def _combined(self, results: tuple[NPLMResult, ...], x_data, x_ref, w_ref) -> NPLMResult | MultiScaleResult:
        """The run's result from its fits (one per width): the fit itself for a single fit, else the
        MultiScaleResult with the scan of the same data."""
        if self.single_fit:
            return results[0]
        if self._scan is None:
            return MultiScaleResult(self.widths, results)
        start = time.perf_counter()
        samples = validate_samples(x_data, x_ref, w_ref, owner="NPLMTest", warn_sample_size=False)
        key = sample_digest(samples.x_ref, samples.w_ref)["blake2b"]
        prepared = self._prepared_scan.get(key)  # read once: another thread may replace the entry
        if prepared is None:
            prepared = self._scan.prepare(samples.x_ref, samples.w_ref)
            self._prepared_scan.clear()  # one reference at a time
            self._prepared_scan[key] = prepared
        outcome = self._scan.scan(samples.x_data, prepared)
        return MultiScaleResult(self.widths, results, outcome, time.perf_counter() - start, self.scan_weight)

    def _backends(self) -> list[BaseEstimator]:
        """The backend, or one clone per width of a multi-scale test."""
        if self.widths is None:
            return [self.backend]
        setting = role_setting(self.backend, "width")
        return [clone(self.backend).set_params(**{setting: width}) for width in self.widths]

    @property
    def batchable(self) -> bool:
        """Whether run_batch fits its samples together (a backend that fits batches, no nuisances)."""
        return bool(self.backend.fits_batches) and self.nuisances is None

    @property
    def t_floor(self) -> float | list[float | None] | None:
        """The lowest t a run can give (None: no bound known): the backend's `t_floor` without
        nuisances (with them t = tau - Delta may lie slightly below it); with the excess scan, one
        per member: the backend's per width, None for the scan (its t can be negative)."""
        floor = None if self.nuisances is not None else getattr(self.backend, "t_floor", None)
        if floor is None or self._scan is None:
            return floor
        return [floor] * len(self.widths or self.width_quantiles) + [None]

    def run_batch(self, x_data: Sequence[np.ndarray], x_ref: np.ndarray,
                  w_ref: float | np.ndarray) -> list[NPLMResult | MultiScaleResult]:
        """run() on several data samples against one reference: the same results, computed together
        where the backend fits batches (per width for a multi-scale test), one by one otherwise.
        Each result's batch_warnings are the warnings of its own sample's fits, which are also
        raised (as run() would raise them)."""
        if self.finds_widths:
            return self.for_reference(x_ref, w_ref).run_batch(x_data, x_ref, w_ref)
        if not self.batchable:
            return [self.run(sample, x_ref, w_ref) for sample in x_data]
        per_backend = []
        for backend in self._backends():
            start = time.perf_counter()
            estimators = backend.fit_batch(list(x_data), x_ref, w_ref)
            share = (time.perf_counter() - start) / max(1, len(estimators))
            results = []
            for estimator in estimators:
                records = estimator.fit_warnings_
                for record in records:
                    warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
                results.append(replace(self._result(estimator, estimator.t_, 0.0, time.perf_counter() - share),
                                       batch_warnings=tuple(warning_text(record) for record in records)))
            per_backend.append(results)
        per_sample = zip(zip(*per_backend), x_data)
        return [self._combined(tuple(results), sample, x_ref, w_ref) for results, sample in per_sample]

    def _run(self, backend: BaseEstimator, x_data, x_ref, w_ref, central_values) -> NPLMResult:
        start = time.perf_counter()
        if self.nuisances is None:
            estimator = clone(backend).fit(x_data, x_ref, w_ref)
            return self._result(estimator, float(estimator.t_), 0.0, start)
        samples = validate_samples(x_data, x_ref, w_ref, owner="NPLMTest", warn_sample_size=False)
        terms = self.nuisances.terms(samples.x_data, samples.x_ref, samples.w_ref, central_values)
        delta_fit = terms.fit(start=np.zeros(self.nuisances.n_nuisances), stage="Delta (nuisance fit at f = 0)")
        if type(backend).fits_nuisances_jointly:
            estimator, tau_fit, iterations, converged = self._joint_fit(backend, samples, terms, delta_fit)
        else:
            estimator, tau_fit, iterations, converged = self._alternating_fit(backend, samples, terms, delta_fit)
        tau, delta = -2.0 * tau_fit.objective, -2.0 * delta_fit.objective
        if tau < delta - TAU_BELOW_DELTA_TOLERANCE * max(1.0, abs(delta)):
            warnings.warn(
                f"NPLMTest: tau = {tau:.6g} < Delta = {delta:.6g}: the tau fit ended above the Delta fit's "
                "minimum, which a converged fit cannot do (the model with f = 0 is one of its candidates). "
                "t is reported unclipped; train longer or tighten the backend's tolerances.",
                FitConsistencyWarning,
                stacklevel=2,
            )
        return self._result(estimator, tau, delta, start, tau_fit.nu, delta_fit.nu, iterations, converged)

    def _joint_fit(self, backend: BaseEstimator, samples, terms: NuisanceTerms, delta_fit: NuisanceFit):
        """The backend trains f and nu together; nu is then re-minimised at the learned f."""
        estimator = clone(backend).fit(samples.x_data, samples.x_ref, samples.w_ref,
                                       nuisance_terms=terms, nuisance_start=delta_fit.nu)
        tau_fit = terms.fit(estimator.fit_.f_data, estimator.fit_.f_ref, start=estimator.nuisance_values_,
                            stage="tau (nuisance fit at the learned f)")
        return estimator, tau_fit, 1, True

    def _alternating_fit(self, backend: BaseEstimator, samples, terms: NuisanceTerms, delta_fit: NuisanceFit):
        """Alternate f at fixed nu (backend fit with offsets log r(nu)) and nu at fixed f (scipy).

        Plain alternation crawls along the direction in which f and log r(nu) compensate each
        other (a step shrinks by about 1 - 1 / (1 + N sigma^2 var(delta))), so the map
        nu -> G(nu) (refit f at nu, then re-minimise nu) is iterated with Anderson acceleration
        (Walker & Ni 2011) in units of sigma, until G moves nu by less than nuisance_tol sigma."""
        sigmas = self.nuisances.sigmas
        scaled = delta_fit.nu / sigmas
        inputs, images = [], []
        for iteration in range(1, self.max_alternations + 1):
            offset_data, offset_ref = terms.offsets(scaled * sigmas)
            estimator = clone(backend).fit(samples.x_data, samples.x_ref, samples.w_ref,
                                           offset_data=offset_data, offset_ref=offset_ref)
            tau_fit = terms.fit(estimator.fit_.f_data, estimator.fit_.f_ref, start=scaled * sigmas,
                                stage=f"tau (nuisance fit, alternation {iteration})")
            image = tau_fit.nu / sigmas
            step = float(np.max(np.abs(image - scaled)))
            if step < self.nuisance_tol:
                return estimator, tau_fit, iteration, True
            inputs, images = (inputs + [scaled])[-ANDERSON_DEPTH - 1 :], (images + [image])[-ANDERSON_DEPTH - 1 :]
            scaled = _anderson_step(np.array(inputs), np.array(images))
        warnings.warn(
            f"NPLMTest: the alternating tau fit did not settle within {self.max_alternations} alternations "
            f"(last step {step:.3g} sigma > nuisance_tol = {self.nuisance_tol:g}); tau may be inaccurate.",
            ConvergenceWarning,
            stacklevel=3,
        )
        return estimator, tau_fit, self.max_alternations, False

    def _result(self, estimator: BaseEstimator, tau: float, delta: float, start: float,
                nu_hat_tau: np.ndarray | None = None, nu_hat_delta: np.ndarray | None = None,
                iterations: int = 0, converged: bool = True) -> NPLMResult:
        empty = np.zeros(0)
        return NPLMResult(
            t=tau - delta,
            tau=tau,
            delta=delta,
            backend=type(estimator).__name__,
            hyperparameters=json_safe_parameters(estimator),
            wall_time=time.perf_counter() - start,
            estimator=estimator,
            nu_hat_tau=empty if nu_hat_tau is None else nu_hat_tau,
            nu_hat_delta=empty if nu_hat_delta is None else nu_hat_delta,
            nuisance_iterations=iterations,
            nuisance_converged=converged,
        )


def _anderson_step(inputs: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Next iterate of Anderson acceleration for the fixed point x = G(x), from the last
    iterates x_i (rows of inputs) and their images G(x_i): x = G(x_k) - dG gamma, where gamma
    minimises |r_k - dR gamma| over the differences of the residuals r = G(x) - x."""
    residuals = images - inputs
    if len(inputs) < 2:
        return images[-1]
    residual_steps, image_steps = np.diff(residuals, axis=0).T, np.diff(images, axis=0).T
    gamma = np.linalg.lstsq(residual_steps, residuals[-1], rcond=None)[0]
    return images[-1] - image_steps @ gamma


def stored_member_weights(identity: dict[str, Any] | None) -> tuple[float, ...] | None:
    """The member weights of a campaign's test, from its identity (as NPLMTest.identity writes it
    under "test": its widths, or the quantiles that find them, and the scan's weight): 1 per width
    and the scan's weight last; None (equal) for a test without the scan."""
    test = (identity or {}).get("test") or {}
    if "scan_weight" not in test:
        return None
    widths = test["widths"]
    n_widths = len(widths["reference_quantiles"] if isinstance(widths, dict) else widths)
    return _member_weights(n_widths, float(test["scan_weight"]))


def _member_weights(n_widths: int, scan_weight: float) -> tuple[float, ...]:
    """The min-p weights of a test with the excess scan: 1 per kernel width, then the scan's."""
    return (1.0,) * n_widths + (scan_weight,)


def multi_scale_widths(backend: BaseEstimator, x_ref: np.ndarray, w_ref: float | np.ndarray,
                       quantiles: Sequence[float] | None = DEFAULT_WIDTH_QUANTILES) -> list[float] | None:
    """The kernel widths of a multi-scale test: the backend's widths at these quantiles of pairwise
    reference distances (its reference_widths), when it has a width and the width is not fixed;
    None (one fit with the backend's own width) otherwise, or when no quantiles are given."""
    if not _width_is_free(backend, quantiles):
        return None
    return backend.reference_widths(x_ref, w_ref, quantiles)


def _width_is_free(backend: BaseEstimator, quantiles: Sequence[float] | None) -> bool:
    """Whether quantiles are given and the backend has a kernel width that is not fixed."""
    setting = role_setting(backend, "width")
    return bool(quantiles) and setting is not None and backend.get_params(deep=False)[setting] is None
