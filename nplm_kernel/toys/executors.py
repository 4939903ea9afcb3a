"""Where toys run: serially here, in our own spawned process pool (workers replaced when they die,
and ended when the campaign's process dies), on a dask cluster, or on any concurrent.futures
Executor. One executor setting, validated once (resolve_executor), serves run_toys, the analysis
config and the command line."""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch

from ..contract import backend_device
from ..core.exceptions import ConfigurationError, brief
from .worker import ToyTask, failed_row, run_toy_batch

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
#: The executor of a campaign when none is named: a process pool over all cores.
DEFAULT_EXECUTOR = "local"
#: The executor settings that name one (besides a number of processes).
EXECUTOR_SETTINGS = {"serial": "one toy after the other in this process", "local": "a process pool over all cores "
                     "(one per GPU for a CUDA backend)"}


def resolve_executor(setting: Any) -> Any:
    """The executor a setting names, checked: 'serial' (or None) -> None, 'local', a number of
    processes (an int or a string of digits) -> int, or an executor object (a dask Client, a
    concurrent.futures.Executor) as given; ConfigurationError otherwise."""
    if setting is None or setting == "serial":
        return None
    if setting == "local":
        return "local"
    if isinstance(setting, str) and setting.isdigit() and int(setting) >= 1:
        return int(setting)
    if isinstance(setting, (int, np.integer)) and not isinstance(setting, bool) and setting >= 1:
        return int(setting)
    if isinstance(setting, Executor) or _is_dask_client(setting):
        return setting
    raise ConfigurationError(
        f"executor must be 'serial', 'local' (all cores), a number of processes, a dask Client or a "
        f"concurrent.futures.Executor, got {brief(setting)}.")


def _is_dask_client(executor: Any) -> bool:
    return hasattr(executor, "scatter") and hasattr(executor, "get_executor")


def _worker_died_row(task_seed: int, toy_index: int, attempts: int) -> dict[str, Any]:
    row = {"record": "toy", "toy": toy_index, "seed": task_seed}
    message = f"the worker process died while running this toy ({attempts} attempt(s), each in a fresh worker)"
    return failed_row(row, f"worker died: {message}", "WorkerDied", message, None) | {"wall_time": None}


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


def _uses_cuda(test: Any) -> bool:
    """Whether the test's backend computes on CUDA ('cuda', 'cuda:N', or 'auto' with a GPU)."""
    return backend_device(test.backend).type == "cuda"


def _run_in_worker(toy_indices: tuple[int, ...]) -> list[dict[str, Any]]:
    return run_toy_batch(_WORKER_TASK, toy_indices)


def _check_picklable(task: ToyTask) -> None:
    try:
        pickle.dumps(task)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ConfigurationError(
            "toys run in other processes, so the test and the generator must be picklable (a module-level "
            f"function, a bound method or functools.partial, not a lambda or local function): {error}"
        ) from None


def _process_count(executor: Any, test: Any = None) -> int | None:
    """The number of pool processes for 'local' (every core, or one per GPU when the backend
    computes on CUDA) or an int (None for other executors)."""
    if executor == "local":
        if test is not None and _uses_cuda(test):
            return torch.cuda.device_count()
        return os.cpu_count() or 1
    if isinstance(executor, (int, np.integer)) and not isinstance(executor, bool) and executor >= 1:
        return int(executor)
    return None


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
                    yield failed_row(row, f"worker error: {type(error).__name__}: {error}", type(error).__name__,
                                      str(error), None)


def _units(task: ToyTask, pending: list[int], batch_size: int, n_workers: int) -> list[tuple[int, ...]]:
    """The toys grouped into units fitted together: batches of up to batch_size (fewer when that
    keeps every worker busy) for a test that fits batches, single toys otherwise."""
    size = batch_size if task.test.batchable else 1
    size = max(1, min(size, -(-len(pending) // max(1, n_workers))))
    return [tuple(pending[start : start + size]) for start in range(0, len(pending), size)]


def results(executor: Any, task: ToyTask, pending: list[int], batch_size: int) -> Iterator[dict[str, Any]]:
    """The rows of the `pending` toys of `task`, as they finish, on `executor` (resolve_executor's
    value), in units of up to batch_size toys fitted together where the test can."""
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


