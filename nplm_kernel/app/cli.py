"""Command-line interface.

nplm test       the NPLM test on a data file against a reference file (optionally calibrated)
nplm toys       run or resume a null toy campaign into a JSON-Lines store
nplm calibrate  turn a campaign store into a chi2 fit, p-value and Z, and a plot
nplm store      check a toy store, or repair a damaged one (bad lines go to a side file)
nplm run        the whole study an analysis YAML file describes (resumable)
nplm scan       choose sigma, M and lambda from null toys of the reference (table, plot, choice)
nplm compare    NPLM and baseline methods on the same data and null toys: one table
nplm demo       the kernel test on the built-in 1D benchmark
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from ..backends import Setting, backend_entry, backend_from_options, backend_names
from ..benchmarks import SIGNALS_1D, Exponential1D
from ..exceptions import ConfigurationError, InputError, NPLMError
from ..inference.calibration import Chi2Fit, Significance, fit_chi2, significance
from ..inference.campaign import CampaignResult, ReferencePoolToys, executor_from_setting, run_toys
from ..inference.comparison import compare_methods, method_names
from ..inference.hypothesis_test import NPLMTest
from ..inference.store import check_store, repair_store
from ..kernel.estimator import KernelNPLM
from ..version import __version__
from .analysis import load_data, load_reference, run_analysis
from .config import ReferenceInput


def run_demo(
    signal: str = "NP2",
    n_toys: int = 100,
    n_reference: int = 200_000,
    n_centers: int = 500,
    penalty: float = 1e-6,
    seed: int = 0,
    progress: bool = True,
    executor: str | int | None = None,
) -> str:
    """Kernel NPLM test on the 1D exponential benchmark with `signal` injected, calibrated on
    `n_toys` null toys (a run_toys campaign, toy i seeded by SeedSequence(seed, spawn_key=(i,)); the
    reference and the observed data come from SeedSequence([seed, 1])); returns the printed report."""
    start = time.perf_counter()
    benchmark = Exponential1D(n_reference=n_reference)
    reference_seed, observed_seed = np.random.SeedSequence([seed, 1]).spawn(2)
    x_ref, w_ref = benchmark.reference(np.random.default_rng(reference_seed))
    injected = SIGNALS_1D[signal]
    x_obs = benchmark.data(np.random.default_rng(observed_seed), injected)
    test = NPLMTest(KernelNPLM(n_centers=n_centers, penalty=penalty, seed=seed))
    observed = test.run(x_obs, x_ref, w_ref).estimator
    t_null = run_toys(test, benchmark.data, x_ref, w_ref, n_toys=n_toys, seed=seed, executor=executor,
                      progress=progress).t
    result = significance(observed.t_, t_null)
    diagnostics = observed.diagnostics_
    lines = [
        f"NPLM kernel demo: 1D exponential benchmark, signal {signal} = {injected}",
        f"reference: N_R = {benchmark.n_reference}, N(R) = {benchmark.n_expected:g}, "
        f"w_R = {benchmark.reference_weight:g}",
        f"kernel:    M = {n_centers} centres drawn, {observed.n_centers_} numerically independent kept, sigma = {observed.sigma_:.3f} (standardised units), "
        f"lambda = {penalty:g}",
        f"observed:  N_D = {x_obs.shape[0]}, t = {observed.t_:.3f}  ({diagnostics.newton_steps} Newton steps, "
        f"{sum(diagnostics.cg_iterations)} CG iterations, fit {diagnostics.fit_time:.2f} s)",
        f"null:      {result.n_toys} toys, median t = {np.median(t_null):.3f}; chi2 fit: {_chi2_text(result.chi2_fit)}",
        *_p_value_lines(result),
        f"wall time: {time.perf_counter() - start:.1f} s",
    ]
    return "\n".join(lines)


def _chi2_text(fit: Chi2Fit | None) -> str:
    if fit is None:
        return "none (a multi-scale null, or non-positive null t)"
    return f"dof = {fit.dof:.2f}, KS p-value = {fit.ks_p_value:.3f}"


def _p_value_lines(result: Significance) -> list[str]:
    """The p-value line (with its Clopper-Pearson interval, method and toy count) and the Z line;
    an extrapolated or bounded p-value says so on both."""
    flag = "  [EXTRAPOLATED beyond every null toy]" if result.is_extrapolated else (
        "  [UPPER BOUND: the true p is smaller]" if result.is_bound else "")
    z_text = f"{result.z:.3f}" if np.isfinite(result.z) else ("-inf (p = 1: no toy is below t)" if result.z < 0 else
                                                                "inf")
    return [f"p-value:   {result.p_value:.4g}  (68.27% Clopper-Pearson [{result.p_low:.4g}, {result.p_high:.4g}]; "
            f"method: {result.method}; {result.n_toys} toys){flag}",
            f"Z:         {z_text}{flag}"]


def _null_summary(campaign: CampaignResult) -> list[str]:
    """The toy counts of a stored null, with a warning line when some fits did not converge."""
    lines = [f"null:      {len(campaign.t)} toys ({campaign.n_failed} failed, {campaign.n_unconverged} not converged)"]
    if campaign.n_unconverged:
        lines.append(f"warning:   {campaign.n_unconverged} null toy fit(s) stopped before their tolerance; their t is "
                     "included in the calibration (see the store rows' warnings)")
    return lines


def _columns(text: str | None) -> list[str] | None:
    """Comma-separated columns; a comma inside brackets belongs to an expression ('Muon_pt[:, 0]')."""
    if text is None:
        return None
    return [column.strip() for column in re.split(r",(?![^\[]*\])", text) if column.strip()]


def _reference(arguments: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, ReferencePoolToys | None]:
    """(x_ref, w_ref, pool toys or None) from the reference options."""
    if (arguments.expected_yield is None) == (arguments.weight_column is None):
        given = "both --expected-yield and --weight-column were given" if arguments.expected_yield is not None else \
            "neither was given"
        raise ConfigurationError(f"give exactly one reference normalisation, --expected-yield N(R) (every event weighs "
                                 f"N(R) / N_R) or --weight-column (per-event weights summing to N(R)); {given}.")
    reference = ReferenceInput(path=arguments.reference, expected_yield=arguments.expected_yield,
                               weight_column=arguments.weight_column)
    return load_reference(reference, _columns(arguments.columns), arguments.key, pool=arguments.pool,
                          pool_fraction=arguments.pool_fraction, seed=arguments.seed, selection=arguments.selection)


def _backend_options(arguments: argparse.Namespace) -> dict[str, str]:
    """The backend options given on the command line, {setting: text}."""
    return {name.removeprefix(BACKEND_OPTION): value for name, value in vars(arguments).items()
            if name.startswith(BACKEND_OPTION) and value is not None}


def _build_backend(arguments: argparse.Namespace, name: str, options: dict[str, str], progress: bool):
    """Backend `name` from command-line options (the others keep the backend's own defaults);
    --seed also seeds it, and `progress` shows its fit's bar (the NN's epochs) unless an option says."""
    settings = {setting.name for setting in backend_entry(name).settings()}
    options = dict(options)
    if "seed" in settings:
        options.setdefault("seed", str(arguments.seed))
    if "progress" in settings:
        options.setdefault("progress", str(progress))
    return backend_from_options(name, options)


def _backend(arguments: argparse.Namespace):
    """The backend `--backend` names, built from the backend options given."""
    return _build_backend(arguments, arguments.backend, _backend_options(arguments),
                          progress=not getattr(arguments, "no_progress", False))


def _command_test(arguments: argparse.Namespace) -> str:
    x_ref, w_ref, _ = _reference(arguments)
    x_data = load_data(arguments.data, _columns(arguments.columns), arguments.key, selection=arguments.selection)
    test = NPLMTest(_backend(arguments))
    result = test.run(x_data, x_ref, w_ref)
    lines = [f"backend:   {result.backend} {result.hyperparameters}",
             f"samples:   N_D = {len(x_data)}, N_R = {len(x_ref)}, N(R) = {w_ref.sum():.6g}",
             f"t:         {result.t:.4f}  (fit {result.wall_time:.2f} s)"]
    calibrated = None
    if arguments.null:
        null = CampaignResult.from_store(arguments.null, test, x_ref, w_ref)
        calibrated = significance(result.t, null.t)
        lines += _null_summary(null) + _p_value_lines(calibrated)
    if arguments.plot:
        from .plots import plot_learned_f

        plot_learned_f(result.estimator, x_data, x_ref, w_ref, arguments.plot, names=_columns(arguments.columns),
                       result=calibrated)
        lines.append(f"plot:      {arguments.plot}")
    return "\n".join(lines)


def _method_settings(arguments: argparse.Namespace, methods: list[str]) -> dict[str, dict]:
    """Constructor settings per method: the backend options for the NPLM backends named (each takes
    the options that are its settings), and --set METHOD.SETTING=VALUE (a YAML value) for any method."""
    options = _backend_options(arguments)
    settings: dict[str, dict] = {}
    for name in methods:
        if name in backend_names():  # no bars inside the campaign's fits
            own = {setting.name for setting in backend_entry(name).settings()}
            backend = _build_backend(arguments, name, {option: text for option, text in options.items()
                                                       if option in own}, progress=False)
            settings[name] = backend.get_params(deep=False)
    for assignment in arguments.set or []:
        target, equals, text = assignment.partition("=")
        method, dot, setting = target.partition(".")
        if not (equals and dot and method and setting):
            raise ConfigurationError(f"--set takes METHOD.SETTING=VALUE (e.g. mmd.sigma=0.5), got {assignment!r}.")
        settings.setdefault(method, {})[setting] = yaml.safe_load(text)
    return settings


def _command_compare(arguments: argparse.Namespace) -> str:
    x_ref, w_ref, toys = _reference(arguments)
    if toys is None:
        raise ConfigurationError("the null toys need a held-out pool: --pool FILE or --pool-fraction F.")
    x_data = load_data(arguments.data, _columns(arguments.columns), arguments.key, selection=arguments.selection)
    methods = _columns(arguments.methods)
    out = Path(arguments.out)
    comparison = compare_methods(
        x_data, x_ref, w_ref, toys, methods=methods, settings=_method_settings(arguments, methods or ["kernel"]),
        n_toys=arguments.n_toys, seed=arguments.seed, executor=executor_from_setting(arguments.executor),
        store_dir=out, progress=not arguments.no_progress)
    header = (f"{len(x_data)} data events against N_R = {len(x_ref)} (N(R) = {w_ref.sum():.6g}); each method "
              f"calibrated on its own {arguments.n_toys} null toys (the same toys for all), seed {arguments.seed}")
    table = header + "\n\n" + comparison.table()
    (out / "compare.md").write_text(table + "\n")
    return table + f"\n\nwritten: {out / 'compare.md'} and one toy store per method in {out}"


def _command_toys(arguments: argparse.Namespace) -> str:
    x_ref, w_ref, toys = _reference(arguments)
    if toys is None:
        raise ConfigurationError("null toys need a held-out pool: --pool FILE or --pool-fraction F.")
    campaign = run_toys(NPLMTest(_backend(arguments)), toys, x_ref, w_ref, n_toys=arguments.n_toys,
                        seed=arguments.seed, executor=executor_from_setting(arguments.executor), store=arguments.store,
                        progress=not arguments.no_progress)
    return (f"{len(campaign.rows)} toys in {arguments.store} ({campaign.n_failed} failed, "
            f"{campaign.n_unconverged} not converged); median t = {np.median(campaign.t):.3f}")


def _command_calibrate(arguments: argparse.Namespace) -> str:
    campaign = CampaignResult.from_store(arguments.store)
    t_null = campaign.t
    fit = fit_chi2(t_null)
    lines = _null_summary(campaign) + [f"mean t:    {t_null.mean():.3f}",
                                       f"chi2 fit:  dof = {fit.dof:.3f}, KS p-value = {fit.ks_p_value:.3f}"]
    if arguments.t_observed is not None:
        lines += _p_value_lines(significance(arguments.t_observed, t_null))
    if arguments.plot:
        from .plots import plot_null_distribution

        plot_null_distribution(t_null, arguments.plot, arguments.t_observed, arguments.dof, log_y=arguments.log_y)
        lines.append(f"plot:      {arguments.plot}")
    return "\n".join(lines)


def _add_sample_options(parser: argparse.ArgumentParser, choose_backend: bool = True) -> None:
    parser.add_argument("--reference", required=True, help="reference events (.npy .npz .h5 .parquet .root)")
    parser.add_argument("--columns", help="comma-separated input variables (columns, branches, datasets)")
    parser.add_argument("--key", help="array in .npz, dataset or group in HDF5, tree in ROOT")
    parser.add_argument("--selection", help="ROOT TTrees: an uproot cut, e.g. 'nMuon >= 2' (columns may be "
                                            "expressions such as 'Muon_pt[:, 0]')")
    parser.add_argument("--weight-column", help="per-event reference weights (sum = N(R)) from this column")
    parser.add_argument("--expected-yield", type=float, help="N(R): every reference event weighs N(R) / N_R")
    pool = parser.add_mutually_exclusive_group()
    pool.add_argument("--pool", help="held-out reference events for null toys")
    pool.add_argument("--pool-fraction", type=float, help="hold out this fraction of the reference for null toys")
    _add_backend_options(parser, choose_backend)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fit, the pool split and the toys")


#: Namespace prefix of the generated backend options.
BACKEND_OPTION = "backend_option_"


def _add_backend_options(parser: argparse.ArgumentParser, choose_backend: bool = True) -> None:
    """--backend (where the command fits one backend) and one option per setting of the registered
    backends (from their constructor signatures and docstrings: backends.settings_of); unset options
    keep the backend's defaults."""
    if choose_backend:
        parser.add_argument("--backend", choices=backend_names(), default="kernel",
                            help="the model of f (default kernel)")
    owners: dict[str, list[str]] = {}
    helps: dict[str, Setting] = {}
    for name in backend_names():
        for setting in backend_entry(name).settings():
            if setting.configurable and setting.name != "seed":
                owners.setdefault(setting.name, []).append(name)
                helps.setdefault(setting.name, setting)
    group = parser.add_argument_group("backend settings (each backend's own defaults unless given)")
    for option, setting in helps.items():
        text = setting.help.replace("%", "%%")
        group.add_argument(f"--{option.replace('_', '-')}", dest=BACKEND_OPTION + option, metavar="VALUE",
                           help=f"[{', '.join(owners[option])}] {text} (default: {setting.default!r})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nplm", description="New Physics Learning Machine tests with kernel methods.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (-v: info, -vv: debug)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (overrides -v)")
    commands = parser.add_subparsers(dest="command", required=True)

    test = commands.add_parser("test", help="run the NPLM test on a data file against a reference file")
    test.add_argument("--data", required=True, help="data events (same formats and columns as the reference)")
    _add_sample_options(test)
    test.add_argument("--null", help="campaign store (from nplm toys) to calibrate t against")
    test.add_argument("--plot", help="figure of data, reference and reference x e^f per variable (.png, .pdf, ...)")
    test.add_argument("--no-progress", action="store_true", help="hide progress bars")

    toys = commands.add_parser("toys", help="run or resume a null toy campaign")
    _add_sample_options(toys)
    toys.add_argument("--store", required=True, help="JSON-Lines store to append to and resume from")
    toys.add_argument("--n-toys", type=int, required=True)
    toys.add_argument("--executor", default="local", help="'local' (all cores), 'serial', or a number of processes")
    toys.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    calibrate = commands.add_parser("calibrate", help="chi2 fit, p-value and Z from a campaign store")
    calibrate.add_argument("--store", required=True)
    calibrate.add_argument("--t-observed", type=float, help="observed t to turn into a p-value and Z")
    calibrate.add_argument("--dof", type=float, help="nominal chi2 dof to draw beside the fit")
    calibrate.add_argument("--plot", help="figure of the null distribution (.png, .pdf, ...)")
    calibrate.add_argument("--log-y", action="store_true", help="log scale for the null's density (its tail)")

    store = commands.add_parser("store", help="check a toy store, or repair a damaged one")
    store.add_argument("action", choices=["check", "repair"],
                       help="check: report content and damage; repair: move bad lines to <store>.rejected")
    store.add_argument("store", help="the toy store (JSON Lines)")

    run = commands.add_parser("run", help="run (or resume) the whole study an analysis YAML file describes")
    run.add_argument("config", help="analysis config (YAML)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    scan = commands.add_parser("scan", help="choose sigma, M and lambda from null toys of the reference")
    _add_sample_options(scan, choose_backend=False)  # the scan's grid is the kernel's; its other settings apply
    scan.add_argument("--sigma-quantiles", default="0.5,0.9", help="pairwise-distance quantiles (default 0.5,0.9)")
    scan.add_argument("--n-centers-grid", default="100,300,1000", help="M values (default 100,300,1000)")
    scan.add_argument("--penalties", default="1e-5,1e-7", help="lambda values (default 1e-5,1e-7)")
    scan.add_argument("--n-toys", type=int, default=20, help="null toys per setting (default 20)")
    scan.add_argument("--n-probe-toys", type=int, default=20,
                      help="toys with a generic local excess per setting, for the expected sensitivity (default 20)")
    scan.add_argument("--probe-events", type=int, help="events of the local excess (default 3%% of N(R))")
    scan.add_argument("--executor", default="serial", help="'serial' (default), 'local' (all cores) or a number")
    scan.add_argument("--out", default="scan", help="output folder for scan.md and scan.png")
    scan.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    compare = commands.add_parser("compare", help="NPLM and baseline methods on the same data and null toys")
    compare.add_argument("--data", required=True, help="data events (same formats and columns as the reference)")
    _add_sample_options(compare, choose_backend=False)  # the backends run are those in --methods
    compare.add_argument("--methods", help="comma-separated methods (default: kernel and every baseline that applies): "
                                           + ", ".join(method_names()))
    compare.add_argument("--set", action="append", metavar="METHOD.SETTING=VALUE",
                         help="a method's setting, e.g. mmd.sigma=0.5 or binned.bins=30 (repeatable)")
    compare.add_argument("--n-toys", type=int, default=100, help="null toys per method (default 100)")
    compare.add_argument("--executor", default="local", help="'local' (all cores), 'serial', or a number of processes")
    compare.add_argument("--out", default="compare", help="folder for the stores (resumable) and compare.md")
    compare.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    demo = commands.add_parser("demo", help="run a kernel NPLM test on the built-in 1D benchmark")
    demo.add_argument("--signal", choices=sorted(SIGNALS_1D), default="NP2", help="injected signal (default NP2)")
    demo.add_argument("--toys", type=int, default=100, help="number of null toys (default 100)")
    demo.add_argument("--n-reference", type=int, default=200_000, help="reference sample size N_R (default 200000)")
    demo.add_argument("--n-centers", type=int, default=500, help="Nystrom centres M (default 500)")
    demo.add_argument("--penalty", type=float, default=1e-6, help="lambda (default 1e-6)")
    demo.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    demo.add_argument("--executor", default="serial", help="'serial' (default), 'local' (all cores) or a number")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _command_demo(arguments: argparse.Namespace) -> str:
    if arguments.toys < 2:
        raise ConfigurationError("--toys must be at least 2")
    return run_demo(signal=arguments.signal, n_toys=arguments.toys, n_reference=arguments.n_reference,
                    n_centers=arguments.n_centers, penalty=arguments.penalty, seed=arguments.seed,
                    progress=not arguments.no_progress, executor=executor_from_setting(arguments.executor))


def _numbers(text: str, kind: type) -> list:
    return [kind(value) for value in text.split(",") if value.strip()]


def _command_scan(arguments: argparse.Namespace) -> str:
    from ..inference.selection import scan_hyperparameters
    from .plots import plot_scan

    options = _backend_options(arguments)
    gridded = [f"--{name.replace('_', '-')}" for name in ("sigma", "n_centers", "penalty", "penalty_list")
               if name in options]
    if gridded:
        raise ConfigurationError(f"{', '.join(gridded)}: the scan sets sigma, M and lambda from its grids; give them "
                                 "with --sigma-quantiles, --n-centers-grid and --penalties.")
    x_ref, w_ref, toys = _reference(arguments)
    if toys is None:
        raise ConfigurationError("the scan's null toys need a held-out pool: --pool FILE or --pool-fraction F.")
    result = scan_hyperparameters(
        x_ref, w_ref, toys, sigma_quantiles=_numbers(arguments.sigma_quantiles, float),
        n_centers=_numbers(arguments.n_centers_grid, int), penalties=_numbers(arguments.penalties, float),
        n_toys=arguments.n_toys, n_probe_toys=arguments.n_probe_toys, probe_events=arguments.probe_events,
        seed=arguments.seed, executor=executor_from_setting(arguments.executor), progress=not arguments.no_progress,
        estimator=_build_backend(arguments, "kernel", options, progress=False),
    )
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scan.md").write_text(result.table() + "\n")
    plot_scan(result, out / "scan.png")
    return result.table() + f"\n\nwritten: {out / 'scan.md'}, {out / 'scan.png'}"


def _command_store(arguments: argparse.Namespace) -> str:
    if not Path(arguments.store).is_file():
        raise InputError(f"{arguments.store}: toy store not found.")
    if arguments.action == "check":
        return check_store(arguments.store).summary()
    report, side = repair_store(arguments.store)
    if side is None:
        return report.summary() + "\nnothing to repair."
    return report.summary() + f"\nrepaired: bad lines moved to {side} (with their line numbers); the store keeps the rest."


def _command_run(arguments: argparse.Namespace) -> str:
    result = run_analysis(arguments.config, progress=not arguments.no_progress)
    fit = result["null_chi2_fit"]
    return "\n".join([f"t = {np.round(result['t'], 4)}, p-value = {result['p_value']:.4g} ({result['method']}), "
                      f"Z = {result['z']:.3f}, {result['n_toys']} null toys",
                      f"null chi2 fit: {_chi2_text(None if fit is None else Chi2Fit(**fit))}"])


logger = logging.getLogger(__name__)

COMMANDS = {"compare": _command_compare, "scan": _command_scan, "run": _command_run, "test": _command_test,
            "toys": _command_toys, "calibrate": _command_calibrate, "store": _command_store, "demo": _command_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `nplm`; errors of the package print as one line and exit with status 2."""
    arguments = build_parser().parse_args(argv)
    level = arguments.log_level or ("DEBUG" if arguments.verbose > 1 else "INFO" if arguments.verbose else "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        print(COMMANDS[arguments.command](arguments))
    except (NPLMError, ValueError) as error:
        logger.debug("nplm %s failed", arguments.command, exc_info=True)
        print(f"nplm {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
