"""The toy store: an append-only JSON-Lines file that knows what it is a null of (records.py:
format, readers, check and repair; writer.py: the locked writer with group commits; shards.py:
stores read together, and the shards of one campaign merged)."""

from .records import (
    FORMAT,
    STATUS_OK,
    CampaignMismatchError,
    Shard,
    StoreConflictError,
    StoreContent,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreReport,
    campaign_header,
    check_store,
    read_store,
    repair_store,
    stored_header,
    t_floor_problem,
    t_values,
    verify_identity,
)
from .shards import MergeSummary, merge_stores, read_stores, store_paths
from .writer import StoreLock, StoreWriter

__all__ = ["FORMAT", "STATUS_OK", "CampaignMismatchError", "Shard", "StoreConflictError", "StoreContent",
           "StoreCorruptError", "StoreError", "StoreLockedError", "StoreReport", "campaign_header", "check_store",
           "read_store", "repair_store", "stored_header", "t_floor_problem", "t_values", "verify_identity", "MergeSummary",
           "merge_stores", "read_stores", "store_paths", "StoreLock", "StoreWriter"]
