"""Toy campaigns: many NPLM tests on toys, resumable, on one core, a process pool or a cluster.

Toy i of a campaign with master seed s uses np.random.SeedSequence(s).spawn(n_toys)[i]: the same
seed gives the same toy and the same t whatever executes it. Every finished toy is appended at once
to a JSON-Lines store (one object per line, flushed and fsync'ed), which pandas
(`read_json(path, lines=True)`) and pyarrow (`pyarrow.json.read_json`) read directly. Re-running
the same campaign on the same store resumes it: toys already stored are skipped, a line torn by a
kill is discarded, so no toy is lost or counted twice. A toy whose fit fails is stored with its
status and does not stop the campaign, unless more than `max_failure_fraction` of toys fail.
Warnings raised during a toy's fit (e.g. non-convergence) are recorded in its row, with the
solver's `converged` flag, instead of being printed once and lost.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .exceptions import ConfigurationError, FitError, InputError, NPLMError
from .hypothesis_test import NPLMTest
from .samples import as_events


@dataclass(frozen=True)
class ToySample:
    """A toy's data with, optionally, its own reference sample (resampling nulls such as
    permutations; None: the campaign's reference) and its auxiliary measurements of the nuisance
    parameters (central_values nu0, one per nuisance; None: the nuisance model's own)."""

    x_data: np.ndarray
    x_ref: np.ndarray | None = None
    w_ref: np.ndarray | None = None
    central_values: np.ndarray | None = None


#: A toy generator: draws one data sample (N_D, d), or a ToySample, from a numpy Generator.
ToyGenerator = Callable[[np.random.Generator], "np.ndarray | ToySample"]

STATUS_OK = "ok"


class PermutationToys:
    """Null toys without a generator (data-quality monitoring): the observed data and reference
    events are pooled, and each toy is a random permutation: N_D of them become the toy data and
    the rest the toy reference, weighted to sum to `expected_yield` = N(R). Valid for unweighted
    samples; the observed t must be computed with the same N(R)."""

    def __init__(self, x_data: np.ndarray, x_ref: np.ndarray, expected_yield: float):
        data = as_events(x_data, "x_data")
        self.pooled = np.concatenate([data, as_events(x_ref, "x_ref", data.shape[1])])
        self.n_data = len(data)
        if not (np.isfinite(expected_yield) and expected_yield > 0):
            raise ConfigurationError(f"expected_yield must be positive and finite, got {expected_yield!r}.")
        self.expected_yield = float(expected_yield)

    def __call__(self, rng: np.random.Generator) -> ToySample:
        order = rng.permutation(len(self.pooled))
        reference = self.pooled[order[self.n_data:]]
        return ToySample(self.pooled[order[: self.n_data]], reference,
                         np.full(len(reference), self.expected_yield / len(reference)))


@dataclass(frozen=True)
class AuxiliaryToys:
    """Wraps a data generator for tests with nuisances: each toy also draws its auxiliary
    measurements nu0 ~ N(truth, sigmas) (the true nuisance values of the generator, e.g. 0 for a
    pool of nominal reference events), returned as a ToySample with central_values."""

    generator: ToyGenerator
    truth: np.ndarray
    sigmas: np.ndarray

    def __call__(self, rng: np.random.Generator) -> ToySample:
        drawn = self.generator(rng)
        sample = drawn if isinstance(drawn, ToySample) else ToySample(drawn)
        return ToySample(sample.x_data, sample.x_ref, sample.w_ref, rng.normal(self.truth, self.sigmas))


class ReferencePoolToys:
    """Null toys from a held-out pool of unweighted reference events (not the reference sample
    itself): each toy has N ~ Poisson(n_expected) events drawn from the pool without replacement."""

    def __init__(self, pool: np.ndarray, n_expected: float):
        self.pool = as_events(pool, "pool")
        if not (np.isfinite(n_expected) and n_expected > 0):
            raise ConfigurationError(f"n_expected must be positive and finite, got {n_expected!r}.")
        self.n_expected = float(n_expected)

    @classmethod
    def split(
        cls, x_ref: np.ndarray, w_ref: np.ndarray, pool_fraction: float, seed: int
    ) -> tuple[ReferencePoolToys, np.ndarray, np.ndarray]:
        """Hold out a random `pool_fraction` of an unweighted reference sample as the toy pool.

        Returns (toys, x_rest, w_rest): toys draw Poisson(N(R)) events from the pool, N(R) = sum
        w_ref; the rest is the reference, its weights rescaled so that they still sum to N(R).
        The split depends only on `seed`, so a test and its toys use the same reference."""
        if not 0.0 < pool_fraction < 1.0:
            raise ConfigurationError(f"pool_fraction must lie in (0, 1), got {pool_fraction!r}.")
        weights = np.asarray(w_ref, dtype=np.float64)
        if np.ptp(weights) > 1e-12 * weights.mean():
            raise InputError("held-out pool toys need an unweighted reference sample (all w_ref equal).")
        in_pool = np.random.default_rng(seed).random(len(x_ref)) < pool_fraction
        rest = weights[~in_pool]
        return cls(x_ref[in_pool], weights.sum()), x_ref[~in_pool], rest * (weights.sum() / rest.sum())

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        n_events = rng.poisson(self.n_expected)
        if n_events > len(self.pool):
            raise InputError(
                f"the held-out pool has {len(self.pool)} events but a toy needs {n_events}; the pool must hold "
                f"well above n_expected = {self.n_expected:g} events."
            )
        return self.pool[rng.choice(len(self.pool), size=n_events, replace=False)]


@dataclass(frozen=True)
class ToyTask:
    """Everything a worker needs for its toys: the test, the generator and the fixed reference."""

    test: NPLMTest
    generator: ToyGenerator
    x_ref: np.ndarray | None
    w_ref: float | np.ndarray | None
    seed: int


def toy_seed(seed: int, toy_index: int) -> np.random.SeedSequence:
    """The SeedSequence of toy `toy_index`: entropy `seed`, spawn key (toy_index,)."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(toy_index,))


def run_one_toy(task: ToyTask, toy_index: int) -> dict[str, Any]:
    """Draw toy `toy_index`, run the test on it and return its store row (a failure is a row too)."""
    start = time.perf_counter()
    row: dict[str, Any] = {"toy": toy_index, "seed": task.seed, "spawn_key": [toy_index]}
    try:
        drawn = task.generator(np.random.default_rng(toy_seed(task.seed, toy_index)))
        if not isinstance(drawn, ToySample):
            drawn = ToySample(drawn)
        x_ref, w_ref = (task.x_ref, task.w_ref) if drawn.x_ref is None else (drawn.x_ref, drawn.w_ref)
        if x_ref is None:
            raise InputError("the generator returned data only but run_toys got no reference (x_ref=None).")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = task.test.run(drawn.x_data, x_ref, w_ref, central_values=drawn.central_values)
        diagnostics = getattr(result.estimator, "diagnostics_", None)
        row.update(status=STATUS_OK, t=result.t, tau=result.tau, delta=result.delta,
                   nu_hat_tau=result.nu_hat_tau.tolist(), nu_hat_delta=result.nu_hat_delta.tolist(),
                   central_values=None if drawn.central_values is None else np.asarray(drawn.central_values).tolist(),
                   nuisance_iterations=result.nuisance_iterations, n_data=int(len(drawn.x_data)),
                   converged=bool(getattr(diagnostics, "converged", True)) and result.nuisance_converged,
                   warnings=[f"{type(w.message).__name__}: {w.message}" for w in caught],
                   backend=result.backend, hyperparameters=result.hyperparameters)
    except (NPLMError, ArithmeticError, RuntimeError) as error:
        row.update(status=f"failed: {type(error).__name__}: {error}", t=None, tau=None, delta=None,
                   traceback=traceback.format_exc(limit=3))
    row["wall_time"] = time.perf_counter() - start
    return row


_WORKER_TASK: ToyTask | None = None


def _initialise_worker(task: ToyTask) -> None:
    """Process-pool initialiser: keep the task (reference included) once per worker, one torch thread."""
    import torch

    global _WORKER_TASK
    _WORKER_TASK = task
    torch.set_num_threads(1)


def _run_in_worker(toy_index: int) -> dict[str, Any]:
    return run_one_toy(_WORKER_TASK, toy_index)


class ToyStore:
    """Append-only JSON-Lines file of toy rows; `completed()` reads it back for resuming."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def rows(self) -> list[dict[str, Any]]:
        """Complete rows in file order (a torn last line, from a kill mid-write, is ignored)."""
        if not self.path.exists():
            return []
        rows = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.endswith("\n"):
                    rows.append(json.loads(line))
        return rows

    def repair(self) -> None:
        """Cut a torn last line so that appended rows start on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and force it to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


@dataclass(frozen=True)
class CampaignResult:
    """All rows of a campaign (stored and new), ordered by toy index; `t` holds the successful toys."""

    rows: tuple[dict[str, Any], ...]

    @property
    def t(self) -> np.ndarray:
        return np.array([row["t"] for row in self.rows if row["status"] == STATUS_OK])

    @property
    def n_failed(self) -> int:
        return sum(row["status"] != STATUS_OK for row in self.rows)


def executor_from_setting(setting: str | int) -> str | int | None:
    """The run_toys executor for a CLI/config setting: 'serial' -> None, 'local', or a process count."""
    if setting == "serial":
        return None
    if setting == "local":
        return "local"
    if isinstance(setting, int) or (isinstance(setting, str) and setting.isdigit()):
        return int(setting)
    raise ConfigurationError(f"executor must be 'serial', 'local' or a number of processes, got {setting!r}.")


def _executor_for(executor: str | int | Executor | Any | None, task: ToyTask) -> tuple[Executor | None, bool, Any]:
    """(executor, owned, task reference). None: serial. 'local' or an int: a spawned process pool
    that receives the task once per worker. A dask Client: its executor, the task scattered once
    to every worker. Any other Executor: the task travels with each toy."""
    if executor is None:
        return None, False, task
    try:
        pickle.dumps(task)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ConfigurationError(
            "toys run in other processes, so the test and the generator must be picklable (a module-level "
            f"function, a bound method or functools.partial, not a lambda or local function): {error}"
        ) from None
    if hasattr(executor, "scatter") and hasattr(executor, "get_executor"):
        return executor.get_executor(), False, executor.scatter(task, broadcast=True)
    if isinstance(executor, Executor):
        return executor, False, task
    if executor == "local":
        executor = os.cpu_count() or 1
    if isinstance(executor, (int, np.integer)) and not isinstance(executor, bool) and executor >= 1:
        pool = ProcessPoolExecutor(int(executor), mp_context=get_context("spawn"),
                                   initializer=_initialise_worker, initargs=(task,))
        return pool, True, task
    raise ConfigurationError(
        f"executor must be None (serial), 'local' (all cores), a number of processes, a dask Client or a "
        f"concurrent.futures.Executor, got {executor!r}."
    )


def _results(executor: Executor | None, owned: bool, task: ToyTask, task_reference: Any,
             pending: list[int]) -> Iterator[dict[str, Any]]:
    if executor is None:
        for index in pending:
            yield run_one_toy(task, index)
        return
    futures: list[Future] = [
        executor.submit(_run_in_worker, index) if owned else executor.submit(run_one_toy, task_reference, index)
        for index in pending
    ]
    for future in as_completed(futures):
        yield future.result()


def run_toys(
    test: NPLMTest,
    generator: ToyGenerator,
    x_ref: np.ndarray | None,
    w_ref: float | np.ndarray | None,
    n_toys: int,
    seed: int = 0,
    executor: str | int | Executor | Any | None = "local",
    store: str | os.PathLike | None = None,
    progress: bool = True,
    max_failure_fraction: float = 0.1,
) -> CampaignResult:
    """Run (or resume) a campaign of `n_toys` toys: data from `generator(rng)` against the fixed
    reference (x_ref, w_ref), or, when the generator returns ToySample (PermutationToys), against
    the toy's own reference (x_ref and w_ref may then be None).

    executor: None runs serially here; 'local' (default) a process pool over all cores; an int
    that many processes; a dask.distributed Client (the test, generator and reference are
    scattered to the workers once; dask-jobqueue HTCondor/SLURM clusters work unchanged); or any
    concurrent.futures.Executor (the task is then pickled with each toy).
    store: the JSON-Lines file to append to and resume from (None keeps rows in memory only).
    Raises FitError once more than max_failure_fraction of the toys have failed."""
    if not (isinstance(n_toys, (int, np.integer)) and n_toys >= 1):
        raise ConfigurationError(f"n_toys must be a positive integer, got {n_toys!r}.")
    toy_store = ToyStore(store) if store is not None else None
    stored = toy_store.rows() if toy_store else []
    foreign = {row["seed"] for row in stored} - {seed}
    if foreign:
        raise ConfigurationError(
            f"the store {store} holds toys of campaign seed(s) {sorted(foreign)}, not {seed}; use another store."
        )
    done = {row["toy"]: row for row in stored if row["toy"] < n_toys}
    if toy_store:
        toy_store.repair()
    pending = [index for index in range(n_toys) if index not in done]
    task = ToyTask(test=test, generator=generator, x_ref=x_ref, w_ref=w_ref, seed=seed)
    pool, owned, task_reference = _executor_for(executor if pending else None, task)
    failures = sum(row["status"] != STATUS_OK for row in done.values())
    bar = tqdm(total=n_toys, initial=len(done), desc="toys", unit="toy", disable=not progress, file=sys.stderr)
    try:
        for row in _results(pool, owned, task, task_reference, pending):
            done[row["toy"]] = row
            if toy_store:
                toy_store.append(row)
            failures += row["status"] != STATUS_OK
            bar.update(1)
            if failures > max_failure_fraction * n_toys:
                raise FitError(f"{failures} of {n_toys} toys failed (more than {max_failure_fraction:.0%}); "
                               f"last: {row['status']}")
    finally:
        bar.close()
        if owned:
            pool.shutdown(cancel_futures=True)
    return CampaignResult(rows=tuple(done[index] for index in sorted(done)))
