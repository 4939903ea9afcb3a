"""Is NPLM worth it here? Both NPLM backends and the baselines on the same toys.

Three datasets: the 1D exponential benchmark (signals NP1, NP2, NP3), the 5D dimuon benchmark (a
Z'-like resonance and a contact-interaction-like tail) and the 2D data-quality stream (detector
effects resolution, dead_region, gain_drift). On each, every method that applies (the kernel and
NN backends, the multi-scale kernel test 'kernel_minp' (min-p over the widths at quantiles 0.5 and
0.9, the package's previous default test; the excess scan runs as the baseline 'excess_scan'; in quick mode on 1D
and DQM only), then the baselines of nplm_kernel.baselines; one-dimensional methods only
on 1D) runs the same null toys and the same signal toys (one seed per sample, shared by all
methods), as resumable stores <dataset>/<method>_<sample>.jsonl.

Power, one rule for every method: a signal toy's p-value is empirical, p = k / n_null (k null toys
of the same method with t at least the toy's), and power at Z >= z is the fraction of signal toys
with p <= Phi(-z), given with the half-width of its 68% Clopper-Pearson interval. It is reported
only where the null resolves the level (n_null Phi(-z) >= 1), else '-': no chi2 extrapolation, so
methods whose null is not chi2-like are treated like NPLM. Time per toy: the mean wall time of a
null toy in one process. On 1D, power at Z >= 2 against the NP2 yield (kernel and baselines) goes
to power_vs_yield.png. Writes table.md and the figure into --out.

    python studies/baselines.py --mode quick --executor local --out results/baselines
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from nn_baseline import NNNPLM
from nplm_kernel import KernelNPLM
from nplm_kernel.app.plots import plot_power_curves
from nplm_kernel.baselines import BASELINES, BaselineTest, method_applicability
from nplm_kernel.benchmarks import (
    DQM_EFFECTS,
    NP2,
    SIGNALS_1D,
    SIGNALS_5D,
    Dimuon5D,
    DQMStream,
    Exponential1D,
)
from nplm_kernel.inference import NPLMTest
from nplm_kernel.inference.calibration import significance
from nplm_kernel.toys import resolve_executor, run_toys

LEVELS = (2.0, 3.0)
#: The width quantiles of the multi-scale kernel test kernel_minp (the package's previous default test).
MULTI_SCALE_QUANTILES = (0.5, 0.9)
#: NP2 yields of the power curve, as multiples of the benchmark's 90 events.
YIELD_SCALES = (0.25, 0.5, 0.75, 1.0)

MODES = {
    "smoke": dict(scale=0.1, n_null=50, n_signal=3, nn_null=4, nn_signal=2, nn_epochs=50, n_centers=(60, 60, 40),
                  curve_toys=3, multi_scale=("1d",)),
    "quick": dict(scale=1.0, n_null=300, n_signal=60, nn_null=45, nn_signal=15, nn_epochs=300,
                  n_centers=(500, 1000, 300), curve_toys=60, multi_scale=("1d", "dqm")),
    "full": dict(scale=1.0, n_null=1000, n_signal=200, nn_null=300, nn_signal=100, nn_epochs=(100_000, 30_000, 30_000),
                 n_centers=(500, 2000, 500), curve_toys=200, multi_scale=("1d", "5d", "dqm")),
}


class Dataset(NamedTuple):
    """A reference, its samples (name -> toy generator; 'null' first) and the NPLM backends."""

    name: str
    x_ref: np.ndarray
    w_ref: np.ndarray
    samples: dict[str, Any]
    backends: dict[str, Any]


def _datasets(settings: dict[str, Any], seed: int) -> list[Dataset]:
    scale = settings["scale"]
    epochs = settings["nn_epochs"] if isinstance(settings["nn_epochs"], tuple) else (settings["nn_epochs"],) * 3
    reference_seeds = np.random.SeedSequence([seed, 99]).spawn(3)
    one_d = Exponential1D(2000.0 * scale, int(200_000 * scale))
    five_d = Dimuon5D(2000.0 * scale, int(100_000 * scale))
    stream = DQMStream(n_expected=1000.0 * scale, n_reference=int(100_000 * scale))
    specs = [
        ("1d", one_d, {"null": one_d.data, **{name: functools.partial(one_d.data, signal=signal)
                                              for name, signal in SIGNALS_1D.items()}}, dict(architecture=(1, 4, 1), weight_clip=9.0)),
        ("5d", five_d, {"null": five_d.data, **{name: functools.partial(five_d.data, signal=signal)
                                                for name, signal in SIGNALS_5D.items()}},
         dict(architecture=(5, 5, 5, 5, 1), weight_clip=2.15)),
        ("dqm", stream, {"null": stream.batch, **{effect: functools.partial(stream.batch, effect=effect)
                                                  for effect in DQM_EFFECTS}}, dict(architecture=(2, 4, 1), weight_clip=9.0)),
    ]
    datasets = []
    for (name, benchmark, samples, nn), n_centers, n_epochs, reference_seed in zip(
            specs, settings["n_centers"], epochs, reference_seeds):
        x_ref, w_ref = benchmark.reference(np.random.default_rng(reference_seed))
        backends = {"kernel": KernelNPLM(n_centers=n_centers, penalty=1e-6, reuse_reference=True, seed=seed),
                    "nn": NNNPLM(epochs=n_epochs, seed=seed, **nn)}
        datasets.append(Dataset(name, x_ref, np.asarray(w_ref, dtype=np.float64), samples, backends))
    return datasets


def _tests(dataset: Dataset, multi_scale: bool) -> dict[str, NPLMTest | BaselineTest]:
    tests: dict[str, NPLMTest | BaselineTest] = {name: NPLMTest(backend, width_quantiles=None)
                                                   for name, backend in dataset.backends.items()}
    if multi_scale:  # the previous default test (the scan, the other member of today's, is the excess_scan baseline)
        tests["kernel_minp"] = NPLMTest(dataset.backends["kernel"], width_quantiles=MULTI_SCALE_QUANTILES,
                                        excess_scan=False)
    for name, statistic in BASELINES.items():
        if method_applicability(name, dataset.x_ref.shape[1], dataset.w_ref) is None:
            tests[name] = BaselineTest(statistic())
    return tests


def empirical_power(null_t: np.ndarray, signal_t: np.ndarray, z: float) -> tuple[float, float] | None:
    """(power, half-width of its 68% Clopper-Pearson interval) at Z >= z, with each signal toy's
    empirical p-value on null_t (calibration.significance without extrapolation: (k + 1) / (n + 1),
    or min-p over widths for a multi-scale t; 0 beyond every null toy); None when the null cannot resolve
    the level (n_null Phi(-z) < 1)."""
    level = stats.norm.sf(z)
    if len(null_t) * level < 1 or len(signal_t) == 0:
        return None
    results = [significance(t, null_t, extrapolate=False) for t in signal_t]
    detected = sum((0.0 if result.is_bound else result.p_value) <= level for result in results)
    interval = stats.binomtest(detected, len(signal_t)).proportion_ci(confidence_level=0.6827, method="exact")
    return detected / len(signal_t), (interval.high - interval.low) / 2


def _power_text(null_t: np.ndarray, signal_t: np.ndarray, z: float) -> str:
    power = empirical_power(null_t, signal_t, z)
    return "-" if power is None else f"{power[0]:.2f} ± {power[1]:.2f}"


def run(mode: str, out: Path, seed: int = 0, executor: Any = None, progress: bool = True,
        datasets: tuple[str, ...] = ("1d", "5d", "dqm")) -> str:
    """Run (or resume) the study in `mode` on `datasets`; return the markdown table it writes."""
    settings = MODES[mode]
    out.mkdir(parents=True, exist_ok=True)

    def campaign(folder: Path, method: str, test, generator, x_ref, w_ref, sample: str, n_toys: int, sample_seed: int):
        return run_toys(test, generator, x_ref, w_ref, n_toys=n_toys, seed=sample_seed, executor=executor,
                        store=folder / f"{method}_{sample}.jsonl", progress=progress)

    cells: dict[tuple[str, str], dict[str, str]] = {}  # (dataset, row label) -> method -> cell
    methods: list[str] = []
    curves: dict[str, list[float]] = {}
    for dataset in _datasets(settings, seed):
        if dataset.name not in datasets:
            continue
        folder = out / dataset.name
        folder.mkdir(exist_ok=True)
        for method, test in _tests(dataset, dataset.name in settings["multi_scale"]).items():
            methods += [method] if method not in methods else []
            is_nn = method == "nn"
            n_null = settings["nn_null"] if is_nn else settings["n_null"]
            n_signal = settings["nn_signal"] if is_nn else settings["n_signal"]
            results = {name: campaign(folder, method, test, generator, dataset.x_ref, dataset.w_ref, name,
                                      n_null if name == "null" else n_signal, seed + offset)
                       for offset, (name, generator) in enumerate(dataset.samples.items())}
            null = results["null"]
            seconds = np.mean([row["wall_time"] for row in null.rows])
            cells.setdefault((dataset.name, "null toys; s / toy"), {})[method] = f"{len(null.t)}; {seconds:.2g}"
            for name, result in results.items():
                if name != "null":
                    cells.setdefault((dataset.name, name), {})[method] = " / ".join(
                        _power_text(null.t, result.t, z) for z in LEVELS)
            if dataset.name == "1d" and not is_nn:
                curves[method] = []
                for index, yield_scale in enumerate(YIELD_SCALES):
                    signal = dataclasses.replace(NP2, n_expected=NP2.n_expected * yield_scale)
                    generator = functools.partial(dataset.samples["null"], signal=signal)
                    scanned = campaign(folder, method, test, generator, dataset.x_ref, dataset.w_ref,
                                       f"NP2x{yield_scale:g}", settings["curve_toys"], seed + 100 + index)
                    power = empirical_power(null.t, scanned.t, 2.0)
                    curves[method].append(np.nan if power is None else power[0])
    lines = [f"Baselines study, mode {mode} (seed {seed}). Cells: power at Z >= 2 / Z >= 3 ± the half-width of its "
             "68% Clopper-Pearson interval, from empirical p-values on each method's own null ('-': the null is too "
             "small to resolve the level; 'n/a': the method does not apply, or is not run in this mode). kernel_minp is the "
             f"multi-scale kernel test, the package's previous default (widths at the {MULTI_SCALE_QUANTILES} "
             "pairwise-distance quantiles, min-p over them, "
             "calibrated on its null). The NN runs fewer toys "
             f"({settings['nn_null']} null, {settings['nn_signal']} signal per sample) with {settings['nn_epochs']} "
             "epochs.", "",
             "| dataset | sample | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for (dataset_name, label), by_method in cells.items():
        lines.append(f"| {dataset_name} | {label} | " + " | ".join(by_method.get(method, "n/a") for method in methods)
                     + " |")
    if curves:
        plot_power_curves([("NP2 signal events", [NP2.n_expected * scale for scale in YIELD_SCALES], curves)],
                          out / "power_vs_yield.png")
        lines += ["", "Power at Z >= 2 against the NP2 yield (1D): "
                  + "; ".join(f"{name} " + ", ".join(f"{value:.2f}" for value in values)
                              for name, values in curves.items())
                  + f" at {', '.join(f'{NP2.n_expected * scale:g}' for scale in YIELD_SCALES)} events."]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--datasets", default="1d,5d,dqm", help="comma-separated subset of 1d, 5d, dqm")
    parser.add_argument("--executor", default="serial", help="'serial', 'local' (all cores) or a number of processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/baselines"))
    parser.add_argument("--no-progress", action="store_true")
    arguments = parser.parse_args()
    print(run(arguments.mode, arguments.out, seed=arguments.seed, executor=resolve_executor(arguments.executor),
              progress=not arguments.no_progress, datasets=tuple(arguments.datasets.split(","))))


if __name__ == "__main__":
    main()
