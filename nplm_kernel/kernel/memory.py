"""How a kernel fit spends its memory budget, in one place: the bytes a fit may add
(`memory_budget`) are split here between the fit's fixed part, K_nM (cached, or as many rows as fit
and the others recomputed block by block) and the working arrays of a batch of toys; and the
per-process cache of prepared references (KernelNPLM(reuse_reference=True)) is kept here, its
entries' stored bytes together within the budget of the fit that adds one."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from ..solver import PairProducts, kernel_memory_budget

#: Default bound on the memory a kernel fit adds, in bytes (4 GiB: the paper-scale 5D fit, K_nM of 1e5
#: reference events and about 2,800 centres, is cached within it).
DEFAULT_MEMORY_BUDGET = 4 * 1024**3
#: Float64 vectors of N_R values that each toy of a batch holds while its group is solved (f, w e^f,
#: trial values and their temporaries in solver.batch).
BATCH_VECTORS_PER_TOY = 6


@dataclass(frozen=True)
class MemoryBudget:
    """`total` bytes that one kernel fit may add, temporaries included. Its parts:

    - kernel_rows: what remains for K_nM once the fit's per-point vectors and point copies
      (solver.fixed_fit_memory) are counted; ConfigurationError when not even one row block fits;
    - batch_group: toys a batched fit solves together, each holding BATCH_VECTORS_PER_TOY vectors of
      N_R values within what kernel_rows leaves for one centre;
    - holds_shared_reference: whether the arrays derived for batched fits (the reference's pair
      products and [Phi_R^T; 1]) fit half the budget, the other half being the toys' own;
    - the reference cache (ReferenceCache) holds at most `total` bytes of stored kernel rows."""

    total: int

    def kernel_rows(self, n_points: int, n_features: int, n_centers: int) -> int:
        """Bytes for K_nM of n_points points and n_centers centres (solver.kernel_memory_budget)."""
        return kernel_memory_budget(self.total, n_points, n_features, n_centers)

    def batch_group(self, n_ref: int, n_features: int) -> int:
        """Toys solved together per group of a batched fit on N_R = n_ref reference points."""
        return max(1, self.kernel_rows(n_ref, n_features, 1) // (BATCH_VECTORS_PER_TOY * 8 * n_ref))

    def holds_shared_reference(self, n_ref: int, n_centers: int) -> bool:
        """Whether the reference side of batched fits (PairProducts.derived_bytes) fits half the budget."""
        return PairProducts.derived_bytes(n_ref, n_centers) <= self.total // 2


class CachedEntry(Protocol):
    key: str

    def stored_bytes(self) -> int: ...


class ReferenceCache:
    """The per-process cache of prepared references, least recently used first: at most
    `max_entries` (e.g. one per width of a multi-scale test), their stored bytes (kernel rows and
    the arrays derived for batched fits, preconditioners) together within the budget of the last fit
    that added or grew one."""

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedEntry] = OrderedDict()

    def get(self, key: str) -> CachedEntry | None:
        """The entry of `key` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def add(self, entry: CachedEntry, budget: MemoryBudget) -> None:
        """Keep `entry`, evicting the least recently used others beyond max_entries or beyond
        budget.total stored bytes in all (the newest entry is always kept)."""
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        self.trim(budget)

    def trim(self, budget: MemoryBudget) -> None:
        """Evict the least recently used entries beyond max_entries or beyond budget.total stored
        bytes in all (the most recently used is always kept): after adding one, and after a fit
        has grown one (explicit-Hessian products, preconditioners)."""
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or
                                          self.stored_bytes() > budget.total):
            self._entries.popitem(last=False)

    def stored_bytes(self) -> int:
        """Bytes the cached entries hold."""
        return sum(entry.stored_bytes() for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every prepared reference (frees its kernel rows)."""
        self._entries.clear()


#: This process's cache of references prepared by KernelNPLM(reuse_reference=True).
reference_cache = ReferenceCache()
