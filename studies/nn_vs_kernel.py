"""NN vs kernel on the same toys: the 1D exponential and the 5D dimuon benchmarks.

For each backend, null toys (data drawn from the reference) and signal toys (1D: NP1, NP2, NP3;
5D: a Z'-like resonance at 300 GeV and a contact-interaction-like tail) run as resumable
campaigns with the same seeds, so both backends fit exactly the same toys. Each backend's null
is fitted with a chi2 (dof, KS p-value; null_<backend>.png) and calibrates its p-values
(empirical, or the fitted chi2 tail beyond the last null toy). Per signal: median t, median Z and
the power: the fraction of toys with p <= 0.05, and with Z >= 2 and Z >= 3. For the most
significant kernel toy of each signal, localisation_<signal>.png shows the learned f and the
reconstructed data density n_R(x) e^f(x) against the data, per input variable. The comparison
report ends with the NN / kernel time per toy. Writes <backend>_<sample>.jsonl, toys.csv,
table.md and the figures into --out.

    python studies/nn_vs_kernel.py --benchmark 1d --mode quick --out results/nn_vs_kernel_1d
    python studies/nn_vs_kernel.py --benchmark 5d --mode quick --out results/nn_vs_kernel_5d
"""

from __future__ import annotations

import argparse
import csv
import functools
from pathlib import Path

import numpy as np
from scipy import stats

from nn_baseline import NNNPLM
from nplm_kernel import KernelNPLM
from nplm_kernel.app.plots import plot_learned_f, plot_null_distribution
from nplm_kernel.benchmarks import SIGNALS_1D, SIGNALS_5D, Dimuon5D, Exponential1D
from nplm_kernel.inference import NPLMTest
from nplm_kernel.inference.calibration import fit_chi2, significance
from nplm_kernel.toys import resolve_executor, run_toys, toy_seed

BENCHMARKS = {
    "1d": dict(make=lambda n_expected, n_reference: Exponential1D(n_expected, n_reference), signals=SIGNALS_1D,
               architecture=(1, 4, 1), weight_clip=9.0, names=["x"]),
    "5d": dict(make=lambda n_expected, n_reference: Dimuon5D(n_expected, n_reference), signals=SIGNALS_5D,
               architecture=(5, 5, 5, 5, 1), weight_clip=2.15, names=["pT1 (GeV)", "pT2 (GeV)", "eta1", "eta2", "dphi"]),
}

MODES = {
    "1d": {
        "smoke": dict(n_reference=20_000, n_expected=200.0, n_null=4, n_signal=2, nn_epochs=200, n_centers=100),
        "quick": dict(n_reference=200_000, n_expected=2000.0, n_null=100, n_signal=30, nn_epochs=2000, n_centers=500),
        "full": dict(n_reference=200_000, n_expected=2000.0, n_null=300, n_signal=100, nn_epochs=100_000, n_centers=500),
    },
    "5d": {
        "smoke": dict(n_reference=10_000, n_expected=300.0, n_null=4, n_signal=2, nn_epochs=100, n_centers=100),
        "quick": dict(n_reference=100_000, n_expected=2000.0, n_null=50, n_signal=15, nn_epochs=1500, n_centers=1000),
        "full": dict(n_reference=100_000, n_expected=2000.0, n_null=300, n_signal=100, nn_epochs=30_000, n_centers=2000),
    },
}
POWER_LEVELS = {"p <= 0.05": 0.05, "Z >= 2": stats.norm.sf(2.0), "Z >= 3": stats.norm.sf(3.0)}


