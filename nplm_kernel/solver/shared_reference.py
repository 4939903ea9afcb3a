"""Fits of the NPLM loss that share one reference sample, solved together: B data samples (B = 1 for
a single fit) against the same reference points, centres and kernel rows.

Fit b minimises, in whitened coordinates gamma_b (f = Phi gamma_b, Phi = K T^-1),

    J_b = (1/n_b) [ sum_R w_b (e^(f_b) - 1) - s_b . gamma_b + c_b ] + (lambda/2) |gamma_b|^2,

where s_b = sum over the fit's data events of Phi(x) and n_b = N_D,b + N_R: the data enter only
through s_b, because the NPLM loss is linear in f on data events, so no data row of K_nM is ever
stored or passed over. Offsets o (nuisance parameters) enter as reference weights w_b = w_R e^(o_R)
and the constant c_b = sum_R (w_b - w_R) - sum_D o_D, so that J_b is the documented objective.

Newton systems are solved for all fits at once: with few centres and whitened rows by explicit
Hessians from the products Phi_Rm Phi_Rk of every reference point (PairProducts: one matrix product
for all fits; a trial point's gradient and Hessian come from the same pass as its objective), and
otherwise by conjugate gradient preconditioned from a sample of the reference
(preconditioner.ReferenceGram, one preconditioner for all fits), every CG iteration one pass over the
reference rows for all fits (matrix products where one fit alone is memory-bound); fits leave the
batch when they converge (newton.solve). The CG products may read a float32 copy of the whitened
reference rows (curvature_rows): half the bytes of one fit's memory-bound pass and twice the speed
of the batch's matrix products; like PairProducts' float32 pairs, they only set the Newton
direction, while gradients and objectives stay float64 (the paper-scale 5D t within 3e-7 of an
all-float64 solve).
"""

from __future__ import annotations

import torch

from ..core.exceptions import FitError
from .cg import conjugate_gradient
from .kernels import exp_
from .newton import forcing_tolerances
from .nystrom import EXPECTED_CG_ITERATIONS, NystromFactor, NystromKernelRows, kernel_products, prefers_explicit_gram
from .preconditioner import ReferenceGram

#: Reference points per chunk of a pass of PairProducts: the chunk's features and pair products and
#: its (chunk, B) working arrays stay in the CPU caches.
CHUNK_POINTS = 2048


