"""Writing a toy store: one writer at a time (an exclusive lock on `<store>.lock` that names its
holder's pid), the identity (and shard) checked before anything is written, and rows committed in
groups (written, flushed and fsync'ed together)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .records import (
    CampaignMismatchError,
    Shard,
    StoreContent,
    StoreLockedError,
    campaign_header,
    dumps,
    read_store,
    verify_identity,
    write_durably,
)

logger = logging.getLogger(__name__)


class StoreLock:
    """Exclusive advisory lock (fcntl.flock) on `<store>.lock`, which records the holder's pid.
    Released when closed or when the holding process dies."""

    def __init__(self, store: Path):
        self.store = store
        self.path = store.with_name(store.name + ".lock")
        self._handle = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StoreLockedError(f"{self.store} is being written by another campaign (pid {holder}); wait for it "
                                   "to finish, or give this campaign another store.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _part(shard: Shard | None) -> str:
    return "the whole campaign" if shard is None else f"shard {shard} (blocks of {shard.block} toys)"


class StoreWriter:
    """Appends toy rows to a locked store in group commits: rows are buffered and written, flushed
    and fsync'ed together every `commit_rows` rows or `commit_seconds` seconds, whichever comes
    first, and at close. Opening checks the identity and the shard against the header (or writes
    the header to a new store), records an n_toys beyond the stored one, and cuts a torn last line;
    it never changes a store of another campaign. `header`: campaign_header's other fields
    (n_toys, shard, execution, t_floor) for a new store."""

    def __init__(self, path: str | os.PathLike, identity: dict[str, Any], commit_rows: int = 64,
                 commit_seconds: float = 2.0, n_toys: int | None = None, shard: Shard | None = None,
                 execution: dict[str, Any] | None = None, t_floor: float | None = None):
        self.path = Path(path)
        self.identity = identity
        self.n_toys, self.shard, self.execution, self.t_floor = n_toys, shard, execution, t_floor
        self.commit_rows = commit_rows
        self.commit_seconds = commit_seconds
        self._lock = StoreLock(self.path)
        self._buffer: list[str] = []
        self._last_commit = time.monotonic()
        self.content: StoreContent | None = None

    def open(self) -> StoreContent:
        """Lock, read and verify the store; returns what it already holds."""
        self._lock.acquire()
        try:
            self.content = read_store(self.path) if self.path.exists() else StoreContent(None, (), ())
            verify_identity(self.path, self.content, self.identity)
            self._verify_shard()
            if self.path.exists() and self.path.stat().st_size > self.content.complete_bytes:
                logger.info("%s: cutting a line torn by a kill", self.path)
            self._cut_torn_tail()
            if self.content.header is None:
                self._write([dumps(campaign_header(self.identity, self.n_toys, self.shard, self.execution,
                                                   self.t_floor))])
            elif self.n_toys is not None and (self.content.n_toys is None or self.n_toys > self.content.n_toys):
                self._write([dumps({"record": "n_toys", "n_toys": self.n_toys})])
        except BaseException:
            self._lock.release()
            raise
        return self.content

    def _verify_shard(self) -> None:
        """CampaignMismatchError unless the store holds the same part of the campaign as this run."""
        if self.content.header is None or self.content.shard == self.shard:
            return
        raise CampaignMismatchError(f"{self.path} holds {_part(self.content.shard)}, this run is {_part(self.shard)}; "
                                    "it was left untouched. Give each shard its own store, with the same batch size.")

    def _cut_torn_tail(self) -> None:
        """Cut a line torn by a kill, so that appended rows start on a fresh line."""
        if self.path.exists() and self.path.stat().st_size > self.content.complete_bytes:
            with open(self.path, "r+b") as handle:
                handle.truncate(self.content.complete_bytes)

    def append(self, row: dict[str, Any]) -> None:
        """Buffer one row; commit the group when it is full or old enough."""
        self._buffer.append(dumps(row))
        if len(self._buffer) >= self.commit_rows or time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Write, flush and fsync the buffered rows."""
        if self._buffer:
            self._write(self._buffer)
            self._buffer = []
        self._last_commit = time.monotonic()

    def _write(self, lines: Iterable[str]) -> None:
        write_durably(self.path, "".join(line + "\n" for line in lines).encode(), append=True)

    def close(self) -> None:
        """Commit what is buffered and release the lock."""
        try:
            self.commit()
        finally:
            self._lock.release()


