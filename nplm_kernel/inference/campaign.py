"""Toy campaigns: many NPLM tests on toys, resumable, on one core, a process pool or a cluster.

Toy i of a campaign with master seed s uses SeedSequence(s, spawn_key=(i,)): the same seed gives the
same toy and the same t whatever executes it. Rows go to a toy store (store.py) that records what
the campaign is a null of (test, generator, reference, seed), is written by one campaign at a time,
and is resumed only by the same campaign: toys already stored are skipped, so no toy is lost or
counted twice. Any exception raised while drawing or fitting a toy becomes a failed row (type,
message, short traceback); a worker process that dies is replaced and its toy retried alone, then
recorded as failed ("worker died"). The campaign goes on until more than `max_failure_fraction` of
the toys have failed. Warnings raised during a toy's fit (e.g. non-convergence) are recorded in its
row with the fit's `converged` flag instead of being printed once and lost. Pool workers exit when
their parent process dies, so a killed campaign leaves no orphans.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backends import resolve_device
from ..exceptions import ConfigurationError, FitError, InputError
from ..identity import describe
from ..samples import as_events, check_positive_integer
from ..version import MAJOR
from .hypothesis_test import NPLMTest
from .store import STATUS_OK, StoreContent, StoreWriter, read_store, t_values, verify_identity

logger = logging.getLogger(__name__)

#: A worker that dies while running a toy alone is replaced and the toy retried this many times
#: in all before it is recorded as failed.
WORKER_DEATH_ATTEMPTS = 2
#: Toys handed to an executor at a time, per worker (bounded memory and a small blast radius when
#: a worker dies).
IN_FLIGHT_PER_WORKER = 2
#: Toys in flight on an executor that is not ours (dask, ...), whose size we do not know.
EXTERNAL_IN_FLIGHT = 1024
#: Seconds between a pool worker's checks that its parent is still alive.
PARENT_CHECK_SECONDS = 0.5
#: Toys a worker fits together by default: the fastest size in benchmarks/toy_throughput.py (1D
#: benchmark, 2 processes: 64 before 16 and 256).
DEFAULT_BATCH_SIZE = 64


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


class LocalExcessToys:
    """Generic anomaly toys for model selection: each toy is a null toy from `generator` plus
    `n_events` events drawn without replacement from the `n_neighbours` reference events nearest
    (in standardised units) to a reference event chosen at random. The excess has the reference's
    own local shape at a random place, so a setting's sensitivity to it measures how well the test
    sees localised departures anywhere, without assuming a signal model."""

    def __init__(self, generator: ToyGenerator, x_ref: np.ndarray, n_events: int, n_neighbours: int):
        self.generator = generator
        self.x_ref = as_events(x_ref, "x_ref")
        if not 1 <= n_events <= n_neighbours <= len(self.x_ref):
            raise ConfigurationError(f"need 1 <= n_events ({n_events}) <= n_neighbours ({n_neighbours}) <= N_R "
                                     f"({len(self.x_ref)}).")
        self.n_events, self.n_neighbours = int(n_events), int(n_neighbours)
        self.scale = np.where(self.x_ref.std(axis=0) > 0, self.x_ref.std(axis=0), 1.0)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        background = self.generator(rng)
        anchor = self.x_ref[rng.integers(len(self.x_ref))]
        distances = np.sum(((self.x_ref - anchor) / self.scale) ** 2, axis=1)
        nearest = np.argpartition(distances, self.n_neighbours - 1)[: self.n_neighbours]
        excess = self.x_ref[rng.choice(nearest, size=self.n_events, replace=False)]
        return np.concatenate([as_events(background, "generated data", self.x_ref.shape[1]), excess])


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


def _failed_row(row: dict[str, Any], status: str, error_type: str, message: str, trace: str | None) -> dict[str, Any]:
    row.update(status=f"failed: {status}", t=None, tau=None, delta=None, error_type=error_type, error=message,
               traceback=trace)
    return row


def _draw(task: ToyTask, toy_index: int) -> ToySample:
    """Toy `toy_index`'s sample, drawn from SeedSequence(seed, spawn_key=(toy_index,))."""
    drawn = task.generator(np.random.default_rng(toy_seed(task.seed, toy_index)))
    return drawn if isinstance(drawn, ToySample) else ToySample(drawn)


