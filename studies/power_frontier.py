"""Power without choosing a width: every candidate default test on the same toys of the 1D benchmark.

1D exponential benchmark (reference Exp(1), N(R) = 2000, N_R = 200,000; Exp(1) units) with the
signals NP1-NP3 (nplm_kernel.benchmarks.SIGNALS_1D) and the harder resonances of Grosso & Letizia,
arXiv:2408.12296 (SIGNALS_1D_MULTIPLE_TESTING: 7, 18 and 13 events at x = 4 with widths 0.01, 0.16
and 0.64). Candidates, all on the same toys (the same campaign seeds for every sample):

- single widths: KernelNPLM defaults (NPLM loss, M = N_D / 4) with sigma at the q-th quantile of
  pairwise reference distances (sigma in standardised units, about Exp(1) units here), q = 0.2
  ... 0.9 with uniform centres, q = 0.3 ... 0.9 with coverage centres;
- aggregations of those widths (per centre family): min-p, Fisher, Stouffer and Cauchy
  (nplm_kernel.inference.calibration.COMBINATIONS) over the width subsets SUBSETS;
- BumpHunter (nplm_kernel.baselines.BumpHunt, 40 bins) as the classical reference;
- the kernel excess scan (nplm_kernel.baselines.KernelExcessScan: the NPLM loss with one kernel
  function, scanned over centres and 8 widths), alone and in a min-p with the 0.9-quantile width
  of the uniform family (its full kernel model keeps what a one-function model cannot see),
  weighted 3 : 1 towards the scan (the package's default test) or equal. The uniform family's
  min-p over (0.5, 0.9) is the previous default test.

Each centre family fits every toy once per width: one resumable campaign per family and sample
under --out ({family}_{sample}.jsonl, each row one t per width; bumphunter_{sample}.jsonl). The
"null" campaign calibrates: each width's p = (k + 1) / (n + 1) on it, and each aggregation's
combined statistic calibrated on the null toys' own (calibration.combined_p_values). An
independent "validation" null gives the false-positive rate at Z >= 2 (nominal Phi(-2) = 0.0228).
table.md: per candidate, the fits per toy, that false-positive rate, the power at Z >= 2 per signal
with binomial errors, and the time per toy (fits per toy x the family's measured time per fit);
then the best single width per signal and the published powers of arXiv:2408.12296.

    python studies/power_frontier.py --mode quick --executor 2 --out results/power_frontier
    python studies/power_frontier.py --mode quick --out results/power_frontier --analyse-only

With --benchmark 5d, the candidates that run in any number of variables on the 5D dimuon benchmark
(Dimuon5D, N(R) = 2000, N_R = 1e5; SIGNALS_5D: the Z' at 300 GeV and the contact interaction): the
package's default test (the kernel excess scan and KernelNPLM at the 0.9 quantile, min-p weighted
3 : 1 towards the scan; also with equal weights), the
previous default (KernelNPLM, min-p of the widths at quantiles 0.5 and 0.9, the reference's kernel
rows shared by the toys: one campaign gives both widths), the scan alone, and the scan with both
widths; table_5d.md.

    python studies/power_frontier.py --benchmark 5d --mode quick --executor 2 --out results/power_frontier
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from nplm_kernel import KernelNPLM
from nplm_kernel.baselines import BaselineTest, BumpHunt, KernelExcessScan
from nplm_kernel.benchmarks import (
    PUBLISHED_POWER_MULTIPLE_TESTING,
    SIGNALS_1D,
    SIGNALS_1D_MULTIPLE_TESTING,
    SIGNALS_5D,
    Dimuon5D,
    Exponential1D,
)
from nplm_kernel.inference import DEFAULT_SCAN_WEIGHT, NPLMTest
from nplm_kernel.inference.calibration import COMBINATIONS, combined_p_values, monte_carlo_p_value
from nplm_kernel.toys import CampaignResult, resolve_executor, run_toys

MODES = {
    "smoke": dict(n_reference=20_000, n_expected=200.0, n_null=50, n_validation=20, n_signal=6, scale_signal=0.1),
    "quick": dict(n_reference=200_000, n_expected=2000.0, n_null=1000, n_validation=500, n_signal=400,
                  scale_signal=1.0),
    "full": dict(n_reference=200_000, n_expected=2000.0, n_null=2000, n_validation=2000, n_signal=2000,
                 scale_signal=1.0),
}
MODES_5D = {
    "smoke": dict(n_reference=10_000, n_expected=300.0, n_null=30, n_validation=20, n_signal=6),
    "quick": dict(n_reference=100_000, n_expected=2000.0, n_null=300, n_validation=200, n_signal=150),
    "full": dict(n_reference=100_000, n_expected=2000.0, n_null=2000, n_validation=1000, n_signal=1000),
}
#: Centre families: KernelNPLM options and the width quantiles every toy is fitted at.
FAMILIES = {
    "uniform": (dict(), (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
    "coverage": (dict(center_selection="coverage"), (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
}
#: Width subsets (quantiles) the aggregations combine; None: all of the family's widths.
SUBSETS = ((0.5, 0.9), (0.3, 0.6, 0.9), (0.3, 0.5, 0.7, 0.9), None)
BUMPHUNTER = "bumphunter"
EXCESS_SCAN = "excess_scan"
#: The width (family, quantile) the excess scan is combined with: with the scan weighted
#: DEFAULT_SCAN_WEIGHT : 1 in the min-p, the package's default test.
SCAN_PARTNER = ("uniform", 0.9)
#: The width quantiles of the previous default test (min-p of two widths, no scan).
PREVIOUS_DEFAULT_QUANTILES = (0.5, 0.9)
#: Z >= 2 as a p-value threshold.
P_AT_Z2 = float(stats.norm.sf(2.0))


class Setup(NamedTuple):
    """The benchmark, its reference sample and the campaigns' samples of one mode and seed."""

    benchmark: Exponential1D
    x_ref: np.ndarray
    w_ref: np.ndarray
    samples: dict[str, tuple[Any, int, int]]  # name -> (signal or None, toys, campaign seed)

    @property
    def signals(self) -> list[str]:
        return [name for name in self.samples if name not in ("null", "validation")]


