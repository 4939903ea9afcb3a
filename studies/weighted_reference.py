"""Weighted and NLO-like references: does cell resampling keep the distribution, are the nulls of
weighted pools calibrated, and what does the test lose against an unweighted reference?

1. Histograms: the NLO-like references of the 1D and 5D benchmarks (`NLOReference`, 20% negative
   weights; 1D: N_R = 200,000, 5D: N_R = 100,000) are cell-resampled as a whole; per feature and for
   one 2D projection (pT1, eta1), chi2 / bins of the resampled weighted histogram against the
   original (errors: the original's sum of w^2 per bin; the two are correlated, so this is far below
   1 unless weight moves between bins) and against the truth (1D: the exact Exp(1) bin contents;
   5D: an independent unweighted sample of the benchmark; errors: the original's and the truth
   sample's), with the chi2 p-value, and the cells' sizes and radii.
2. Null calibration and power, 1D benchmark (N(R) = 2000), three references of N_R = 200,000
   events, each split in half (seed 0) into the test's reference and the pool of its null toys:
   "unweighted" (the benchmark's own), "weighted" (events from Exp with mean 1.5, weights p/q, Kish
   n_eff 0.89 N_R) and "NLO, resampled" (NLOReference, the reference and the pool cell-resampled
   separately; also with 80% of it held out as the pool). Kernel: M = 500 centres from the reference, lambda = 1e-6, reference rows reused (toys
   fitted in batches). Per reference: null toys from its pool calibrate t (empirical p-values, no
   chi2 extrapolation); independent tests of data drawn from the benchmark's true density give the
   false-positive rate at Z >= 2 (nominal 0.0228, with its binomial error) and the two-sample KS
   p-value of their t against the null toys' (a KS test of their p-values against the uniform would
   ignore the null toys' own sampling error, as large here as theirs); tests of data with the NP2 signal (Gaussian at 1.6, width 0.16, 90
   events) give the power at Z >= 2 and the median Z. Campaign stores are resumable under --out.

    python studies/weighted_reference.py --mode quick --executor serial --out results/weighted_reference
    python studies/weighted_reference.py --mode full --executor serial --out results/weighted_reference_full
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
from scipy import stats

from nplm_kernel import KernelNPLM
from nplm_kernel.app.analysis import prepare_reference
from nplm_kernel.benchmarks import NP2, Dimuon5D, Exponential1D, NLOReference
from nplm_kernel.core.weights import effective_sample_size, resample_negative_weights
from nplm_kernel.inference import NPLMTest
from nplm_kernel.inference.calibration import empirical_p_value
from nplm_kernel.toys import resolve_executor, run_toys, split_reference

MODES = {
    "smoke": dict(n_expected=100.0, n_reference=20_000, n_reference_5d=5_000, n_truth_5d=50_000, n_null=20,
                  n_validation=20, n_signal=10, n_centers=30),
    "quick": dict(n_expected=2000.0, n_reference=200_000, n_reference_5d=100_000, n_truth_5d=500_000, n_null=300,
                  n_validation=300, n_signal=100, n_centers=500),
    "full": dict(n_expected=2000.0, n_reference=200_000, n_reference_5d=100_000, n_truth_5d=1_000_000, n_null=2000,
                 n_validation=2000, n_signal=500, n_centers=500),
}
#: Z >= 2 as a p-value threshold.
P_AT_Z2 = float(stats.norm.sf(2.0))
#: Fraction of a 1D reference held out as the pool of its null toys, and the larger one also tried
#: with the NLO-like reference (a larger pool: a less conservative null, a less precise reference).
POOL_FRACTION = 0.5
LARGE_POOL_FRACTION = 0.8
#: The 2D projection checked in 5D: (pT1, eta1).
PROJECTION_5D = (0, 2)
FEATURES_5D = ("pT1", "pT2", "eta1", "eta2", "delta-phi")


def _histograms(x: np.ndarray, w: np.ndarray, edges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of w, sum of w^2) per bin."""
    return np.histogramdd(x, edges, weights=w)[0], np.histogramdd(x, edges, weights=w**2)[0]


def _equal_count_edges(values: np.ndarray, n_bins: int, low: float = -np.inf) -> np.ndarray:
    return np.concatenate([[low], np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]), [np.inf]])