def _ok_row(row: dict[str, Any], drawn: ToySample, result: Any, caught: list) -> dict[str, Any]:
    row.update(status=STATUS_OK, **result.row_fields(),
               central_values=None if drawn.central_values is None else np.asarray(drawn.central_values).tolist(),
               n_data=int(len(drawn.x_data)), warnings=[f"{type(w.message).__name__}: {w.message}" for w in caught])
    return row


def _failure(row: dict[str, Any], error: Exception) -> dict[str, Any]:
    return _failed_row(row, f"{type(error).__name__}: {error}", type(error).__name__, str(error),
                       traceback.format_exc(limit=-3))


def run_one_toy(task: ToyTask, toy_index: int) -> dict[str, Any]:
    """Draw toy `toy_index`, run the test on it and return its store row. Any exception becomes a
    failed row, except a ConfigurationError: a setting that cannot work (an unavailable device, a
    bad hyperparameter) fails every toy alike, so it stops the campaign (as do KeyboardInterrupt
    and SystemExit)."""
    start = time.perf_counter()
    row: dict[str, Any] = {"record": "toy", "toy": toy_index, "seed": task.seed}
    try:
        drawn = _draw(task, toy_index)
        x_ref, w_ref = (task.x_ref, task.w_ref) if drawn.x_ref is None else (drawn.x_ref, drawn.w_ref)
        if x_ref is None:
            raise InputError("the generator returned data only but run_toys got no reference (x_ref=None).")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = task.test.run(drawn.x_data, x_ref, w_ref, central_values=drawn.central_values)
        _ok_row(row, drawn, result, caught)
    except ConfigurationError:
        raise
    except Exception as error:  # noqa: BLE001 - one toy's failure of any kind is recorded, not fatal
        _failure(row, error)
    row["wall_time"] = time.perf_counter() - start
    return row


def run_toy_batch(task: ToyTask, toy_indices: tuple[int, ...]) -> list[dict[str, Any]]:
    """The rows of several toys, fitted together where the test can (NPLMTest.run_batch: toys on
    the campaign's reference, without auxiliary measurements); each toy keeps its own seed, and its
    row is the one run_one_toy gives (t to solver tolerance). A batch that raises or warns is run
    again toy by toy, so that every failure and warning is recorded with the toy it belongs to."""
    if len(toy_indices) == 1 or not task.test.batchable or task.x_ref is None:
        return [run_one_toy(task, index) for index in toy_indices]
    start = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}
    drawn: dict[int, ToySample] = {}
    for index in toy_indices:
        try:
            sample = _draw(task, index)
        except Exception:  # noqa: BLE001 - recorded by the one-toy run below
            rows[index] = run_one_toy(task, index)
            continue
        if sample.x_ref is not None or sample.central_values is not None:
            rows[index] = run_one_toy(task, index)
        else:
            drawn[index] = sample
    if drawn:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results = task.test.run_batch([sample.x_data for sample in drawn.values()], task.x_ref, task.w_ref)
            if caught:
                raise RuntimeError("warnings to attribute")
            share = (time.perf_counter() - start) / len(drawn)
            for (index, sample), result in zip(drawn.items(), results):
                rows[index] = _ok_row({"record": "toy", "toy": index, "seed": task.seed}, sample, result, [])
                rows[index]["wall_time"] = share
        except Exception:  # noqa: BLE001 - one toy at a time: each failure and warning goes to its own row
            rows.update({index: run_one_toy(task, index) for index in drawn})
    return [rows[index] for index in toy_indices]


def _worker_died_row(task_seed: int, toy_index: int, attempts: int) -> dict[str, Any]:
    row = {"record": "toy", "toy": toy_index, "seed": task_seed}
    message = f"the worker process died while running this toy ({attempts} attempt(s), each in a fresh worker)"
    return _failed_row(row, f"worker died: {message}", "WorkerDied", message, None) | {"wall_time": None}


_WORKER_TASK: ToyTask | None = None


