"""Kernel learning of shape-nuisance Taylor coefficients delta_k(x) (docs/statistics.md, systematic uncertainties).

From a nominal reference R_0 and samples R_i simulated at shifted values nu_i, learn
    log r(x; nu) = sum_{k=1..K} delta_k(x) nu^k
with the parametrised-classifier loss of the NPLM papers: for each i, a weighted logistic
regression of R_i (label 1) against R_0 (label 0) whose log-odds is log r(x; nu_i),
    J = sum_i [ sum_{R_0} w log(1 + e^{s_i}) + sum_{R_i} w log(1 + e^{-s_i}) ] / W + (lambda / 2) |g|^2,
    s_i(x) = sum_k (nu_i / s)^k g_k(x),   delta_k = g_k / s^k,   s = max_i |nu_i|,
W the total weight. Its minimiser is s_i = log (N(R_i) n_i(x)) / (N(R_0) n_0(x)), the exact
log r when the weights sum to each sample's expected yield. Here g_k(x) = Phi(x) b_k with the
whitened Nystrom features Phi = K(x, C) T^-1 (T^T T = K_CC), so |g|^2 = sum_k |b_k|^2 is the RKHS
norm; the K M' coefficients are found by exact (dense) trust-region Newton, practical for M' up to
about a thousand kept centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator

from ..contract import require_fitted
from ..core.devices import resolve_device
from ..core.exceptions import FitError
from ..core.optimize import LastEvaluation
from ..core.samples import as_events, check_positive_integer, check_positive_number
from ..nuisance.taylor_training import taylor_training_set
from ..solver.kernels import gaussian_kernel
from .geometry import kernel_width, nystrom_centers, uniform_candidates


class KernelTaylorLearner(BaseEstimator):
    """Learns delta_k(x), k = 1..degree, with a Gaussian-kernel Nystrom model per coefficient.

    Parameters: degree (1 or 2); n_centers (drawn from all training samples); sigma (kernel
    width in standardised units; None: 90th percentile of pairwise nominal distances); penalty
    (lambda above); max_iter (Newton iterations); seed (centres and sigma subsample); device
    (where the kernel features are computed: 'cpu', 'cuda' or 'auto'; the small dense Newton
    solve runs on the host).

    Fitted attributes: centers_ (M', d, standardised), coefficient_alpha_ (M', degree) such that
    delta_k(x) = K(x, centers_) @ coefficient_alpha_[:, k-1], sigma_, input_mean_, input_scale_,
    nu_scale_ (s), loss_ (J at the optimum), n_iter_.
    """

    #: The hyperparameters that play the roles the shared layer knows (contract.SETTING_ROLES).
    setting_roles = {"device": "device", "seed": "seed"}

    def __init__(self, degree: int = 2, n_centers: int = 200, sigma: float | None = None, penalty: float = 1e-7,
                 max_iter: int = 200, seed: int | None = 0, device: str = "cpu"):
        self.degree = degree
        self.n_centers = n_centers
        self.sigma = sigma
        self.penalty = penalty
        self.max_iter = max_iter
        self.seed = seed
        self.device = device

    def fit(self, x_nominal: np.ndarray, w_nominal: float | np.ndarray,
            shifted: Sequence[tuple[float, np.ndarray, float | np.ndarray]]) -> KernelTaylorLearner:
        """Learn delta_k from the nominal sample (x, w) and [(nu_i, x_i, w_i), ...] at shifted nu_i."""
        check_positive_integer(self.n_centers, "n_centers")
        check_positive_integer(self.max_iter, "max_iter")
        check_positive_number(self.penalty, "penalty")
        if self.sigma is not None:
            check_positive_number(self.sigma, "sigma")
        training = taylor_training_set(x_nominal, w_nominal, shifted, self.degree)
        rng = np.random.default_rng(self.seed)
        pooled = np.concatenate([training.nominal] + [points for _, points, _ in training.shifted])
        candidates = uniform_candidates(pooled, self.n_centers, rng)
        sigma = kernel_width(self.sigma, training.nominal, training.nominal_weights)
        device = resolve_device(self.device)
        centers, factor = nystrom_centers(candidates, sigma, None, device)
        centers_t = torch.as_tensor(centers, device=device)

        def features(points: np.ndarray) -> np.ndarray:
            return factor.whiten(gaussian_kernel(torch.as_tensor(points, device=device), centers_t, sigma)).cpu().numpy()

        nominal_features, nominal_weights = features(training.nominal), training.nominal_weights
        pairs = [(features(points), weights, monomials) for monomials, points, weights in training.shifted]
        n_kept = len(centers)

        def derivatives(flat: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            coefficients = flat.reshape(n_kept, self.degree)
            value = 0.5 * self.penalty * flat @ flat
            gradient = self.penalty * coefficients.copy()
            hessian = self.penalty * np.eye(flat.size)
            for shifted_features, shifted_weights, monomials in pairs:
                for phi, weights, sign in ((nominal_features, nominal_weights, 1.0),
                                           (shifted_features, shifted_weights, -1.0)):
                    logit = sign * (phi @ (coefficients @ monomials))
                    value -= weights @ log_expit(-logit)
                    slope = sign * weights * expit(logit)
                    gradient += np.outer(phi.T @ slope, monomials)
                    gram = (phi * (weights * expit(logit) * expit(-logit))[:, None]).T @ phi
                    hessian += np.kron(gram, np.outer(monomials, monomials))
            return float(value), gradient.ravel(), hessian

        result = LastEvaluation(derivatives).minimize(np.zeros(n_kept * self.degree), gtol=1e-10,
                                                      max_iter=int(self.max_iter))
        if not np.isfinite(result.fun) or not result.success and np.max(np.abs(result.jac)) > 1e-6:
            raise FitError(f"KernelTaylorLearner: the Newton minimisation failed ({result.message}).")
        whitened = result.x.reshape(n_kept, self.degree)
        alpha = factor.to_alpha(torch.as_tensor(whitened, device=device)).cpu().numpy()
        self.coefficient_alpha_ = alpha / training.nu_scale**training.powers
        self.centers_, self.sigma_ = centers, sigma
        self.input_mean_, self.input_scale_ = training.input_mean, training.input_scale
        self.nu_scale_ = training.nu_scale
        self.n_features_in_ = training.nominal.shape[1]
        self.loss_, self.n_iter_ = float(result.fun), int(result.nit)
        return self

    def coefficients(self, x: np.ndarray) -> np.ndarray:
        """delta_k(x), k = 1..degree, for x (n, d) in input units: float64 (n, degree)."""
        require_fitted(self, "coefficient_alpha_")
        device = resolve_device(self.device)
        points = (as_events(x, "x", self.n_features_in_) - self.input_mean_) / self.input_scale_
        block = gaussian_kernel(torch.as_tensor(points, device=device), torch.as_tensor(self.centers_, device=device),
                                self.sigma_)
        return block.cpu().numpy() @ self.coefficient_alpha_

    def fitted_state(self) -> dict:
        """The fitted attributes, for nplm_kernel.save_model."""
        require_fitted(self, "coefficient_alpha_")
        return {name: getattr(self, name) for name in (
            "coefficient_alpha_", "centers_", "sigma_", "input_mean_", "input_scale_", "nu_scale_",
            "n_features_in_", "loss_", "n_iter_")}

    def fitted_state_spec(self) -> dict:
        """The attributes fitted_state() saves and their shapes (io.models.check_fitted_state)."""
        return {"coefficient_alpha_": ("M", int(self.degree)), "centers_": ("M", "d"), "sigma_": (),
                "input_mean_": ("d",), "input_scale_": ("d",), "nu_scale_": (), "n_features_in_": (), "loss_": (),
                "n_iter_": ()}

    def restore_fitted_state(self, state: dict) -> None:
        """Set the fitted attributes from fitted_state()'s output (as saved)."""
        for name, value in state.items():
            setattr(self, name, value)