def histogram_rows(name: str, x: np.ndarray, w: np.ndarray, truth, projections, seed: int) -> list[str]:
    """Markdown rows of the histogram table for one NLO-like reference (module docstring, 1).
    truth(columns, edges) gives (true contents, their variance) per bin."""
    started = time.perf_counter()
    resampled = resample_negative_weights(x, w)
    seconds = time.perf_counter() - started
    rows = [f"| {name} | cells | {len(resampled.cell_sizes)} cells, median {np.median(resampled.cell_sizes):g} / "
            f"largest {resampled.cell_sizes.max()} events, radius median {np.median(resampled.cell_radii):.2g} / "
            f"largest {resampled.cell_radii.max():.2g} sd; {resampled.n_dropped} of {len(w)} events dropped "
            f"(weight 0); negative weights {np.mean(w < 0):.1%}; Kish n_eff {effective_sample_size(w):.0f} (of the "
            f"resampled weights {effective_sample_size(resampled.w):.0f}, more than the information they hold); sum of "
            f"weights {w.sum():.6f} -> {resampled.w.sum():.6f}; "
            f"{seconds:.1f} s | | |"]
    for label, columns, edges in projections:
        original, original_variance = _histograms(x[:, columns], w, edges)
        after = _histograms(resampled.x[:, columns], resampled.w, edges)[0]
        expected, expected_variance = truth(columns, edges)
        against_original = np.sum((after - original) ** 2 / original_variance)
        against_truth = np.sum((after - expected) ** 2 / (original_variance + expected_variance))
        rows.append(f"| {name} | {label} | {after.size} | {against_original / after.size:.3f} | "
                    f"{against_truth / after.size:.2f} (p = {stats.chi2.sf(against_truth, after.size):.2f}) |")
    return rows


def histogram_table(settings: dict, seed: int) -> list[str]:
    """Section 1 of the module docstring."""
    lines = ["Cell resampling of the NLO-like references (20% negative weights): chi2 / bins of the resampled weighted "
             "histogram against the original (its MC errors; correlated, so << 1 when no weight crosses a bin edge) and "
             "against the truth (the original's and the truth's MC errors; ~1 when the distribution is kept).", "",
             "| reference | histogram | bins | chi2 / bins vs original | chi2 / bins vs truth (p) |", "|---|---|---|---|---|"]
    bench_1d = Exponential1D(settings["n_expected"], settings["n_reference"])
    x, w = NLOReference(bench_1d).reference(np.random.default_rng([seed, 1]))
    edges_1d = [_equal_count_edges(x[:, 0], 40, low=0.0)]

    def exact_1d(columns, edges):
        contents = bench_1d.n_expected * np.diff(stats.expon.cdf(edges[0]))
        return contents, np.zeros_like(contents)

    lines += histogram_rows("1D", x, w, exact_1d, [("x", [0], edges_1d)], seed)
    bench_5d = Dimuon5D(n_expected=settings["n_expected"], n_reference=settings["n_reference_5d"])
    x, w = NLOReference(bench_5d).reference(np.random.default_rng([seed, 2]))
    truth = bench_5d.events(settings["n_truth_5d"], np.random.default_rng([seed, 3]))
    w_truth = np.full(len(truth), bench_5d.n_expected / len(truth))

    def sampled_5d(columns, edges):
        return _histograms(truth[:, columns], w_truth, edges)

    projections = [(feature, [index], [_equal_count_edges(truth[:, index], 20)])
                   for index, feature in enumerate(FEATURES_5D)]
    projections.append((" x ".join(FEATURES_5D[i] for i in PROJECTION_5D), list(PROJECTION_5D),
                        [_equal_count_edges(truth[:, i], 6) for i in PROJECTION_5D]))
    lines += histogram_rows("5D", x, w, sampled_5d, projections, seed)
    return lines