def setup(mode: str, seed: int) -> Setup:
    """The reference sample (seeded by `seed`) and the samples: null, validation, each signal scaled to the mode."""
    settings = MODES[mode]
    benchmark = Exponential1D(settings["n_expected"], settings["n_reference"])
    x_ref, w_ref = benchmark.reference(np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]))
    samples = {"null": (None, settings["n_null"], seed), "validation": (None, settings["n_validation"], seed + 1)}
    for index, (name, signal) in enumerate((SIGNALS_1D | SIGNALS_1D_MULTIPLE_TESTING).items()):
        scaled = dataclasses.replace(signal, n_expected=signal.n_expected * settings["scale_signal"])
        samples[name] = (scaled, settings["n_signal"], seed + 2 + index)
    return Setup(benchmark, x_ref, w_ref, samples)


def compared_tests(study: Setup, seed: int, families: tuple[str, ...] = tuple(FAMILIES)
                   ) -> dict[str, NPLMTest | BaselineTest]:
    """One test per centre family (a multi-scale NPLMTest over the family's widths), BumpHunter and
    the kernel excess scan."""
    found: dict[str, NPLMTest | BaselineTest] = {}
    for family in families:
        options, quantiles = FAMILIES[family]
        backend = KernelNPLM(reuse_reference=True, seed=seed, **options)
        test = NPLMTest(backend, width_quantiles=quantiles, excess_scan=False)  # the scan has its own campaign
        found[family] = test.for_reference(study.x_ref, study.w_ref)
    found[BUMPHUNTER] = BaselineTest(BumpHunt())
    found[EXCESS_SCAN] = BaselineTest(KernelExcessScan())
    return found


def collect(mode: str, out: Path, seed: int = 0, executor: Any = None, progress: bool = True,
            families: tuple[str, ...] = tuple(FAMILIES)) -> None:
    """Run (or resume) every campaign: each test on every sample."""
    out.mkdir(parents=True, exist_ok=True)
    study = setup(mode, seed)
    for name, test in compared_tests(study, seed, families).items():
        for sample, (signal, n_toys, sample_seed) in study.samples.items():
            run_toys(test, functools.partial(study.benchmark.data, signal=signal), study.x_ref, study.w_ref,
                     n_toys=n_toys, seed=sample_seed, executor=executor, store=out / f"{name}_{sample}.jsonl",
                     progress=progress, generator_name=f"1D exponential, {sample}")


