"""One kernel NPLM toy against scikit-learn's Nystroem + LogisticRegression on the same model.

Same data, same M centres drawn from data + reference, same sigma, penalty and weights (the
kernel backend then drops the numerically redundant centres itself; scikit-learn uses all M): scikit-learn minimises
0.5 |w|^2 + C sum_i a_i l(y_i, phi_i . w) with phi = Nystroem features, which equals our
J / lambda for C = 1 / (lambda n) (f = phi . w, |w|^2 = alpha^T K_MM alpha). Both fits are timed
side by side, alternating, in one run; the script prints the time ratio and both t values.

    python benchmarks/kernel_vs_sklearn.py [--n-reference 200000] [--n-centers 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression

from nplm_kernel import KernelNPLM, nplm_loss
from nplm_kernel.benchmarks import SIGNALS_1D, Exponential1D


def sklearn_t(x_data, x_ref, w_ref, centers, sigma, penalty, solver, tol):
    """Fit scikit-learn's model on standardised inputs; return (t, seconds)."""
    start = time.perf_counter()
    features = Nystroem(kernel="rbf", gamma=0.5 / sigma**2, n_components=len(centers)).fit(centers)
    phi = features.transform(np.vstack([x_data, x_ref]))
    labels = np.r_[np.ones(len(x_data)), np.zeros(len(x_ref))]
    weights = np.r_[np.ones(len(x_data)), w_ref]
    model = LogisticRegression(C=1.0 / (penalty * len(labels)), fit_intercept=False, solver=solver, tol=tol, max_iter=10_000)
    model.fit(phi, labels, sample_weight=weights)
    f = phi @ model.coef_[0]
    elapsed = time.perf_counter() - start
    return -2 * nplm_loss(f[: len(x_data)], f[len(x_data) :], w_ref), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-reference", type=int, default=200_000)
    parser.add_argument("--n-centers", type=int, default=500)
    parser.add_argument("--penalty", type=float, default=1e-6)
    parser.add_argument("--signal", choices=sorted(SIGNALS_1D), default="NP2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    rng = np.random.default_rng(arguments.seed)
    benchmark = Exponential1D(n_reference=arguments.n_reference)
    x_ref, w_ref = benchmark.reference(rng)
    x_data = benchmark.data(rng, SIGNALS_1D[arguments.signal])
    pooled = np.vstack([x_data, x_ref])
    centers = pooled[rng.choice(len(pooled), size=arguments.n_centers, replace=False)]
    reference_fit = KernelNPLM(centers=centers, penalty=arguments.penalty).fit(x_data, x_ref, w_ref)
    settings = dict(centers=centers, sigma=reference_fit.sigma_, penalty=arguments.penalty)
    standardise = lambda x: (x - reference_fit.input_mean_) / reference_fit.input_scale_  # noqa: E731

    contenders = {
        "kernel (this package, float64)": lambda: _timed_kernel(x_data, x_ref, w_ref, settings),
        "sklearn lbfgs (tol 1e-6)": lambda: sklearn_t(standardise(x_data), standardise(x_ref), w_ref,
                                                     standardise(centers), reference_fit.sigma_,
                                                     arguments.penalty, "lbfgs", 1e-6),
        "sklearn newton-cholesky (tol 1e-6)": lambda: sklearn_t(standardise(x_data), standardise(x_ref), w_ref,
                                                               standardise(centers), reference_fit.sigma_,
                                                               arguments.penalty, "newton-cholesky", 1e-6),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    t_values: dict[str, float] = {}
    for _ in range(arguments.repeats):
        for name, run in contenders.items():
            t_values[name], elapsed = run()
            times[name].append(elapsed)

    kernel_name = next(iter(contenders))
    kernel_time = np.median(times[kernel_name])
    print(f"1D exponential benchmark, signal {arguments.signal}: N_D = {len(x_data)}, N_R = {len(x_ref)}, "
          f"M = {arguments.n_centers} given ({reference_fit.n_centers_} kept by the kernel backend), sigma = {reference_fit.sigma_:.3f}, lambda = {arguments.penalty:g}, "
          f"{arguments.repeats} alternating repeats (median times)")
    print("| solver | t | t / t_kernel - 1 | time / kernel time |")
    print("|---|---|---|---|")
    for name in contenders:
        ratio = np.median(times[name]) / kernel_time
        print(f"| {name} | {t_values[name]:.4f} | {t_values[name] / t_values[kernel_name] - 1:+.2e} | {ratio:.2f} |")


def _timed_kernel(x_data, x_ref, w_ref, settings):
    start = time.perf_counter()
    estimator = KernelNPLM(standardize=True, **settings).fit(x_data, x_ref, w_ref)
    return estimator.t_, time.perf_counter() - start


if __name__ == "__main__":
    main()