def importance_weighted_reference(bench: Exponential1D, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """N_R events from Exp with mean 1.5 (a generator's own density q) with weights p / q for the
    benchmark's p = Exp(1), summing to N(R)."""
    x = rng.exponential(1.5, size=(bench.n_reference, 1))
    weights = np.exp(-x[:, 0] / 3.0)  # p / q up to a constant: e^-x / e^(-x / 1.5)
    return x, weights * (bench.n_expected / weights.sum())


def _binomial(successes: int, trials: int) -> str:
    rate = successes / trials
    return f"{rate:.4f} ± {np.sqrt(max(rate * (1 - rate), 1.0 / trials) / trials):.4f}"


def calibration_table(settings: dict, out: Path, seed: int, executor, progress: bool) -> list[str]:
    """Section 2 of the module docstring."""
    bench = Exponential1D(settings["n_expected"], settings["n_reference"])
    signal = dataclasses.replace(NP2, n_expected=NP2.n_expected * settings["n_expected"] / 2000.0)
    nlo = NLOReference(bench).reference(np.random.default_rng([seed, 12]))
    references = {  # name: (x, w, pool fraction)
        "unweighted": (*bench.reference(np.random.default_rng([seed, 10])), POOL_FRACTION),
        "weighted": (*importance_weighted_reference(bench, np.random.default_rng([seed, 11])), POOL_FRACTION),
        "NLO, resampled": (*nlo, POOL_FRACTION),
        f"NLO, resampled, pool {LARGE_POOL_FRACTION:.0%}": (*nlo, LARGE_POOL_FRACTION),
    }
    samples = {"null": (None, settings["n_null"], seed), "validation": (None, settings["n_validation"], seed + 1),
               "NP2": (signal, settings["n_signal"], seed + 2)}
    lines = ["Null calibration and power, 1D benchmark: each reference split in half into the test's reference and "
             f"its pool; kernel M = {settings['n_centers']}, lambda = 1e-6, reference rows reused; empirical p-values "
             f"on {settings['n_null']} null toys from the pool; {settings['n_validation']} tests of true-density data "
             f"(false-positive rate at Z >= 2, nominal {P_AT_Z2:.4f}: errors binomial), {settings['n_signal']} tests "
             "with NP2.", "",
             "| reference | pool toys | pool n_eff / N(R) | independent toys (n_eff / N(R))^2 | test reference: events "
             "(Kish n_eff before resampling) | mean t: null toys / true-density data | FPR at Z >= 2 | KS p, null t vs "
             "true-density t | "
             "power NP2 at Z >= 2 | median Z NP2 | s / toy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for index, (name, (x, w, pool_fraction)) in enumerate(references.items()):
        x_ref, w_ref, toys = prepare_reference(x, w, pool_fraction, seed, negative_weights="resample",
                                               n_toys=settings["n_null"])
        original_rest = split_reference(x, w, pool_fraction, seed)[3]
        test = NPLMTest(KernelNPLM(n_centers=settings["n_centers"], penalty=1e-6, reuse_reference=True),
                        width_quantiles=None)
        campaigns = {}
        for sample, (injected, n_toys, sample_seed) in samples.items():
            generator = toys if sample == "null" else functools.partial(bench.data, signal=injected)
            campaigns[sample] = run_toys(test, generator, x_ref, w_ref, n_toys=n_toys, seed=sample_seed,
                                         executor=executor, store=out / f"r{index}_{sample}.jsonl", progress=progress)
        null = campaigns["null"].t
        p_validation = np.array([empirical_p_value(t, null)[0] for t in campaigns["validation"].t])
        p_signal = np.array([empirical_p_value(t, null)[0] for t in campaigns["NP2"].t])
        z_signal = stats.norm.isf(np.clip(p_signal, 1.0 / len(null), 1.0))  # beyond every toy: Z at p = 1 / n_null
        seconds = np.mean([row["wall_time"] for campaign in campaigns.values() for row in campaign.rows])
        lines.append(
            f"| {name} | {type(toys).__name__} | {toys.effective_size / toys.n_expected:.1f} | "
            f"{toys.independent_toys:.0f} | {len(w_ref)} ({effective_sample_size(original_rest):.0f}) | "
            f"{null.mean():.2f} / {campaigns['validation'].t.mean():.2f} | "
            f"{_binomial(int(np.sum(p_validation <= P_AT_Z2)), len(p_validation))} | "
            f"{stats.ks_2samp(null, campaigns['validation'].t).pvalue:.2f} | "
            f"{_binomial(int(np.sum(p_signal <= P_AT_Z2)), len(p_signal))} | {np.median(z_signal):.2f} | "
            f"{seconds:.3f} |")
    return lines


def run(mode: str, out: Path, seed: int = 0, executor=None, progress: bool = True) -> str:
    """Run (or resume) the study; return the markdown tables it writes to table.md."""
    settings = MODES[mode]
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"Weighted and NLO-like references, mode {mode}, seed {seed}.", "", *histogram_table(settings, seed), "",
             *calibration_table(settings, out, seed, executor, progress)]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--executor", default="serial", help="'serial' (default), 'local' (all cores) or a number")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/weighted_reference"))
    arguments = parser.parse_args()
    print(run(arguments.mode, arguments.out, arguments.seed, resolve_executor(arguments.executor)))


if __name__ == "__main__":
    main()
