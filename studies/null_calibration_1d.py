"""Null calibration of the kernel backend on the 1D exponential benchmark.

Runs n_toys null toys (data drawn from the reference; N(R) = 2000, N_R = 200,000, M = 500 drawn
centres, lambda = 1e-6) as a resumable campaign, fits a chi2 to the null t and reports the fitted
dof and the KS p-value of that fit, then the null's tail: at the t where the fitted chi2 gives
Z = 1, 2, ..., 4, the fraction of toys at or above it (with its 68% Clopper-Pearson interval)
against the chi2's p. Writes toys.jsonl (the campaign store: re-running resumes it), table.md and
null_tail.png into --out.

With --reuse-reference the centres are drawn from the reference once and kept for every toy, so
the toys are fitted in batches (the way to 10^6 toys: about an hour on 2 cores):

    python studies/null_calibration_1d.py --n-toys 1000 --executor 2 --out results/null_calibration_1d
    python studies/null_calibration_1d.py --n-toys 1000000 --reuse-reference --executor 2 \\
        --out results/null_tail_1d
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from nplm_kernel import KernelNPLM
from nplm_kernel.app.plots import plot_null_tail
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.inference import NPLMTest
from nplm_kernel.inference.calibration import empirical_p_value, fit_chi2
from nplm_kernel.toys import resolve_executor, run_toys

#: Significances at which the empirical tail is compared with the fitted chi2.
TAIL_Z = (1.0, 2.0, 3.0, 3.5, 4.0)


def tail_rows(t_null: np.ndarray, dof: float) -> list[str]:
    """Markdown rows: for each Z of TAIL_Z, the t where chi2(dof) has p = 1 - Phi(Z), the chi2 p,
    the toys at or above that t, their fraction with its 68% Clopper-Pearson interval, and the
    ratio of the two ('-' where no toy is expected there)."""
    rows = []
    for z in TAIL_Z:
        p_chi2 = float(stats.norm.sf(z))
        threshold = float(stats.chi2.isf(p_chi2, dof))
        if p_chi2 * len(t_null) < 1.0:
            rows.append(f"| {z:g} | {threshold:.2f} | {p_chi2:.3g} | - | fewer than one toy expected | - |")
            continue
        p, low, high = empirical_p_value(threshold, t_null)
        count = int(np.count_nonzero(np.asarray(t_null) >= threshold))
        rows.append(f"| {z:g} | {threshold:.2f} | {p_chi2:.3g} | {count} | {p:.3g} [{low:.3g}, {high:.3g}] | "
                    f"{p / p_chi2:.2f} [{low / p_chi2:.2f}, {high / p_chi2:.2f}] |")
    return rows


def run(n_toys: int, out: Path, executor, n_reference: int = 200_000, n_centers: int = 500, seed: int = 0,
        progress: bool = True, reuse_reference: bool = False) -> str:
    """Run (or resume) the campaign and return the markdown table it writes."""
    benchmark = Exponential1D(n_reference=n_reference)
    x_ref, w_ref = benchmark.reference(np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]))
    test = NPLMTest(KernelNPLM(n_centers=n_centers, penalty=1e-6, reuse_reference=reuse_reference),
                    width_quantiles=None)
    out.mkdir(parents=True, exist_ok=True)
    campaign = run_toys(test, benchmark.data, x_ref, w_ref, n_toys=n_toys, seed=seed, executor=executor,
                        store=out / "toys.jsonl", progress=progress)
    fit = fit_chi2(campaign.t)
    seconds = np.mean([row["wall_time"] for row in campaign.rows])
    centres = "drawn from the reference once" if reuse_reference else "drawn per toy"
    table = "\n".join([
        f"1D exponential benchmark, kernel backend (M = {n_centers} {centres}, lambda = 1e-6), N(R) = "
        f"{benchmark.n_expected:g}, N_R = {n_reference}, campaign seed {seed}",
        "",
        "| null toys | failed | mean t | median t | fitted chi2 dof | KS p-value of the fit | time per toy (s) |",
        "|---|---|---|---|---|---|---|",
        f"| {len(campaign.t)} | {campaign.n_failed} | {campaign.t.mean():.3f} | {np.median(campaign.t):.3f} | "
        f"{fit.dof:.3f} | {fit.ks_p_value:.3g} | {seconds:.3g} |",
        "",
        "The null's tail against the fitted chi2:",
        "",
        "| Z | t at that Z (fitted chi2) | chi2 p | toys at or above | empirical p [68% CL] | empirical / chi2 |",
        "|---|---|---|---|---|---|",
        *tail_rows(campaign.t, fit.dof),
    ])
    (out / "table.md").write_text(table + "\n")
    plot_null_tail(campaign.t, out / "null_tail.png", dof=fit.dof, z_marks=TAIL_Z)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-toys", type=int, default=1000)
    parser.add_argument("--executor", default="local", help="'local' (all cores), a number of processes, or 'serial'")
    parser.add_argument("--n-reference", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-reference", action="store_true",
                        help="centres from the reference, kept for every toy (batched fits)")
    parser.add_argument("--out", type=Path, default=Path("results/null_calibration_1d"))
    arguments = parser.parse_args()
    executor = resolve_executor(arguments.executor)
    print(run(arguments.n_toys, arguments.out, executor, arguments.n_reference, seed=arguments.seed,
              reuse_reference=arguments.reuse_reference))


if __name__ == "__main__":
    main()
