"""The toy store: an append-only JSON-Lines file that knows what it is a null of (records.py:
format, readers, check and repair; writer.py: the locked writer with group commits)."""

from .records import (
    FORMAT,
    STATUS_OK,
    CampaignMismatchError,
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
    t_values,
    verify_identity,
)
from .writer import StoreLock, StoreWriter

__all__ = ["FORMAT", "STATUS_OK", "CampaignMismatchError", "StoreConflictError", "StoreContent", "StoreCorruptError",
           "StoreError", "StoreLockedError", "StoreReport", "campaign_header", "check_store", "read_store",
           "repair_store", "t_values", "verify_identity", "StoreLock", "StoreWriter"]