def setup_5d(mode: str, seed: int) -> tuple[Dimuon5D, np.ndarray, np.ndarray, dict[str, tuple[Any, int, int]]]:
    """The 5D benchmark, its reference sample (seeded by `seed`) and the samples: null, validation
    and each signal (signal or None, toys, campaign seed)."""
    settings = MODES_5D[mode]
    benchmark = Dimuon5D(settings["n_expected"], settings["n_reference"])
    x_ref, w_ref = benchmark.reference(np.random.default_rng(seed))
    samples = {"null": (None, settings["n_null"], seed + 10), "validation": (None, settings["n_validation"], seed + 11)}
    for index, (name, signal) in enumerate(SIGNALS_5D.items()):
        samples[name] = (signal, settings["n_signal"], seed + 12 + index)
    return benchmark, x_ref, w_ref, samples


def tests_5d(x_ref: np.ndarray, w_ref: np.ndarray, seed: int) -> dict[str, NPLMTest | BaselineTest]:
    """The widths at quantiles 0.5 and 0.9 (the previous default test, found on this reference) and the
    kernel excess scan: the default test is the scan with the 0.9 quantile's column."""
    widths = NPLMTest(KernelNPLM(reuse_reference=True, seed=seed), width_quantiles=PREVIOUS_DEFAULT_QUANTILES,
                      excess_scan=False).for_reference(x_ref, w_ref)
    return {"default": widths, EXCESS_SCAN: BaselineTest(KernelExcessScan())}


def collect_5d(mode: str, out: Path, seed: int = 0, executor: Any = None, progress: bool = True) -> None:
    """Run (or resume) the 5D campaigns: each test on every sample (stores 5d_{test}_{sample}.jsonl)."""
    out.mkdir(parents=True, exist_ok=True)
    benchmark, x_ref, w_ref, samples = setup_5d(mode, seed)
    for name, test in tests_5d(x_ref, w_ref, seed).items():
        for sample, (signal, n_toys, sample_seed) in samples.items():
            run_toys(test, functools.partial(benchmark.data, signal=signal), x_ref, w_ref, n_toys=n_toys,
                     seed=sample_seed, executor=executor, store=out / f"5d_{name}_{sample}.jsonl", progress=progress,
                     generator_name=f"dimuon 5D {sample}")


def analyse_5d(mode: str, out: Path, seed: int = 0) -> str:
    """The 5D table of stored campaigns (no fit): written to out / table_5d.md and returned."""
    settings = MODES_5D[mode]
    _, x_ref, w_ref, samples = setup_5d(mode, seed)
    tests = tests_5d(x_ref, w_ref, seed)
    campaigns = {(name, sample): CampaignResult.from_store(out / f"5d_{name}_{sample}.jsonl", test, x_ref, w_ref)
                 for name, test in tests.items() for sample in samples}
    signals = [name for name in samples if name not in ("null", "validation")]
    t = {key: campaign.t.reshape(len(campaign.t), -1) for key, campaign in campaigns.items()}
    weighted = [DEFAULT_SCAN_WEIGHT, 1.0]
    candidates = {  # label: ((campaign, column) per member, the members' weights in the min-p)
        f"**default test**: weighted min-p(kernel excess scan x {DEFAULT_SCAN_WEIGHT:g}, width at q0.9)":
            ([(EXCESS_SCAN, 0), ("default", 1)], weighted),
        "min-p(kernel excess scan, width at q0.9), equal weights": ([(EXCESS_SCAN, 0), ("default", 1)], None),
        "previous default test (min-p of the widths at quantiles 0.5, 0.9)": ([("default", 0), ("default", 1)], None),
        "kernel excess scan": ([(EXCESS_SCAN, 0)], None),
        "min-p(kernel excess scan, widths at q0.5 and q0.9)": ([(EXCESS_SCAN, 0), ("default", 0), ("default", 1)],
                                                               None)}
    lines = [f"Power on the 5D dimuon benchmark, mode {mode}, seed {seed}: N(R) = {settings['n_expected']:g}, N_R = "
             f"{settings['n_reference']}, {settings['n_null']} null toys (calibration), {settings['n_validation']} "
             f"independent null toys (false-positive rate), {settings['n_signal']} toys per signal. Power and "
             f"false-positive rate at Z >= 2 (p <= {P_AT_Z2:.4f}), binomial errors; time per toy per core.", "",
             "| candidate | FPR at Z >= 2 | " + " | ".join(f"power {name}" for name in signals) + " | time per toy (s) |",
             "|---" * (len(signals) + 3) + "|"]
    for label, (members, weights) in candidates.items():
        columns = {sample: np.column_stack([t[name, sample][:, column] for name, column in members])
                   for sample in samples}
        p_values = {sample: (_single_p_values(columns[sample][:, 0], columns["null"][:, 0])
                             if columns[sample].shape[1] == 1 else
                             combined_p_values(columns[sample], columns["null"], "min-p", weights=weights))
                    for sample in samples if sample != "null"}
        seconds = sum(np.mean([row["wall_time"] / t[name, sample].shape[1] for sample in samples
                               for row in campaigns[name, sample].rows if row.get("wall_time")])
                      for name, _ in members)
        lines.append(f"| {label} | {_power_cell(p_values['validation'])} | "
                     + " | ".join(_power_cell(p_values[signal]) for signal in signals) + f" | {seconds:.3f} |")
    table = "\n".join(lines)
    (out / "table_5d.md").write_text(table + "\n")
    return table


