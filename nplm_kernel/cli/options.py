"""Command-line options shared by the `nplm` commands, each declared once: the data, the samples and
the reference (files, columns, normalisation, negative weights, the null toys and their held-out
pool), the backend and one option per setting of the registered backends (from their constructor
signatures and docstrings), the executor and --no-progress."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from ..contract import Backend, Setting, backend_entry, backend_names, build_backend, role_setting
from ..core.exceptions import ConfigurationError, brief
from ..core.weights import NEGATIVE_WEIGHT_TREATMENTS
from ..toys import DEFAULT_EXECUTOR, EXECUTOR_SETTINGS, NULL_TOYS, PermutationToys, ReferencePoolToys, WeightedPoolToys

if TYPE_CHECKING:
    from ..inference import NPLMTest

#: Namespace prefix of the generated backend options.
BACKEND_OPTION = "backend_option_"
#: The title of their group in a command's help.
BACKEND_SETTINGS_TITLE = "backend settings (each backend's own defaults unless given)"


def columns(text: str | None) -> list[str] | None:
    """Comma-separated items; a comma inside brackets or braces belongs to its item ('Muon_pt[:, 0]',
    a label '$p_{T,1}$')."""
    if text is None:
        return None
    items, depth, current = [], 0, ""
    for character in text + ",":
        if character == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        depth += (character in "([{") - (character in ")]}")
        current += character
    return [item for item in items if item]


def numbers(text: str, kind: type) -> list:
    """Comma-separated numbers of type `kind`."""
    return [kind(value) for value in text.split(",") if value.strip()]


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_plot_options(parser: argparse.ArgumentParser, units: bool = True) -> None:
    """How figures label the inputs (per variable: axis label and unit) and the experiment."""
    group = parser.add_argument_group("figures")
    if units:
        group.add_argument("--labels", help="comma-separated axis labels of the input variables (default: the column "
                                            "names; matplotlib mathtext works, e.g. '$m_{\\mu\\mu}$')")
        group.add_argument("--units", help="comma-separated units of the input variables, e.g. GeV,GeV,rad "
                                           "(default: none)")
    group.add_argument("--experiment-label", help="text at the top left of each figure, e.g. 'CMS Simulation' (its "
                                                  "first word in bold; default: none)")


def add_executor_option(parser: argparse.ArgumentParser) -> None:
    choices = "; ".join(f"'{name}': {meaning}" for name, meaning in EXECUTOR_SETTINGS.items())
    parser.add_argument("--executor", default=DEFAULT_EXECUTOR,
                        help=f"where toys run: {choices}; or a number of processes (default {DEFAULT_EXECUTOR!r})")


def add_data_option(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--data: the observed events (needed by the command, or only by --null-toys permutation)."""
    parser.add_argument("--data", required=required,
                        help="data events (same formats and columns as the reference)" +
                        ("" if required else "; --null-toys permutation permutes them with the reference"))


def add_sample_options(parser: argparse.ArgumentParser, choose_backend: bool = True) -> None:
    """The reference's file, columns, normalisation, negative weights, null toys and held-out pool,
    the backend options and --seed."""
    parser.add_argument("--reference", required=True, help="reference events (.npy .npz .h5 .parquet .root)")
    parser.add_argument("--columns", help="comma-separated input variables (columns, branches, datasets)")
    parser.add_argument("--key", help="array in .npz, dataset or group in HDF5, tree in ROOT")
    parser.add_argument("--selection", help="ROOT TTrees: an uproot cut, e.g. 'nMuon >= 2' (columns may be "
                                            "expressions such as 'Muon_pt[:, 0]')")
    parser.add_argument("--weight-column", help="per-event reference weights (sum = N(R)) from this column "
                                                "(and from the same column of a --pool file)")
    parser.add_argument("--expected-yield", type=float, help="N(R): every reference event weighs N(R) / N_R")
    parser.add_argument("--negative-weights", choices=NEGATIVE_WEIGHT_TREATMENTS, default="refuse",
                        help="reference events with negative (NLO) weights: 'refuse' them (default) or 'resample' "
                             "them by cell resampling, which keeps the weighted distribution and the sum of weights")
    parser.add_argument("--null-toys", choices=list(NULL_TOYS), default="pool",
                        help="; ".join(f"'{name}': {meaning}" for name, meaning in NULL_TOYS.items()) +
                        " (default 'pool')")
    pool = parser.add_mutually_exclusive_group()
    pool.add_argument("--pool", help="held-out reference events for null toys")
    pool.add_argument("--pool-fraction", type=float, help="hold out this fraction of the reference for null toys")
    add_backend_options(parser, choose_backend)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fit, the pool split and the toys")


