"""`nplm scan` and `nplm compare`: choose the kernel's sigma, M and lambda from null and probe toys
of the reference, and run NPLM and baseline methods on the same data and null toys."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from ..core.exceptions import ConfigurationError
from . import options


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """The options of `nplm scan` or `nplm compare`."""
    {"scan": _scan_arguments, "compare": _compare_arguments}[command](parser)


def _listed(values) -> str:
    return ",".join(f"{value:g}" for value in values)


def _scan_arguments(scan: argparse.ArgumentParser) -> None:
    from ..tuning import DEFAULT_N_CENTERS_GRID, DEFAULT_PENALTIES_GRID, DEFAULT_SIGMA_QUANTILES_GRID

    options.add_sample_options(scan, choose_backend=False)  # the scan's grid is the kernel's; its other settings apply
    scan.add_argument("--sigma-quantiles", default=_listed(DEFAULT_SIGMA_QUANTILES_GRID),
                      help=f"pairwise-distance quantiles (default {_listed(DEFAULT_SIGMA_QUANTILES_GRID)})")
    scan.add_argument("--n-centers-grid", default=_listed(DEFAULT_N_CENTERS_GRID),
                      help=f"M values (default {_listed(DEFAULT_N_CENTERS_GRID)})")
    scan.add_argument("--penalties", default=_listed(DEFAULT_PENALTIES_GRID),
                      help=f"lambda values (default {_listed(DEFAULT_PENALTIES_GRID)})")
    scan.add_argument("--n-toys", type=int, default=20, help="null toys per setting (default 20)")
    scan.add_argument("--n-probe-toys", type=int, default=20,
                      help="toys with a generic local excess per setting, for the expected sensitivity (default 20)")
    scan.add_argument("--probe-events", type=int, help="events of the local excess (default 3%% of N(R))")
    options.add_executor_option(scan)
    scan.add_argument("--out", default="scan", help="output folder for scan.md and scan.png")
    options.add_progress_option(scan)
    scan.set_defaults(run=_scan)


def _compare_arguments(compare: argparse.ArgumentParser) -> None:
    from ..baselines import method_names

    options.add_data_option(compare)
    options.add_sample_options(compare, choose_backend=False)  # the backends run are those in --methods
    compare.add_argument("--methods", help="comma-separated methods (default: kernel and every baseline that applies): "
                                           + ", ".join(method_names()))
    compare.add_argument("--set", action="append", metavar="METHOD.SETTING=VALUE",
                         help="a method's setting, e.g. mmd.sigma=0.5 or binned.bins=30 (repeatable)")
    compare.add_argument("--n-toys", type=int, default=100, help="null toys per method (default 100)")
    options.add_executor_option(compare)
    compare.add_argument("--out", default="compare", help="folder for the stores (resumable) and compare.md")
    options.add_progress_option(compare)
    compare.set_defaults(run=_compare)


def _scan(arguments: argparse.Namespace) -> str:
    from ..app.plots import plot_scan
    from ..tuning import scan_hyperparameters

    given = options.backend_options(arguments)
    gridded = [f"--{name.replace('_', '-')}" for name in ("sigma", "n_centers", "penalty", "penalty_list")
               if name in given]
    if gridded:
        raise ConfigurationError(f"{', '.join(gridded)}: the scan sets sigma, M and lambda from its grids; give them "
                                 "with --sigma-quantiles, --n-centers-grid and --penalties.")
    x_ref, w_ref, toys = options.reference_from_arguments(arguments)
    if toys is None:
        raise ConfigurationError("the scan's null toys need a held-out pool: --pool FILE or --pool-fraction F.")
    result = scan_hyperparameters(
        x_ref, w_ref, toys, sigma_quantiles=options.numbers(arguments.sigma_quantiles, float),
        n_centers=options.numbers(arguments.n_centers_grid, int), penalties=options.numbers(arguments.penalties, float),
        n_toys=arguments.n_toys, n_probe_toys=arguments.n_probe_toys, probe_events=arguments.probe_events,
        seed=arguments.seed, executor=arguments.executor, progress=not arguments.no_progress,
        estimator=options.build_named_backend(arguments, "kernel", given, progress=False),
    )
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scan.md").write_text(result.table() + "\n")
    plot_scan(result, out / "scan.png")
    return result.table() + f"\n\nwritten: {out / 'scan.md'}, {out / 'scan.png'}"


def _method_settings(arguments: argparse.Namespace, methods: list[str]) -> dict[str, dict]:
    """Constructor settings per method: the backend options for the NPLM backends named (each takes
    the options that are its settings), and --set METHOD.SETTING=VALUE (a YAML value) for any method."""
    from ..contract import backend_entry, backend_names

    given = options.backend_options(arguments)
    settings: dict[str, dict] = {}
    for name in methods:
        if name in backend_names():  # no bars inside the campaign's fits
            own = {setting.name for setting in backend_entry(name).settings()}
            backend = options.build_named_backend(arguments, name, {option: text for option, text in given.items()
                                                                    if option in own}, progress=False)
            settings[name] = backend.get_params(deep=False)
    for assignment in arguments.set or []:
        target, equals, text = assignment.partition("=")
        method, dot, setting = target.partition(".")
        if not (equals and dot and method and setting):
            raise ConfigurationError(f"--set takes METHOD.SETTING=VALUE (e.g. mmd.sigma=0.5), got {assignment!r}.")
        settings.setdefault(method, {})[setting] = yaml.safe_load(text)
    return settings


def _compare(arguments: argparse.Namespace) -> str:
    from ..app.analysis import load_data
    from ..baselines import compare_methods

    x_ref, w_ref, toys = options.reference_from_arguments(arguments)
    if toys is None:
        raise ConfigurationError("the null toys need a held-out pool: --pool FILE or --pool-fraction F.")
    x_data = load_data(arguments.data, options.columns(arguments.columns), arguments.key, selection=arguments.selection)
    methods = options.columns(arguments.methods)
    out = Path(arguments.out)
    comparison = compare_methods(
        x_data, x_ref, w_ref, toys, methods=methods, settings=_method_settings(arguments, methods or ["kernel"]),
        n_toys=arguments.n_toys, seed=arguments.seed, executor=arguments.executor,
        store_dir=out, progress=not arguments.no_progress)
    header = (f"{len(x_data)} data events against N_R = {len(x_ref)} (N(R) = {w_ref.sum():.6g}); each method "
              f"calibrated on its own {arguments.n_toys} null toys (the same toys for all), seed {arguments.seed}")
    table = header + "\n\n" + comparison.table()
    (out / "compare.md").write_text(table + "\n")
    return table + f"\n\nwritten: {out / 'compare.md'} and one toy store per method in {out}"
