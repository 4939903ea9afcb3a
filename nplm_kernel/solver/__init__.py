"""The Falkon-style Nystrom solver for kernel models trained on a per-point convex loss (no physics:
the kernel backend and the NPLM loss are given to it).

Minimises over alpha in R^M, for one fit or several fits together,

    J(alpha) = (1/n) sum_i l_i(f_i + o_i) + (lambda/2) alpha^T K_MM alpha,   f = K_nM alpha,

for fixed offsets o_i and a smooth convex per-point loss given by a PointLoss: its value, first
derivatives l'_i and second derivatives l''_i >= 0. Two are provided: LogisticLoss (weighted
binary cross-entropy on logits, l = a (softplus(z) - y z)) and ExtendedLikelihoodLoss (the NPLM
loss, l = w (e^z - 1) on reference points and -z on data points). Newton steps run over a
decreasing penalty list (newton.py, one loop for one fit or many). Each Newton system H d = g, with

    n g = K_nM^T l' + lambda n K_MM alpha,    n H = K_nM^T diag(l'') K_nM + lambda n K_MM,

is solved by conjugate gradient with Falkon's preconditioner B = T^-1 A^-1 / sqrt(n),
T = chol(K_MM), A = chol(T D_M T^T / M + lambda I), or, with few centres, directly; fits of the NPLM
loss on one reference use the same construction from a strided sample of 4 M reference points,
with the reference weights (f = 0) instead of curvatures at the centres, B = T^-1 P^-1 in alpha
(ReferenceGram); the step is
taken with a backtracking (Armijo) line search, so J never increases from its value at alpha = 0.
Centres whose kernel functions are numerically dependent are dropped first (pivoted Cholesky,
pivoted_centers), which makes K_MM positive definite to float64 resolution (Falkon's eps M I jitter
is then only a fallback), and the iteration runs in Falkon's whitened coordinates gamma = T alpha, in
which the penalty is |gamma|^2: J stays a sum of terms computed without cancellation even for wide
Gaussian kernels. D_M are the loss curvatures at the centres (one fit of a per-point loss); here they are kernel-smoothed
(Nadaraya-Watson) from all points, which also works for centres that are not training points and
is far less noisy than the curvature of the one point at each centre.

Laid out like the Falkon library: kernels.py (Gaussian kernel blocks, the CPU threads that compute
them, and the width heuristic), nystrom.py (centres, the factor T, the rows of K_nM and the memory
they take), preconditioner.py, cg.py, losses.py (the per-point losses), newton.py (the Newton loop
and its diagnostics), and the two Newton problems: point_loss.py (any per-point loss on all points,
one fit) and shared_reference.py (the NPLM loss of fits sharing a reference sample: data only
through their kernel sums, B fits at once).
"""

from .cg import conjugate_gradient
from .kernels import gaussian_kernel, pairwise_distance_quantiles
from .losses import ExtendedLikelihoodLoss, LogisticLoss, PointLoss
from .newton import STOP_REASONS, Solution, SolverDiagnostics, solve
from .nystrom import (
    NystromFactor,
    NystromKernelRows,
    fixed_fit_memory,
    kernel_memory_budget,
    kernel_products,
    pivoted_centers,
    select_centers,
)
from .point_loss import PointLossProblem
from .preconditioner import FalkonPreconditioner, ReferenceGram, shared_sample_size
from .shared_reference import PairProducts, ReferenceProblem

__all__ = [
    "conjugate_gradient", "gaussian_kernel", "pairwise_distance_quantiles", "ExtendedLikelihoodLoss", "LogisticLoss",
    "PointLoss", "STOP_REASONS", "Solution", "SolverDiagnostics", "solve", "NystromFactor", "NystromKernelRows",
    "fixed_fit_memory", "kernel_memory_budget", "kernel_products", "pivoted_centers", "select_centers",
    "PointLossProblem", "FalkonPreconditioner", "ReferenceGram", "shared_sample_size", "PairProducts", "ReferenceProblem",
]