def add_backend_options(parser: argparse.ArgumentParser, choose_backend: bool = True) -> None:
    """--backend (where the command fits one backend) and one option per setting of the registered
    backends (contract.settings_of); unset options keep the backend's defaults."""
    if choose_backend:
        parser.add_argument("--backend", choices=backend_names(), default="kernel",
                            help="the model of f (default kernel)")
    owners: dict[str, list[str]] = {}
    helps: dict[str, Setting] = {}
    for name in backend_names():
        entry = backend_entry(name)
        seed = role_setting(entry.estimator, "seed")
        for setting in entry.settings():
            if setting.configurable and setting.name != seed:
                owners.setdefault(setting.name, []).append(name)
                helps.setdefault(setting.name, setting)
    group = parser.add_argument_group(BACKEND_SETTINGS_TITLE)
    for option, setting in helps.items():
        text = setting.help.replace("%", "%%")
        group.add_argument(f"--{option.replace('_', '-')}", dest=BACKEND_OPTION + option, metavar="VALUE",
                           help=f"[{', '.join(owners[option])}] {text} (default: {setting.default!r})")


def reference_from_arguments(
    arguments: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, ReferencePoolToys | WeightedPoolToys | PermutationToys | None]:
    """(x_ref, w_ref, null toys or None) from the reference options: pool toys when a pool is held
    out, permutation toys with --null-toys permutation (of --data); the pool is checked against
    --n-toys where the command has it."""
    from ..app.analysis import load_data, load_reference
    from ..app.config import ReferenceInput

    if (arguments.expected_yield is None) == (arguments.weight_column is None):
        given = "both --expected-yield and --weight-column were given" if arguments.expected_yield is not None else \
            "neither was given"
        raise ConfigurationError(f"give exactly one reference normalisation, --expected-yield N(R) (every event weighs "
                                 f"N(R) / N_R) or --weight-column (per-event weights summing to N(R)); {given}.")
    permutation = arguments.null_toys == "permutation"
    if permutation and (arguments.pool is not None or arguments.pool_fraction is not None):
        raise ConfigurationError("--null-toys permutation permutes the data with the whole reference; --pool and "
                                 "--pool-fraction hold out a pool for --null-toys pool: give one or the other.")
    data = getattr(arguments, "data", None)
    if permutation and data is None:
        raise ConfigurationError("--null-toys permutation permutes the data with the reference: " + (
            "give the data with --data." if hasattr(arguments, "data") else
            "this command takes no --data; use --null-toys pool."))
    reference = ReferenceInput(path=arguments.reference, expected_yield=arguments.expected_yield,
                               weight_column=arguments.weight_column)
    x_ref, w_ref, toys = load_reference(
        reference, columns(arguments.columns), arguments.key, pool=arguments.pool,
        pool_fraction=arguments.pool_fraction, seed=arguments.seed, selection=arguments.selection,
        negative_weights=arguments.negative_weights, n_toys=getattr(arguments, "n_toys", None))
    if permutation:
        x_data = load_data(data, columns(arguments.columns), arguments.key, selection=arguments.selection)
        return x_ref, w_ref, PermutationToys.from_reference(x_data, x_ref, w_ref)
    return x_ref, w_ref, toys


