"""scipy's exact trust-region Newton for small smooth problems whose value, gradient and Hessian
come from one computation (the nuisance fits, the kernel Taylor learner)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import optimize


class LastEvaluation:
    """Wraps derivatives(x) -> (value, gradient, Hessian) so that scipy's separate requests for
    the value, the gradient and the Hessian at one point evaluate it once."""

    def __init__(self, derivatives: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]]):
        self.derivatives = derivatives
        self._key: bytes | None = None
        self._value: tuple[float, np.ndarray, np.ndarray] | None = None

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        if x.tobytes() != self._key:
            self._key, self._value = x.tobytes(), self.derivatives(x)
        return self._value

    def minimize(self, start: np.ndarray, gtol: float, max_iter: int) -> optimize.OptimizeResult:
        """scipy's exact trust-region Newton from `start`."""
        return optimize.minimize(lambda x: self(x)[:2], start, jac=True, hess=lambda x: self(x)[2],
                                 method="trust-exact", options={"gtol": gtol, "maxiter": max_iter})