def _exit_with_parent(parent: int) -> None:
    """Pool-worker thread: end this process once its parent has died (it is then re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _initialise_worker(task: ToyTask, parent: int, counter: Any, cuda: bool) -> None:
    """Process-pool initialiser: keep the task (reference included) once per worker, one torch
    thread, and a watchdog that ends the worker when the campaign's process dies. On a CUDA
    campaign (`cuda`) each worker takes the next GPU (worker k: device k mod the number of GPUs), so that
    'cuda' in the backend means one GPU per process."""
    import torch

    global _WORKER_TASK
    _WORKER_TASK = task
    torch.set_num_threads(1)
    if cuda:
        with counter.get_lock():
            index, counter.value = counter.value, counter.value + 1
        torch.cuda.set_device(index % torch.cuda.device_count())
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _uses_cuda(test: NPLMTest) -> bool:
    """Whether the test's backend computes on CUDA ('cuda', 'cuda:N', or 'auto' with a GPU)."""
    device = test.backend.get_params(deep=False).get("device", "cpu")
    return str(resolve_device(device)).startswith("cuda")


def _run_in_worker(toy_indices: tuple[int, ...]) -> list[dict[str, Any]]:
    return run_toy_batch(_WORKER_TASK, toy_indices)


@dataclass(frozen=True)
class CampaignResult:
    """All rows of a campaign (stored and new), ordered by toy index, and the campaign identity;
    `t` holds the successful toys."""

    rows: tuple[dict[str, Any], ...]
    identity: dict[str, Any] | None = None

    @property
    def t(self) -> np.ndarray:
        return t_values(self.rows)

    @property
    def n_failed(self) -> int:
        return sum(row["status"] != STATUS_OK for row in self.rows)

    @property
    def n_unconverged(self) -> int:
        """Successful toys whose fit reported non-convergence (their t is kept, and counted here)."""
        return sum(row["status"] == STATUS_OK and row.get("converged") is False for row in self.rows)

    @classmethod
    def from_store(cls, path: str | os.PathLike, test: NPLMTest | None = None, x_ref: np.ndarray | None = None,
                   w_ref: float | np.ndarray | None = None) -> CampaignResult:
        """Read a store (store.read_store: damaged or conflicting stores are refused). With `test`
        (and the reference it is run against), the store must be a null of that test: same backend
        and hyperparameters, nuisances and reference, or CampaignMismatchError names what differs."""
        content = read_store(path)
        if content.header is None:
            raise InputError(f"{path}: the store holds no campaign yet.")
        if test is not None:
            verify_identity(Path(path), content, test.identity(x_ref, w_ref), part="test")
        return CampaignResult(rows=tuple(sorted(content.rows, key=lambda row: row["toy"])), identity=content.identity)


def campaign_identity(test: NPLMTest, generator: ToyGenerator, x_ref: np.ndarray | None,
                      w_ref: float | np.ndarray | None, seed: int, generator_name: str | None = None) -> dict[str, Any]:
    """What defines a campaign's distribution of t: the test (backend, hyperparameters, nuisances,
    reference sample), the generator (described, or the user's name for it), the campaign seed and
    the package's major version."""
    return {"test": test.identity(x_ref, w_ref),
            "generator": {"name": generator_name} if generator_name is not None else describe(generator),
            "seed": int(seed), "package_major": MAJOR}


def executor_from_setting(setting: str | int) -> str | int | None:
    """The run_toys executor for a CLI/config setting: 'serial' -> None, 'local', or a process count."""
    if setting == "serial":
        return None
    if setting == "local":
        return "local"
    if isinstance(setting, int) or (isinstance(setting, str) and setting.isdigit()):
        return int(setting)
    raise ConfigurationError(f"executor must be 'serial', 'local' or a number of processes, got {setting!r}.")


def _check_picklable(task: ToyTask) -> None:
    try:
        pickle.dumps(task)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ConfigurationError(
            "toys run in other processes, so the test and the generator must be picklable (a module-level "
            f"function, a bound method or functools.partial, not a lambda or local function): {error}"
        ) from None


def _process_count(executor: Any, test: NPLMTest | None = None) -> int | None:
    """The number of pool processes for 'local' (every core, or one per GPU when the backend
    computes on CUDA) or an int (None for other executors)."""
    if executor == "local":
        if test is not None and _uses_cuda(test):
            return torch.cuda.device_count()
        return os.cpu_count() or 1
    if isinstance(executor, (int, np.integer)) and not isinstance(executor, bool) and executor >= 1:
        return int(executor)
    return None


