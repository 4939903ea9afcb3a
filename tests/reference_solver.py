"""An independent dense float64 Newton solve of the documented objective, in numpy only.

J(alpha) = (1/n) sum_i a_i [softplus(z_i) - y_i z_i] + (lambda/2) alpha^T K_MM alpha,
z = K_nM alpha + o. Used as ground truth for the Falkon solver on small problems.
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
    """Damped Newton with exact dense Hessian and a pseudo-inverse solve; returns (alpha, J)."""
    n = len(labels)
    alpha = np.zeros(knm.shape[1])
    value = objective(alpha, knm, kmm, labels, weights, offsets, penalty)
    for _ in range(steps):
        z = knm @ alpha + offsets
        p = 1.0 / (1.0 + np.exp(-z))
        gradient = knm.T @ (weights * (p - labels)) / n + penalty * kmm @ alpha
        hessian = (knm.T * (weights * p * (1 - p))) @ knm / n + penalty * kmm
        step = np.linalg.lstsq(hessian, gradient, rcond=1e-14)[0]
        scale = 1.0
        while scale > 1e-10:
            trial = objective(alpha - scale * step, knm, kmm, labels, weights, offsets, penalty)
            if trial <= value:
                break
            scale /= 2
        if value - trial < 1e-17 * abs(value):
            alpha, value = alpha - scale * step, min(trial, value)
            break
        alpha, value = alpha - scale * step, trial
    return alpha, value
