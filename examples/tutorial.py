"""Tutorial: from two files to a p-value, with plots and the NN cross-check.

Run it as a script (`python examples/tutorial.py --quick` takes about a minute; without --quick
it uses the papers' sizes) and read it top to bottom: each step is one short block.

Step 0 writes the two input files a physicist would have: data.parquet (observed events) and
reference.parquet (Monte-Carlo events of the Standard-Model expectation, expected yield known).
Here they come from the built-in 1D benchmark with a resonance at x = 1.6 injected into the data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(quick: bool, out: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nn_baseline import NNNPLM
    from nplm_kernel import KernelNPLM
    from nplm_kernel.app.io import load_events
    from nplm_kernel.app.persistence import save_model
    from nplm_kernel.app.plots import plot_learned_f, plot_null_distribution
    from nplm_kernel.benchmarks import NP2, Exponential1D
    from nplm_kernel.inference.calibration import significance
    from nplm_kernel.inference.campaign import ReferencePoolToys, run_toys
    from nplm_kernel.inference.hypothesis_test import NPLMTest

    out.mkdir(parents=True, exist_ok=True)
    # quick mode: fewer toys, a smaller reference, and a short NN run with a larger learning rate
    n_toys, n_reference, nn_epochs, nn_rate = (30, 100_000, 800, 0.02) if quick else (300, 400_000, 100_000, 1e-3)

    # Step 0: the two input files (in real life: your ntuples; ROOT, HDF5 and .npy work the same way).
    rng = np.random.default_rng(2026)
    benchmark = Exponential1D(n_expected=2000.0, n_reference=n_reference)
    reference_events, _ = benchmark.reference(rng)
    pq.write_table(pa.table({"x": reference_events[:, 0]}), out / "reference.parquet")
    pq.write_table(pa.table({"x": benchmark.data(rng, NP2)[:, 0]}), out / "data.parquet")

    # Step 1: read the files, choosing the input variables.
    x_data = load_events(out / "data.parquet", columns=["x"])
    x_all = load_events(out / "reference.parquet", columns=["x"])
    expected_yield = 2000.0  # N(R): the number of events the Standard Model predicts for the data

    # Step 2: keep half of the reference events aside to draw null toys from; the rest is the
    # reference sample, weighted so that its weights sum to N(R).
    toys, x_ref, w_ref = ReferencePoolToys.split(x_all, np.full(len(x_all), expected_yield / len(x_all)), 0.5, seed=1)

    # Step 3: the kernel NPLM test on the data: t, and the learned log-ratio f(x).
    test = NPLMTest(KernelNPLM(n_centers=500, penalty=1e-6))
    observed = test.run(x_data, x_ref, w_ref)
    plot_learned_f(observed.estimator, x_data, x_ref, w_ref, out / "learned_f.png", names=["x"])
    save_model(observed.estimator, out / "kernel_model.npz")

    # Step 4: the null distribution of t from toys drawn from the held-out reference events
    # (resumable: re-running skips the toys already in the store), then p-value and Z.
    null = run_toys(test, toys, x_ref, w_ref, n_toys=n_toys, seed=7, executor=None, store=out / "kernel_null.jsonl")
    kernel = significance(observed.t, null.t)
    plot_null_distribution(null.t, out / "kernel_null.png", t_observed=observed.t)

    # Step 5: the NN cross-check: the original weight-clipped network on the same data and toys.
    nn_test = NPLMTest(NNNPLM(architecture=(1, 4, 1), weight_clip=9.0, epochs=nn_epochs, learning_rate=nn_rate))
    nn_observed = nn_test.run(x_data, x_ref, w_ref)
    nn_null = run_toys(nn_test, toys, x_ref, w_ref, n_toys=max(10, n_toys // 3), seed=7, executor=None,
                       store=out / "nn_null.jsonl")
    nn = significance(nn_observed.t, nn_null.t)
    window = np.linspace(1.5, 1.7, 5)[:, None]
    agree = bool(np.all(np.sign(observed.estimator.decision_function(window))
                        == np.sign(nn_observed.estimator.decision_function(window))))

    summary = {"t_kernel": observed.t, "p_kernel": kernel.p_value, "z_kernel": kernel.z, "method_kernel": kernel.method,
               "t_nn": nn_observed.t, "p_nn": nn.p_value, "z_nn": nn.z, "f_sign_agrees_in_signal_region": agree}
    for name, value in summary.items():
        print(f"{name:32s} {value}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small toy counts and NN epochs (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("tutorial_output"))
    arguments = parser.parse_args()
    main(arguments.quick, arguments.out)