def _check_executor(executor: Any) -> None:
    if executor is None or _process_count(executor) is not None or isinstance(executor, Executor) or (
            hasattr(executor, "scatter") and hasattr(executor, "get_executor")):
        return
    raise ConfigurationError(
        f"executor must be None (serial), 'local' (all cores), a number of processes, a dask Client or a "
        f"concurrent.futures.Executor, got {executor!r}."
    )


def _pool_results(task: ToyTask, units: list[tuple[int, ...]], n_processes: int) -> Iterator[dict[str, Any]]:
    """Rows of the toys in `units` (tuples of toy indices fitted together) from our own spawned
    process pool. When a worker dies, the pool is replaced and the toys that were in flight are
    re-run one at a time in fresh workers: the one that kills its worker again is retried up to
    WORKER_DEATH_ATTEMPTS times, then recorded."""
    context = get_context("spawn")
    cuda = _uses_cuda(task.test)  # the workers run here: an unavailable device is refused now, not in each worker

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(n_processes, mp_context=context, initializer=_initialise_worker,
                                   initargs=(task, os.getpid(), context.Value("i", 0), cuda))

    queue, suspects, attempts = deque(units), deque(), {}
    in_flight: dict[Future, tuple[int, ...]] = {}
    alone = None  # the suspect toy running alone in the pool, if any
    pool = new_pool()
    try:
        while queue or suspects or in_flight:
            if alone is None and suspects and not in_flight:
                alone = suspects.popleft()
                in_flight[pool.submit(_run_in_worker, (alone,))] = (alone,)
            while alone is None and not suspects and queue and len(in_flight) < IN_FLIGHT_PER_WORKER * n_processes:
                unit = queue.popleft()
                in_flight[pool.submit(_run_in_worker, unit)] = unit
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = []
            for future in finished:
                unit = in_flight.pop(future)
                try:
                    rows = future.result()
                except BrokenProcessPool:
                    broken.extend(unit)
                    continue
                alone = None if unit == (alone,) else alone
                yield from rows
            if not broken:
                continue
            if alone is not None:  # it ran alone in its worker, and killed it
                attempts[alone] = attempts.get(alone, 0) + 1
                if attempts[alone] >= WORKER_DEATH_ATTEMPTS:
                    yield _worker_died_row(task.seed, alone, attempts[alone])
                else:
                    suspects.appendleft(alone)
                alone = None
            else:
                suspects.extend(broken + [index for unit in in_flight.values() for index in unit])
            in_flight.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _external_results(executor: Any, task: ToyTask, units: list[tuple[int, ...]]) -> Iterator[dict[str, Any]]:
    """Rows from a dask Client (task scattered once) or any concurrent.futures.Executor (task sent
    with each unit of toys). An exception from the executor itself (a killed dask worker, ...)
    becomes a failed row for each toy of that unit."""
    if hasattr(executor, "scatter") and hasattr(executor, "get_executor"):
        task_reference, executor = executor.scatter(task, broadcast=True), executor.get_executor()
    else:
        task_reference = task
    queue = deque(units)
    in_flight: dict[Future, tuple[int, ...]] = {}
    while queue or in_flight:
        while queue and len(in_flight) < EXTERNAL_IN_FLIGHT:
            unit = queue.popleft()
            in_flight[executor.submit(run_toy_batch, task_reference, unit)] = unit
        finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in finished:
            unit = in_flight.pop(future)
            try:
                yield from future.result()
            except ConfigurationError:
                raise
            except Exception as error:  # noqa: BLE001 - the executor lost these toys: record them
                for index in unit:
                    row = {"record": "toy", "toy": index, "seed": task.seed, "wall_time": None}
                    yield _failed_row(row, f"worker error: {type(error).__name__}: {error}", type(error).__name__,
                                      str(error), None)


