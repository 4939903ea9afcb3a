"""Does `memory_budget` bound the memory a kernel fit adds? Peak resident memory of a 5D fit, above
what the process held just before `fit`, for several budgets, printed beside the budget.

Each budget runs in a fresh process (so one peak cannot hide another): the 5D dimuon benchmark
reference (N_R events) and one data sample are generated, then a sampling thread reads the
resident set size (/proc/self/statm, Linux) every 2 ms while KernelNPLM.fit runs. Only the first
Newton step with a few CG iterations is run: the memory of a fit does not grow with iterations.

    python benchmarks/memory_budget.py                      # N_R = 2e6, budgets 2 GiB and 268 MB
    python benchmarks/memory_budget.py --n-reference 200000 --budgets 67108864
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import warnings

MIB = 1024**2


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(n_reference: int, budget: int, n_centers: int) -> dict:
    """Peak RSS added by one fit (in this process)."""
    import gc

    import numpy as np

    from nplm_kernel import ConfigurationError, ConvergenceWarning, KernelNPLM
    from nplm_kernel.benchmarks import Dimuon5D

    bench = Dimuon5D(n_reference=n_reference)
    rng = np.random.default_rng(0)
    x_ref, w_ref = bench.reference(rng)
    x_data = bench.data(rng)
    gc.collect()
    baseline = _resident_bytes()
    peak = [baseline]
    running = threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    estimator = KernelNPLM(n_centers=n_centers, memory_budget=budget, max_newton_steps=1, max_cg_iter=3)
    refused = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(x_data, x_ref, w_ref)
    except ConfigurationError as error:
        refused = str(error)
    seconds = time.perf_counter() - start
    running.clear()
    sampler.join()
    return {"budget": budget, "added": peak[0] - baseline, "refused": refused, "seconds": seconds,
            "kept_centres": getattr(estimator, "n_centers_", None),
            "cached": None if refused else estimator.diagnostics_.kernel_cached,
            "input_bytes": x_ref.nbytes + w_ref.nbytes + x_data.nbytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-reference", type=int, default=2_000_000)
    parser.add_argument("--n-centers", type=int, default=2000)
    parser.add_argument("--budgets", default=f"{2 * 1024 ** 3},{512 * MIB},{268 * MIB}", help="bytes, comma-separated")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    budgets = [int(value) for value in arguments.budgets.split(",")]
    if arguments.child:
        print(json.dumps(measure(arguments.n_reference, budgets[0], arguments.n_centers)))
        return
    rows = []
    for budget in budgets:
        output = subprocess.run([sys.executable, __file__, "--child", "--n-reference", str(arguments.n_reference),
                                 "--n-centers", str(arguments.n_centers), "--budgets", str(budget)],
                                check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    kept = next((row["kept_centres"] for row in rows if row["kept_centres"]), "?")
    print(f"5D benchmark, N_R = {arguments.n_reference:.3g}, M = {arguments.n_centers} drawn ({kept} kept); "
          f"inputs held before the fit: {rows[0]['input_bytes'] / MIB:.0f} MiB\n")
    print("| memory_budget | peak memory added by fit | added / budget | K_nM cached |")
    print("|---|---|---|---|")
    for row in rows:
        outcome = "refused: " + row["refused"].split(";")[-1].strip() if row["refused"] else row["cached"]
        print(f"| {row['budget'] / MIB:.0f} MiB | {row['added'] / MIB:.0f} MiB | {row['added'] / row['budget']:.2f} | "
              f"{outcome} |")


if __name__ == "__main__":
    main()
