"""Toy campaigns: many NPLM tests on toys, resumable, on one core, a process pool or a cluster.

Toy i of a campaign with master seed s uses SeedSequence(s, spawn_key=(i,)): the same seed gives the
same toy and the same t whatever executes it. Rows go to a toy store (nplm_kernel.store) that records what
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

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.exceptions import ConfigurationError, FitError, InputError
from ..core.identity import describe
from ..core.samples import check_positive_integer
from ..core.version import MAJOR
from ..inference import NPLMTest
from ..store import STATUS_OK, StoreContent, StoreWriter, read_store, t_values, verify_identity
from .executors import DEFAULT_EXECUTOR, resolve_executor, results
from .generators import ToyGenerator
from .worker import ToyTask

logger = logging.getLogger(__name__)

#: Toys a worker fits together by default: the fastest size in benchmarks/toy_throughput.py (1D
#: benchmark, 2 processes: 64 before 16 and 256).
DEFAULT_BATCH_SIZE = 64


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

    @property
    def n_unsupported(self) -> int:
        """Successful toys with data events the reference sample cannot support (in any width's fit;
        their t is kept, and counted here)."""
        return sum(row["status"] == STATUS_OK and bool(np.any(row.get("unsupported_events") or 0))
                   for row in self.rows)

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame indexed by the (integer) toy index, one column per store
        field (a multi-scale test's t is a list per toy). Reading a store with
        pandas.read_json(lines=True) instead mixes in the header line and makes toy indices floats."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise ConfigurationError("to_pandas needs pandas: pip install pandas") from None
        return pandas.DataFrame.from_records(list(self.rows)).set_index("toy")

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



def run_toys(
    test: NPLMTest,
    generator: ToyGenerator,
    x_ref: np.ndarray | None,
    w_ref: float | np.ndarray | None,
    n_toys: int,
    seed: int = 0,
    executor: str | int | Any | None = DEFAULT_EXECUTOR,
    store: str | os.PathLike | None = None,
    progress: bool = True,
    max_failure_fraction: float = 0.1,
    generator_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> CampaignResult:
    """Run (or resume) a campaign of `n_toys` toys: data from `generator(rng)` against the fixed
    reference (x_ref, w_ref), or, when the generator returns ToySample (PermutationToys), against
    the toy's own reference (x_ref and w_ref may then be None).

    executor: 'serial' (or None) runs here; 'local' (default) a process pool over all cores; a
    number of processes; a dask.distributed Client (the test, generator and reference are
    scattered to the workers once; dask-jobqueue HTCondor/SLURM clusters work unchanged); or any
    concurrent.futures.Executor (the task is then pickled with each toy).
    store: the toy store (nplm_kernel.store) to resume and append to (None keeps rows in memory only); it
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
    executor = resolve_executor(executor)
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
        # rows arrive a batch at a time: the rate is the average since the start (smoothing=0), and
        # the bar is drawn at least every 0.1% of the toys, so it shows each batch's end
        bar = tqdm(total=n_toys, initial=len(done), desc="toys", unit="toy", disable=not progress, file=sys.stderr,
                   smoothing=0.0, mininterval=0.0, miniters=max(1, n_toys // 1000))
        try:
            for row in results(executor, task, pending, batch_size):
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
