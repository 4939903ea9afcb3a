"""Several methods on the same data, reference and null toys, calibrated the same way.

A method is a registered NPLM backend ('kernel', 'nn') or a baseline (baselines.BASELINES). For
each, compare_methods runs the test on the observed data and a null campaign (run_toys: the same
toy seeds for every method, so every method sees exactly the same toys; one store per method,
resumable), then calibrates the observed t on that method's own null (calibration.significance).
A baseline's statistic has no chi2 null, so beyond its last null toy its p-value is the
Clopper-Pearson upper bound, never a chi2 extrapolation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from ..contract import backend_entry, backend_names
from ..core.exceptions import ConfigurationError, InputError
from ..core.samples import as_events, as_weights
from ..inference import NPLMTest, Significance, significance
from ..kernel.excess_scan import excess_location
from ..toys import DEFAULT_BATCH_SIZE, DEFAULT_EXECUTOR, ToyGenerator, run_toys
from .base import BaselineTest
from .statistics import BASELINES, BumpHunt

#: Methods compare_methods runs when none are named: the kernel backend and every baseline that
#: applies to the samples. The NN backend is run only when named: its default training (10^5
#: epochs) costs minutes per toy.
DEFAULT_BACKENDS = ("kernel",)
#: pyBumpHunter pseudo-experiments for its own look-elsewhere-corrected significance of the observed
#: data, when the bumphunter settings ask for none (its null toys never need them: same t).
BUMPHUNTER_PSEUDO_EXPERIMENTS = 1000


def method_names() -> list[str]:
    """Every method name: the registered backends, then the baselines."""
    return backend_names() + list(BASELINES)


def build_method(name: str, settings: Mapping[str, Any] | None = None) -> NPLMTest | BaselineTest:
    """The test of method `name` with its constructor `settings` (the others keep their defaults)."""
    settings = dict(settings or {})
    if name in backend_names():
        return NPLMTest(backend_entry(name).estimator(**settings))
    if name in BASELINES:
        return BaselineTest(BASELINES[name](**settings))
    raise ConfigurationError(f"unknown method {name!r}; known: {', '.join(method_names())}.")


def method_applicability(name: str, n_features: int, w_ref: np.ndarray) -> str | None:
    """Why method `name` cannot run on samples with `n_features` variables and reference weights
    w_ref (one per event), or None when it can."""
    statistic = BASELINES.get(name)
    return None if statistic is None else statistic.refusal(n_features, w_ref)


@dataclass(frozen=True)
class MethodOutcome:
    """One method's observed t, its calibration on the method's own null toys, the null's size,
    the mean wall time of one null toy in one process (seconds) and notes (extrapolations, bounds,
    failed or unconverged toys, the method's own look-elsewhere-corrected significance)."""

    method: str
    t: float | tuple[float, ...]
    significance: Significance
    n_null: int
    n_failed: int
    seconds_per_toy: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodComparison:
    """The outcomes, in the order asked, and the methods skipped with the reason."""

    outcomes: tuple[MethodOutcome, ...]
    skipped: dict[str, str]

    def table(self) -> str:
        """Markdown table: method | t | p-value [68% Clopper-Pearson] | Z | null toys | s/toy | notes."""
        lines = ["| method | t | p-value [68% CP interval] | Z | null toys | s / toy | notes |",
                 "|---|---|---|---|---|---|---|"]
        for outcome in self.outcomes:
            result = outcome.significance
            p_text = f"{'<= ' if result.is_bound else ''}{result.p_value:.3g} [{result.p_low:.2g}, {result.p_high:.2g}]"
            z_text = f"{'>= ' if result.is_bound else ''}{result.z:.2f}"
            t_text = (", ".join(f"{value:.4g}" for value in outcome.t) if isinstance(outcome.t, tuple)
                      else f"{outcome.t:.4g}")
            lines.append(f"| {outcome.method} | {t_text} | {p_text} | {z_text} | {outcome.n_null} | "
                         f"{outcome.seconds_per_toy:.3g} | {'; '.join(outcome.notes)} |")
        lines += [f"| {name} | - | - | - | - | - | skipped: it {reason} |" for name, reason in self.skipped.items()]
        return "\n".join(lines)


def _notes(result: Significance, campaign: Any, observed: Any, extrapolates: bool) -> tuple[str, ...]:
    notes = []
    if result.is_extrapolated:
        notes.append("p from the fitted chi2 tail (t beyond every null toy)")
    if result.is_bound:
        notes.append("t beyond every null toy: p is an upper bound" + ("" if extrapolates else
                                                                        " (no chi2 tail for this statistic)"))
    if campaign.n_failed:
        notes.append(f"{campaign.n_failed} null toys failed")
    if campaign.n_unconverged:
        notes.append(f"{campaign.n_unconverged} null fits unconverged")
    if getattr(observed, "converged", True) is False:
        notes.append("observed fit unconverged")
    details = getattr(observed, "details", {}) or {}
    if "bump_range_" in details:
        notes.append(f"bump [{details['bump_range_'][0]:.4g}, {details['bump_range_'][1]:.4g}]")
    if "excess_center_" in details:
        notes.append(f"largest excess at {excess_location(details['excess_center_'], details['log_ratio_'])}, "
                     f"kernel width {details['excess_width_']:.3g} (standardised)")
    if "global_significance_" in details:
        notes.append(f"pyBumpHunter's own global Z = {details['global_significance_']:.2f} "
                     f"(p = {details['global_p_value_']:.3g}, look-elsewhere corrected on its pseudo-experiments)")
    return tuple(notes)


def _observed(test: NPLMTest | BaselineTest, x_data: np.ndarray, x_ref: np.ndarray, w_ref: np.ndarray) -> Any:
    """The test on the observed data; a bump hunt without pseudo-experiments gets
    BUMPHUNTER_PSEUDO_EXPERIMENTS of them here (same t), for its own global significance."""
    if isinstance(test, BaselineTest) and isinstance(test.backend, BumpHunt) and not test.backend.pseudo_experiments:
        test = BaselineTest(clone(test.backend).set_params(pseudo_experiments=BUMPHUNTER_PSEUDO_EXPERIMENTS))
    return test.run(x_data, x_ref, w_ref)


def compare_methods(
    x_data: np.ndarray,
    x_ref: np.ndarray,
    w_ref: float | np.ndarray,
    null_toys: ToyGenerator,
    methods: Sequence[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    n_toys: int = 200,
    seed: int = 0,
    executor: Any = DEFAULT_EXECUTOR,
    store_dir: str | os.PathLike | None = None,
    progress: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> MethodComparison:
    """Run each method on (x_data, x_ref, w_ref) and on `n_toys` null toys drawn by
    `null_toys(rng)` (toy i seeded by SeedSequence(seed, spawn_key=(i,)), the same for every
    method), and calibrate each observed t on its own null.

    methods: names from method_names(); None: 'kernel' and every baseline that applies (one
    dimension, unweighted reference), the others listed as skipped. A method named explicitly
    that cannot run on the samples is an error. settings: constructor settings per method name.
    store_dir: one resumable store per method (<method>.jsonl); None keeps rows in memory."""
    events = as_events(x_ref, "x_ref")
    weights = as_weights(w_ref, len(events))
    settings = dict(settings or {})
    unknown = [name for name in list(methods or []) + list(settings) if name not in method_names()]
    if unknown:
        raise ConfigurationError(f"unknown method(s) {', '.join(map(repr, unknown))}; known: {', '.join(method_names())}.")
    skipped: dict[str, str] = {}
    if methods is None:
        chosen = [*DEFAULT_BACKENDS, *BASELINES]
        for name in chosen:
            reason = method_applicability(name, events.shape[1], weights)
            if reason:
                skipped[name] = reason
        chosen = [name for name in chosen if name not in skipped]
    else:
        chosen = list(dict.fromkeys(methods))
        if not chosen:
            raise ConfigurationError("methods is empty: name at least one method.")
        for name in chosen:
            reason = method_applicability(name, events.shape[1], weights)
            if reason:
                raise InputError(f"method {name!r} {reason}.")
    if store_dir is not None:
        Path(store_dir).mkdir(parents=True, exist_ok=True)
    outcomes = []
    for name in chosen:
        test = build_method(name, settings.get(name))
        observed = _observed(test, x_data, events, weights)
        campaign = run_toys(test, null_toys, events, weights, n_toys=n_toys, seed=seed, executor=executor,
                            store=None if store_dir is None else Path(store_dir) / f"{name}.jsonl",
                            progress=progress, batch_size=batch_size)
        extrapolates = isinstance(test, NPLMTest)
        result = significance(observed.t, campaign.t, extrapolate=extrapolates,
                              weights=observed.member_weights)
        times = [row["wall_time"] for row in campaign.rows if row.get("wall_time") is not None]
        outcomes.append(MethodOutcome(
            method=name, t=result.t,
            significance=result, n_null=len(campaign.t), n_failed=campaign.n_failed,
            seconds_per_toy=float(np.mean(times)) if times else float("nan"),
            notes=_notes(result, campaign, observed, extrapolates)))
    return MethodComparison(outcomes=tuple(outcomes), skipped=skipped)
