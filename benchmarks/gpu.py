"""Kernel toy time on the CPU and on a GPU, float64 and float32, and NN epochs per second, as
ratios measured in one run (markdown table).

Cases: the 1D benchmark (N_R = 200,000, M = 500 drawn) and the 5D dimuon benchmark at N_R = 1e5 and
1e6 with M = 2000 and 20,000 drawn centres (the largest only on the GPU unless --cpu-large). Each
cell is the median over --repeats fits of the same toy after one warm-up fit (CUDA timings are
synchronised: a fit returns numpy arrays). Without a CUDA device the GPU columns say so and the
CPU columns are still measured.

    python benchmarks/gpu.py                 # on a GPU machine
    python benchmarks/gpu.py --quick         # small sizes, to check the script
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from nn_baseline import NNNPLM
from nplm_kernel import ConvergenceWarning, KernelNPLM
from nplm_kernel.benchmarks import Dimuon5D, Exponential1D


def _fit_seconds(make, x_data, x_ref, w_ref, repeats: int) -> tuple[float, float]:
    """(median seconds per fit, t of the last fit)."""
    times, t = [], float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        make().fit(x_data, x_ref, w_ref)  # warm-up: allocator, kernels, lazy initialisation
        for _ in range(repeats):
            start = time.perf_counter()
            t = make().fit(x_data, x_ref, w_ref).t_
            times.append(time.perf_counter() - start)
    return statistics.median(times), t


def cases(quick: bool, cpu_large: bool):
    """(label, x_data, x_ref, w_ref, M drawn, run on the CPU too)."""
    rng = np.random.default_rng(0)
    one = Exponential1D(n_reference=20_000 if quick else 200_000)
    x_ref, w_ref = one.reference(rng)
    yield "1D, N_R = %d, M = 500" % len(x_ref), one.data(rng), x_ref, w_ref, 500, True
    for n_reference, n_centers in ([(20_000, 500)] if quick else [(100_000, 2000), (1_000_000, 2000),
                                                                 (1_000_000, 20_000)]):
        five = Dimuon5D(n_reference=n_reference)
        x_ref, w_ref = five.reference(rng)
        yield (f"5D, N_R = {n_reference:.0e}, M = {n_centers}", five.data(rng), x_ref, w_ref, n_centers,
               cpu_large or n_centers <= 2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (checks the script)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-large", action="store_true", help="also time M = 20,000 on the CPU (slow)")
    arguments = parser.parse_args()
    gpu = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(0) if gpu else "no CUDA device"
    print(f"CPU: {torch.get_num_threads()} threads; GPU: {device_name}; torch {torch.__version__}\n")
    print("| case | kept centres | CPU float64 (s) | GPU float64 (s) | GPU float32 (s) | CPU / GPU float64 | "
          "GPU float64 / float32 | t relative difference GPU vs CPU (float64, float32) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, x_data, x_ref, w_ref, n_centers, on_cpu in cases(arguments.quick, arguments.cpu_large):
        budget = 8 * 1024**3

        def make(device: str, dtype: str):
            return lambda: KernelNPLM(n_centers=n_centers, device=device, dtype=dtype, memory_budget=budget)

        cpu_time, cpu_t = _fit_seconds(make("cpu", "float64"), x_data, x_ref, w_ref, arguments.repeats) if on_cpu \
            else (float("nan"), float("nan"))
        kept = KernelNPLM(n_centers=n_centers).fit(x_data[:200], x_ref[:20_000], w_ref[:20_000] * len(x_ref) / 20_000)
        if gpu:
            gpu64, t64 = _fit_seconds(make("cuda", "float64"), x_data, x_ref, w_ref, arguments.repeats)
            gpu32, t32 = _fit_seconds(make("cuda", "float32"), x_data, x_ref, w_ref, arguments.repeats)
            reference_t = cpu_t if on_cpu else t64
            print(f"| {label} | ~{kept.n_centers_} | {cpu_time:.3f} | {gpu64:.3f} | {gpu32:.3f} | "
                  f"{cpu_time / gpu64:.1f} | {gpu64 / gpu32:.2f} | "
                  f"{abs(t64 - reference_t) / reference_t:.1e}, {abs(t32 - reference_t) / reference_t:.1e} |")
        else:
            print(f"| {label} | ~{kept.n_centers_} | {cpu_time:.3f} | - | - | - | - | - |")
    rng = np.random.default_rng(1)
    five = Dimuon5D(n_reference=20_000 if arguments.quick else 100_000)
    x_ref, w_ref = five.reference(rng)
    x_data = five.data(rng)
    print("\n| NN (5-5-5-5-1, 5D) | epochs per second |\n|---|---|")
    epochs = 200 if arguments.quick else 2000
    for device in ["cpu"] + (["cuda"] if gpu else []):
        network = NNNPLM(architecture=(5, 5, 5, 5, 1), epochs=epochs, device=device)
        network.fit(x_data, x_ref, w_ref)
        print(f"| {device} | {epochs / network.fit_time_:.0f} |")


if __name__ == "__main__":
    main()
