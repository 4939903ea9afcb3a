"""An independent dense float64 Newton solve of the documented objective, in numpy only.

J(alpha) = (1/n) sum_i a_i [softplus(z_i) - y_i z_i] + (lambda/2) alpha^T K_MM alpha,
z = K_nM alpha + o. Used as ground truth for the Falkon solver on small problems. The solve runs
in the eigenbasis of K_MM (K_MM = U S U^T, alpha = U S^-1/2 w, so alpha^T K_MM alpha = |w|^2),
keeping eigenvalues above 1e-14 * max: exact Newton on a well-conditioned problem even when
K_MM is numerically singular, and independent of the package's Cholesky-based route.
"""

import numpy as np


def gaussian_gram(x: np.ndarray, c: np.ndarray, sigma: float) -> np.ndarray:
    squared = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
    return np.exp(-squared / (2.0 * sigma**2))


def objective(alpha, knm, kmm, labels, weights, offsets, penalty):
    z = knm @ alpha + offsets
    data = np.sum(weights * (np.logaddexp(0.0, z) - labels * z)) / len(labels)
    return data + 0.5 * penalty * alpha @ kmm @ alpha


def dense_newton(knm, kmm, labels, weights, offsets, penalty, steps=100):
    """Damped Newton with the exact dense Hessian in the whitened eigenbasis; returns (alpha, J)."""
    eigenvalues, eigenvectors = np.linalg.eigh(kmm)
    keep = eigenvalues > 1e-14 * eigenvalues.max()
    to_alpha = eigenvectors[:, keep] / np.sqrt(eigenvalues[keep])
    features = knm @ to_alpha
    n = len(labels)

    def whitened_objective(w):
        z = features @ w + offsets
        return np.sum(weights * (np.logaddexp(0.0, z) - labels * z)) / n + 0.5 * penalty * w @ w

    w = np.zeros(features.shape[1])
    value = whitened_objective(w)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(features @ w + offsets)))
        gradient = features.T @ (weights * (p - labels)) / n + penalty * w
        hessian = (features.T * (weights * p * (1 - p))) @ features / n + penalty * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        scale, trial = 1.0, whitened_objective(w - step)
        while trial > value and scale > 1e-10:
            scale /= 2
            trial = whitened_objective(w - scale * step)
        if trial > value or value - trial <= 1e-16 * abs(value):
            break
        w, value = w - scale * step, trial
    return to_alpha @ w, value
