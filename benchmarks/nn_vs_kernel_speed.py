"""Kernel toy time against NN epochs per second on the 1D benchmark, measured in one run.

The NN toy of the papers trains 1e5 to 3e5 full-batch epochs; running that here would take
hours, so the NN toy time is extrapolated from the measured epochs/s and labelled as such.

    python benchmarks/nn_vs_kernel_speed.py [--n-reference 200000] [--nn-epochs 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from nn_baseline import NNNPLM
from nplm_kernel import FitConsistencyWarning, KernelNPLM
from nplm_kernel.benchmarks import Exponential1D


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-reference", type=int, default=200_000)
    parser.add_argument("--n-centers", type=int, default=500)
    parser.add_argument("--nn-epochs", type=int, default=2000, help="epochs actually run per NN timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    rng = np.random.default_rng(arguments.seed)
    benchmark = Exponential1D(n_reference=arguments.n_reference)
    x_ref, w_ref = benchmark.reference(rng)
    x_data = benchmark.data(rng)
    kernel_times, epoch_rates = [], []
    for _ in range(arguments.repeats):
        start = time.perf_counter()
        KernelNPLM(n_centers=arguments.n_centers).fit(x_data, x_ref, w_ref)
        kernel_times.append(time.perf_counter() - start)
        with warnings.catch_warnings():  # a timing of epochs: a short training need not reach L <= L[0]
            warnings.simplefilter("ignore", FitConsistencyWarning)
            nn = NNNPLM(architecture=(1, 4, 1), weight_clip=9.0, epochs=arguments.nn_epochs).fit(x_data, x_ref, w_ref)
        epoch_rates.append(arguments.nn_epochs / nn.fit_time_)
    kernel_time, rate = float(np.median(kernel_times)), float(np.median(epoch_rates))
    print(f"1D exponential benchmark, null toy: N_D = {len(x_data)}, N_R = {len(x_ref)}; kernel M = "
          f"{arguments.n_centers}; NN 1-4-1, {arguments.nn_epochs} epochs timed; {arguments.repeats} "
          "alternating repeats (medians)")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| NN epochs per second | {rate:.0f} |")
    print(f"| NN epochs in the time of one kernel toy | {rate * kernel_time:.0f} |")
    for epochs in (100_000, 300_000):
        print(f"| NN toy at {epochs:.0e} epochs / kernel toy (NN extrapolated from epochs/s) | "
              f"{epochs / rate / kernel_time:.0f} |")


if __name__ == "__main__":
    main()
