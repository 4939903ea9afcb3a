"""How one kernel toy scales with the reference size N_R (1D and 5D benchmarks), in one run.

For each N_R (default 1e5, 1e6, 1e7), one null toy (N(R) = 2000) is fitted with the default 2 GiB
memory budget: K_nM is cached where it fits, and otherwise recomputed block by block (the 5D
rows from 1e6 on), so memory stays bounded. The table reports the wall time relative to the
smallest N_R, the number of passes over K_nM (per Newton step: the gradient, the line search and
either one pass per CG iteration or, with at most 128 kept centres, one pass forming the Hessian's
Gram matrix), the time
per row-pass relative to the smallest N_R (about 1 when the cost is linear in N_R), and the peak
resident memory of the process.

    python benchmarks/kernel_scaling.py [--sizes 100000 1000000 10000000] [--n-centers-5d 300]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from nplm_kernel import KernelNPLM
from nplm_kernel.benchmarks import Dimuon5D, Exponential1D
from nplm_kernel.solver.nystrom import EXPLICIT_GRAM_MAX_CENTERS


def one_toy(benchmark, n_centers: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x_ref, w_ref = benchmark.reference(rng)
    x_data = benchmark.data(rng)
    start = time.perf_counter()
    fit = KernelNPLM(n_centers=n_centers).fit(x_data, x_ref, w_ref)
    elapsed = time.perf_counter() - start
    diagnostics = fit.diagnostics_
    passes = (3 * diagnostics.newton_steps if fit.n_centers_ <= EXPLICIT_GRAM_MAX_CENTERS
              else sum(diagnostics.cg_iterations) + 2 * diagnostics.newton_steps)
    n_rows = len(x_data) + len(x_ref)
    return dict(n_reference=len(x_ref), n_rows=n_rows, kept=fit.n_centers_, cached=diagnostics.kernel_cached,
                newton=diagnostics.newton_steps, passes=passes, seconds=elapsed, t=fit.t_,
                peak_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)


def table(name: str, rows: list[dict]) -> str:
    first = rows[0]
    unit = first["seconds"] / (first["n_rows"] * first["passes"])
    lines = [f"### {name}", "", "| N_R | K_nM | kept centres | Newton steps | passes | time / time at smallest N_R | "
             "time per row-pass / same at smallest N_R | t | peak RSS so far (GiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        per_pass = row["seconds"] / (row["n_rows"] * row["passes"]) / unit
        lines.append(f"| {row['n_reference']:.0e} | {'cached' if row['cached'] else 'blocked'} | {row['kept']} | "
                     f"{row['newton']} | {row['passes']} | {row['seconds'] / first['seconds']:.1f} | {per_pass:.2f} | "
                     f"{row['t']:.2f} | {row['peak_gib']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--n-centers-1d", type=int, default=500)
    parser.add_argument("--n-centers-5d", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["1d", "5d"], default=None, help="run one benchmark only")
    arguments = parser.parse_args()
    tables = []
    cases = {
        "1d": (f"1D exponential, M = {arguments.n_centers_1d} drawn", lambda n: Exponential1D(n_reference=n),
               arguments.n_centers_1d),
        "5d": (f"5D dimuon, M = {arguments.n_centers_5d} drawn", lambda n: Dimuon5D(n_reference=n), arguments.n_centers_5d),
    }
    for key, (name, make, n_centers) in cases.items():
        if arguments.only not in (None, key):
            continue
        rows = [one_toy(make(size), n_centers, arguments.seed) for size in arguments.sizes]
        tables.append(table(name, rows))
        print(tables[-1], flush=True)


if __name__ == "__main__":
    main()
