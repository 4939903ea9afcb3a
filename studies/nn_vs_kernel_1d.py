"""NN vs kernel on the same toys of the 1D exponential benchmark.

Both backends fit the same null toys (data drawn from the reference) and the same signal toys
(NP1, NP2, NP3 injected). Each backend's null gives its p-values (empirical, or the fitted chi2
tail beyond the last toy, labelled); the table reports per-toy time, median t and median Z per
sample. Writes table.md and toys.csv into --out.

    python studies/nn_vs_kernel_1d.py --mode quick --out results/nn_vs_kernel_1d
    python studies/nn_vs_kernel_1d.py --mode full  --out results/nn_vs_kernel_1d_full
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nn_baseline import NNNPLM
from nplm_kernel import KernelNPLM
from nplm_kernel.benchmarks import SIGNALS_1D, Exponential1D
from nplm_kernel.calibration import significance

MODES = {
    "smoke": dict(n_reference=20_000, n_expected=200.0, n_null=4, n_signal=2, nn_epochs=200, n_centers=100),
    "quick": dict(n_reference=200_000, n_expected=2000.0, n_null=20, n_signal=5, nn_epochs=2000, n_centers=500),
    "full": dict(n_reference=200_000, n_expected=2000.0, n_null=200, n_signal=50, nn_epochs=100_000, n_centers=500),
}


def run(mode: str, out: Path, seed: int = 0, progress: bool = True) -> str:
    """Run the study in `mode`, write table.md and toys.csv into `out`, return the table."""
    settings = MODES[mode]
    benchmark = Exponential1D(n_expected=settings["n_expected"], n_reference=settings["n_reference"])
    reference_seed, *sample_seeds = np.random.SeedSequence(seed).spawn(1 + len(SIGNALS_1D) + 1)
    x_ref, w_ref = benchmark.reference(np.random.default_rng(reference_seed))
    backends = {
        "kernel": lambda: KernelNPLM(n_centers=settings["n_centers"], penalty=1e-6),
        "nn": lambda: NNNPLM(architecture=(1, 4, 1), weight_clip=9.0, epochs=settings["nn_epochs"]),
    }
    samples = {"null": None, **SIGNALS_1D}
    rows = []
    for (name, signal), sample_seed in zip(samples.items(), sample_seeds):
        n_toys = settings["n_null"] if signal is None else settings["n_signal"]
        for toy, toy_seed in enumerate(tqdm(sample_seed.spawn(n_toys), desc=name, disable=not progress, file=sys.stderr)):
            x_data = benchmark.data(np.random.default_rng(toy_seed), signal)
            for backend, make in backends.items():
                start = time.perf_counter()
                t = make().fit(x_data, x_ref, w_ref).t_
                rows.append(dict(sample=name, toy=toy, backend=backend, n_data=len(x_data), t=t,
                                 seconds=time.perf_counter() - start))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "toys.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines = [f"1D exponential benchmark, mode {mode}: N(R) = {benchmark.n_expected:g}, N_R = {benchmark.n_reference}, "
             f"kernel M = {settings['n_centers']} (lambda 1e-6), NN 1-4-1 clip 9 with {settings['nn_epochs']} epochs, "
             f"{settings['n_null']} null and {settings['n_signal']} signal toys per sample, seed {seed}",
             "", "| backend | sample | toys | time per toy (s) | median t | median Z | Z method |",
             "|---|---|---|---|---|---|---|"]
    for backend in backends:
        null = [row["t"] for row in rows if row["backend"] == backend and row["sample"] == "null"]
        for name in samples:
            selected = [row for row in rows if row["backend"] == backend and row["sample"] == name]
            t_values = [row["t"] for row in selected]
            results = [significance(t, null) for t in t_values]
            z_text, method = "-", "-"
            if name != "null":
                z_text = f"{np.median([result.z for result in results]):.2f}"
                method = "chi2 tail for some toys" if any(r.is_extrapolated for r in results) else "empirical"
            lines.append(f"| {backend} | {name} | {len(selected)} | {np.mean([row['seconds'] for row in selected]):.2f} | "
                         f"{np.median(t_values):.2f} | {z_text} | {method} |")
    kernel_time = np.mean([row["seconds"] for row in rows if row["backend"] == "kernel"])
    nn_time = np.mean([row["seconds"] for row in rows if row["backend"] == "nn"])
    lines += ["", f"NN / kernel time per toy: {nn_time / kernel_time:.0f}"]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out", type=Path, default=Path("results/nn_vs_kernel_1d"))
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    print(run(arguments.mode, arguments.out, arguments.seed))


if __name__ == "__main__":
    main()