class PairProducts:
    """Explicit Hessians of fits on one reference with few centres: the whitened features Phi_R
    (N_R, M) and reference weights (N_R,), float64, and (lazily) [Phi_R^T; 1] (M + 1, N_R), which
    gives a chunk's gradients and sums of w e^f in one product, and the products Phi_Rm Phi_Rk,
    m <= k, of every reference point (N_R, M(M+1)/2, in float32: they only set the Newton direction;
    the gradient and objective stay float64), so that the Hessians of all fits come from one matrix
    product (compute-bound where one fit alone would be memory-bound)."""

    def __init__(self, features: torch.Tensor, weights: torch.Tensor):
        self.features = features
        self.weights = weights
        self.total_weight = weights.sum()
        n_centers = features.shape[1]
        self.rows, self.columns = torch.triu_indices(n_centers, n_centers, device=features.device)
        self._moments: torch.Tensor | None = None
        self._pairs: torch.Tensor | None = None
        self._at_zero: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def moments(self) -> torch.Tensor:
        if self._moments is None:
            ones = torch.ones((1, self.features.shape[0]), dtype=torch.float64, device=self.features.device)
            self._moments = torch.cat([self.features.T, ones]).contiguous()
        return self._moments

    @property
    def pairs(self) -> torch.Tensor:
        if self._pairs is None:
            self._pairs = (self.features[:, self.rows] * self.features[:, self.columns]).to(torch.float32)
        return self._pairs

    @staticmethod
    def derived_bytes(n_ref: int, n_centers: int) -> int:
        """Memory of the arrays derived for batched fits (pair products and [Phi_R^T; 1]) for N_R
        points and M centres."""
        return 4 * n_ref * n_centers * (n_centers + 1) // 2 + 8 * n_ref * (n_centers + 1)

    def stored_bytes(self) -> int:
        """Memory of the derived arrays built so far."""
        return sum(array.numel() * array.element_size() for array in (self._moments, self._pairs) if array is not None)

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(B, M(M+1)/2) upper triangles -> (B, M, M) symmetric matrices."""
        n_centers = self.features.shape[1]
        matrices = torch.zeros((packed.shape[0], n_centers, n_centers), dtype=torch.float64, device=packed.device)
        matrices[:, self.rows, self.columns] = packed
        matrices[:, self.columns, self.rows] = packed
        return matrices

    def sums(self, gamma: torch.Tensor, hessian_rows: torch.Tensor | None = None, weights: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """For each row gamma_b of gamma (B, M), with f = Phi_R gamma_b, in one pass over the
        reference chunk by chunk: sum_R w (e^f - 1) (B,) and Phi_R^T (w e^f) (B, M), and
        Phi_R^T diag(w e^f) Phi_R (H, M, M) for the H rows indexed by hessian_rows (every row when
        None; None is returned when it is empty). weights: per-row reference weights (N_R, B) (the
        reference's own when None). Overflowing exponentials give inf, not an error."""
        n_batch = gamma.shape[0]
        n_hessians = n_batch if hessian_rows is None else len(hessian_rows)
        totals = torch.zeros((self.features.shape[1] + 1, n_batch), dtype=torch.float64, device=gamma.device)
        packed = torch.zeros((n_hessians, len(self.rows)), dtype=torch.float64, device=gamma.device)
        moments, pairs, gamma_t = self.moments, self.pairs if n_hessians else None, gamma.T.contiguous()
        for start in range(0, self.features.shape[0], CHUNK_POINTS):
            chunk = slice(start, start + CHUNK_POINTS)
            scaled = exp_(self.features[chunk] @ gamma_t).mul_(weights[chunk] if weights is not None
                                                              else self.weights[chunk, None])  # w e^f, (chunk, B)
            totals += moments[:, chunk] @ scaled
            if n_hessians:
                wanted = scaled if hessian_rows is None else scaled[:, hessian_rows]
                packed += (wanted.T.to(torch.float32) @ pairs[chunk]).to(torch.float64)
        loss = totals[-1] - (self.total_weight if weights is None else weights.sum(dim=0))
        return loss, totals[:-1].T.contiguous(), self._unpack(packed) if n_hessians else None

    def at_zero(self, n_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sums() at gamma = 0 (f = 0: loss 0, gradient Phi_R^T w, Hessian Phi_R^T diag(w) Phi_R),
        computed once per reference and expanded to n_batch rows."""
        if self._at_zero is None:
            _, gradient, hessian = self.sums(torch.zeros((1, self.features.shape[1]), dtype=torch.float64,
                                                         device=self.features.device))
            self._at_zero = gradient[0], hessian[0]
        gradient, hessian = self._at_zero
        return gradient.expand(n_batch, -1).clone(), hessian.expand(n_batch, -1, -1).clone()


class ReferenceProblem:
    """The Newton problem (newton.NewtonProblem) of B NPLM fits sharing `rows`, the kernel rows of
    the reference points (cached or recomputed in blocks, whitened or not), with the factor T of
    their centres (module docstring). weights: w_b, (N_R,) shared or (N_R, B); data_sums: s_b
    (B, M); n_data: N_D,b (B,); constants: c_b (B,) (None: 0). pairs: PairProducts of these rows
    (whitened, few centres) to solve by explicit Hessians, or None for conjugate gradient.
    reference_gram: the ReferenceGram of these rows' points and centres (None: one from the
    weights, their mean over the fits when they are per fit); pass the same one to later problems
    on the same reference and centres (with the reference's own weights) to build it once.
    curvature_rows: whitened rows of the same points and centres (float32, cached) for the Hessian
    products of conjugate gradient only (module docstring); None: `rows` serve them too."""

    def __init__(self, rows: NystromKernelRows, factor: NystromFactor, weights: torch.Tensor, data_sums: torch.Tensor,
                 n_data: torch.Tensor, constants: torch.Tensor | None = None, pairs: PairProducts | None = None,
                 reference_gram: ReferenceGram | None = None, curvature_rows: NystromKernelRows | None = None):
        if curvature_rows is not None and not (curvature_rows.whitened and curvature_rows.n_rows == rows.n_rows):
            raise FitError("curvature_rows must be the whitened rows of the same reference points.")
        self.rows, self.factor, self.pairs = rows, factor, pairs
        self.curvature_rows = rows if curvature_rows is None else curvature_rows
        if reference_gram is None:
            reference_gram = ReferenceGram(rows.points, rows.centers, rows.sigma, factor,
                                           weights if weights.ndim == 1 else weights.mean(dim=1))
        self.reference_gram = reference_gram
        self.weights, self.data_sums = weights, data_sums
        n_batch, n_centers = data_sums.shape
        device = data_sums.device
        self.n_points = n_data.to(torch.float64) + rows.n_rows
        self.constants = torch.zeros(n_batch, dtype=torch.float64, device=device) if constants is None else constants
        self.kernel_cached = rows.cached
        self.gamma = torch.zeros((n_batch, n_centers), dtype=torch.float64, device=device)
        self.loss = self.constants / self.n_points
        self._trial: dict[int, tuple] = {}
        if pairs is not None:
            self._own_weights = weights.ndim == 1 and torch.equal(weights, pairs.weights)
            if self._own_weights:
                gradient, self.hessian = pairs.at_zero(n_batch)
            else:
                _, gradient, self.hessian = pairs.sums(self.gamma, weights=self._weights(torch.arange(n_batch)))
            self.loss_gradient = gradient - data_sums
            self._stale = torch.zeros(n_batch, dtype=torch.bool, device=device)
            return
        self.fitted = torch.zeros((rows.n_rows, n_batch), dtype=torch.float64, device=device)
        self.scaled = self._weights(torch.arange(n_batch, device=device)).clone()  # w e^f, (N_R, B)
        self.loss_gradient = torch.zeros_like(self.gamma)
        self._stale = torch.ones(n_batch, dtype=torch.bool, device=device)
        self._first_norms = torch.full((n_batch,), float("nan"), dtype=torch.float64, device=device)
        self._last_iterations = EXPECTED_CG_ITERATIONS

    def _weights(self, toys: torch.Tensor) -> torch.Tensor:
        """The reference weights of these fits, (N_R, k)."""
        return self.weights[:, None].expand(-1, len(toys)) if self.weights.ndim == 1 else self.weights[:, toys]

    def _coefficients(self, gamma: torch.Tensor, rows: NystromKernelRows) -> torch.Tensor:
        """The columns that `rows` multiply to give f for rows gamma (k, M): (M, k)."""
        return gamma.T if rows.whitened else self.factor.to_alpha(gamma.T)

    def _gamma_space(self, projected: torch.Tensor, rows: NystromKernelRows) -> torch.Tensor:
        """rows^T U (M, k) mapped to gamma coordinates: itself for whitened rows, T^-T K^T U
        otherwise."""
        return projected if rows.whitened else self.factor.transpose_solve(projected)

    def reference_values(self) -> torch.Tensor:
        """f on the reference points at the current points, (N_R, B): K_R alpha from the kernel itself
        where the rows are whitened (Phi gamma would carry the rounding of T^-1 into t), else the f
        the iteration kept."""
        if not self.rows.whitened:
            return self.fitted
        return kernel_products(self.rows.points, self.rows.centers, self.rows.sigma, self.factor.to_alpha(self.gamma.T))

    def refresh(self, toys: torch.Tensor) -> None:
        """n dloss/dgamma = Phi^T (w e^f) - s of the stale fits: one pass over the reference rows for
        all of them."""
        stale = toys[self._stale[toys]]
        if len(stale) == 0:
            return
        projected = self.rows.rmatvec(self.scaled[:, stale])  # (M, k)
        self.loss_gradient[stale] = self._gamma_space(projected, self.rows).T - self.data_sums[stale]
        self._stale[stale] = False

    def directions(self, toys: torch.Tensor, gradient: torch.Tensor, penalty: float, max_cg: torch.Tensor,
                   cg_tol: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pairs is not None:
            ridge = (penalty * self.n_points[toys])[:, None, None]
            identity = torch.eye(gradient.shape[1], dtype=torch.float64, device=gradient.device)
            factor, info = torch.linalg.cholesky_ex(self.hessian[toys] + ridge * identity)
            if bool((info != 0).any()):
                raise FitError("Newton: a Hessian is not positive definite (non-finite f?).")
            steps = torch.cholesky_solve(gradient[:, :, None], factor)[:, :, 0]
            return steps, torch.zeros(len(toys), dtype=torch.long, device=toys.device)
        preconditioner = self.reference_gram.preconditioner(penalty, self.rows.n_rows)
        rhs = preconditioner.apply_transpose(gradient)
        norms = torch.linalg.vector_norm(rhs, dim=1)
        first = self._first_norms[toys]
        self._first_norms[toys] = torch.where(torch.isnan(first), norms, first)
        ridge = penalty * self.n_points[toys]
        hessian = self._hessian_operator(toys, ridge)

        def apply(vectors: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
            return preconditioner.apply_transpose(hessian(preconditioner.apply(vectors), members))

        tolerances = forcing_tolerances(norms, self._first_norms[toys], cg_tol)
        beta, iterations = conjugate_gradient(apply, rhs, max_cg, tolerances)
        self._last_iterations = int(iterations.max())
        return preconditioner.apply(beta), iterations

    def _hessian_operator(self, toys: torch.Tensor, ridge: torch.Tensor):
        """(rows V (k, M), members (k,)) -> n H_gamma V for the fits toys[members]: one pass over the
        curvature rows for all of them. A single fit forms Phi^T diag(w e^f) Phi once instead where
        the cost model says so (nystrom.prefers_explicit_gram: the rows recomputed in blocks and many
        CG iterations expected), and every product is then a small matrix product."""
        rows = self.curvature_rows
        if len(toys) == 1 and prefers_explicit_gram(rows, self._last_iterations):
            gram = rows.whitened_weighted_gram(self.scaled[:, toys[0]], self.factor)
            return lambda vectors, members: vectors @ gram + ridge[members, None] * vectors

        def apply(vectors: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
            image = rows.weighted_gram_matvec(self.scaled[:, toys[members]], self._coefficients(vectors, rows))
            return self._gamma_space(image, rows).T + ridge[members, None] * vectors

        return apply

    def prepare_steps(self, toys: torch.Tensor, steps: torch.Tensor, fresh_hessian: torch.Tensor) -> None:
        """Keep the steps (and which fits want a fresh explicit Hessian); for CG, f moves along
        Phi step: computed for all the fits in one pass."""
        self._position = torch.full((self.gamma.shape[0],), -1, dtype=torch.long, device=toys.device)
        self._position[toys] = torch.arange(len(toys), device=toys.device)
        self._steps, self._fresh = steps, fresh_hessian
        self._trial_gamma = self.gamma.clone()
        self._trial_loss = self.loss.clone()
        if self.pairs is not None:
            self._trial_gradient = self.loss_gradient.clone()
            self._trial_hessian: dict[int, torch.Tensor] = {}
        else:
            self._fitted_steps = self.rows.matvec(self._coefficients(steps, self.rows))  # (N_R, k)
            self._trial_scale = torch.zeros(self.gamma.shape[0], dtype=torch.float64, device=toys.device)

    def try_steps(self, toys: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        positions = self._position[toys]
        gamma = self.gamma[toys] - scales[:, None] * self._steps[positions]
        data_terms = (self.data_sums[toys] * gamma).sum(dim=1)
        if self.pairs is not None:
            fresh = self._fresh[positions].nonzero()[:, 0]
            weights = None if self._own_weights else self._weights(toys)
            sums, gradient, hessian = self.pairs.sums(gamma, None if len(fresh) == len(toys) else fresh, weights)
            self._trial_gradient[toys] = gradient - self.data_sums[toys]
            self._trial_hessian.update(zip(toys[fresh].tolist(), [] if hessian is None else hessian))
        else:
            fitted = self.fitted[:, toys] - scales * self._fitted_steps[:, positions]
            sums = (self._weights(toys) * torch.expm1(fitted)).sum(dim=0)
            self._trial_scale[toys] = scales
        values = (sums - data_terms + self.constants[toys]) / self.n_points[toys]
        self._trial_gamma[toys], self._trial_loss[toys] = gamma, values
        return torch.where(torch.isfinite(values), values, torch.full_like(values, float("inf")))

    def accept(self, toys: torch.Tensor) -> None:
        if len(toys) == 0:
            return
        self.gamma[toys], self.loss[toys] = self._trial_gamma[toys], self._trial_loss[toys]
        if self.pairs is not None:
            self.loss_gradient[toys] = self._trial_gradient[toys]
            for toy in toys.tolist():
                if toy in self._trial_hessian:
                    self.hessian[toy] = self._trial_hessian[toy]
            return
        self.fitted[:, toys] -= self._trial_scale[toys] * self._fitted_steps[:, self._position[toys]]
        self.scaled[:, toys] = self._weights(toys) * torch.exp(self.fitted[:, toys])
        self._stale[toys] = True
