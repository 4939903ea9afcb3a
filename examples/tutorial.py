# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From two files to a p-value
#
# This tutorial is a notebook kept as text ([jupytext](https://jupytext.readthedocs.io) percent
# format): open it with Jupyter (`jupytext --to ipynb examples/tutorial.py`) or run it as a script,
# `python examples/tutorial.py --quick` (about a minute; without `--quick` it uses the papers'
# sizes). It reads a data file and a reference file, runs the kernel NPLM test, plots the learned
# f, builds the null distribution from held-out reference events, and cross-checks with the NN.
#
# Step 0 writes the two input files a physicist would have: `data.parquet` (observed events) and
# `reference.parquet` (Monte-Carlo events of the Standard-Model expectation, expected yield known).
# Here they come from the built-in 1D benchmark with a resonance at x = 1.6 injected into the data.

# %%
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nn_baseline import NNNPLM
from nplm_kernel import KernelNPLM, NPLMTest, run_toys, save_model, significance
from nplm_kernel.app.plots import plot_learned_f, plot_null_distribution
from nplm_kernel.benchmarks import NP2, Exponential1D
from nplm_kernel.io import load_events
from nplm_kernel.toys import ReferencePoolToys

QUICK = "--quick" in sys.argv or os.environ.get("NPLM_TUTORIAL_QUICK") == "1"
OUT = Path(os.environ.get("NPLM_TUTORIAL_OUT", "tutorial_output"))
OUT.mkdir(parents=True, exist_ok=True)
# quick mode: fewer toys, a smaller reference, and a short NN run with a larger learning rate
N_TOYS, N_NN_TOYS, N_REFERENCE, NN_EPOCHS, NN_RATE = ((30, 10, 100_000, 800, 0.02) if QUICK else
                                                      (300, 100, 400_000, 100_000, 1e-3))

# %% [markdown]
# ## Step 0: the input files
# In real life these are your ntuples; ROOT (TTrees and RNTuples), HDF5 and `.npy` work the same way.

# %%
rng = np.random.default_rng(2026)
benchmark = Exponential1D(n_expected=2000.0, n_reference=N_REFERENCE)
reference_events, _ = benchmark.reference(rng)
pq.write_table(pa.table({"x": reference_events[:, 0]}), OUT / "reference.parquet")
pq.write_table(pa.table({"x": benchmark.data(rng, NP2)[:, 0]}), OUT / "data.parquet")

# %% [markdown]
# ## Step 1: read the files, choosing the input variables

# %%
x_data = load_events(OUT / "data.parquet", columns=["x"])
x_all = load_events(OUT / "reference.parquet", columns=["x"])
expected_yield = 2000.0  # N(R): the number of events the Standard Model predicts for the data

# %% [markdown]
# ## Step 2: hold out part of the reference for null toys
# Half of the reference events are kept aside to draw null toys from; the rest is the reference
# sample, weighted so that its weights sum to N(R).

# %%
toys, x_ref, w_ref = ReferencePoolToys.split(x_all, np.full(len(x_all), expected_yield / len(x_all)), 0.5, seed=1)

# %% [markdown]
# ## Step 3: the kernel NPLM test on the data
# The default test needs no kernel width from us. It has two members: the full kernel model at the
# 90th percentile of the distances between reference events (broad shapes, deficits, several
# departures at once), and the excess scan, one kernel function at a time over centres and widths
# (a bump). It gives one t per member; calibration combines them (min-p).

# %%
test = NPLMTest(KernelNPLM(n_centers=500, penalty=1e-6, reuse_reference=True))
observed = test.run(x_data, x_ref, w_ref)
print(", ".join(f"{member}: t = {t:.2f}" for member, t in zip(observed.members, observed.t)))
print(f"largest local excess at x = {observed.excess_scan.excess_center[0]:.3f}")

