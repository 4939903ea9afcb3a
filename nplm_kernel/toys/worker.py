"""One toy, or a batch of toys, in a worker: toy i drawn from SeedSequence(seed, spawn_key=(i,)),
the test run on it, and its store row (a failed row for any exception raised by the toy itself).
Every toy runs on THREADS_PER_TOY torch and BLAS threads, whatever executes it, so that its t is
the same to the last bit in this process, a pool worker or a dask worker."""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from ..core.exceptions import ConfigurationError, FitError, InputError, captured_warnings, warning_text
from ..inference import NPLMTest
from ..store import STATUS_OK, t_floor_problem
from .generators import ToyGenerator, ToySample

#: Threads each toy's fit runs on (torch's, and the BLAS libraries' through threadpoolctl),
#: whatever executes it: one, so that t does not depend on the executor or the machine's cores
#: (a kernel pass shares its blocks among torch.get_num_threads() threads, a sum whose rounding
#: depends on their number). Workers run one toy per core instead.
THREADS_PER_TOY = 1

_threads_lock = threading.Lock()
_threads_state: dict[str, Any] = {"toys": 0, "torch": None, "blas": None, "controller": None}


@dataclass(frozen=True)
class ToyTask:
    """Everything a worker needs for its toys: the test, the generator and the fixed reference."""

    test: NPLMTest
    generator: ToyGenerator
    x_ref: np.ndarray | None
    w_ref: float | np.ndarray | None
    seed: int


class ToyUnit(NamedTuple):
    """Toys fitted together (a block of the campaign, fixed by the toy indices alone, so that each
    toy's batch-mates and t do not depend on the executor) and those of them whose rows are wanted
    (the others are stored already)."""

    toys: tuple[int, ...]
    keep: tuple[int, ...]


@contextlib.contextmanager
def toy_threads() -> Iterator[None]:
    """Run the body on THREADS_PER_TOY torch and BLAS threads; the process's own settings come back
    when the last toy running in it ends (toys may run in several threads of one process)."""
    with _threads_lock:
        if _threads_state["toys"] == 0:
            if _threads_state["controller"] is None:  # the BLAS libraries of this process, found once (ms)
                _threads_state["controller"] = ThreadpoolController()
            _threads_state["torch"] = torch.get_num_threads()
            _threads_state["blas"] = _threads_state["controller"].limit(limits=THREADS_PER_TOY)
        _threads_state["toys"] += 1
    torch.set_num_threads(THREADS_PER_TOY)  # per thread in recent torch versions
    try:
        yield
    finally:
        with _threads_lock:
            _threads_state["toys"] -= 1
            if _threads_state["toys"] == 0:
                torch.set_num_threads(_threads_state["torch"])
                _threads_state["blas"].restore_original_limits()


def toy_seed(seed: int, toy_index: int) -> np.random.SeedSequence:
    """The SeedSequence of toy `toy_index`: entropy `seed`, spawn key (toy_index,)."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(toy_index,))


def failed_row(row: dict[str, Any], status: str, error_type: str, message: str, trace: str | None) -> dict[str, Any]:
    row.update(status=f"failed: {status}", t=None, tau=None, delta=None, error_type=error_type, error=message,
               traceback=trace)
    return row


def _draw(task: ToyTask, toy_index: int) -> ToySample:
    """Toy `toy_index`'s sample, drawn from SeedSequence(seed, spawn_key=(toy_index,))."""
    drawn = task.generator(np.random.default_rng(toy_seed(task.seed, toy_index)))
    return drawn if isinstance(drawn, ToySample) else ToySample(drawn)


def _ok_row(task: ToyTask, row: dict[str, Any], drawn: ToySample, result: Any, caught: list[str]) -> dict[str, Any]:
    """The row of a toy whose test ran, with the warnings its fits raised ('Category: message');
    FitError when its t is one the test cannot give."""
    row.update(status=STATUS_OK, **result.row_fields(),
               central_values=None if drawn.central_values is None else np.asarray(drawn.central_values).tolist(),
               n_data=int(len(drawn.x_data)), warnings=list(caught))
    problem = t_floor_problem(row["t"], getattr(task.test, "t_floor", None), row["n_data"])
    if problem:
        raise FitError(f"numerical trouble: {problem}.")
    return row


def _failure(row: dict[str, Any], error: Exception) -> dict[str, Any]:
    return failed_row(row, f"{type(error).__name__}: {error}", type(error).__name__, str(error),
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
        with captured_warnings() as caught:
            result = task.test.run(drawn.x_data, x_ref, w_ref, central_values=drawn.central_values)
        _ok_row(task, row, drawn, result, [warning_text(record) for record in caught])
    except ConfigurationError:
        raise
    except Exception as error:  # noqa: BLE001 - one toy's failure of any kind is recorded, not fatal
        _failure(row, error)
    row["wall_time"] = time.perf_counter() - start
    return row


def run_toy_unit(task: ToyTask, unit: ToyUnit) -> list[dict[str, Any]]:
    """The rows of the unit's kept toys, its toys fitted together (run_toy_batch), on
    THREADS_PER_TOY threads."""
    with toy_threads():
        return run_toy_batch(task, unit.toys, unit.keep)


def run_toy_batch(task: ToyTask, toy_indices: tuple[int, ...],
                  keep: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    """The rows of the toys `keep` (default: all) of several toys fitted together, where the test
    can (NPLMTest.run_batch: toys on the campaign's reference, without auxiliary measurements);
    each toy keeps its own seed, and its row is the one run_one_toy gives (t to solver tolerance,
    and the same bits for the same toy_indices), with the warnings of its own fits. A batch that
    raises, or raises warnings that no toy claims, is run again toy by toy, so that every failure
    and warning is recorded with the toy it belongs to."""
    keep = toy_indices if keep is None else keep
    if len(toy_indices) == 1 or not task.test.batchable or task.x_ref is None:
        return [run_one_toy(task, index) for index in keep]
    start = time.perf_counter()
    rows: dict[int, dict[str, Any]] = {}
    drawn: dict[int, ToySample] = {}
    for index in toy_indices:
        try:
            sample = _draw(task, index)
        except Exception:  # noqa: BLE001 - recorded by the one-toy run below
            sample = None
        if sample is not None and sample.x_ref is None and sample.central_values is None:
            drawn[index] = sample
        elif index in keep:  # a toy that cannot join the batch: on its own
            rows[index] = run_one_toy(task, index)
    if drawn:
        try:
            with captured_warnings() as caught:
                results = task.test.run_batch([sample.x_data for sample in drawn.values()], task.x_ref, task.w_ref)
            if len(caught) != sum(len(result.batch_warnings) for result in results):
                raise RuntimeError("warnings that no toy of the batch claims")
            share = (time.perf_counter() - start) / len(drawn)
            for (index, sample), result in zip(drawn.items(), results):
                rows[index] = _ok_row(task, {"record": "toy", "toy": index, "seed": task.seed}, sample, result,
                                      list(result.batch_warnings))
                rows[index]["wall_time"] = share
        except Exception:  # noqa: BLE001 - one toy at a time: each failure and warning goes to its own row
            rows.update({index: run_one_toy(task, index) for index in drawn if index in keep})
    return [rows[index] for index in keep]
