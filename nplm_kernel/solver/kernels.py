"""Gaussian kernel blocks, the CPU threads that compute them, and the kernel-width heuristic.

k(x, c) = exp(-|x - c|^2 / (2 sigma^2)), sigma in the units of the (standardised) inputs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from ..core.exceptions import ConfigurationError


def gaussian_kernel(points: torch.Tensor, centers: torch.Tensor, sigma: float,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel block K[i, m] = exp(-|x_i - c_m|^2 / (2 sigma^2)), shape (n, M), written into `out`
    when given (a buffer of that shape, reused across blocks)."""
    return kernel_from_factors(exponent_rows(points, sigma), exponent_columns(centers, sigma), out=out)


def exponent_rows(points: torch.Tensor, sigma: float) -> torch.Tensor:
    """P = [x / sigma, -|x / sigma|^2 / 2, 1], (n, d + 2): with C = exponent_columns(c), P C is the
    kernel's exponent -|x - c|^2 / (2 sigma^2) = (x.c - |x|^2 / 2 - |c|^2 / 2) / sigma^2, one matrix
    product per block."""
    scaled = points / sigma
    ones = torch.ones((1,), dtype=points.dtype, device=points.device).expand(len(points), 1)
    return torch.cat([scaled, -0.5 * scaled.square().sum(dim=1, keepdim=True), ones], dim=1)


def exponent_columns(centers: torch.Tensor, sigma: float) -> torch.Tensor:
    """C = [c / sigma, 1, -|c / sigma|^2 / 2]^T, (d + 2, M), the centres' side of exponent_rows
    (computed once per set of centres)."""
    scaled = centers / sigma
    ones = torch.ones((1,), dtype=centers.dtype, device=centers.device).expand(len(centers), 1)
    return torch.cat([scaled, ones, -0.5 * scaled.square().sum(dim=1, keepdim=True)], dim=1).T.contiguous()


