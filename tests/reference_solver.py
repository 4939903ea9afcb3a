"""An independent dense float64 Newton solve of the documented objective, in numpy only.

J(alpha) = (1/n) sum_i l_i(z_i) + (lambda/2) alpha^T K_MM alpha,  z = K_nM alpha + o, with
  logistic: l_i = a_i [softplus(z_i) - y_i z_i]  (labels y = 1 for data, weights a = 1 or w_R),
  nplm:     l_i = -z_i on data points, w_R (e^z_i - 1) on reference points.
Used as ground truth for the Falkon solver on small problems. The solve runs in the eigenbasis of
K_MM (K_MM = U S U^T, alpha = U S^-1/2 w, so alpha^T K_MM alpha = |w|^2), keeping eigenvalues above
1e-14 * max: exact Newton on a well-conditioned problem even when K_MM is numerically singular,
and independent of the package's Cholesky-based route.
"""

import numpy as np


def gaussian_gram(x: np.ndarray, c: np.ndarray, sigma: float) -> np.ndarray:
    squared = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
    return np.exp(-squared / (2.0 * sigma**2))


class PointLoss:
    """Per-point loss values and derivatives for 'logistic' or 'nplm' on data + reference points."""

    def __init__(self, kind: str, n_data: int, w_ref: np.ndarray):
        self.kind, self.n_data = kind, n_data
        self.labels = np.r_[np.ones(n_data), np.zeros(len(w_ref))]
        self.weights = np.r_[np.ones(n_data), w_ref]

    def value(self, z):
        if self.kind == "logistic":
            return np.sum(self.weights * (np.logaddexp(0.0, z) - self.labels * z))
        with np.errstate(over="ignore"):
            return np.sum(self.weights[self.n_data:] * np.expm1(z[self.n_data:])) - np.sum(z[: self.n_data])

    def derivatives(self, z):
        if self.kind == "logistic":
            p = 1.0 / (1.0 + np.exp(-z))
            return self.weights * (p - self.labels), self.weights * p * (1 - p)
        scaled = np.r_[np.zeros(self.n_data), self.weights[self.n_data:] * np.exp(z[self.n_data:])]
        return scaled - self.labels, scaled


def objective(alpha, knm, kmm, loss, offsets, penalty):
    return loss.value(knm @ alpha + offsets) / len(offsets) + 0.5 * penalty * alpha @ kmm @ alpha


def dense_newton(knm, kmm, loss, offsets, penalty, steps=200):
    """Damped Newton with the exact dense Hessian in the whitened eigenbasis; returns (alpha, J)."""
    eigenvalues, eigenvectors = np.linalg.eigh(kmm)
    keep = eigenvalues > 1e-14 * eigenvalues.max()
    to_alpha = eigenvectors[:, keep] / np.sqrt(eigenvalues[keep])
    features = knm @ to_alpha
    n = len(offsets)

    def whitened_objective(w):
        value = loss.value(features @ w + offsets) / n + 0.5 * penalty * w @ w
        return value if np.isfinite(value) else np.inf

    w = np.zeros(features.shape[1])
    value = whitened_objective(w)
    for _ in range(steps):
        slope, curvature = loss.derivatives(features @ w + offsets)
        gradient = features.T @ slope / n + penalty * w
        hessian = (features.T * curvature) @ features / n + penalty * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        scale, trial = 1.0, whitened_objective(w - step)
        while trial > value and scale > 1e-10:
            scale /= 2
            trial = whitened_objective(w - scale * step)
        if trial > value or value - trial <= 1e-16 * abs(value):
            break
        w, value = w - scale * step, trial
    return to_alpha @ w, value


def greedy_pivots(points: np.ndarray, sigma: float, tol: float, max_centers: int | None = None) -> list[int]:
    """Greedy pivoted Cholesky of the Gaussian kernel matrix of `points`, one column at a time: each
    step takes the first point of largest residual diagonal, until every residual is at most tol
    or max_centers are taken. The textbook algorithm, as ground truth for the blocked one."""
    n = len(points)
    residual, rows, chosen = np.ones(n), [], []
    while len(chosen) < (n if max_centers is None else max_centers):
        pivot = int(np.argmax(residual))
        if residual[pivot] <= tol:
            break
        column = gaussian_gram(points, points[pivot : pivot + 1], sigma)[:, 0]
        for row in rows:
            column = column - row * row[pivot]
        rows.append(column / np.sqrt(residual[pivot]))
        residual = residual - rows[-1] ** 2
        residual[pivot] = 0.0
        chosen.append(pivot)
    return chosen
