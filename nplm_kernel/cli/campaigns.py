"""`nplm toys`, `nplm calibrate` and `nplm store`: run or resume a null campaign (or one shard of
it) into a toy store, calibrate against one or several stores, and check, repair or merge stores."""

from __future__ import annotations

import argparse

import numpy as np

from ..core.exceptions import ConfigurationError
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
    toys.add_argument("--shard", metavar="K/N", help="run only the K-th of N parts of the campaign (0 <= K < N) into "
                                                     "--store, e.g. --shard $SLURM_ARRAY_TASK_ID/8 in a job array; "
                                                     "`nplm store merge` combines the shards")
    toys.add_argument("--batch-size", type=int, help="toys fitted together where the backend can (default: the "
                                                     "store's, or 64); shards of one campaign need the same")
    toys.add_argument("--retry-failed", action="store_true", help="run the stored failed toys again")
    options.add_width_option(toys)
    options.add_executor_option(toys)
    options.add_progress_option(toys)
    toys.set_defaults(run=_toys)


def _calibrate_arguments(calibrate: argparse.ArgumentParser) -> None:
    calibrate.add_argument("--store", required=True, nargs="+",
                           help="the toy store of the null (from nplm toys or nplm run), or several stores of one "
                                "campaign (its shards; glob patterns allowed)")
    calibrate.add_argument("--t-observed", help="observed t to turn into a p-value and Z (a multi-scale test's: "
                                                "one per width, comma-separated, in the store's order)")
    calibrate.add_argument("--dof", type=float, help="nominal chi2 dof to draw beside the fit")
    calibrate.add_argument("--plot", help="figure of the null distribution (.png, .pdf, ...)")
    calibrate.add_argument("--log-y", action="store_true", help="log scale for the null's density (its tail)")
    options.add_plot_options(calibrate, units=False)
    calibrate.set_defaults(run=_calibrate)


def _store_arguments(store: argparse.ArgumentParser) -> None:
    store.add_argument("action", choices=["check", "repair", "merge"],
                       help="check STORE: report content and damage (exit status 2 when damaged); repair STORE: move "
                            "bad lines to <store>.rejected; merge OUT SHARD...: combine the shards of one campaign "
                            "into the new store OUT, once every toy is there")
    store.add_argument("stores", nargs="+", metavar="STORE", help="the toy store(s) (JSON Lines; glob patterns "
                                                                  "allowed for the shards)")
    store.add_argument("--header-from", metavar="STORE",
                       help="repair: a store of the same campaign whose header replaces a missing or damaged one")
    store.add_argument("--allow-incomplete", action="store_true",
                       help="merge: write what the shards hold even when toys are missing (they are listed)")
    store.set_defaults(run=_store)


def _toys(arguments: argparse.Namespace) -> str:
    from ..toys import run_toys

    x_ref, w_ref, toys = options.reference_from_arguments(arguments)
    if toys is None:
        raise ConfigurationError("null toys need a held-out pool: --pool FILE or --pool-fraction F (or --null-toys "
                                 "permutation with --data).")
    campaign = run_toys(options.chosen_test(arguments), toys, x_ref, w_ref, n_toys=arguments.n_toys,
                        seed=arguments.seed, executor=arguments.executor, store=arguments.store,
                        progress=not arguments.no_progress, batch_size=arguments.batch_size, shard=arguments.shard,
                        retry_failed=arguments.retry_failed)
    part = f" (shard {arguments.shard})" if arguments.shard else ""
    return (f"{len(campaign.rows)} toys in {arguments.store}{part} ({campaign.n_failed} failed, "
            f"{campaign.n_unconverged} not converged); median t = {_medians(campaign.t)}\n{toys.summary()}")


def _medians(t: np.ndarray) -> str:
    """The median t of a null, one per member of a test of several members."""
    return ", ".join(f"{median:.3f}" for median in np.median(t.reshape(len(t), -1), axis=0))


def _calibrate(arguments: argparse.Namespace) -> str:
    from ..app.report import null_summary, p_value_lines, shown_width
    from ..inference.calibration import fit_chi2, significance
    from ..toys import CampaignResult

    campaign = CampaignResult.from_store(arguments.store)
    t_null = campaign.t
    columns = t_null.reshape(len(t_null), -1)  # one per member (kernel widths, the excess scan)
    lines = null_summary(campaign)
    for column in range(columns.shape[1]):
        which = "" if columns.shape[1] == 1 else f"  (member {column + 1} of {columns.shape[1]})"
        non_positive = int((columns[:, column] <= 0).sum())
        if non_positive:  # e.g. the excess scan, whose t has no floor: no chi2 describes its null
            fit_text = f"none ({non_positive} toys with t <= 0: not a chi2 null){which}"
        else:
            fit = fit_chi2(columns[:, column])
            fit_text = f"dof = {fit.dof:.3f}, KS p-value = {fit.ks_p_value:.3f}{which}"
        lines += [f"mean t:    {columns[:, column].mean():.3f}{which}", f"chi2 fit:  {fit_text}"]
    observed = None if arguments.t_observed is None else np.array(options.numbers(arguments.t_observed, float))
    if observed is not None and len(observed) != columns.shape[1]:
        raise ConfigurationError(f"--t-observed: the store holds {columns.shape[1]} t per toy (one per member), got "
                                 f"{len(observed)}: {arguments.t_observed}")
    calibrated = None
    if observed is not None:
        calibrated = (significance(observed[0], t_null) if t_null.ndim == 1 else
                      significance(observed, t_null, weights=campaign.member_weights))
        lines += p_value_lines(calibrated)
    if arguments.plot:
        from ..app.plots import plot_null_distribution

        best = shown_width(calibrated, columns.shape[1], columns.shape[1])
        column = 0 if best is None else best
        plot_null_distribution(columns[:, column], arguments.plot, None if observed is None else observed[column],
                               arguments.dof, log_y=arguments.log_y, result=calibrated,
                               description=None if best is None else f"null toys of member {best + 1} of "
                                                                     f"{columns.shape[1]}",
                               experiment_label=arguments.experiment_label)
        lines.append(f"plot:      {arguments.plot}")
    return "\n".join(lines)


def _store(arguments: argparse.Namespace) -> str:
    from ..store import StoreError, check_store, merge_stores, read_store, repair_store

    if arguments.action == "merge":
        if len(arguments.stores) < 2:
            raise ConfigurationError("nplm store merge OUT SHARD...: give the new store and the shards.")
        return merge_stores(arguments.stores[0], arguments.stores[1:], arguments.allow_incomplete).summary()
    if len(arguments.stores) != 1:
        raise ConfigurationError(f"nplm store {arguments.action} takes one store, got {len(arguments.stores)}.")
    store = arguments.stores[0]
    if arguments.action == "check":
        report = check_store(store)
        if not report.healthy:
            raise StoreError(f"{store} is damaged:\n{report.summary()}")
        return report.summary()
    header = None if arguments.header_from is None else read_store(arguments.header_from).header
    report, side = repair_store(store, header)
    if report.healthy and not report.torn_tail and not report.duplicates:
        return report.summary() + "\nnothing to repair."
    moved = "" if side is None else f"bad lines moved to {side} (with their line numbers); "
    return report.summary() + f"\nrepaired: {moved}the store keeps the rest" + \
        (f", under the header of {arguments.header_from}." if report.header is None else ".")
