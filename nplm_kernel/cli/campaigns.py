"""`nplm toys`, `nplm calibrate` and `nplm store`: run or resume a null campaign into a toy store,
calibrate against a store, and check or repair a store."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..core.exceptions import ConfigurationError, InputError
from . import options


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """The options of `nplm toys`, `nplm calibrate` or `nplm store`."""
    {"toys": _toys_arguments, "calibrate": _calibrate_arguments, "store": _store_arguments}[command](parser)


def _toys_arguments(toys: argparse.ArgumentParser) -> None:
    options.add_data_option(toys, required=False)
    options.add_sample_options(toys)
    toys.add_argument("--store", required=True, help="JSON-Lines toy store to append to and resume from (created "
                                                     "when missing; it must hold a null of this same test)")
    toys.add_argument("--n-toys", type=int, required=True,
                      help="toys the store should hold when done (those already in it are not run again)")
    options.add_executor_option(toys)
    options.add_progress_option(toys)
    toys.set_defaults(run=_toys)


def _calibrate_arguments(calibrate: argparse.ArgumentParser) -> None:
    calibrate.add_argument("--store", required=True, help="toy store of the null (from nplm toys or nplm run)")
    calibrate.add_argument("--t-observed", type=float, help="observed t to turn into a p-value and Z")
    calibrate.add_argument("--dof", type=float, help="nominal chi2 dof to draw beside the fit")
    calibrate.add_argument("--plot", help="figure of the null distribution (.png, .pdf, ...)")
    calibrate.add_argument("--log-y", action="store_true", help="log scale for the null's density (its tail)")
    options.add_plot_options(calibrate, units=False)
    calibrate.set_defaults(run=_calibrate)


def _store_arguments(store: argparse.ArgumentParser) -> None:
    store.add_argument("action", choices=["check", "repair"],
                       help="check: report content and damage; repair: move bad lines to <store>.rejected")
    store.add_argument("store", help="the toy store (JSON Lines)")
    store.set_defaults(run=_store)


def _toys(arguments: argparse.Namespace) -> str:
    from ..inference import NPLMTest
    from ..toys import run_toys

    x_ref, w_ref, toys = options.reference_from_arguments(arguments)
    if toys is None:
        raise ConfigurationError("null toys need a held-out pool: --pool FILE or --pool-fraction F (or --null-toys "
                                 "permutation with --data).")
    campaign = run_toys(NPLMTest(options.chosen_backend(arguments)), toys, x_ref, w_ref, n_toys=arguments.n_toys,
                        seed=arguments.seed, executor=arguments.executor, store=arguments.store,
                        progress=not arguments.no_progress)
    return (f"{len(campaign.rows)} toys in {arguments.store} ({campaign.n_failed} failed, "
            f"{campaign.n_unconverged} not converged); median t = {np.median(campaign.t):.3f}\n{toys.summary()}")


def _calibrate(arguments: argparse.Namespace) -> str:
    from ..app.report import null_summary, p_value_lines
    from ..inference.calibration import fit_chi2, significance
    from ..toys import CampaignResult

    campaign = CampaignResult.from_store(arguments.store)
    t_null = campaign.t
    fit = fit_chi2(t_null)
    lines = null_summary(campaign) + [f"mean t:    {t_null.mean():.3f}",
                                      f"chi2 fit:  dof = {fit.dof:.3f}, KS p-value = {fit.ks_p_value:.3f}"]
    calibrated = None if arguments.t_observed is None else significance(arguments.t_observed, t_null)
    if calibrated is not None:
        lines += p_value_lines(calibrated)
    if arguments.plot:
        from ..app.plots import plot_null_distribution

        plot_null_distribution(t_null, arguments.plot, arguments.t_observed, arguments.dof, log_y=arguments.log_y,
                               result=calibrated, experiment_label=arguments.experiment_label)
        lines.append(f"plot:      {arguments.plot}")
    return "\n".join(lines)


def _store(arguments: argparse.Namespace) -> str:
    from ..store import check_store, repair_store

    if not Path(arguments.store).is_file():
        raise InputError(f"{arguments.store}: toy store not found.")
    if arguments.action == "check":
        return check_store(arguments.store).summary()
    report, side = repair_store(arguments.store)
    if side is None:
        return report.summary() + "\nnothing to repair."
    return report.summary() + f"\nrepaired: bad lines moved to {side} (with their line numbers); the store keeps the rest."
