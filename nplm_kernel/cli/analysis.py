"""`nplm test`, `nplm run` and `nplm demo`: one test on data (calibrated against a stored null), a
whole study from an analysis config, and the built-in demonstration."""

from __future__ import annotations

import argparse

import numpy as np

from ..core.exceptions import ConfigurationError
from . import options


def add_commands(commands: argparse._SubParsersAction) -> None:
    from ..app.demo import DemoSettings
    from ..benchmarks import SIGNALS_1D

    test = commands.add_parser("test", help="run the NPLM test on a data file against a reference file")
    test.add_argument("--data", required=True, help="data events (same formats and columns as the reference)")
    options.add_sample_options(test)
    test.add_argument("--null", help="campaign store (from nplm toys) to calibrate t against")
    test.add_argument("--plot", help="figure of data, reference and reference x e^f per variable (.png, .pdf, ...)")
    options.add_progress_option(test)
    test.set_defaults(run=_test)

    run = commands.add_parser("run", help="run (or resume) the whole study an analysis YAML file describes")
    run.add_argument("config", help="analysis config (YAML)")
    options.add_progress_option(run)
    run.set_defaults(run=_run)

    demo = commands.add_parser("demo", help="run a kernel NPLM test on the built-in 1D benchmark")
    defaults = DemoSettings()
    demo.add_argument("--signal", choices=sorted(SIGNALS_1D), default=defaults.signal,
                      help=f"injected signal (default {defaults.signal})")
    demo.add_argument("--toys", type=int, default=defaults.n_toys, help=f"number of null toys (default {defaults.n_toys})")
    demo.add_argument("--n-reference", type=int, default=defaults.n_reference,
                      help=f"reference sample size N_R (default {defaults.n_reference})")
    demo.add_argument("--n-centers", type=int, default=defaults.n_centers,
                      help=f"Nystrom centres M (default {defaults.n_centers})")
    demo.add_argument("--penalty", type=float, default=defaults.penalty, help=f"lambda (default {defaults.penalty:g})")
    demo.add_argument("--seed", type=int, default=defaults.seed, help=f"master seed (default {defaults.seed})")
    demo.add_argument("--executor", default=defaults.executor,
                      help=f"'serial' (default {defaults.executor!r}), 'local' (all cores) or a number of processes")
    options.add_progress_option(demo)
    demo.set_defaults(run=_demo)


def _test(arguments: argparse.Namespace) -> str:
    from ..app.analysis import load_data
    from ..app.report import null_summary, p_value_lines
    from ..inference import NPLMTest, significance
    from ..toys import CampaignResult

    x_ref, w_ref, _ = options.reference_from_arguments(arguments)
    x_data = load_data(arguments.data, options.columns(arguments.columns), arguments.key, selection=arguments.selection)
    test = NPLMTest(options.chosen_backend(arguments))
    null = None if arguments.null is None else CampaignResult.from_store(arguments.null, test, x_ref, w_ref)  # before the fit
    result = test.run(x_data, x_ref, w_ref)
    lines = [f"backend:   {result.backend} {result.hyperparameters}",
             f"samples:   N_D = {len(x_data)}, N_R = {len(x_ref)}, N(R) = {w_ref.sum():.6g}",
             f"t:         {result.t:.4f}  (fit {result.wall_time:.2f} s)"]
    calibrated = None
    if null is not None:
        calibrated = significance(result.t, null.t)
        lines += null_summary(null) + p_value_lines(calibrated)
    if arguments.plot:
        from ..app.plots import plot_learned_f

        plot_learned_f(result.estimator, x_data, x_ref, w_ref, arguments.plot, names=options.columns(arguments.columns),
                       result=calibrated)
        lines.append(f"plot:      {arguments.plot}")
    return "\n".join(lines)


def _run(arguments: argparse.Namespace) -> str:
    from ..app.analysis import run_analysis
    from ..app.report import chi2_text
    from ..inference.calibration import Chi2Fit

    result = run_analysis(arguments.config, progress=not arguments.no_progress)
    fit = result["null_chi2_fit"]
    return "\n".join([f"t = {np.round(result['t'], 4)}, p-value = {result['p_value']:.4g} ({result['method']}), "
                      f"Z = {result['z']:.3f}, {result['n_toys']} null toys",
                      f"null chi2 fit: {chi2_text(None if fit is None else Chi2Fit(**fit))}"])


def _demo(arguments: argparse.Namespace) -> str:
    from ..app.demo import DemoSettings, run_demo

    if arguments.toys < 2:
        raise ConfigurationError("--toys must be at least 2")
    settings = DemoSettings(signal=arguments.signal, n_toys=arguments.toys, n_reference=arguments.n_reference,
                            n_centers=arguments.n_centers, penalty=arguments.penalty, seed=arguments.seed,
                            executor=arguments.executor)
    return run_demo(settings, progress=not arguments.no_progress)