def _power_cell(p_values: np.ndarray) -> str:
    """Fraction of p <= Phi(-2) with its binomial error."""
    if len(p_values) == 0:
        return "-"
    rate = float(np.mean(p_values <= P_AT_Z2))
    return f"{rate:.3f} ± {np.sqrt(max(rate * (1 - rate), 1.0 / len(p_values)) / len(p_values)):.3f}"


def _single_p_values(t: np.ndarray, t_null: np.ndarray) -> np.ndarray:
    """(k + 1) / (n + 1) per toy, k = null toys with t_null >= t."""
    return monte_carlo_p_value(np.count_nonzero(t_null[None, :] >= t[:, None], axis=1), len(t_null))


def candidates(quantiles: tuple[float, ...]) -> list[tuple[str, list[int], str | None]]:
    """(label, width columns, combination or None for a single width) of one centre family."""
    found: list[tuple[str, list[int], str | None]] = [(f"q{q:g}", [k], None) for k, q in enumerate(quantiles)]
    for subset in SUBSETS:
        chosen = quantiles if subset is None else subset
        if not set(chosen) <= set(quantiles):
            continue
        columns = [quantiles.index(q) for q in chosen]
        label = "all" if subset is None else ",".join(f"{q:g}" for q in chosen)
        found += [(f"{combination}({label})", columns, combination) for combination in COMBINATIONS]
    return found


