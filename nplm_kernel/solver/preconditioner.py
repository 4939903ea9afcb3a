"""Preconditioners of the Newton systems, in the whitened coordinates gamma = T alpha: Falkon's
(curvatures at the centres; point_loss.py) and, for NPLM fits on one reference sample
(shared_reference.py), Falkon's construction from a sample of the reference."""

from __future__ import annotations

import torch

from .kernels import gaussian_kernel
from .nystrom import NystromFactor, stable_cholesky

#: Reference points per kept centre in the sample of a ReferenceGram (all the reference when it has
#: fewer): on the paper-scale 5D fit (2857 centres), 1, 2, 4 and 8 points per centre took 79, 61,
#: 49-67 and 49-58 CG iterations (random and strided samples) where Falkon's preconditioner took 138.
PRECONDITIONER_POINTS_PER_CENTER = 4
#: Multiply-adds a ReferenceGram kept for many fits (a prepared reference of a toy campaign) may spend
#: on a larger sample, up to the whole reference (shared_sample_size): on the moderate 5D campaign
#: (N_R = 2e4, 528 centres) the whole reference instead of 4 points per centre made batched toys
#: 1.7x faster; at the paper's scale this budget keeps about 4 points per centre.
SHARED_GRAM_MULTIPLY_ADDS = 10**11
#: Sample points whitened at a time while its Gram matrix is accumulated.
PRECONDITIONER_CHUNK = 1024

#: Rows and columns of the blocks in which triangular_congruence forms its product.
CONGRUENCE_BLOCK = 384