def backend_options(arguments: argparse.Namespace) -> dict[str, str]:
    """The backend options given on the command line, {setting: text}."""
    return {name.removeprefix(BACKEND_OPTION): value for name, value in vars(arguments).items()
            if name.startswith(BACKEND_OPTION) and value is not None}


def parse_setting(setting: Setting, text: str) -> Any:
    """A command-line string for `setting`, as the value its settings model validates: 'none'
    for None, comma-separated items for a list or tuple, the string itself otherwise (pydantic
    converts numbers and booleans)."""
    if text.strip().lower() in ("none", "null") and setting.default is None:
        return None
    if any(token in str(setting.annotation) for token in ("list[", "tuple[")):
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def backend_from_options(name: str, options: dict[str, str]) -> Backend:
    """The backend `name` built from command-line strings {setting: text}; ConfigurationError names
    an option that belongs to another backend or whose value is invalid."""
    entry = backend_entry(name)
    settings = {setting.name: setting for setting in entry.settings() if setting.configurable}
    values: dict[str, Any] = {}
    for option, text in options.items():
        if option not in settings:
            owners = [other for other in backend_names()
                      if option in {setting.name for setting in backend_entry(other).settings()}]
            raise ConfigurationError(f"--{option.replace('_', '-')} is a setting of backend(s) {', '.join(owners)}, "
                                     f"not of {name!r}.")
        values[option] = parse_setting(settings[option], text)
    try:
        section = entry.settings_model().model_validate({"kind": name, **values})
    except ValidationError as error:
        problem = error.errors()[0]
        option = "--" + str(problem["loc"][0]).replace("_", "-") if problem["loc"] else "a backend option"
        raise ConfigurationError(f"{option}: {problem['msg']} (got {brief(options.get(str(problem['loc'][0])))}).") from None
    return build_backend(section)


def build_named_backend(arguments: argparse.Namespace, name: str, options: dict[str, str], progress: bool) -> Backend:
    """Backend `name` from command-line options (the others keep the backend's own defaults);
    --seed also seeds it, and `progress` shows its fit's progress unless an option says."""
    entry = backend_entry(name)
    options = dict(options)
    for role, value in (("seed", arguments.seed), ("progress", progress)):
        setting = role_setting(entry.estimator, role)
        if setting is not None:
            options.setdefault(setting, str(value))
    return backend_from_options(name, options)


def chosen_backend(arguments: argparse.Namespace) -> Backend:
    """The backend `--backend` names, built from the backend options given."""
    return build_named_backend(arguments, arguments.backend, backend_options(arguments),
                               progress=not getattr(arguments, "no_progress", False))


def add_width_option(parser: argparse.ArgumentParser) -> None:
    """--width-quantiles and --no-excess-scan: the default test's members (NPLMTest's width_quantiles
    and excess_scan)."""
    from ..inference import DEFAULT_WIDTH_QUANTILES

    default = ",".join(f"{quantile:g}" for quantile in DEFAULT_WIDTH_QUANTILES)
    parser.add_argument("--width-quantiles", default=default,
                        help="without --sigma: one fit per kernel width at these comma-separated quantiles of "
                             "pairwise reference distances, calibrated together with the excess scan by min-p "
                             f"(default {default}); 'none': one fit with the backend's default width, no scan")
    parser.add_argument("--no-excess-scan", action="store_true",
                        help="leave the scan for a local excess out of the test (by default it is a member of the "
                             "min-p whenever the widths are found with --width-quantiles)")


def chosen_test(arguments: argparse.Namespace) -> NPLMTest:
    """The NPLMTest of `--backend` and its options, with the widths of --width-quantiles and the scan
    unless --no-excess-scan."""
    from ..inference import NPLMTest

    text = arguments.width_quantiles.strip().lower()
    quantiles = None if text == "none" else numbers(text, float)
    return NPLMTest(chosen_backend(arguments), width_quantiles=quantiles, excess_scan=not arguments.no_excess_scan)
