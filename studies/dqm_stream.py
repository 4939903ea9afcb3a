"""Data-quality monitoring: a kernel NPLM test per batch of a detector stream.

The good run is the DQMStream benchmark (nplm_kernel.benchmarks: energy = Gaussian peak on an
exponential background, position uniform; N(R) events per batch). Null batches from the good run
calibrate t (a resumable campaign); the alarm threshold is the (1 - false_alarm) quantile of the
null t. Then, per injected effect (a 30% wider peak, a dead region 0.3 <= position < 0.5, a 3% gain
drift), a campaign of anomalous batches gives the detection rate at that false-alarm rate
(Clopper-Pearson 68% interval), and a stream of good and anomalous batches in sequence gives the
monitoring plot, Z per batch (empirical p-value; the fitted chi2 tail beyond the last null toy).

Writes null.jsonl, <effect>.jsonl, stream.png, stream.csv and table.md into --out.

    python studies/dqm_stream.py --mode quick --out results/dqm_stream
"""

from __future__ import annotations

import argparse
import csv
import functools
from pathlib import Path

import numpy as np
from scipy import stats

from nplm_kernel import KernelNPLM
from nplm_kernel.app.plots import plot_monitoring
from nplm_kernel.benchmarks import DQM_EFFECTS, DQMStream
from nplm_kernel.inference import NPLMTest
from nplm_kernel.inference.calibration import significance
from nplm_kernel.toys import resolve_executor, run_toys

MODES = {
    "smoke": dict(n_reference=10_000, n_expected=300.0, n_null=20, n_effect=4, block=2, n_centers=50),
    "quick": dict(n_reference=100_000, n_expected=1000.0, n_null=200, n_effect=40, block=6, n_centers=300),
    "full": dict(n_reference=200_000, n_expected=1000.0, n_null=1000, n_effect=200, block=10, n_centers=500),
}


def run(mode: str, out: Path, seed: int = 0, executor=None, false_alarm: float = 0.01, progress: bool = True) -> str:
    """Run (or resume) the study in `mode`; return the markdown table it writes."""
    settings = MODES[mode]
    out.mkdir(parents=True, exist_ok=True)
    stream = DQMStream(n_expected=settings["n_expected"], n_reference=settings["n_reference"])
    reference_seed, stream_seed = np.random.SeedSequence(seed).spawn(2)
    x_ref, w_ref = stream.reference(np.random.default_rng(reference_seed))
    test = NPLMTest(KernelNPLM(n_centers=settings["n_centers"], penalty=1e-6, reuse_reference=True),
                    width_quantiles=None)

    def campaign(name: str, effect: str | None, n_toys: int, campaign_seed: int):
        return run_toys(test, functools.partial(stream.batch, effect=effect), x_ref, w_ref, n_toys=n_toys,
                        seed=campaign_seed, executor=executor, store=out / f"{name}.jsonl", progress=progress)

    null = campaign("null", None, settings["n_null"], seed)
    threshold = float(np.quantile(null.t, 1.0 - false_alarm))
    lines = [
        f"DQM stream, mode {mode}: N(R) = {settings['n_expected']:g} events per batch, good-run reference N_R = "
        f"{settings['n_reference']}, kernel M = {settings['n_centers']} drawn from the reference (lambda 1e-6, "
        f"reference rows reused), {len(null.t)} null batches, false-alarm rate {false_alarm:g} (threshold t = "
        f"{threshold:.2f}), seed {seed}",
        "",
        "| effect | batches | median t | detection rate | 68% interval | median Z |",
        "|---|---|---|---|---|---|",
    ]
    for index, effect in enumerate(DQM_EFFECTS, start=1):
        result = campaign(effect, effect, settings["n_effect"], seed + index)
        detected = int(np.count_nonzero(result.t > threshold))
        interval = stats.binomtest(detected, len(result.t)).proportion_ci(confidence_level=0.6827, method="exact")
        median_z = np.median([significance(t, null.t).z for t in result.t])
        lines.append(f"| {effect} | {len(result.t)} | {np.median(result.t):.2f} | {detected / len(result.t):.2f} | "
                     f"[{interval.low:.2f}, {interval.high:.2f}] | {median_z:.2f} |")

    labels = []
    for effect in DQM_EFFECTS:
        labels += ["good"] * settings["block"] + [effect] * settings["block"]
    rng = np.random.default_rng(stream_seed)
    z_values = []
    for label in labels:
        batch = stream.batch(rng, None if label == "good" else label)
        z_values.append(significance(test.run(batch, x_ref, w_ref).t, null.t).z)
    alarm_z = significance(threshold, null.t).z
    plot_monitoring(z_values, labels, alarm_z, out / "stream.png")
    with open(out / "stream.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["batch", "effect", "z"])
        writer.writerows([index, label, f"{z:.4f}"] for index, (label, z) in enumerate(zip(labels, z_values)))
    alarms = [label for label, z in zip(labels, z_values) if z > alarm_z]
    lines += ["", f"Stream of {len(labels)} batches: {alarms.count('good')} false alarms among "
              f"{labels.count('good')} good batches; alarms on anomalous batches: "
              + ", ".join(f"{effect} {alarms.count(effect)}/{labels.count(effect)}" for effect in DQM_EFFECTS)]
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--false-alarm", type=float, default=0.01)
    parser.add_argument("--executor", default="serial", help="'serial', 'local' (all cores) or a number of processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/dqm_stream"))
    arguments = parser.parse_args()
    executor = resolve_executor(arguments.executor)
    print(run(arguments.mode, arguments.out, arguments.seed, executor, arguments.false_alarm))


if __name__ == "__main__":
    main()