def run(benchmark_name: str, mode: str, out: Path, seed: int = 0, executor=None, progress: bool = True) -> str:
    """Run (or resume) the study; return the markdown table it writes."""
    spec, settings = BENCHMARKS[benchmark_name], MODES[benchmark_name][mode]
    out.mkdir(parents=True, exist_ok=True)
    benchmark = spec["make"](settings["n_expected"], settings["n_reference"])
    x_ref, w_ref = benchmark.reference(np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]))
    backends = {
        "kernel": KernelNPLM(n_centers=settings["n_centers"], penalty=1e-6),
        "nn": NNNPLM(architecture=spec["architecture"], weight_clip=spec["weight_clip"], epochs=settings["nn_epochs"]),
    }
    samples = {"null": None, **spec["signals"]}
    generators = {name: functools.partial(benchmark.data, signal=signal) for name, signal in samples.items()}
    campaigns = {}
    for backend_name, backend in backends.items():
        for offset, name in enumerate(samples):
            n_toys = settings["n_null"] if name == "null" else settings["n_signal"]
            campaigns[backend_name, name] = run_toys(
                NPLMTest(backend, width_quantiles=None), generators[name], x_ref, w_ref, n_toys=n_toys, seed=seed + offset,
                executor=executor, store=out / f"{backend_name}_{name}.jsonl", progress=progress)

    lines = [f"{benchmark_name.upper()} benchmark, mode {mode}: N(R) = {settings['n_expected']:g}, N_R = "
             f"{settings['n_reference']}, kernel M = {settings['n_centers']} drawn (lambda 1e-6), NN "
             f"{'-'.join(map(str, spec['architecture']))} clip {spec['weight_clip']} with {settings['nn_epochs']} "
             f"epochs, {settings['n_null']} null and {settings['n_signal']} signal toys per sample, seed {seed}",
             "", "| backend | sample | toys | time per toy (s) | median t | null chi2 dof (KS p) | median Z | "
             + " | ".join(f"power {level}" for level in POWER_LEVELS) + " | Z beyond the null (chi2 tail) |",
             "|---|---|---|---|---|---|---|" + "---|" * len(POWER_LEVELS) + "---|"]
    csv_rows = []
    for backend_name in backends:
        null = campaigns[backend_name, "null"].t
        if (null > 0).all():
            plot_null_distribution(null, out / f"null_{backend_name}.png")
        for name in samples:
            result = campaigns[backend_name, name]
            seconds = np.mean([row["wall_time"] for row in result.rows])
            csv_rows += [dict(backend=backend_name, sample=name, toy=row["toy"], n_data=row["n_data"], t=row["t"],
                              seconds=row["wall_time"]) for row in result.rows]
            if name == "null":
                fit_text = (f"{fit_chi2(null).dof:.2f} ({fit_chi2(null).ks_p_value:.2f})" if (null > 0).all()
                            else f"none: {int((null <= 0).sum())} toys with t <= 0")
                lines.append(f"| {backend_name} | null | {len(null)} | {seconds:.2f} | {np.median(null):.2f} | {fit_text} | - | "
                             + " | ".join("-" for _ in POWER_LEVELS) + " | - |")
                continue
            calibrated = [significance(t, null) for t in result.t] if (null > 0).all() else []
            p_values = np.array([item.p_value for item in calibrated])
            powers = [f"{np.mean(p_values <= level):.2f}" if calibrated else "-" for level in POWER_LEVELS.values()]
            median_z = f"{np.median([item.z for item in calibrated]):.2f}" if calibrated else "-"
            extrapolated = sum(item.is_extrapolated for item in calibrated)
            lines.append(f"| {backend_name} | {name} | {len(result.t)} | {seconds:.2f} | {np.median(result.t):.2f} | - | "
                         f"{median_z} | " + " | ".join(powers) + f" | {extrapolated} |")
    kernel_time = np.mean([row["seconds"] for row in csv_rows if row["backend"] == "kernel"])
    nn_time = np.mean([row["seconds"] for row in csv_rows if row["backend"] == "nn"])
    lines += ["", f"NN / kernel time per toy (same toys, same run): {nn_time / kernel_time:.0f}"]
    with open(out / "toys.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)

    for offset, (name, signal) in enumerate(samples.items()):
        if signal is None:
            continue
        rows = campaigns["kernel", name].rows
        best = max((row for row in rows if row["status"] == "ok"), key=lambda row: row["t"])
        x_data = generators[name](np.random.default_rng(toy_seed(seed + offset, best["toy"])))
        estimator = NPLMTest(backends["kernel"], width_quantiles=None).run(x_data, x_ref, w_ref).estimator
        plot_learned_f(estimator, x_data, x_ref, w_ref, out / f"localisation_{name}.png", names=spec["names"])
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="1d")
    parser.add_argument("--mode", choices=["smoke", "quick", "full"], default="quick")
    parser.add_argument("--executor", default="serial", help="'serial', 'local' (all cores) or a number of processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: results/nn_vs_kernel_<benchmark>")
    arguments = parser.parse_args()
    executor = resolve_executor(arguments.executor)
    out = arguments.out or Path(f"results/nn_vs_kernel_{arguments.benchmark}")
    print(run(arguments.benchmark, arguments.mode, out, arguments.seed, executor))


if __name__ == "__main__":
    main()
