"""Null calibration of the kernel backend on the 1D exponential benchmark.

Runs n_toys null toys (data drawn from the reference; N(R) = 2000, N_R = 200,000, M = 500 drawn
centres, lambda = 1e-6) as a resumable campaign, fits a chi2 to the null t and reports the fitted
dof and the KS p-value of that fit. Writes toys.jsonl (the campaign store: re-running resumes it)
and table.md into --out.

    python studies/null_calibration_1d.py --n-toys 1000 --executor 2 --out results/null_calibration_1d
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nplm_kernel import KernelNPLM
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.inference.calibration import fit_chi2
from nplm_kernel.inference.campaign import executor_from_setting, run_toys
from nplm_kernel.inference.hypothesis_test import NPLMTest


def run(n_toys: int, out: Path, executor, n_reference: int = 200_000, n_centers: int = 500, seed: int = 0,
        progress: bool = True) -> str:
    """Run (or resume) the campaign and return the markdown table it writes."""
    benchmark = Exponential1D(n_reference=n_reference)
    x_ref, w_ref = benchmark.reference(np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]))
    test = NPLMTest(KernelNPLM(n_centers=n_centers, penalty=1e-6))
    out.mkdir(parents=True, exist_ok=True)
    campaign = run_toys(test, benchmark.data, x_ref, w_ref, n_toys=n_toys, seed=seed, executor=executor,
                        store=out / "toys.jsonl", progress=progress)
    fit = fit_chi2(campaign.t)
    seconds = np.mean([row["wall_time"] for row in campaign.rows])
    table = "\n".join([
        f"1D exponential benchmark, kernel backend (M = {n_centers} drawn, lambda = 1e-6), N(R) = "
        f"{benchmark.n_expected:g}, N_R = {n_reference}, campaign seed {seed}",
        "",
        "| null toys | failed | mean t | median t | fitted chi2 dof | KS p-value of the fit | time per toy (s) |",
        "|---|---|---|---|---|---|---|",
        f"| {len(campaign.t)} | {campaign.n_failed} | {campaign.t.mean():.3f} | {np.median(campaign.t):.3f} | "
        f"{fit.dof:.3f} | {fit.ks_p_value:.3f} | {seconds:.3f} |",
    ])
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-toys", type=int, default=1000)
    parser.add_argument("--executor", default="local", help="'local' (all cores), a number of processes, or 'serial'")
    parser.add_argument("--n-reference", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/null_calibration_1d"))
    arguments = parser.parse_args()
    executor = executor_from_setting(arguments.executor)
    print(run(arguments.n_toys, arguments.out, executor, arguments.n_reference, seed=arguments.seed))


if __name__ == "__main__":
    main()
