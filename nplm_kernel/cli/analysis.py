"""`nplm test`, `nplm run` and `nplm demo`: one test on data (calibrated against a stored null), a
whole study from an analysis config, and the built-in demonstration."""

from __future__ import annotations

import argparse

import numpy as np

from ..core.exceptions import ConfigurationError
from . import options


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """The options of `nplm test`, `nplm run` or `nplm demo`."""
    {"test": _test_arguments, "run": _run_arguments, "demo": _demo_arguments}[command](parser)


def _test_arguments(test: argparse.ArgumentParser) -> None:
    options.add_data_option(test)
    options.add_sample_options(test)
    test.add_argument("--null", help="campaign store (from nplm toys) to calibrate t against")
    test.add_argument("--plot", help="figure of data, reference and reference x e^f per variable (.png, .pdf, ...)")
    options.add_width_option(test)
    options.add_plot_options(test)
    options.add_progress_option(test)
    test.set_defaults(run=_test)


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("config", help="analysis config (YAML)")
    options.add_progress_option(run)
    run.set_defaults(run=_run)


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    from ..app.demo import DemoSettings
    from ..benchmarks import SIGNALS_1D

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
    from ..app.report import member_lines, null_summary, p_value_lines, shown_width
    from ..inference import significance
    from ..toys import CampaignResult

    x_ref, w_ref, _ = options.reference_from_arguments(arguments)
    x_data = load_data(arguments.data, options.columns(arguments.columns), arguments.key, selection=arguments.selection)
    test = options.chosen_test(arguments).for_reference(x_ref, w_ref)
    null = None if arguments.null is None else CampaignResult.from_store(arguments.null, test, x_ref, w_ref)  # before the fit
    result = test.run(x_data, x_ref, w_ref)
    lines = [f"backend:   {result.backend} {result.hyperparameters}",
             f"samples:   N_D = {len(x_data)}, N_R = {len(x_ref)}, N(R) = {w_ref.sum():.6g}",
             *member_lines(result), f"fit:       {result.wall_time:.2f} s"]
    if np.any(result.unsupported_events):
        lines.append(f"warning:   {np.max(result.unsupported_events)} data event(s) lie where the reference sample "
                     "cannot support them: t measures the reference's emptiness there (docs: statistics, reference "
                     "support)")
    calibrated = None
    if null is not None:
        calibrated = significance(result.t, null.t, weights=result.member_weights)
        lines += null_summary(null) + p_value_lines(calibrated)
    if arguments.plot:
        from ..app.plots import plot_learned_f

        best = shown_width(calibrated, len(test.widths or ()), np.size(result.t))
        shown = result if best is None else result.results[best]
        plot_learned_f(shown.estimator, x_data, x_ref, w_ref, arguments.plot,
                       names=options.columns(arguments.labels) or options.columns(arguments.columns),
                       units=options.columns(arguments.units), result=calibrated,
                       experiment_label=arguments.experiment_label,
                       description=None if best is None else f"model shown: kernel width {test.widths[best]:.3g}")
        lines.append(f"plot:      {arguments.plot}")
    return "\n".join(lines)


def _run(arguments: argparse.Namespace) -> str:
    from ..app.analysis import run_analysis
    from ..app.report import chi2_text
    from ..inference.calibration import Chi2Fit

    result = run_analysis(arguments.config, progress=not arguments.no_progress)
    fit = result["null_chi2_fit"]
    return "\n".join([result["summary"], f"null chi2 fit: {chi2_text(None if fit is None else Chi2Fit(**fit))}"])


def _demo(arguments: argparse.Namespace) -> str:
    from ..app.demo import DemoSettings, run_demo

    if arguments.toys < 2:
        raise ConfigurationError("--toys must be at least 2")
    settings = DemoSettings(signal=arguments.signal, n_toys=arguments.toys, n_reference=arguments.n_reference,
                            n_centers=arguments.n_centers, penalty=arguments.penalty, seed=arguments.seed,
                            executor=arguments.executor)
    return run_demo(settings, progress=not arguments.no_progress)
