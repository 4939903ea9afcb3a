"""Toy campaigns: many NPLM tests on toys, resumable, on one core, a process pool or a cluster.

Toy i of a campaign with master seed s uses SeedSequence(s, spawn_key=(i,)): the same seed gives the
same toy and the same t whatever executes it. Toys are fitted in blocks (toys [b B, (b + 1) B), B the
batch size where the test fits batches, 1 otherwise) on one thread each (worker.THREADS_PER_TOY), so
that a toy's t is the same to the last bit on every executor, in one run or in shards. Rows go to a
toy store (nplm_kernel.store) that records what the campaign is a null of (test, generator,
reference, seed) and which of its toys it holds (n_toys, shard), is written by one campaign at a
time, and is resumed only by the same campaign: toys already stored are skipped, so no toy is lost or
counted twice. Any exception raised while drawing or fitting a toy becomes a failed row (type,
message, short traceback), retried on resume with retry_failed; toys lost with their worker (a
killed job, a dead process) are submitted again (executors.py). The campaign goes on until more than
`max_failure_fraction` of the toys have failed. Warnings raised during a toy's fit (e.g.
non-convergence) are recorded in its row with the fit's `converged` flag instead of being printed
once and lost. Pool workers exit when their parent process dies, so a killed campaign leaves no
orphans.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.exceptions import ConfigurationError, FitError, InputError
from ..core.identity import describe
from ..core.samples import check_positive_integer
from ..core.version import MAJOR
from ..inference import NPLMTest, stored_member_weights
from ..store import (
    STATUS_OK,
    Shard,
    StoreContent,
    StoreWriter,
    read_stores,
    stored_header,
    t_values,
    verify_identity,
)
from ..store.shards import StorePaths
from .executors import DEFAULT_EXECUTOR, MAX_LOSSES, refuse_start_in_worker, resolve_executor, results
from .generators import ToyGenerator
from .worker import THREADS_PER_TOY, ToyTask, ToyUnit

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
    def member_weights(self) -> tuple[float, ...] | None:
        """The weights of the test's members in its min-p, from the campaign identity (the default
        test's scan weighted against its widths; every campaign has one, with or without a store);
        None: equal weights, or one t per toy."""
        return stored_member_weights(self.identity)

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
    def from_store(cls, path: StorePaths, test: NPLMTest | None = None, x_ref: np.ndarray | None = None,
                   w_ref: float | np.ndarray | None = None) -> CampaignResult:
        """Read a store, or several stores of one campaign (paths or glob patterns such as
        'null-*.jsonl': the shards of a campaign, each toy counted once; store.read_stores). Damaged,
        conflicting or mixed stores are refused. With `test` (and the reference it is run against),
        the stores must be a null of that test: same backend and hyperparameters, nuisances and
        reference, or CampaignMismatchError names what differs."""
        content = read_stores(path)
        label = os.fspath(path) if isinstance(path, (str, os.PathLike)) else ", ".join(map(os.fspath, path))
        if content.header is None:
            raise InputError(f"{label}: the store holds no campaign yet.")
        if test is not None:
            verify_identity(label, content, test.identity(x_ref, w_ref), part="test")
        return CampaignResult(rows=tuple(sorted(content.rows, key=lambda row: row["toy"])), identity=content.identity)


def campaign_identity(test: NPLMTest, generator: ToyGenerator, x_ref: np.ndarray | None,
                      w_ref: float | np.ndarray | None, seed: int, generator_name: str | None = None) -> dict[str, Any]:
    """What defines a campaign's distribution of t: the test (backend, hyperparameters, nuisances,
    reference sample), the generator (described, or the user's name for it), the campaign seed and
    the package's major version."""
    described = {"name": generator_name} if generator_name is not None else describe(generator)
    unstable = re.search(r"<[^<>]* at 0x[0-9a-fA-F]+>", json.dumps(described))
    if unstable:
        raise ConfigurationError(f"the generator cannot be identified: its description holds {unstable.group()}, "
                                 "an address that changes in every session, so the store could never be resumed. "
                                 "Give it a name that stands for what it draws: generator_name='...'.")
    return {"test": test.identity(x_ref, w_ref), "generator": described, "seed": int(seed), "package_major": MAJOR}


def _check_test(test: Any) -> None:
    """ConfigurationError unless `test` is a test (NPLMTest, BaselineTest), naming the fix for an estimator."""
    missing = [name for name in ("run", "identity", "batchable", "for_reference", "with_quiet_fits")
               if not hasattr(test, name)]
    if not missing:
        return
    if hasattr(test, "fit"):
        raise ConfigurationError(f"run_toys needs a test, such as NPLMTest({type(test).__name__}(...)), not the "
                                 f"estimator {type(test).__name__} itself: the test fits a fresh clone of it per toy.")
    raise ConfigurationError(f"run_toys needs a test such as NPLMTest(KernelNPLM(...)), got {type(test).__name__}, "
                             f"which lacks {missing}.")


def _execution(test: Any, block: int) -> dict[str, Any]:
    """What a toy's t depends on besides the campaign identity: its threads, its batch (block)
    and the backend's execution settings (device, memory budget: they decide how a batch is split)."""
    settings = getattr(type(test.backend), "execution_settings", ())
    parameters = test.backend.get_params(deep=False) if hasattr(test.backend, "get_params") else {}
    return {"threads_per_toy": THREADS_PER_TOY, "batch_size": block,
            **{name: describe(parameters[name]) for name in settings if name in parameters}}


def _units(toys: list[int], pending: set[int], block: int) -> list[ToyUnit]:
    """The blocks of `block` consecutive toy indices among `toys` that hold pending toys: each
    block's toys are fitted together (so a toy's batch-mates do not depend on what is stored or on
    the executor), and the rows of its pending toys are kept."""
    blocks: dict[int, list[int]] = {}
    for toy in toys:
        blocks.setdefault(toy // block, []).append(toy)
    return [ToyUnit(tuple(members), tuple(toy for toy in members if toy in pending))
            for members in blocks.values() if any(toy in pending for toy in members)]


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
    batch_size: int | None = None,
    shard: str | tuple[int, int] | None = None,
    retry_failed: bool = False,
    max_losses: int = MAX_LOSSES,
) -> CampaignResult:
    """Run (or resume) a campaign of `n_toys` toys: data from `generator(rng)` against the fixed
    reference (x_ref, w_ref), or, when the generator returns ToySample (PermutationToys), against
    the toy's own reference (x_ref and w_ref may then be None).

    executor: 'serial' (or None) runs here; 'local' (default) a process pool over the available cores; a
    number of processes; 'dask:ADDRESS' (a running scheduler); a batch system through dask-jobqueue
    ('slurm:jobs=4,walltime=02:00:00', htcondor, pbs, sge, lsf: executors.BatchJobs); a
    dask.distributed Client; or any concurrent.futures.Executor (the task is then pickled with each
    unit of toys). Every toy runs on one thread (worker.THREADS_PER_TOY): t is the same to the last
    bit on each of them.
    progress: a bar over the campaign's toys; the backend's own per-fit bar is off for toys.
    store: the toy store (nplm_kernel.store) to resume and append to (None keeps rows in memory only); it
    must hold this campaign (same test, generator, reference and seed, same shard) or nothing.
    generator_name: a name that identifies the generator in the store instead of its automatic
    description (class and parameters; a function's code and the values it uses): give one to
    resume with an equivalent generator object.
    batch_size: toys fitted together when the test can (NPLMTest.batchable: a backend that fits
    batches, no nuisances; KernelNPLM with reuse_reference=True), in blocks of consecutive toy
    indices; each toy keeps its own seed and gets the t of its own fit to solver tolerance (the
    same bits for the same batch size). None: the store's, or DEFAULT_BATCH_SIZE. 1: one at a time.
    shard: 'K/N' (or (K, N)) runs only the K-th of N parts of the campaign, the blocks K, K + N, ...
    (toys K, K + N, ... at one toy per block) into its own store: the same toys and t as one run;
    store.merge_stores (`nplm store merge`) combines the shards, read_stores reads them together.
    retry_failed: run the stored failed toys again (their new rows replace the failed ones).
    max_losses: times a unit of toys may be lost with its worker and submitted again before
    ExecutorError stops the campaign.
    Raises FitError once more than max_failure_fraction of the toys have failed."""
    refuse_start_in_worker()
    _check_test(test)
    test = test.for_reference(x_ref, w_ref)
    if not (isinstance(n_toys, (int, np.integer)) and not isinstance(n_toys, bool) and n_toys >= 1):
        raise ConfigurationError(f"n_toys must be a positive integer, got {n_toys!r}.")
    n_toys = int(n_toys)
    if not 0.0 <= max_failure_fraction <= 1.0:
        raise ConfigurationError(f"max_failure_fraction must lie in [0, 1], got {max_failure_fraction!r}.")
    if not (isinstance(max_losses, int) and not isinstance(max_losses, bool) and max_losses >= 0):
        raise ConfigurationError(f"max_losses must be a non-negative integer, got {max_losses!r}.")
    executor = resolve_executor(executor)
    header = None if store is None else stored_header(store)
    if batch_size is None:
        batch_size = ((header or {}).get("execution") or {}).get("batch_size") or DEFAULT_BATCH_SIZE
    check_positive_integer(batch_size, "batch_size")
    block = batch_size if test.batchable else 1
    part = None if shard is None else Shard.parse(shard, block)
    execution = _execution(test, block)
    stored_execution = None if header is None else header.get("execution")
    if stored_execution not in (None, execution):
        logger.warning("%s was run with %s, this run with %s: new toys' t agree with the stored ones' to solver "
                       "tolerance, not bit for bit", store, stored_execution, execution)
    writer = None
    content = StoreContent(None, (), ())
    identity = campaign_identity(test, generator, x_ref, w_ref, seed, generator_name)  # with or without a store
    if store is not None:
        writer = StoreWriter(store, identity, n_toys=n_toys, shard=part, execution=execution,
                             t_floor=getattr(test, "t_floor", None))
        content = writer.open()
    try:
        toys = list(range(n_toys)) if part is None else part.toys(n_toys)
        stored = {row["toy"]: row for row in content.rows if row["toy"] < n_toys}
        retried = {toy for toy, row in stored.items() if retry_failed and row["status"] != STATUS_OK}
        pending = [toy for toy in toys if toy not in stored or toy in retried]
        failures = sum(row["status"] != STATUS_OK for toy, row in stored.items() if toy not in retried)
        limit = max_failure_fraction * len(toys)
        if failures > limit and pending:
            raise FitError(f"{failures} of the {len(toys)} toys stored in {store} failed, more than "
                           f"max_failure_fraction = {max_failure_fraction:g}: nothing was run. Retry them with "
                           "retry_failed=True (nplm toys --retry-failed), or allow more failures.")
        logger.info("campaign of %d toys (seed %d)%s: %d stored, %d to run on %s, blocks of %d%s", n_toys, seed,
                    f", shard {part}" if part else "", len(toys) - len(pending), len(pending),
                    "serial" if executor is None else executor, block, f", store {store}" if store is not None else "")
        task = ToyTask(test=test.with_quiet_fits(), generator=generator, x_ref=x_ref, w_ref=w_ref, seed=seed)
        new_rows: dict[int, dict[str, Any]] = {}
        # rows arrive a batch at a time: the rate is the average since the start (smoothing=0), and
        # the bar is drawn at least every 0.1% of the toys, so it shows each batch's end
        bar = tqdm(total=len(toys), initial=len(toys) - len(pending), desc="toys", unit="toy", disable=not progress,
                   file=sys.stderr, smoothing=0.0, mininterval=0.0, miniters=max(1, len(toys) // 1000))
        try:
            for row in results(executor, task, _units(toys, set(pending), block), max_losses):
                if row["toy"] in retried:
                    row["retry"] = True
                new_rows[row["toy"]] = row
                if writer:
                    writer.append(row)
                if row["status"] != STATUS_OK:
                    failures += 1
                    logger.warning("toy %d failed: %s", row["toy"], row["status"])
                    bar.set_postfix(failed=failures, refresh=False)
                    if failures > limit:
                        raise FitError(f"{failures} of {len(toys)} toys failed (more than {max_failure_fraction:.0%}); "
                                       f"last: toy {row['toy']}: {row['status']}")
                bar.update(1)
        finally:
            bar.close()
    finally:
        if writer:
            writer.close()
    owned = set(toys)
    rows = {toy: row for toy, row in stored.items() if toy in owned} | new_rows
    return CampaignResult(rows=tuple(rows[index] for index in sorted(rows)),
                          identity=writer.identity if writer else identity)
