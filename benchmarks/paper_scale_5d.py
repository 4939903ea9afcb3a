"""The published 5D problem at its real size (benchmarks.PAPER_SCALE_DIMUON and PAPER_SCALE_KERNEL:
N(R) = 2e4 expected events, N_R = 1e5 reference events, M = 2e4 centres drawn, sigma = 3 on
standardised features, lambda = 1e-6), in one run, as markdown tables of ratios measured side by
side:

1. centre selection on the same 2e4 candidates: the one-column-at-a-time greedy pivoted Cholesky
   (the routine before the blocked one, kept here as the baseline) against nystrom.pivoted_centers;
2. one paper-scale toy fit (centres drawn from data + reference), with K_nM cached and with a
   memory budget that keeps a tenth of it (the rest recomputed at every product), at the machine's
   threads and at one thread;
3. a batched paper-scale null campaign (reuse_reference: the reference's kernel rows shared by the
   toys, solved together by conjugate gradient) against the one-toy path on the same toys, on one
   warm process pool (the workers' preparation of the reference timed apart): toys/hour, their
   ratio and max |t_batched - t_single| / t;
4. a moderate 5D campaign (N(R) = 1000, N_R = 2e4, M = 600) through run_toys against a plain loop
   of one-toy fits.

    python benchmarks/paper_scale_5d.py                    # every part (about an hour on 2 cores)
    python benchmarks/paper_scale_5d.py --parts 1,4        # the quick ones
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from nplm_kernel import ConvergenceWarning, KernelNPLM, NPLMTest, run_toys
from nplm_kernel.benchmarks import PAPER_SCALE_DIMUON, PAPER_SCALE_KERNEL, Dimuon5D
from nplm_kernel.kernel import reference_cache
from nplm_kernel.solver import fixed_fit_memory, gaussian_kernel, pivoted_centers


def one_column_pivots(candidates: torch.Tensor, sigma: float, tol: float) -> list[int]:
    """The textbook greedy pivoted Cholesky, one kernel column and one matrix-vector product per
    pivot (memory-bound: every pivot reads all the rows kept so far)."""
    n_candidates = len(candidates)
    residual = torch.ones(n_candidates, dtype=torch.float64)
    rows = torch.empty((n_candidates, n_candidates), dtype=torch.float64)  # pages touched as filled
    chosen: list[int] = []
    while len(chosen) < n_candidates:
        pivot = int(torch.argmax(residual))
        if float(residual[pivot]) <= tol:
            break
        column = gaussian_kernel(candidates, candidates[pivot : pivot + 1], sigma)[:, 0]
        column -= rows[: len(chosen)].T @ rows[: len(chosen), pivot]
        rows[len(chosen)] = column / torch.sqrt(residual[pivot])
        residual -= rows[len(chosen)].square()
        residual[pivot] = 0.0
        chosen.append(pivot)
    return chosen


def candidates_of(x_data: np.ndarray, x_ref: np.ndarray, n_centers: int, seed: int = 0) -> torch.Tensor:
    """n_centers points drawn uniformly from data + reference, standardised with the reference."""
    pool = np.concatenate([x_data, x_ref])
    mean, scale = x_ref.mean(axis=0), x_ref.std(axis=0)
    drawn = np.random.default_rng(seed).choice(len(pool), size=n_centers, replace=False)
    return torch.as_tensor((pool[np.sort(drawn)] - mean) / scale)


def centre_selection(x_data, x_ref) -> list[str]:
    candidates = candidates_of(x_data, x_ref, PAPER_SCALE_KERNEL["n_centers"])
    sigma = PAPER_SCALE_KERNEL["sigma"]
    start = time.perf_counter()
    old = one_column_pivots(candidates, sigma, 1e-12)
    old_time = time.perf_counter() - start
    start = time.perf_counter()
    new = pivoted_centers(candidates, sigma, 1e-12)
    new_time = time.perf_counter() - start
    common = len(set(old) & set(new.tolist()))
    return ["1. Centre selection, 2e4 candidates, sigma = 3, tolerance 1e-12:", "",
            "| routine | kept | seconds | speed-up |", "|---|---|---|---|",
            f"| one column at a time (before) | {len(old)} | {old_time:.1f} | 1.0 |",
            f"| blocked greedy (nystrom.pivoted_centers) | {len(new)} | {new_time:.1f} | {old_time / new_time:.1f} |",
            "", f"kept by both: {common} (the sets differ only where residuals differ by rounding, near the tolerance)"]


def single_toy(x_data, x_ref, w_ref, threads: list[int]) -> list[str]:
    n_points = len(x_data) + len(x_ref)
    rows = ["2. One paper-scale toy (centres from data + reference):", "",
            "| threads | K_nM | seconds | kept | Newton steps | CG iterations | t |", "|---|---|---|---|---|---|---|"]
    seconds = {}
    for count in threads:
        torch.set_num_threads(count)
        kept = None
        for label in ("cached", "blocked (a tenth kept)"):
            budget = None if label == "cached" else fixed_fit_memory(n_points, 5) + n_points * kept * 8 // 10
            settings = dict(PAPER_SCALE_KERNEL) | ({} if budget is None else {"memory_budget": budget})
            start = time.perf_counter()
            fit = KernelNPLM(**settings).fit(x_data, x_ref, w_ref)
            seconds[count, label] = time.perf_counter() - start
            kept = fit.n_centers_
            diagnostics = fit.diagnostics_
            rows.append(f"| {count} | {label} | {seconds[count, label]:.1f} | {kept} | {diagnostics.newton_steps} | "
                        f"{sum(diagnostics.cg_iterations)} | {fit.t_:.6g} |")
    rows += ["", "| threads | blocked / cached |", "|---|---|"]
    rows += [f"| {count} | {seconds[count, 'blocked (a tenth kept)'] / seconds[count, 'cached']:.2f} |"
             for count in threads]
    return rows


def campaign(x_ref, w_ref, n_toys: int, n_workers: int) -> list[str]:
    """Both paths on one warm process pool: each worker prepares the reference (centres, kernel
    rows, preconditioner, float32 curvature rows) in a first campaign of one toy per worker, timed
    apart, so that the rates compare the paths themselves on the same toys (a long campaign pays
    the preparation once per worker)."""
    test = NPLMTest(KernelNPLM(**PAPER_SCALE_KERNEL, reuse_reference=True))
    generator = PAPER_SCALE_DIMUON.data
    with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        start = time.perf_counter()
        run_toys(test, generator, x_ref, w_ref, n_toys=n_workers, seed=0, executor=pool, progress=False, batch_size=1)
        preparation = time.perf_counter() - start
        rates, results, per_batch = {}, {}, -(-n_toys // n_workers)
        for path, batch_size in (("single", 1), ("batched", per_batch)):
            start = time.perf_counter()
            results[path] = run_toys(test, generator, x_ref, w_ref, n_toys=n_toys, seed=1, executor=pool,
                                     progress=False, batch_size=batch_size)
            rates[path] = n_toys / (time.perf_counter() - start)
    difference = np.abs(results["batched"].t - results["single"].t) / results["single"].t
    return [f"3. Paper-scale null campaign, reuse_reference, {n_workers} worker processes (one thread per toy; each "
            f"worker prepared the reference first: {preparation:.0f} s, not in the rates below):", "",
            "| path | toys | toys / hour | ratio | max abs(t_batched - t_single) / t |", "|---|---|---|---|---|",
            f"| one toy at a time | {n_toys} | {3600 * rates['single']:.0f} | 1.0 | - |",
            f"| batched ({per_batch} toys per batch, conjugate gradient shared) | {n_toys} | "
            f"{3600 * rates['batched']:.0f} | {rates['batched'] / rates['single']:.1f} | {difference.max():.1e} "
            f"(median {np.median(difference):.0e}) |"]


def moderate(n_toys: int, n_workers: int) -> list[str]:
    bench = Dimuon5D(n_expected=1000.0, n_reference=20_000)
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    toys = [bench.data(np.random.default_rng(np.random.SeedSequence(1, spawn_key=(i,)))) for i in range(n_toys)]
    start = time.perf_counter()
    looped = [KernelNPLM(n_centers=600).fit(toy, x_ref, w_ref).t_ for toy in toys]
    loop_rate = n_toys / (time.perf_counter() - start)
    reference_cache.clear()
    start = time.perf_counter()
    test = NPLMTest(KernelNPLM(n_centers=600, reuse_reference=True), width_quantiles=None)  # one width, as the loop
    campaign = run_toys(test, bench.data, x_ref, w_ref, n_toys=n_toys, seed=1, executor=n_workers, progress=False)
    rate = n_toys / (time.perf_counter() - start)
    kept = KernelNPLM(n_centers=600, reuse_reference=True).fit(toys[0], x_ref, w_ref).n_centers_
    return [f"4. Moderate 5D campaign (N(R) = 1000, N_R = 2e4, M = 600 drawn, {kept} kept with reuse_reference):", "",
            "| path | toys | toys / s | ratio |", "|---|---|---|---|",
            f"| a plain loop of one-toy fits (centres from data + reference) | {n_toys} | {loop_rate:.2f} | 1.0 |",
            f"| run_toys, reuse_reference, batched | {n_toys} | {rate:.2f} | {rate / loop_rate:.1f} |",
            "", f"median t: loop {np.median(looped):.2f}, campaign {np.median(campaign.t):.2f} (other centres)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run (comma-separated)")
    parser.add_argument("--threads", default=f"{torch.get_num_threads()},1", help="thread counts of part 2")
    parser.add_argument("--n-toys", type=int, default=128, help="toys of each path in part 3 (the same toys)")
    parser.add_argument("--n-moderate", type=int, default=64, help="toys of part 4")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes of the campaigns of "
                                                                          "parts 3 and 4 (one thread per toy)")
    arguments = parser.parse_args()
    parts = {int(part) for part in arguments.parts.split(",")}
    warnings.simplefilter("ignore", ConvergenceWarning)
    x_ref, w_ref = PAPER_SCALE_DIMUON.reference(np.random.default_rng(0))
    x_data = PAPER_SCALE_DIMUON.data(np.random.default_rng(1))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    threads = torch.get_num_threads()
    sections = []
    if 1 in parts:
        sections.append(centre_selection(x_data, x_ref))
    if 2 in parts:
        sections.append(single_toy(x_data, x_ref, w_ref, [int(count) for count in arguments.threads.split(",")]))
        torch.set_num_threads(threads)
    if 3 in parts:
        sections.append(campaign(x_ref, w_ref, arguments.n_toys, arguments.workers))
    if 4 in parts:
        sections.append(moderate(arguments.n_moderate, arguments.workers))
    for section in sections:
        print("\n" + "\n".join(section))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