def triangular_congruence(upper: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """U diag(d) U^T for an upper-triangular U (M, M), block column by block column: the rows of U
    in block j are zero before the block's first column, so block column j needs the columns from
    there on only, and the blocks below the diagonal are the transposes of those above (about a
    third of a full product's time at M = 2857)."""
    n_rows = upper.shape[0]
    scaled = upper * diagonal
    product = torch.empty((n_rows, n_rows), dtype=upper.dtype, device=upper.device)
    for start in range(0, n_rows, CONGRUENCE_BLOCK):
        stop = min(start + CONGRUENCE_BLOCK, n_rows)
        product[:stop, start:stop] = scaled[:stop, start:] @ upper[start:stop, start:].T
        product[start:stop, :start] = product[:start, start:stop].T
    return product


def shared_sample_size(n_ref: int, n_centers: int) -> int:
    """Sample size of a ReferenceGram that many fits share: the whole reference where
    SHARED_GRAM_MULTIPLY_ADDS allow, at least PRECONDITIONER_POINTS_PER_CENTER per centre."""
    affordable = SHARED_GRAM_MULTIPLY_ADDS // max(1, n_centers * n_centers)
    return int(min(n_ref, max(PRECONDITIONER_POINTS_PER_CENTER * n_centers, affordable)))


def add_upper_gram(gram: torch.Tensor, weighted: torch.Tensor, features: torch.Tensor) -> None:
    """gram += weighted^T features on and above the diagonal, block column by block column (about
    half a full product's multiply-adds), for a symmetric result (weighted = diag(w) features)."""
    n_columns = gram.shape[1]
    for start in range(0, n_columns, CONGRUENCE_BLOCK):
        stop = min(start + CONGRUENCE_BLOCK, n_columns)
        gram[:stop, start:stop] += weighted[:, :stop].T @ features[:, start:stop]


class FalkonPreconditioner:
    """Falkon's preconditioner in the whitened coordinates: with A^T A = T diag(d) T^T / M + lambda I,
    n A^T A approximates the Hessian n H_gamma = T^-T K_nM^T D K_nM T^-1 + lambda n I (using
    K_nM^T D K_nM ~ (n/M) K_MM D_M K_MM), so B = A^-1 / sqrt(n) makes B^T (n H_gamma) B close to the
    identity (in alpha: Falkon's T^-1 A^-1 / sqrt(n); Rudi et al. 2017, Meanti et al. 2020). One
    fit of a per-point loss (point_loss.py): curvatures d (M,) at the centres, n its points."""

    def __init__(self, factor: NystromFactor, center_curvature: torch.Tensor, penalty: float, n_points: float):
        upper = factor.upper
        inner = triangular_congruence(upper, center_curvature / upper.shape[0])
        inner.diagonal().add_(penalty)
        self.inner_factor = stable_cholesky(inner, "preconditioner factor A")
        self.scale = 1.0 / float(n_points) ** 0.5

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """B v = A^-1 v / sqrt(n) for rows v (k, M)."""
        return torch.linalg.solve_triangular(self.inner_factor, vectors.T, upper=True).T * self.scale

    def apply_transpose(self, vectors: torch.Tensor) -> torch.Tensor:
        """B^T v = A^-T v / sqrt(n) for rows v (k, M)."""
        return torch.linalg.solve_triangular(self.inner_factor.mT, vectors.T, upper=False).T * self.scale


class ReferenceGram:
    """What preconditions NPLM fits on one reference sample (shared_reference.py): Falkon's
    construction with a strided sample S of the reference (n_sample points, by default
    PRECONDITIONER_POINTS_PER_CENTER M; shared_sample_size for one that many fits share; their
    weights scaled to the reference's total sum w_R) in place of the centres, at
    f = 0. With Phi_S = K(S, C) T^-1 and G_S = Phi_S^T diag(w_S) Phi_S (independent of lambda,
    computed on first use: about s M^2 / 2 multiply-adds to whiten and s M^2 / 2 for G_S),

        P^T P = G_S + ridge I  ~  n H_gamma = Phi^T diag(w e^(f + o)) Phi + lambda n I

    with ridge = lambda (N_R + sum w_R), the expected n (exact when S is the whole reference,
    f = o = 0 and N_D = sum w_R). B = P^-1 makes B^T (n H) B close to the identity for every fit on
    this reference: the reference's density, which makes n H ill-conditioned, is the same for all
    of them, and f (or offsets o, which act as a known shift of f) moves the weights where the data
    differ, which CG then resolves. One factor P per ridge (M^3 / 3 multiply-adds), each (M, M)."""

    def __init__(self, points: torch.Tensor, centers: torch.Tensor, sigma: float, factor: NystromFactor,
                 weights: torch.Tensor, n_sample: int | None = None):
        n_ref, n_centers = points.shape[0], centers.shape[0]
        default = PRECONDITIONER_POINTS_PER_CENTER * n_centers
        self.n_sample = int(min(n_ref, default if n_sample is None else n_sample))
        self.total_weight = float(weights.sum())
        self._inputs: tuple | None = (points, centers, sigma, factor, weights)
        self._gram: torch.Tensor | None = None
        self._preconditioners: dict[float, ReferencePreconditioner] = {}

    def preconditioner(self, penalty: float, n_ref: int) -> ReferencePreconditioner:
        """The preconditioner for this lambda on a reference of n_ref points (ridge lambda (n_ref + sum w))."""
        ridge = penalty * (n_ref + self.total_weight)
        if ridge not in self._preconditioners:
            self._preconditioners[ridge] = ReferencePreconditioner(self.gram(), ridge)
        return self._preconditioners[ridge]

    def gram(self) -> torch.Tensor:
        """G_S, (M, M) symmetric."""
        if self._gram is None:
            points, centers, sigma, factor, weights = self._inputs
            n_ref, n_centers, n_sample = points.shape[0], centers.shape[0], self.n_sample
            sample = torch.div(torch.arange(n_sample, device=points.device) * n_ref, n_sample, rounding_mode="floor")
            sample_weights = weights[sample] * (self.total_weight / weights[sample].sum())
            gram = torch.zeros((n_centers, n_centers), dtype=torch.float64, device=points.device)
            for start in range(0, n_sample, PRECONDITIONER_CHUNK):
                chunk = slice(start, start + PRECONDITIONER_CHUNK)
                features = factor.whiten(gaussian_kernel(points[sample[chunk]], centers, sigma))
                add_upper_gram(gram, features * sample_weights[chunk, None], features)
            above = torch.triu(gram, diagonal=1)
            gram.triu_()
            gram += above.T
            self._gram, self._inputs = gram, None
        return self._gram

    def stored_bytes(self) -> int:
        """Memory of G_S and the factors built so far."""
        matrices = [self._gram, *(kept.upper for kept in list(self._preconditioners.values()))]
        return sum(8 * matrix.numel() for matrix in matrices if matrix is not None)


class ReferencePreconditioner:
    """B = P^-1 with P^T P = G_S + ridge I, P upper-triangular (ReferenceGram)."""

    def __init__(self, gram: torch.Tensor, ridge: float):
        shifted = gram.clone()
        shifted.diagonal().add_(ridge)
        self.upper = stable_cholesky(shifted, "reference preconditioner P")

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """B v = P^-1 v for rows v (k, M)."""
        return torch.linalg.solve_triangular(self.upper, vectors.T, upper=True).T

    def apply_transpose(self, vectors: torch.Tensor) -> torch.Tensor:
        """B^T v = P^-T v for rows v (k, M)."""
        return torch.linalg.solve_triangular(self.upper.mT, vectors.T, upper=False).T