def kernel_from_factors(rows: torch.Tensor, columns: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """exp(P C) for P = exponent_rows(x) of the block's points and C = exponent_columns(c), into
    `out` when given; the exponent is capped at 0 so rounding never gives k > 1."""
    return exp_(torch.matmul(rows, columns, out=out), ceiling=0.0)


def exp_(values: torch.Tensor, ceiling: float | None = None) -> torch.Tensor:
    """e^min(values, ceiling) in place (e^values without a ceiling), returned. On the CPU with at
    most 2 torch threads through NumPy's vectorised exp (the same values to rounding; one NumPy
    thread computes float64 exp as fast as two of torch's), otherwise torch's. Overflow gives inf,
    silently, as torch's does."""
    if ceiling is not None:
        values.clamp_(max=ceiling)
    if values.device.type == "cpu" and not values.requires_grad and torch.get_num_threads() <= 2:
        array = values.numpy()
        with np.errstate(over="ignore"):
            np.exp(array, out=array)
        return values
    return values.exp_()


Result = TypeVar("Result")
#: Seconds the block threads may take to start; a pool that does not start in time is not used.
POOL_START_SECONDS = 60.0
_block_pool: tuple[int, int, ThreadPoolExecutor | None] | None = None
_block_pool_lock = threading.Lock()


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's thread count of the calling thread set to `count` for the body, and back after."""
    own = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(own)


def block_threads(device: torch.device) -> int:
    """Threads that share the kernel blocks of one pass: torch.get_num_threads() of the calling
    thread on the CPU, 1 on other devices (where one kernel call already fills the device)."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


def run_in_threads(jobs: list[Callable[[], Result]]) -> list[Result]:
    """The results of `jobs`, in order, the jobs run at once on this process's block threads (the
    calling thread waits), or one after the other in the calling thread when there is one job or
    no pool.

    A kernel block is a small matrix product and an exp: torch's own threads split each one and
    wait for each other between them, and NumPy's exp runs on one thread. The pool's threads run
    torch single-threaded and each computes whole blocks (1.7x faster per pass with 2 threads on
    2 cores). torch keeps its thread count per thread; setting it in a pool thread also changes the
    count that threads started later take, so the creating thread sets that back to its own. Where
    a torch version does not keep the count per thread, there is no pool."""
    if len(jobs) <= 1:
        return [job() for job in jobs]
    pool = _thread_pool(len(jobs))
    if pool is None:
        return [job() for job in jobs]
    return [future.result() for future in [pool.submit(job) for job in jobs]]


def _thread_pool(n_threads: int) -> ThreadPoolExecutor | None:
    """This process's pool of at least n_threads single-threaded torch threads (a pool inherited
    through fork has no threads: one is made per process id), None where torch cannot run so."""
    global _block_pool
    process = os.getpid()
    with _block_pool_lock:
        if _block_pool is None or _block_pool[0] != process or _block_pool[1] < n_threads:
            if _block_pool is not None and _block_pool[0] == process and _block_pool[2] is not None:
                _block_pool[2].shutdown(wait=False)
            _block_pool = (process, n_threads, _single_threaded_pool(n_threads))
        return _block_pool[2]


def _single_threaded_pool(n_threads: int) -> ThreadPoolExecutor | None:
    own = torch.get_num_threads()
    started = threading.Barrier(n_threads + 1, timeout=POOL_START_SECONDS)
    counts: list[int] = []

    def single_threaded() -> None:
        torch.get_num_threads()  # torch's per-thread set-up first, so that it keeps the count below
        torch.set_num_threads(1)
        counts.append(torch.get_num_threads())
        started.wait()

    pool = ThreadPoolExecutor(n_threads, initializer=single_threaded, thread_name_prefix="nplm-kernel-blocks")
    for _ in range(n_threads):
        pool.submit(int)
    try:
        started.wait()
    except threading.BrokenBarrierError:
        counts.clear()
    torch.set_num_threads(own)
    if counts == [1] * n_threads:
        return pool
    pool.shutdown(wait=False)
    return None


#: Random pairs of events whose distances estimate a pairwise-distance quantile (pairwise_distance_quantiles):
#: the quantile's relative error is then about a thousandth.
DISTANCE_PAIRS = 1_000_000
#: The seed of those pairs: the same reference always gives the same widths.
DISTANCE_SEED = 0


def pairwise_distance_quantiles(points: np.ndarray, quantiles: Sequence[float], weights: np.ndarray | None = None,
                                n_pairs: int = DISTANCE_PAIRS) -> list[float]:
    """The `quantiles` of the Euclidean distance between two events of `points` drawn independently
    with probability proportional to `weights` (equal when None): the papers' kernel-width heuristic
    (the 90th percentile, or several widths), estimated from n_pairs random pairs (DISTANCE_SEED), so
    that the cost is bounded and every quantile, for every caller, comes from the same pairs."""
    for quantile in quantiles:
        if not 0.0 < quantile < 1.0:
            raise ConfigurationError(f"quantile must lie in (0, 1), got {quantile}.")
    if points.shape[0] < 2:
        raise ConfigurationError("the kernel-width heuristic needs at least 2 events.")
    rng = np.random.default_rng(DISTANCE_SEED)
    weights = None if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), points.shape[:1])
    probability = None if weights is None or np.ptp(weights) == 0 else weights / np.sum(weights)  # equal: uniform
    first, second = (rng.choice(points.shape[0], size=n_pairs, p=probability) for _ in range(2))
    distinct = first != second
    distances = np.linalg.norm(points[first[distinct]] - points[second[distinct]], axis=1)
    widths = [float(width) for width in np.quantile(distances, list(quantiles))] if len(distances) else [0.0]
    if not min(widths) > 0.0:
        raise ConfigurationError(
            "the reference events are (almost) all identical: a pairwise-distance quantile is 0, so no kernel "
            "width can be derived; pass sigma explicitly."
        )
    return widths
