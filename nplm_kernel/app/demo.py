"""The built-in demonstration: the kernel NPLM test on the 1D exponential benchmark with a signal
injected, calibrated on null toys, as `nplm demo` prints it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..benchmarks import SIGNALS_1D, Exponential1D
from ..inference import NPLMTest, significance
from ..kernel import KernelNPLM
from ..kernel.excess_scan import excess_location
from ..toys import run_toys
from .report import chi2_text, p_value_lines


@dataclass(frozen=True)
class DemoSettings:
    """The demo's settings (`nplm demo` takes each as an option with this default)."""

    signal: str = "NP2"
    n_toys: int = 100
    n_reference: int = 200_000
    n_centers: int = 500
    penalty: float = 1e-6
    seed: int = 0
    executor: str = "serial"


def run_demo(settings: DemoSettings = DemoSettings(), progress: bool = True) -> str:
    """Kernel NPLM test on the 1D exponential benchmark with `settings.signal` injected, calibrated on
    `settings.n_toys` null toys (a run_toys campaign, toy i seeded by SeedSequence(seed, spawn_key=(i,));
    the reference and the observed data come from SeedSequence([seed, 1])); returns the printed report."""
    start = time.perf_counter()
    benchmark = Exponential1D(n_reference=settings.n_reference)
    reference_seed, observed_seed = np.random.SeedSequence([settings.seed, 1]).spawn(2)
    x_ref, w_ref = benchmark.reference(np.random.default_rng(reference_seed))
    injected = SIGNALS_1D[settings.signal]
    x_obs = benchmark.data(np.random.default_rng(observed_seed), injected)
    test = NPLMTest(KernelNPLM(n_centers=settings.n_centers, penalty=settings.penalty, seed=settings.seed,
                               reuse_reference=True)).for_reference(x_ref, w_ref)
    observed = test.run(x_obs, x_ref, w_ref)
    t_null = run_toys(test, benchmark.data, x_ref, w_ref, n_toys=settings.n_toys, seed=settings.seed,
                      executor=settings.executor, progress=progress).t
    result = significance(observed.t, t_null, weights=observed.member_weights)
    fits = [width.estimator for width in observed.results]
    lines = [
        f"NPLM kernel demo: 1D exponential benchmark, signal {settings.signal} = {injected}",
        f"reference: N_R = {benchmark.n_reference}, N(R) = {benchmark.n_expected:g}, "
        f"w_R = {benchmark.reference_weight:g}",
        f"kernel:    M = {settings.n_centers} centres drawn, lambda = {settings.penalty:g}; the default test: the full "
        f"model and the excess scan, combined by a min-p weighted {observed.scan_weight:g} : 1 towards the scan",
        *(f"width {fit.sigma_:.3f}: t = {fit.t_:.3f}  ({fit.n_centers_} centres kept, "
          f"{fit.diagnostics_.newton_steps} Newton steps, {sum(fit.diagnostics_.cg_iterations)} CG iterations, "
          f"fit {fit.diagnostics_.fit_time:.2f} s); null median t = {np.median(t_null[:, index]):.3f}"
          for index, fit in enumerate(fits)),
        f"scan:      t = {observed.excess_scan.t:.3f}  (largest local excess at "
        f"{excess_location(observed.excess_scan.excess_center, observed.excess_scan.log_ratio)}; "
        f"{observed.excess_scan_time:.2f} s); null median t = {np.median(t_null[:, -1]):.3f}",
        f"observed:  N_D = {x_obs.shape[0]}; null: {result.n_toys} toys; chi2 fit: {chi2_text(result.chi2_fit)}",
        *p_value_lines(result),
        f"wall time: {time.perf_counter() - start:.1f} s",
    ]
    return "\n".join(lines)