def _units(task: ToyTask, pending: list[int], batch_size: int, n_workers: int) -> list[tuple[int, ...]]:
    """The toys grouped into units fitted together: batches of up to batch_size (fewer when that
    keeps every worker busy) for a test that fits batches, single toys otherwise."""
    size = batch_size if task.test.batchable else 1
    size = max(1, min(size, -(-len(pending) // max(1, n_workers))))
    return [tuple(pending[start : start + size]) for start in range(0, len(pending), size)]


def _results(executor: Any, task: ToyTask, pending: list[int], batch_size: int) -> Iterator[dict[str, Any]]:
    if executor is None or not pending:
        for unit in _units(task, pending, batch_size, 1):
            yield from run_toy_batch(task, unit)
        return
    _check_picklable(task)
    n_processes = _process_count(executor, task.test)
    if n_processes is not None:
        yield from _pool_results(task, _units(task, pending, batch_size, n_processes), n_processes)
    else:
        yield from _external_results(executor, task, _units(task, pending, batch_size, EXTERNAL_IN_FLIGHT // 64))


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
    generator_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> CampaignResult:
    """Run (or resume) a campaign of `n_toys` toys: data from `generator(rng)` against the fixed
    reference (x_ref, w_ref), or, when the generator returns ToySample (PermutationToys), against
    the toy's own reference (x_ref and w_ref may then be None).

    executor: None runs serially here; 'local' (default) a process pool over all cores; an int
    that many processes; a dask.distributed Client (the test, generator and reference are
    scattered to the workers once; dask-jobqueue HTCondor/SLURM clusters work unchanged); or any
    concurrent.futures.Executor (the task is then pickled with each toy).
    store: the toy store (store.py) to resume and append to (None keeps rows in memory only); it
    must hold this campaign (same test, generator, reference and seed) or nothing.
    generator_name: a name that identifies the generator in the store instead of its automatic
    description (class, function and parameters): give one when the generator is a function whose
    behaviour may change under the same name, or to resume with an equivalent generator object.
    batch_size: toys a worker fits together when the test can (NPLMTest.batchable: a backend that
    fits batches, no nuisances; KernelNPLM with reuse_reference=True); each toy keeps its own seed
    and gets the t of its own fit to solver tolerance. 1: one toy at a time.
    Raises FitError once more than max_failure_fraction of the toys have failed."""
    if not (isinstance(n_toys, (int, np.integer)) and not isinstance(n_toys, bool) and n_toys >= 1):
        raise ConfigurationError(f"n_toys must be a positive integer, got {n_toys!r}.")
    if not 0.0 <= max_failure_fraction <= 1.0:
        raise ConfigurationError(f"max_failure_fraction must lie in [0, 1], got {max_failure_fraction!r}.")
    _check_executor(executor)
    check_positive_integer(batch_size, "batch_size")
    writer = None
    content = StoreContent(None, (), ())
    if store is not None:
        writer = StoreWriter(store, campaign_identity(test, generator, x_ref, w_ref, seed, generator_name))
        content = writer.open()
    try:
        done = {row["toy"] for row in content.rows if row["toy"] < n_toys}
        pending = [index for index in range(n_toys) if index not in done]
        logger.info("campaign of %d toys (seed %d): %d stored, %d to run on %s, batches of up to %d%s", n_toys, seed,
                    len(done), len(pending), "serial" if executor is None else executor, batch_size,
                    f", store {store}" if store is not None else "")
        task = ToyTask(test=test, generator=generator, x_ref=x_ref, w_ref=w_ref, seed=seed)
        new_rows: dict[int, dict[str, Any]] = {}
        failures = sum(row["status"] != STATUS_OK for row in content.rows if row["toy"] < n_toys)
        bar = tqdm(total=n_toys, initial=len(done), desc="toys", unit="toy", disable=not progress, file=sys.stderr)
        try:
            for row in _results(executor, task, pending, batch_size):
                new_rows[row["toy"]] = row
                if writer:
                    writer.append(row)
                if row["status"] != STATUS_OK:
                    failures += 1
                    logger.warning("toy %d failed: %s", row["toy"], row["status"])
                    bar.set_postfix(failed=failures, refresh=False)
                bar.update(1)
                if failures > max_failure_fraction * n_toys:
                    raise FitError(f"{failures} of {n_toys} toys failed (more than {max_failure_fraction:.0%}); "
                                   f"last: {row['status']}")
        finally:
            bar.close()
    finally:
        if writer:
            writer.close()
    rows = {row["toy"]: row for row in content.rows if row["toy"] < n_toys} | new_rows
    return CampaignResult(rows=tuple(rows[index] for index in sorted(rows)),
                          identity=writer.identity if writer else None)
