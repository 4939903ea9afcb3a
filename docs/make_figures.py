"""Regenerates the figures of the documentation (docs/figures/*.png): `python docs/make_figures.py`.

The 1D benchmark with the NP2 resonance at x = 1.6 injected, the kernel at the median pairwise
reference distance, 200 null toys from the benchmark; both figures show that one calibration."""

from pathlib import Path

import numpy as np

from nplm_kernel import KernelNPLM, NPLMTest, run_toys, significance
from nplm_kernel.app.plots import plot_learned_f, plot_null_distribution
from nplm_kernel.benchmarks import NP2, Exponential1D

FIGURES = Path(__file__).parent / "figures"

if __name__ == "__main__":  # toys may run in worker processes, which import this file
    benchmark = Exponential1D()
    x_ref, w_ref = benchmark.reference(np.random.default_rng(0))
    x_data = benchmark.data(np.random.default_rng(1), NP2)
    median = KernelNPLM().reference_widths(x_ref, w_ref, [0.5])[0]
    test = NPLMTest(KernelNPLM(sigma=median, reuse_reference=True))
    observed = test.run(x_data, x_ref, w_ref)
    null = run_toys(test, benchmark.data, x_ref, w_ref, n_toys=200, seed=2, executor=None)
    result = significance(observed.t, null.t)
    plot_learned_f(observed.estimator, x_data, x_ref, w_ref, FIGURES / "learned_f.png", names=["x"], result=result,
                   true_log_ratio=lambda points: benchmark.log_ratio(points, NP2))
    plot_null_distribution(null.t, FIGURES / "null.png", result=result)
    print(result)
