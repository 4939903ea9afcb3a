"""One toy, or a batch of toys, in a worker: toy i drawn from SeedSequence(seed, spawn_key=(i,)),
the test run on it, and its store row (a failed row for any exception raised by the toy itself)."""

from __future__ import annotations

import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.exceptions import ConfigurationError, InputError
from ..inference import NPLMTest
from ..store import STATUS_OK
from .generators import ToyGenerator, ToySample


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


def failed_row(row: dict[str, Any], status: str, error_type: str, message: str, trace: str | None) -> dict[str, Any]:
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