# %% [markdown]
# ## Step 4: the null distribution, the p-value and Z
# Toys drawn from the held-out reference events (resumable: re-running skips the toys already in
# the store), calibrated empirically, with the chi2 tail only beyond the last toy (and labelled).
# Both figures show this one result: the data against the reference reweighted by e^f and the
# learned f of the full model, which the benchmark can compare with the true log-ratio, and the
# null toys of the member that drives the combination (the smallest p / weight).

# %%
null = run_toys(test, toys, x_ref, w_ref, n_toys=N_TOYS, seed=7, executor=None, store=OUT / "kernel_null.jsonl")
kernel = significance(observed.t, null.t, weights=observed.member_weights)
best = int(np.argmin(np.divide(kernel.member_p_values, observed.member_weights)))
shown = observed.results[0].estimator
save_model(shown, OUT / "kernel_model.npz")
plot_learned_f(shown, x_data, x_ref, w_ref, OUT / "learned_f.png", names=["x"], result=kernel,
               true_log_ratio=lambda points: benchmark.log_ratio(points, NP2),
               description=f"model shown: full model, width {observed.widths[0]:.2f}")
plot_null_distribution(null.t[:, best], OUT / "kernel_null.png", t_observed=observed.t[best], result=kernel,
                       description=f"null toys of the {observed.members[best]}")
print(kernel)

# %% [markdown]
# ## Step 5: the NN cross-check
# The original weight-clipped network on the same data and toys (its fit shows a bar over the
# epochs; the toys' fits run without one, under the campaign's bar); in the signal region both
# models should see an excess (f > 0).

# %%
network = NNNPLM(architecture=(1, 4, 1), weight_clip=9.0, epochs=NN_EPOCHS, learning_rate=NN_RATE, progress=True)
nn_observed = NPLMTest(network).run(x_data, x_ref, w_ref)
nn_test = NPLMTest(network.set_params(progress=False))  # the same test: progress is not part of a store's identity
nn_null = run_toys(nn_test, toys, x_ref, w_ref, n_toys=N_NN_TOYS, seed=7, executor=None, store=OUT / "nn_null.jsonl")
nn = significance(nn_observed.t, nn_null.t)
window = np.linspace(1.5, 1.7, 5)[:, None]
agree = bool(np.all(np.sign(shown.decision_function(window))
                    == np.sign(nn_observed.estimator.decision_function(window))))
print(f"kernel: {kernel}\nNN:     {nn}")
summary = {"t_kernel": observed.t.round(3).tolist(), "p_kernel": kernel.p_value, "z_kernel": kernel.z,
           "method_kernel": kernel.method,
           "t_nn": nn_observed.t, "p_nn": nn.p_value, "z_nn": nn.z, "method_nn": nn.method,
           "f_sign_agrees_in_signal_region": agree}
for name, value in summary.items():
    print(f"{name:32s} {value}")

# %% [markdown]
# ## Reading the two p-values side by side
# The two lines above give each backend's p-value with how it was obtained and from how many null
# toys; compare those, not the two t (each model has its own null distribution). An *empirical* p
# is a count: the fraction of null toys with a t at least as large, its interval the binomial
# uncertainty of that count, and it cannot go below about 1 / (number of toys). When t lies beyond
# every toy, the p-value is a *chi2 extrapolation*: a chi2 is fitted to the null toys and its tail
# integrated beyond t. From the NN's handful of toys (10 in quick mode: a network's toy costs
# thousands of epochs) the fitted degrees of freedom are uncertain by tens of percent, and whether the
# null's tail follows a chi2 out there is not tested by any toy, so such a Z (often 3 or more here)
# only says that t is large for this null; it is not a measured significance. Quote a Z once the
# toys reach its p (several times 1 / p of them: 1 / p is 741 for Z = 3), or use the chi2 check of
# `plot_null_tail` on a large null before trusting its tail. The kernel's toys are cheap (batches
# of toys share one pass over the reference), which is why it gets more of them here.
