"""Kernel toy performance, measured side by side in one run, as ratios (markdown tables).

For the 1D benchmark (N_R = 200,000, M = 500) and the 5D dimuon benchmark (N_R = 100,000,
M = 2000): one kernel toy in float64 with K_nM cached (the reference), with K_nM recomputed block
by block, in float32 (with the t difference), with the reference's kernel rows reused from an
earlier toy (reuse_reference=True: centres from the reference only, so its t differs by the choice
of centres), scikit-learn's Nystroem + LogisticRegression on the same kept centres, sigma and
penalty (same model: t agrees to the solvers' tolerances), and an NN toy extrapolated from
measured epochs/s to 3e5 epochs (labelled). Then a roofline check: one pass over the cached K_nM (K_nM v) against the
time the machine's measured memory bandwidth needs to stream its bytes, and the machine's GEMM rate.

    python benchmarks/kernel_performance.py [--repeats 3] [--nn-epochs 300]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nn_baseline import NNNPLM
from nplm_kernel import KernelNPLM
from nplm_kernel.benchmarks import Dimuon5D, Exponential1D
from nplm_kernel.kernel import reference_cache
from nplm_kernel.solver import NystromKernelRows, fixed_fit_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_vs_sklearn import sklearn_t  # noqa: E402  (a sibling script)

NN_EPOCHS_PER_TOY = 300_000


def _timed_fit(make, x_data, x_ref, w_ref):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = make().fit(x_data, x_ref, w_ref)
    return time.perf_counter() - start, estimator


def benchmark_case(name, x_data, x_ref, w_ref, n_centers, architecture, repeats, nn_epochs):
    _, preliminary = _timed_fit(lambda: KernelNPLM(n_centers=n_centers), x_data, x_ref, w_ref)
    n_points = len(x_data) + len(x_ref)  # a tenth of K_nM beyond the fit's fixed memory
    blocked_budget = fixed_fit_memory(n_points, x_ref.shape[1]) + n_points * preliminary.n_centers_ * 8 // 10
    reuse = "float64, K_nM cached, reference rows reused (warm; centres from the reference)"
    variants = {
        "float64, K_nM cached": lambda: KernelNPLM(n_centers=n_centers),
        "float64, K_nM blocked (budget K_nM / 10)": lambda: KernelNPLM(n_centers=n_centers, memory_budget=blocked_budget),
        "float32, K_nM cached": lambda: KernelNPLM(n_centers=n_centers, dtype="float32"),
        reuse: lambda: KernelNPLM(n_centers=n_centers, reuse_reference=True),
    }
    sklearn_variant = "scikit-learn Nystroem + LogisticRegression (lbfgs, tol 1e-6; same kept centres)"
    times = {variant: [] for variant in [*variants, sklearn_variant]}
    fits = {}
    sklearn_values = []
    nn_rates = []
    reference_cache.clear()
    _timed_fit(variants[reuse], x_data, x_ref, w_ref)  # fills the cache: later reuse fits are warm
    for _ in range(repeats):
        for variant, make in variants.items():
            elapsed, fits[variant] = _timed_fit(make, x_data, x_ref, w_ref)
            times[variant].append(elapsed)
        base = fits["float64, K_nM cached"]
        t_sklearn, elapsed = sklearn_t((x_data - base.input_mean_) / base.input_scale_,
                                       (x_ref - base.input_mean_) / base.input_scale_, w_ref, base.centers_,
                                       base.sigma_, base.penalty, "lbfgs", 1e-6)
        sklearn_values.append(t_sklearn)
        times[sklearn_variant].append(elapsed)
        elapsed, _ = _timed_fit(lambda: NNNPLM(architecture=architecture, epochs=nn_epochs), x_data, x_ref, w_ref)
        nn_rates.append(nn_epochs / elapsed)
    reference_cache.clear()
    reference_variant = "float64, K_nM cached"
    base_time, base_t = np.median(times[reference_variant]), fits[reference_variant].t_
    lines = [f"### {name}: N_D = {len(x_data)}, N_R = {len(x_ref)}, M = {n_centers} drawn "
             f"({fits[reference_variant].n_centers_} kept), {repeats} alternating repeats (medians)", "",
             "| variant | time / float64-cached time | t | t / t_float64 - 1 | converged |", "|---|---|---|---|---|"]
    for variant in variants:
        fit = fits[variant]
        lines.append(f"| {variant} | {np.median(times[variant]) / base_time:.2f} | {fit.t_:.4f} | "
                     f"{fit.t_ / base_t - 1:+.1e} | {fit.diagnostics_.converged} |")
    lines.append(f"| {sklearn_variant} | {np.median(times[sklearn_variant]) / base_time:.2f} | {sklearn_values[-1]:.4f} | "
                 f"{sklearn_values[-1] / base_t - 1:+.1e} | - |")
    nn_toy = NN_EPOCHS_PER_TOY / np.median(nn_rates)
    lines.append(f"| NN {'-'.join(map(str, architecture))}, {NN_EPOCHS_PER_TOY:.0e} epochs (extrapolated from "
                 f"{np.median(nn_rates):.0f} epochs/s) | {nn_toy / base_time:.0f} | - | - | - |")
    return "\n".join(lines), fits[reference_variant]


def roofline(x_ref, fit, repeats):
    points = torch.as_tensor((x_ref - fit.input_mean_) / fit.input_scale_)
    rows = NystromKernelRows(points, torch.as_tensor(fit.centers_), fit.sigma_, memory_budget=2**40)
    vector = torch.ones(fit.n_centers_, dtype=torch.float64)
    rows.matvec(vector)
    start = time.perf_counter()
    for _ in range(repeats):
        rows.matvec(vector)
    pass_time = (time.perf_counter() - start) / repeats
    stream = torch.ones(64 * 1024**2 // 8, dtype=torch.float64)  # 512 MiB
    stream.sum()
    start = time.perf_counter()
    for _ in range(repeats):
        stream.sum()
    bandwidth = stream.numel() * 8 / ((time.perf_counter() - start) / repeats)
    a = torch.rand(2000, 2000, dtype=torch.float64)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    gemm = 2 * 2000**3 / ((time.perf_counter() - start) / repeats)
    n_bytes = points.shape[0] * fit.n_centers_ * 8
    bound = n_bytes / bandwidth
    return "\n".join([
        "### Roofline: one pass K_nM v over the cached float64 K_nM (5D case)", "",
        "| quantity | value |", "|---|---|",
        f"| K_nM size | {points.shape[0]} x {fit.n_centers_} ({n_bytes / 1e9:.2f} GB) |",
        f"| measured streaming bandwidth (sum over 512 MiB) | {bandwidth / 1e9:.1f} GB/s |",
        f"| measured float64 GEMM rate (2000^3) | {gemm / 1e9:.1f} GFLOP/s |",
        f"| one pass / bandwidth bound | {pass_time / bound:.2f} |",
        f"| one pass (flops 2 n M) / GEMM-rate bound | {pass_time / (2 * points.shape[0] * fit.n_centers_ / gemm):.1f} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nn-epochs", type=int, default=300, help="epochs actually timed per NN fit")
    parser.add_argument("--n-reference-1d", type=int, default=200_000)
    parser.add_argument("--n-reference-5d", type=int, default=100_000)
    parser.add_argument("--n-centers-5d", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    rng = np.random.default_rng(arguments.seed)
    one_d = Exponential1D(n_reference=arguments.n_reference_1d)
    x_ref, w_ref = one_d.reference(rng)
    table_1d, _ = benchmark_case("1D exponential (null toy)", one_d.data(rng), x_ref, w_ref, 500, (1, 4, 1),
                                 arguments.repeats, arguments.nn_epochs)
    five_d = Dimuon5D(n_reference=arguments.n_reference_5d)
    x_ref5, w_ref5 = five_d.reference(rng)
    table_5d, fit_5d = benchmark_case("5D dimuon (null toy)", five_d.data(rng), x_ref5, w_ref5,
                                      arguments.n_centers_5d, (5, 5, 5, 5, 1), arguments.repeats, arguments.nn_epochs)
    print("\n\n".join([table_1d, table_5d, roofline(np.vstack([five_d.data(rng), x_ref5]), fit_5d, arguments.repeats)]))


if __name__ == "__main__":
    main()
