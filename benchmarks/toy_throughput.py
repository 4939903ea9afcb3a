"""Toy throughput: toys per second of a null campaign on the 1D benchmark for the one-toy path,
the reused reference, and batched fits of several sizes, all on the same toys; and the 5D
blocked / cached time ratio with the Hessian formed by CG passes (the old rule) and by the cost
model; and the toy store at --store-rows rows: writing with group commits and reading with
read_store (every row checked) against a bare json.loads of each line. One run, ratios within the
run (markdown tables).

1D: N(R) = 2000, N_R = 200,000, M = 500, lambda 1e-6, --n-toys null toys on --executor for the
one-toy paths and --n-toys-batched for the batched ones (enough that the workers' start-up, a few
seconds, does not dominate; the first --n-toys toys are the same toys and their t are compared).
5D: the dimuon benchmark at N_R = 1e5, M = 2000 drawn; "cached" keeps K_nM in memory, "blocked"
has a memory budget of a tenth (or a half) of K_nM above the fit's fixed memory (it keeps the rows
that fit and recomputes the others at every product).

    python benchmarks/toy_throughput.py --n-toys 1000 --n-toys-batched 20000 --executor 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from nplm_kernel import ConvergenceWarning, KernelNPLM, NPLMTest, run_toys
from nplm_kernel.benchmarks import Dimuon5D, Exponential1D
from nplm_kernel.solver import nystrom, shared_reference
from nplm_kernel.solver.nystrom import fixed_fit_memory
from nplm_kernel.store import StoreWriter, read_store
from nplm_kernel.toys import resolve_executor


def one_d(n_toys: int, n_toys_batched: int, executor, batch_sizes: list[int]) -> list[str]:
    bench = Exponential1D()
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    variants = [("one toy per fit, centres from data + reference (reuse_reference=False)", False, 1, n_toys)]
    variants += [("reuse_reference, one toy per fit", True, 1, n_toys)]
    variants += [(f"reuse_reference, batches of {size}", True, size, n_toys_batched) for size in batch_sizes]
    rows, rates, reused = [], {}, None
    for name, reuse, batch, count in variants:
        test = NPLMTest(KernelNPLM(n_centers=500, reuse_reference=reuse), width_quantiles=None)
        start = time.perf_counter()
        campaign = run_toys(test, bench.data, x_ref, w_ref, n_toys=count, seed=1, executor=executor,
                            progress=False, batch_size=batch)
        rate = count / (time.perf_counter() - start)
        rates.setdefault("one toy", rate)
        difference = "-"
        if reuse and batch == 1:
            reused, rates["reuse"] = campaign.t, rate
        elif reuse:
            common = min(len(reused), count)
            difference = f"{np.max(np.abs(campaign.t[:common] - reused[:common]) / reused[:common]):.1e}"
        ratio = f"{rate / rates['reuse']:.1f}" if "reuse" in rates else "-"
        rows.append(f"| {name} | {count} | {rate:.1f} | {rate / rates['one toy']:.1f} | {ratio} | {difference} |")
    return [f"1D benchmark, null toys on executor {executor} (toys/s include the workers' start-up: import, "
            "reference preparation):", "",
            "| path | toys | toys / s | ratio to the one-toy path | ratio to reuse_reference | "
            "max abs(t - t_reuse_reference) / t |", "|---|---|---|---|---|---|", *rows]


def five_d(repeats: int) -> list[str]:
    bench = Dimuon5D(n_reference=100_000)
    rng = np.random.default_rng(0)
    x_ref, w_ref = bench.reference(rng)
    x_data = bench.data(rng)
    kept = KernelNPLM(n_centers=2000).fit(x_data, x_ref, w_ref).n_centers_
    n_points = len(x_data) + len(x_ref)
    budgets = {"cached": 2 * 1024**3, "blocked": fixed_fit_memory(n_points, 5) + n_points * kept * 8 // 10,
               "half": fixed_fit_memory(n_points, 5) + n_points * kept * 8 // 2}
    rules = {"CG passes (the old rule: Gram matrix only up to 128 centres)": lambda rows, iterations: rows.explicit_gram,
             "cost model (nystrom.prefers_explicit_gram)": nystrom.prefers_explicit_gram}
    lines = [f"5D benchmark, N_R = 1e5, M = 2000 drawn ({kept} kept), median of {repeats} fits:", "",
             "| Hessian products | cached (s) | blocked: budget 1/10 of K_nM (s) | blocked / cached | "
             "blocked: budget 1/2 of K_nM (s) | half / cached |", "|---|---|---|---|---|---|"]
    for name, rule in rules.items():
        original = shared_reference.prefers_explicit_gram
        shared_reference.prefers_explicit_gram = rule
        try:
            times = {}
            for label, budget in budgets.items():
                samples = []
                for _ in range(repeats):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        start = time.perf_counter()
                        KernelNPLM(n_centers=2000, memory_budget=budget).fit(x_data, x_ref, w_ref)
                        samples.append(time.perf_counter() - start)
                times[label] = float(np.median(samples))
        finally:
            shared_reference.prefers_explicit_gram = original
        lines.append(f"| {name} | {times['cached']:.2f} | {times['blocked']:.2f} | "
                     f"{times['blocked'] / times['cached']:.2f} | {times['half']:.2f} | "
                     f"{times['half'] / times['cached']:.2f} |")
    return lines


def store(n_rows: int) -> list[str]:
    """Write n_rows toy rows of a realistic shape to a store, then time read_store against the
    bare parse of every line."""
    identity = {"test": {"backend": {"class": "nplm_kernel.KernelNPLM"}}, "seed": 0}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "toys.jsonl"
        start = time.perf_counter()
        writer = StoreWriter(path, identity)
        writer.open()
        for toy in range(n_rows):
            writer.append({"record": "toy", "toy": toy, "seed": 0, "status": "ok", "t": 10.0 + toy % 97 * 0.1,
                           "tau": 10.0, "delta": 0.0, "nu_hat_tau": [], "nu_hat_delta": [], "nuisance_iterations": 0,
                           "converged": True, "central_values": None, "n_data": 2000, "warnings": [],
                           "wall_time": 0.01})
        writer.close()
        written = time.perf_counter() - start
        start = time.perf_counter()
        with open(path) as handle:
            parsed = [json.loads(line) for line in handle]
        bare = time.perf_counter() - start
        start = time.perf_counter()
        content = read_store(path)
        checked = time.perf_counter() - start
        size = path.stat().st_size
    assert len(content.rows) == n_rows == len(parsed) - 1
    return [f"Toy store, {n_rows} rows ({size / 1e6:.0f} MB):", "",
            "| operation | rows / s | ratio to the bare json.loads parse |", "|---|---|---|",
            f"| bare json.loads of every line | {n_rows / bare:.3g} | 1.00 |",
            f"| read_store (every row checked, duplicates and conflicts refused) | {n_rows / checked:.3g} | "
            f"{bare / checked:.2f} |",
            f"| StoreWriter (group commits of 64 rows, fsync each) | {n_rows / written:.3g} | {bare / written:.2f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-toys", type=int, default=1000, help="toys of the one-toy paths")
    parser.add_argument("--n-toys-batched", type=int, default=20_000,
                        help="toys of each batched path (the first --n-toys are the one-toy paths' toys)")
    parser.add_argument("--executor", default="2", help="'serial', 'local' or a number of processes")
    parser.add_argument("--batch-sizes", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=3, help="5D fits per cell")
    parser.add_argument("--skip-5d", action="store_true")
    parser.add_argument("--store-rows", type=int, default=1_000_000, help="rows of the store timing (0: skip)")
    arguments = parser.parse_args()
    sizes = [int(size) for size in arguments.batch_sizes.split(",")]
    print("\n".join(one_d(arguments.n_toys, arguments.n_toys_batched, resolve_executor(arguments.executor),
                                sizes)))
    if not arguments.skip_5d:
        print("\n" + "\n".join(five_d(arguments.repeats)))
    if arguments.store_rows:
        print("\n" + "\n".join(store(arguments.store_rows)))


if __name__ == "__main__":
    main()
