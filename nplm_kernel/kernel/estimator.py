"""KernelNPLM: the kernel backend as a scikit-learn-style estimator (the backend contract of
nplm_kernel.contract).

f(x) = sum_m alpha_m k(x, c_m) on Nystrom centres c_m is fitted by the Falkon-style solver
(nplm_kernel.solver) on the NPLM loss itself (default) or on the weighted logistic surrogate of
the published Falkon-NPLM; the estimator reports L[f] and t = -2 L[f] at the learned f. The
Nystrom geometry (standardisation, centres, kernel width, pruning, factor) is drawn here, once per
fit or once per reference (reuse_reference).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from ..contract import finish_fit, require_fitted
from ..core.devices import resolve_device, resolve_dtype
from ..core.exceptions import ConfigurationError, ConvergenceWarning, captured_warnings
from ..core.identity import describe, sample_digest
from ..core.samples import (
    as_events,
    check_choice,
    check_positive_integer,
    check_positive_number,
    fitted_inputs,
    reference_standardization,
    standardized,
    validate_samples,
    with_data,
)
from ..solver import (
    STOP_REASONS,
    LogisticLoss,
    NystromFactor,
    NystromKernelRows,
    PairProducts,
    PointLossProblem,
    ReferenceGram,
    ReferenceProblem,
    SolverDiagnostics,
    kernel_products,
    shared_sample_size,
    solve,
)
from .excess_scan import ExcessScan
from .geometry import default_n_centers, kernel_width, nystrom_centers, reference_widths, uniform_candidates
from .memory import DEFAULT_MEMORY_BUDGET, MemoryBudget, reference_cache

logger = logging.getLogger(__name__)

#: How centres are chosen when not given (the `center_selection` hyperparameter).
CENTER_SELECTIONS = {
    "uniform": "M drawn uniformly from data + reference (the reference only with reuse_reference)",
    "coverage": "up to M chosen greedily (pivoted Cholesky) for coverage from every data event and a reference "
                "subsample (the subsample only with reuse_reference)",
}
#: The losses the solver can minimise (the `loss` hyperparameter).
LOSSES = {
    "nplm": "the NPLM loss itself, L = sum_R w (e^f - 1) - sum_D f: t = -2 L >= 0 by construction",
    "logistic": "the weighted logistic surrogate of the published Falkon-NPLM (same minimiser as n -> infinity)",
}
#: The rule behind the default kernel width (geometry.kernel_width), in a campaign's identity.
DEFAULT_WIDTH_RULE = "0.9 quantile of the distances of 1e6 weighted random pairs of reference events (rule 2)"
#: Why the logistic surrogate's f can raise the NPLM loss, and what to do (contract.finish_fit).
SURROGATE_ADVICE = ("With loss='logistic' a large f on reference events costs only linearly, so f grows where the "
                    "reference has events the data lack (typically beyond the last data event) while t = -2 L pays for it "
                    "exponentially. Use loss='nplm', a larger penalty or a wider sigma.")
#: What a user can do about each way of stopping short (solver.STOP_REASONS).
_CONVERGENCE_ADVICE = {
    "max_newton_steps": "Raise max_newton_steps (max_newton_steps=1 is the published one-step schedule).",
    "cg_budget": "The Newton systems are ill-conditioned (a very narrow kernel or a tiny penalty for this many "
                 "centres): raise the penalty or sigma, or raise max_total_cg_iter to wait longer.",
    "no_descent": "Use dtype='float64' if float32 was asked for, or loosen newton_tol.",
}


@dataclasses.dataclass
class PreparedReference:
    """What KernelNPLM(reuse_reference=True) keeps of a reference sample between fits: its
    standardisation, the kept centres (standardised), sigma, the Nystrom factor, its kernel rows
    (None when they do not fit the memory budget) and, once fits have used it, their explicit-Hessian
    products (solver.PairProducts, few centres) or what preconditions their conjugate gradient
    (solver.ReferenceGram) and the float32 whitened rows of its Hessian products (curvature_rows)."""

    key: str
    mean: np.ndarray
    scale: np.ndarray
    centers: np.ndarray
    sigma: float
    factor: NystromFactor
    reference_rows: torch.Tensor | None
    pairs: PairProducts | None = None
    reference_gram: ReferenceGram | None = None
    curvature_rows: torch.Tensor | None = None

    def stored_bytes(self) -> int:
        """Memory the entry keeps: kernel rows, the arrays derived for batched fits and the
        preconditioners."""
        rows = sum(array.numel() * array.element_size() for array in (self.reference_rows, self.curvature_rows)
                   if array is not None)
        derived = [part.stored_bytes() for part in (self.pairs, self.reference_gram) if part is not None]
        return rows + sum(derived)


#: Working memory, beyond the rows themselves, for computing the float32 curvature rows of a
#: prepared reference: a float64 kernel block and its whitened copy (2 NystromKernelRows.BLOCK_BYTES)
#: for each of at most 8 threads.
CURVATURE_BUILD_BYTES = 64 * 1024**2

#: Hyperparameters that do not enter the reference's geometry and kernel rows (a change of any
#: other one makes KernelNPLM(reuse_reference=True) prepare the reference again).
SOLVER_SETTINGS = {"penalty", "penalty_list", "loss", "max_newton_steps", "newton_tol", "max_cg_iter", "cg_tol",
                   "max_total_cg_iter"}
class KernelNPLM(BaseEstimator):
    """Kernel NPLM estimator: a Nystrom Gaussian-kernel model of f solved Falkon-style.

    Parameters
    ----------
    n_centers
        number M of Nystrom centres (drawn, or the most chosen for coverage); None: N_D / 4
        clipped to [100, 3000]. Ignored when `centers` is given.
    sigma
        Gaussian kernel width in the (standardised, if `standardize`) input units; None: the
        90th percentile of pairwise reference distances.
    penalty
        lambda of J(alpha) = (1/n) sum_i l_i(f_i) + (lambda/2) alpha^T K_MM alpha, n = N_D + N_R.
    loss
        'nplm' (l the NPLM loss: w_R (e^f - 1) on reference events, -f on data events; t >= 0 by
        construction) or 'logistic' (the weighted binary cross-entropy of the published Falkon-NPLM:
        labels 1 / 0, weights 1 / w_R).
    centers
        fixed (M, d) centres in input units (standardised with the inputs); None: chosen as
        center_selection says.
    center_selection
        'uniform' (M drawn uniformly from data + reference) or 'coverage' (up to M
        chosen greedily by pivoted Cholesky from every data event and a reference subsample, so
        that isolated events get a centre).
    center_tol
        centres whose kernel function lies within sqrt(center_tol) (RKHS norm) of the span
        of the others are dropped (pivoted Cholesky of K_MM); None: 1e-12. They add nothing float
        arithmetic can resolve and make K_MM singular.
    standardize
        scale inputs by the reference's weighted mean and standard deviation.
    penalty_list
        decreasing penalties for the Newton continuation, ending at `penalty` (one Newton
        step each before converging at `penalty`); None: [penalty]. For parity with the published
        Falkon-NPLM numbers (one Newton step from alpha = 0) use max_newton_steps=1.
    max_newton_steps, newton_tol
        Newton steps at the final penalty stop when the Newton decrement
        (about J - min J) is below newton_tol * |J|, or after max_newton_steps.
    max_cg_iter, cg_tol
        conjugate-gradient cap and relative residual tolerance per Newton step.
    max_total_cg_iter
        cap on the CG iterations of the whole fit, so that an ill-conditioned
        problem (very narrow kernel, tiny lambda) stops in bounded time; it then reports
        converged_ = False with a ConvergenceWarning that names the cause.
    device
        'cpu', 'cuda' (or 'cuda:N'), or 'auto' (CUDA when available).
    dtype
        storage of the cached kernel matrix, 'float64' (default) or 'float32' (half the memory
        and bandwidth; stores the whitened features K_nM T^-1, built in float64, so that rounding is
        not amplified by the conditioning of K_MM). Kernel blocks recomputed on the fly, the
        preconditioner, per-event vectors and predictions are float64.
    memory_budget
        bytes the fit may add, temporaries included: its per-point vectors and point
        copies (solver.fixed_fit_memory) plus K_nM, which is cached when it fits what remains and
        otherwise recomputed block by block in a buffer sized to the remainder. A budget that cannot
        hold even the per-point vectors is refused with the budget the fit needs.
    reuse_reference
        for toy campaigns, where every fit uses the same reference sample: draw the
        centres from the reference only (M = n_centers, or the default M for N_D = N(R)) and keep,
        once per process, the reference's standardisation, sigma, centres, Nystrom factor and its
        cached kernel rows, for every later fit on the same reference (recognised by the content of
        x_ref and w_ref and by these hyperparameters). Given those centres, t is unchanged; per toy
        only the data rows of K_nM are computed. With more than a few centres it also keeps a
        float32 copy of the whitened reference rows, within memory_budget, for conjugate
        gradient's Hessian products (they set the Newton direction only; t moved by at most 3e-7
        relative on paper-scale 5D toys).
    seed
        seed of the centre selection and the sigma subsample (None: fresh entropy).

    Attributes
    ----------
    centers_
        (M', d): the M' <= M centres kept, in the kernel's input space (standardised when
        `standardize`).
    alpha_
        (M',): the coefficients of f.
    sigma_, n_centers_
        The kernel width used and M'.
    input_mean_, input_scale_
        (d,): the standardisation.
    loss_, t_
        L[f] (offsets included) and t = -2 L[f].
    diagnostics_, converged_
        solver.SolverDiagnostics, and whether the fit met its tolerance.
    fit_
        contract.BackendFit: f on the training points.
    feature_names_in_
        The data frame's column names, when one was given.
    """

    #: Settings that change how t is computed, not its value (left out of a campaign's identity).
    execution_settings = ("device", "memory_budget")
    #: Nuisances are fitted by NPLMTest's alternation (offsets), not jointly with f.
    fits_nuisances_jointly = False
    #: The hyperparameters that play the roles the shared layer knows (contract.SETTING_ROLES).
    setting_roles = {"width": "sigma", "device": "device", "seed": "seed"}

    def identity_details(self) -> dict:
        """What defines t besides the hyperparameters (the contract's optional identity_details): the
        rule behind the default width when sigma is None, so that a store filled under another rule is
        another campaign."""
        return {} if self.sigma is not None else {"default_width": DEFAULT_WIDTH_RULE}

    def __init__(
        self,
        n_centers: int | None = None,
        sigma: float | None = None,
        penalty: float = 1e-6,
        loss: str = "nplm",
        centers: np.ndarray | None = None,
        center_selection: str = "uniform",
        center_tol: float | None = None,
        standardize: bool = True,
        penalty_list: list[float] | None = None,
        max_newton_steps: int = 30,
        newton_tol: float = 1e-7,
        max_cg_iter: int = 200,
        cg_tol: float = 1e-6,
        max_total_cg_iter: int = 1000,
        device: str = "cpu",
        dtype: str = "float64",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        reuse_reference: bool = False,
        seed: int | None = 0,
    ):
        self.n_centers = n_centers
        self.sigma = sigma
        self.penalty = penalty
        self.loss = loss
        self.centers = centers
        self.center_selection = center_selection
        self.center_tol = center_tol
        self.standardize = standardize
        self.penalty_list = penalty_list
        self.max_newton_steps = max_newton_steps
        self.newton_tol = newton_tol
        self.max_cg_iter = max_cg_iter
        self.cg_tol = cg_tol
        self.max_total_cg_iter = max_total_cg_iter
        self.device = device
        self.dtype = dtype
        self.memory_budget = memory_budget
        self.reuse_reference = reuse_reference
        self.seed = seed

    def _memory(self) -> MemoryBudget:
        """How this fit spends memory_budget (memory.MemoryBudget)."""
        return MemoryBudget(int(self.memory_budget))

    def _penalties(self) -> list[float]:
        check_positive_number(self.penalty, "penalty")
        penalties = [self.penalty] if self.penalty_list is None else [float(p) for p in self.penalty_list]
        if not penalties or any(not (np.isfinite(p) and p > 0) for p in penalties):
            raise ConfigurationError(f"penalty_list must hold positive finite penalties, got {penalties}.")
        if any(later > earlier for earlier, later in zip(penalties, penalties[1:])):
            raise ConfigurationError(f"penalty_list must be non-increasing, got {penalties}.")
        if not np.isclose(penalties[-1], self.penalty, rtol=1e-12, atol=0.0):
            raise ConfigurationError(
                f"penalty_list must end at penalty={self.penalty:g} (the lambda of the objective), "
                f"got {penalties[-1]:g}."
            )
        return penalties

    def check_settings(self) -> None:
        """ConfigurationError naming the first bad hyperparameter (the backend contract)."""
        check_choice(self.center_selection, CENTER_SELECTIONS, "center_selection")
        check_choice(self.loss, LOSSES, "loss")
        check_positive_integer(self.max_newton_steps, "max_newton_steps")
        check_positive_integer(self.max_cg_iter, "max_cg_iter")
        check_positive_integer(self.max_total_cg_iter, "max_total_cg_iter")
        check_positive_integer(self.memory_budget, "memory_budget", minimum=0)
        check_positive_number(self.newton_tol, "newton_tol")
        check_positive_number(self.cg_tol, "cg_tol")
        if self.center_tol is not None and not (np.isfinite(self.center_tol) and 0 <= self.center_tol < 1):
            raise ConfigurationError(f"center_tol must lie in [0, 1), got {self.center_tol!r}.")
        if self.sigma is not None:
            check_positive_number(self.sigma, "sigma")
        if self.n_centers is not None:
            check_positive_integer(self.n_centers, "n_centers")
        resolve_dtype(self.dtype)
        self._penalties()

    def fit(
        self,
        x_data: np.ndarray,
        x_ref: np.ndarray,
        w_ref: float | np.ndarray,
        offset_data: np.ndarray | None = None,
        offset_ref: np.ndarray | None = None,
    ) -> KernelNPLM:
        """Learn f ~ log n(x|D) / n(x|R) from data (N_D, d), reference (N_R, d) and weights w_R."""
        self.check_settings()
        penalties = self._penalties()
        device, dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        samples = validate_samples(
            x_data, x_ref, w_ref, offset_data, offset_ref, owner="KernelNPLM",
            weights_reason="its loss is convex and bounded below only for positive event weights",
        )
        # refuse a budget that cannot hold the fit's per-point vectors before allocating anything
        self._memory().kernel_rows(samples.n_data + samples.n_ref, samples.n_features, 1)
        prepared = self._prepare_reference(samples, device, dtype) if self.reuse_reference else None
        if prepared is not None:
            mean, scale, centers, sigma, factor = (prepared.mean, prepared.scale, prepared.centers, prepared.sigma,
                                                   prepared.factor)
        else:
            mean, scale, centers, sigma, factor = self._geometry(samples, np.random.default_rng(self.seed), True, device)
        points = torch.as_tensor(standardized(np.concatenate([samples.x_data, samples.x_ref]), mean, scale,
                                              "x_data and x_ref"), device=device)
        data_points, reference_points = points[: samples.n_data], points[samples.n_data :]
        centers_t = torch.as_tensor(centers, device=device)
        kernel_budget = self._memory().kernel_rows(len(points), samples.n_features, len(centers))
        reference_rows = None if prepared is None else prepared.reference_rows
        settings = self._solver_settings()
        if self.loss == "logistic":
            rows = NystromKernelRows(points, centers_t, sigma, kernel_budget, dtype, factor, cached_tail=reference_rows)
            offsets = torch.as_tensor(np.concatenate([samples.offset_data, samples.offset_ref]), device=device)
            problem = PointLossProblem(rows, factor, self._logistic_loss(samples, device), offsets)
            solution = solve(problem, penalties, **settings)
            fitted = problem.fitted.cpu().numpy()
            f_data, f_ref = fitted[: samples.n_data], fitted[samples.n_data :]
        else:
            rows = NystromKernelRows(reference_points, centers_t, sigma, kernel_budget, dtype, factor,
                                     cached_tail=reference_rows)
            weights = torch.as_tensor(samples.w_ref * np.exp(samples.offset_ref), device=device)
            constants = torch.as_tensor([float((weights.cpu().numpy() - samples.w_ref).sum() - samples.offset_data.sum())],
                                        device=device)
            problem = ReferenceProblem(rows, factor, weights, self._data_sums([data_points], centers_t, sigma, factor),
                                       torch.as_tensor([samples.n_data], device=device), constants,
                                       self._pairs(rows, weights, prepared),
                                       self._reference_gram(prepared, rows, factor, samples.w_ref),
                                       self._curvature_rows(prepared, rows))
            solution = solve(problem, penalties, **settings)
            if prepared is not None:
                reference_cache.trim(self._memory())  # the prepared reference may hold more now
            f_ref = problem.reference_values()[:, 0].cpu().numpy()
            f_data = kernel_products(data_points, centers_t, sigma, factor.to_alpha(solution.gamma[0])).cpu().numpy()
        alpha = factor.to_alpha(solution.gamma[0]).cpu().numpy()
        return self._finish(samples, (mean, scale, centers, sigma), alpha, f_data, f_ref, solution.diagnostics[0])

    def _solver_settings(self) -> dict:
        """The Newton solve's settings (newton.solve's keywords)."""
        return dict(max_newton_steps=int(self.max_newton_steps), newton_tol=float(self.newton_tol),
                    max_cg_iter=int(self.max_cg_iter), cg_tol=float(self.cg_tol),
                    max_total_cg_iter=int(self.max_total_cg_iter))

    @staticmethod
    def _data_sums(data: Sequence[torch.Tensor], centers: torch.Tensor, sigma: float,
                   factor: NystromFactor) -> torch.Tensor:
        """s_b = Phi(data_b)^T 1 = T^-T K(data_b, C)^T 1 of each data sample, (B, M): how the data enter
        the NPLM loss (solver.ReferenceProblem)."""
        return factor.transpose_solve(torch.stack([kernel_products(points, centers, sigma) for points in data], dim=1)).T

    def _pairs(self, rows: NystromKernelRows, weights: torch.Tensor,
               prepared: PreparedReference | None) -> PairProducts | None:
        """The explicit-Hessian products of the reference rows (solver.PairProducts), kept with the
        prepared reference, when the rows are whitened float64 (few centres, cached: solver.nystrom's
        EXPLICIT_GRAM_MAX_CENTERS) and the products fit half the memory budget; None (conjugate
        gradient) otherwise."""
        n_ref, n_kept = rows.n_rows, rows.centers.shape[0]
        if not (rows.whitened and rows.dtype == torch.float64 and self._memory().holds_shared_reference(n_ref, n_kept)):
            return None
        if prepared is None:
            return PairProducts(rows.stored_rows(), weights)
        if prepared.pairs is None:
            prepared.pairs = PairProducts(rows.stored_rows(), weights)
        return prepared.pairs

    @staticmethod
    def _reference_gram(prepared: PreparedReference | None, rows: NystromKernelRows, factor: NystromFactor,
                        w_ref: np.ndarray) -> ReferenceGram | None:
        """The ReferenceGram kept with a prepared reference (made on first use from the reference's
        own weights, which also precondition fits with offsets: they act as a known shift of f; its
        sample as large as solver.shared_sample_size allows, since many fits share it); None without
        one (the problem then makes its own)."""
        if prepared is None:
            return None
        if prepared.reference_gram is None:
            weights = torch.as_tensor(np.broadcast_to(w_ref, (rows.n_rows,)).copy(), dtype=torch.float64,
                                      device=rows.points.device)
            prepared.reference_gram = ReferenceGram(rows.points, rows.centers, rows.sigma, factor, weights,
                                                    shared_sample_size(rows.n_rows, rows.centers.shape[0]))
        return prepared.reference_gram

    def _curvature_rows(self, prepared: PreparedReference | None, rows: NystromKernelRows) -> NystromKernelRows | None:
        """The float32 whitened reference rows for the Hessian products of conjugate gradient
        (solver.ReferenceProblem's curvature_rows), kept with a prepared reference: made on first
        use (the kernel rows recomputed and whitened block by block, N_R M^2 multiply-adds, once
        per reference and process) where the rows are cached float64 and not whitened and the
        reference cache holds them within the memory budget beside its other entries (they never
        evict one); None (the float64 rows serve) otherwise."""
        if prepared is None or not rows.cached or rows.whitened or rows.dtype != torch.float64:
            return None
        n_bytes = 4 * rows.n_rows * rows.centers.shape[0]
        if prepared.curvature_rows is None and (reference_cache.stored_bytes() + n_bytes + CURVATURE_BUILD_BYTES
                                                > self._memory().total):
            return None
        curvature = NystromKernelRows(rows.points, rows.centers, rows.sigma, n_bytes + CURVATURE_BUILD_BYTES,
                                      torch.float32, prepared.factor, cached_tail=prepared.curvature_rows)
        if prepared.curvature_rows is None:
            prepared.curvature_rows = curvature.stored_rows()
        return curvature

    def _finish(self, samples, geometry: tuple, alpha: np.ndarray, f_data: np.ndarray, f_ref: np.ndarray,
                report: SolverDiagnostics) -> KernelNPLM:
        """Set the fitted attributes from a solution (one fit or one toy of a batch), warning when
        the solver stopped short or the logistic surrogate's f raises L."""
        if not report.converged:
            warnings.warn(
                f"KernelNPLM: the Newton solver stopped before its tolerance (newton_tol={self.newton_tol:g}) after "
                f"{report.newton_steps} steps and {sum(report.cg_iterations)} CG iterations: "
                f"{STOP_REASONS[report.stop_reason]}; t may be inaccurate. {_CONVERGENCE_ADVICE[report.stop_reason]}",
                ConvergenceWarning,
                stacklevel=3,
            )
        finish_fit(self, samples, f_data, f_ref, report.converged, report, rising_loss_advice=SURROGATE_ADVICE
                   if self.loss == "logistic" else "")
        logger.debug("KernelNPLM fit: t = %.6g, %d Newton steps, %d CG iterations, %s, %.3f s", self.t_,
                     report.newton_steps, sum(report.cg_iterations), report.stop_reason, report.fit_time)
        self.input_mean_, self.input_scale_, self.centers_, self.sigma_ = geometry
        self.n_centers_ = self.centers_.shape[0]
        self.alpha_ = alpha
        self.n_features_in_ = samples.n_features
        self.feature_names_in_ = None if samples.feature_names is None else list(samples.feature_names)
        return self

    @property
    def fits_batches(self) -> bool:
        """Whether fit_batch solves samples together with these settings: the NPLM loss and centres
        from the reference (reuse_reference=True), so that the samples share the reference's kernel
        rows (the contract's capability)."""
        return self.loss == "nplm" and bool(self.reuse_reference)

    @property
    def t_floor(self) -> float | None:
        """The lowest t a fit without offsets can give: 0 with the NPLM loss (minimised from f = 0,
        where L = 0), none with the logistic surrogate."""
        return 0.0 if self.loss == "nplm" else None

    def fit_batch(self, x_data: Sequence[np.ndarray], x_ref: np.ndarray, w_ref: float | np.ndarray) -> list[KernelNPLM]:
        """Fit several data samples against one reference: one fitted clone per sample, each with
        the t its own fit gives (to solver tolerance). With the NPLM loss and centres from the
        reference (reuse_reference=True) the samples are solved together (solver.ReferenceProblem:
        each Newton step, and each CG iteration, one pass over the reference rows for all of them, in
        groups within memory_budget); otherwise one by one."""
        self.check_settings()
        if not self.fits_batches:
            return [_fit_recording_warnings(clone(self), sample, x_ref, w_ref) for sample in x_data]
        device, dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        reference = validate_samples(x_data[0], x_ref, w_ref, owner="KernelNPLM", warn_sample_size=False)
        prepared = self._prepare_reference(reference, device, dtype)
        centers = torch.as_tensor(prepared.centers, device=device)
        points = torch.as_tensor(standardized(reference.x_ref, prepared.mean, prepared.scale, "x_ref"), device=device)
        n_points = reference.n_ref + int(round(reference.expected_yield))
        rows = NystromKernelRows(points, centers, prepared.sigma,
                                 self._memory().kernel_rows(n_points, reference.n_features, len(centers)), dtype,
                                 prepared.factor, cached_tail=prepared.reference_rows)
        weights = torch.as_tensor(reference.w_ref, device=device)
        pairs = self._pairs(rows, weights, prepared)
        group = self._memory().batch_group(reference.n_ref, reference.n_features)
        fitted: list[KernelNPLM] = []
        for first in range(0, len(x_data), group):
            fitted += self._fit_group(x_data[first : first + group], reference, prepared, rows, pairs, device)
        reference_cache.trim(self._memory())  # the prepared reference may hold more now
        return fitted

    def _fit_group(self, x_data, reference, prepared: PreparedReference, rows: NystromKernelRows,
                   pairs: PairProducts | None, device: torch.device) -> list[KernelNPLM]:
        checks = []
        for sample in x_data:
            with captured_warnings() as caught:
                checks.append((with_data(reference, sample), caught))
        samples = [checked for checked, _ in checks]
        data = [torch.as_tensor(standardized(checked.x_data, prepared.mean, prepared.scale, "x_data"), device=device)
                for checked in samples]
        centers = torch.as_tensor(prepared.centers, device=device)
        problem = ReferenceProblem(rows, prepared.factor, torch.as_tensor(reference.w_ref, device=device),
                                   self._data_sums(data, centers, prepared.sigma, prepared.factor),
                                   torch.as_tensor([len(points) for points in data], device=device), pairs=pairs,
                                   reference_gram=self._reference_gram(prepared, rows, prepared.factor, reference.w_ref),
                                   curvature_rows=self._curvature_rows(prepared, rows))
        solution = solve(problem, self._penalties(), **self._solver_settings())
        alphas = prepared.factor.to_alpha(solution.gamma.T)
        f_ref = problem.reference_values().T.cpu().numpy()
        geometry = (prepared.mean, prepared.scale, prepared.centers, prepared.sigma)
        fitted = []
        for index, ((checked, caught), points) in enumerate(zip(checks, data)):
            f_data = kernel_products(points, centers, prepared.sigma, alphas[:, index]).cpu().numpy()
            with captured_warnings() as finished:
                estimator = clone(self)._finish(checked, geometry, alphas[:, index].cpu().numpy(), f_data, f_ref[index],
                                                solution.diagnostics[index])
            estimator.fit_warnings_ = caught + finished
            fitted.append(estimator)
        return fitted

    def _logistic_loss(self, samples, device: torch.device) -> LogisticLoss:
        """The weighted logistic surrogate on data + reference points in that order: labels 1 / 0,
        weights 1 / w_R."""
        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64, device=device)

        labels = np.concatenate([np.ones(samples.n_data), np.zeros(samples.n_ref)])
        return LogisticLoss(tensor(labels), tensor(np.concatenate([np.ones(samples.n_data), samples.w_ref])))

    def _geometry(self, samples, rng: np.random.Generator, from_data: bool, device: torch.device):
        """(mean, scale, centres (standardised), sigma, Nystrom factor). Centres: the given ones, or
        (center_selection='uniform') M drawn uniformly from data + reference (the reference only, when
        not from_data), or ('coverage') up to M chosen greedily for coverage from every data event and
        a reference subsample as large as the data (or M); numerically dependent centres are dropped
        in every case. sigma: given, or geometry.kernel_width's default."""
        mean, scale = reference_standardization(samples.x_ref, samples.w_ref, self.standardize)
        reference = (samples.x_ref - mean) / scale
        n_data = samples.n_data if from_data else int(round(samples.expected_yield))
        n_centers = self.n_centers or default_n_centers(n_data, n_data + samples.n_ref)
        max_centers = None
        if self.centers is not None:
            candidates = (as_events(self.centers, "centers", samples.n_features) - mean) / scale
        elif self.center_selection == "uniform":
            pool = np.concatenate([(samples.x_data - mean) / scale, reference]) if from_data else reference
            candidates = uniform_candidates(pool, n_centers, rng)
        else:
            subsample = uniform_candidates(reference, max(n_data, n_centers), rng)
            candidates = np.concatenate([(samples.x_data - mean) / scale, subsample]) if from_data else subsample
            max_centers = n_centers
        sigma = kernel_width(self.sigma, reference, samples.w_ref)
        centers, factor = nystrom_centers(candidates, sigma, self.center_tol, device, max_centers)
        return mean, scale, centers, sigma, factor

    def _prepare_reference(self, samples, device: torch.device, dtype: torch.dtype) -> PreparedReference:
        """The reference's fixed part of a fit, from the per-process cache or computed and cached."""
        settings = {name: value for name, value in self.get_params(deep=False).items() if name not in SOLVER_SETTINGS}
        key = json.dumps([sample_digest(samples.x_ref, samples.w_ref), describe(settings), str(device), str(dtype)])
        cached = reference_cache.get(key)
        if cached is not None:
            return cached
        mean, scale, centers, sigma, factor = self._geometry(samples, np.random.default_rng(self.seed), False, device)
        reference = torch.as_tensor((samples.x_ref - mean) / scale, device=device)
        n_points = samples.n_ref + int(round(samples.expected_yield))  # room for a data sample of the expected size
        kernel_budget = self._memory().kernel_rows(n_points, samples.n_features, len(centers))
        rows = NystromKernelRows(reference, torch.as_tensor(centers, device=device), sigma, kernel_budget, dtype, factor)
        prepared = PreparedReference(key, mean, scale, centers, sigma, factor, rows.stored_rows())
        reference_cache.add(prepared, self._memory())
        return prepared

    def reference_widths(self, x_ref: np.ndarray, w_ref: float | np.ndarray, quantiles: Sequence[float]) -> list[float]:
        """Kernel widths at these quantiles of pairwise reference distances, in the units of sigma
        (standardised when `standardize`): the contract's width capability."""
        reference = validate_samples(x_ref[:1], x_ref, w_ref, owner="KernelNPLM", warn_sample_size=False)
        return reference_widths(reference.x_ref, reference.w_ref, quantiles, self.standardize)

    def excess_scan(self) -> ExcessScan:
        """The scan for a local excess that the default test adds to this model (the contract's
        optional excess_scan): one kernel function at a time, over centres and widths."""
        return ExcessScan()

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """f(x) = sum_m alpha_m k(x, c_m) for x of shape (n, d) in input units; float64 (n,)."""
        require_fitted(self, "alpha_")
        points = fitted_inputs(x, self.n_features_in_, self.feature_names_in_, self.input_mean_, self.input_scale_)
        device, dtype = resolve_device(self.device), torch.float64  # alpha may be large: never round it
        centers = torch.as_tensor(self.centers_, dtype=dtype, device=device)
        alpha = torch.as_tensor(self.alpha_, dtype=dtype, device=device)
        return kernel_products(torch.as_tensor(points, dtype=dtype, device=device), centers, self.sigma_, alpha).cpu().numpy()

    def fitted_state(self) -> dict:
        """The fitted attributes, for nplm_kernel.save_model."""
        require_fitted(self, "alpha_")
        return {
            "centers_": self.centers_, "alpha_": self.alpha_, "sigma_": self.sigma_,
            "input_mean_": self.input_mean_, "input_scale_": self.input_scale_,
            "n_centers_": self.n_centers_, "n_features_in_": self.n_features_in_,
            "feature_names_in_": self.feature_names_in_,
            "loss_": self.loss_, "t_": self.t_, "diagnostics_": dataclasses.asdict(self.diagnostics_),
        }

    @staticmethod
    def fitted_state_spec() -> dict:
        """The attributes fitted_state() saves and their shapes (io.models.check_fitted_state)."""
        return {"centers_": ("M", "d"), "alpha_": ("M",), "sigma_": (), "input_mean_": ("d",), "input_scale_": ("d",),
                "n_centers_": (), "n_features_in_": (), "feature_names_in_": None, "loss_": (), "t_": (),
                "diagnostics_": None}

    def restore_fitted_state(self, state: dict) -> None:
        """Set the fitted attributes from fitted_state()'s output (as saved, shapes checked)."""
        centers = np.asarray(state["centers_"])
        if state["n_centers_"] != len(centers) or state["n_features_in_"] != centers.shape[1]:
            raise ValueError(f"n_centers_ = {state['n_centers_']} and n_features_in_ = {state['n_features_in_']} do "
                             f"not match centers_ of shape {centers.shape}")
        sigma = float(state["sigma_"])
        if not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma_ must be positive and finite, got {sigma}")
        if self.sigma is not None and not np.isclose(sigma, self.sigma, rtol=1e-12):
            raise ValueError(f"sigma_ = {sigma} differs from the model's sigma = {self.sigma}")
        if len(centers) > 1 and np.ptp(centers, axis=0).max() < 1e-7 * sigma:
            raise ValueError(f"sigma_ = {sigma:g} is so wide that every kernel value between centers_ is 1 to float64 "
                             "precision: not the width of a fit")
        names = state["feature_names_in_"]
        if names is not None and (not isinstance(names, list) or len(names) != centers.shape[1]):
            raise ValueError(f"feature_names_in_ must be None or {centers.shape[1]} names, got {names!r}")
        diagnostics = dict(state["diagnostics_"])
        diagnostics["cg_iterations"] = tuple(diagnostics["cg_iterations"])
        for name, value in state.items():
            setattr(self, name, value)
        self.diagnostics_ = SolverDiagnostics(**diagnostics)
        self.converged_ = self.diagnostics_.converged


def _fit_recording_warnings(estimator: KernelNPLM, x_data, x_ref, w_ref) -> KernelNPLM:
    """estimator.fit(x_data, x_ref, w_ref), with the warnings it raised recorded in fit_warnings_
    instead of raised (fit_batch: each belongs to one sample)."""
    with captured_warnings() as caught:
        estimator.fit(x_data, x_ref, w_ref)
    estimator.fit_warnings_ = caught
    return estimator