def analyse(mode: str, out: Path, seed: int = 0, families: tuple[str, ...] = tuple(FAMILIES)) -> str:
    """The table of stored campaigns (no fit; every store checked against its test and reference):
    written to out / table.md and returned."""
    settings, study = MODES[mode], setup(mode, seed)
    compared = compared_tests(study, seed, families)
    campaigns = {(name, sample): CampaignResult.from_store(out / f"{name}_{sample}.jsonl", test, study.x_ref,
                                                           study.w_ref)
                 for name, test in compared.items() for sample in study.samples}
    signals, resolvable = study.signals, (settings["n_null"] + 1) * P_AT_Z2 >= 1
    lines = [f"Power without choosing a width, 1D exponential benchmark, mode {mode}, seed {seed}: N(R) = "
             f"{settings['n_expected']:g}, N_R = {settings['n_reference']}, {settings['n_null']} null toys "
             f"(calibration), {settings['n_validation']} independent null toys (false-positive rate), "
             f"{settings['n_signal']} toys per signal (yields x {settings['scale_signal']:g}). Power and "
             f"false-positive rate at Z >= 2 (p <= {P_AT_Z2:.4f}), binomial errors; time per toy = fits per toy x "
             "the family's mean time per fit (per core, comparable only within this table).", ""]
    if not resolvable:
        lines += [f"The {settings['n_null']} null toys cannot resolve Z >= 2: every power below is 0.", ""]
    for problem, attribute in (("Failed toys (left out)", "n_failed"), ("Unconverged fits (kept)", "n_unconverged")):
        counts = {key: getattr(campaign, attribute) for key, campaign in campaigns.items()}
        if any(counts.values()):
            lines += [f"{problem}: " + ", ".join(f"{name} {sample}: {count}" for (name, sample), count in counts.items()
                                                 if count), ""]
    lines += ["| candidate | fits per toy | FPR at Z >= 2 | " + " | ".join(f"power {name}" for name in signals)
              + " | time per toy (s) |", "|---" * (len(signals) + 4) + "|"]
    best: dict[str, tuple[float, str]] = {}
    seconds_per_fit: dict[str, float] = {}
    for family in families:
        quantiles = FAMILIES[family][1]
        t = {sample: campaigns[family, sample].t for sample in study.samples}
        rows = [row for sample in study.samples for row in campaigns[family, sample].rows if row.get("wall_time")]
        seconds_per_fit[family] = np.mean([row["wall_time"] for row in rows]) / len(quantiles)
        widths = compared[family].widths
        for label, columns, combination in candidates(quantiles):
            if combination is None:
                p_values = {sample: _single_p_values(t[sample][:, columns[0]], t["null"][:, columns[0]])
                            for sample in study.samples if sample != "null"}
                label = f"{label} (sigma {widths[columns[0]]:.3g})"  # standardised units
                for signal in signals:
                    power = float(np.mean(p_values[signal] <= P_AT_Z2))
                    if power > best.get(signal, (-1.0, ""))[0]:
                        best[signal] = (power, f"{family} {label}")
            else:
                p_values = {sample: combined_p_values(t[sample][:, columns], t["null"][:, columns], combination)
                            for sample in study.samples if sample != "null"}
            lines.append(f"| {family} {label} | {len(columns)} | {_power_cell(p_values['validation'])} | "
                         + " | ".join(_power_cell(p_values[signal]) for signal in signals)
                         + f" | {len(columns) * seconds_per_fit[family]:.3f} |")
    seconds = {}
    for name, label in ((BUMPHUNTER, "BumpHunter (40 bins)"), (EXCESS_SCAN, "kernel excess scan")):
        t = {sample: campaigns[name, sample].t for sample in study.samples}
        p_values = {sample: _single_p_values(t[sample], t["null"]) for sample in study.samples if sample != "null"}
        seconds[name] = np.mean([row["wall_time"] for sample in study.samples for row in campaigns[name, sample].rows
                                 if row.get("wall_time")])
        lines.append(f"| {label} | - | {_power_cell(p_values['validation'])} | "
                     + " | ".join(_power_cell(p_values[signal]) for signal in signals) + f" | {seconds[name]:.3f} |")
    family, quantile = SCAN_PARTNER
    if family in families:
        column = FAMILIES[family][1].index(quantile)
        paired = {sample: np.column_stack([campaigns[EXCESS_SCAN, sample].t, campaigns[family, sample].t[:, column]])
                  for sample in study.samples}
        partner = f"{family} q{quantile:g}"
        for label, weights in ((f"**default test**: weighted min-p(kernel excess scan x {DEFAULT_SCAN_WEIGHT:g}, "
                                f"{partner})", [DEFAULT_SCAN_WEIGHT, 1.0]),
                               (f"min-p(kernel excess scan, {partner}), equal weights", None)):
            p_values = {sample: combined_p_values(paired[sample], paired["null"], "min-p", weights=weights)
                        for sample in study.samples if sample != "null"}
            lines.append(f"| {label} | 1 + 1 | "
                         f"{_power_cell(p_values['validation'])} | "
                         + " | ".join(_power_cell(p_values[signal]) for signal in signals)
                         + f" | {seconds[EXCESS_SCAN] + seconds_per_fit[family]:.3f} |")
    lines.append("| best single width per signal (chosen after the fact: not a test) | 1 | - | "
                 + " | ".join(f"{best[signal][0]:.3f} ({best[signal][1]})" for signal in signals) + " | - |")
    for kind in ("best single width", "min-p", "ideal test"):
        published = [f"{PUBLISHED_POWER_MULTIPLE_TESTING[signal][kind]:g}" if signal in PUBLISHED_POWER_MULTIPLE_TESTING
                     else "-" for signal in signals]
        lines.append(f"| arXiv:2408.12296, {kind} (published) | - | - | " + " | ".join(published) + " | - |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=("1d", "5d"), default="1d")
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--executor", help="'serial', 'local' (all cores) or a number of processes; default: "
                        "'serial' in smoke mode (a pool's start-up outweighs its toys), 'local' otherwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/power_frontier"))
    parser.add_argument("--analyse-only", action="store_true", help="only read the stores under --out (no fit)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"1D: the centre families to fit, comma-separated (of {', '.join(FAMILIES)})")
    arguments = parser.parse_args()
    families = tuple(arguments.families.split(","))
    if not set(families) <= set(FAMILIES):
        parser.error(f"--families: unknown {sorted(set(families) - set(FAMILIES))}; choose among {list(FAMILIES)}")
    if arguments.benchmark == "5d":
        collect_samples, analyse_samples = collect_5d, analyse_5d
    else:
        collect_samples = functools.partial(collect, families=families)
        analyse_samples = functools.partial(analyse, families=families)
    if not arguments.analyse_only:
        executor = arguments.executor or ("serial" if arguments.mode == "smoke" else "local")
        collect_samples(arguments.mode, arguments.out, arguments.seed, resolve_executor(executor))
    print(analyse_samples(arguments.mode, arguments.out, arguments.seed))


if __name__ == "__main__":
    main()
