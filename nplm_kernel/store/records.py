"""The toy store: an append-only JSON-Lines file that knows what it is a null of.

Line 1 is the campaign header, {"record": "campaign", "format": ..., "identity": {...}}, where the
identity (identity.py) describes the test (backend and hyperparameters, nuisances, reference
sample), the toy generator and the campaign seed. Every further line is one toy,
{"record": "toy", "toy": i, "seed": s, "status": "ok" | "failed: ...", "t": ..., ...}.

Guarantees:
- One writer at a time: a writer holds an exclusive advisory lock (flock) on `<store>.lock` for
  the whole campaign; a second writer gets StoreLockedError naming the holder's pid.
- A campaign resumes only a store of the same identity (CampaignMismatchError names each field
  that differs, with both values, and the file is left untouched).
- Rows are committed (written, flushed, fsync'ed) in groups; a kill loses at most the rows of the
  last group, and a line torn by a kill is cut off silently before the next append. Any other
  unreadable line stops every reader with StoreCorruptError (file, line number, what is wrong);
  `check_store` reports the damage and `repair_store` moves bad lines to `<store>.rejected` without
  dropping anything.
- Readers count each toy index once; two different rows for one toy raise StoreConflictError.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..core.exceptions import ConfigurationError, InputError
from ..core.identity import format_differences, identity_differences
from ..core.version import __version__

logger = logging.getLogger(__name__)

FORMAT = "nplm-toys/2"
STATUS_OK = "ok"
LEGACY_PROBLEM = ("no campaign header: the store was written by an earlier version (before campaign identities), "
                  "so what it is a null of cannot be checked; run the campaign again into a new store")
#: Fields that must agree between two rows of one toy for them to count as the same toy.
RESULT_FIELDS = ("status", "t", "tau", "delta")


class StoreError(InputError):
    """A toy store cannot be used as asked (damaged, foreign, locked or conflicting)."""


class StoreCorruptError(StoreError):
    """A line of the store is unreadable or not a valid record."""


class StoreConflictError(StoreError):
    """The store holds two different results for one toy."""


class StoreLockedError(StoreError):
    """Another process is writing to the store."""


class CampaignMismatchError(StoreError, ConfigurationError):
    """The store belongs to another campaign (different test, generator, reference or seed)."""


@dataclass(frozen=True)
class StoreContent:
    """What a store holds: the header (None for an empty store), the toy rows counted once (by
    toy index, in file order) with their line numbers, and identical duplicate lines skipped."""

    header: dict[str, Any] | None
    rows: tuple[dict[str, Any], ...]
    line_numbers: tuple[int, ...]
    duplicates: int = 0
    complete_bytes: int = 0

    @property
    def identity(self) -> dict[str, Any] | None:
        return None if self.header is None else self.header["identity"]


@dataclass
class StoreReport:
    """What check_store found: counts, problems (line number, description) and conflicts."""

    path: Path
    header: dict[str, Any] | None = None
    n_rows: int = 0
    n_ok: int = 0
    n_failed: int = 0
    duplicates: int = 0
    torn_tail: bool = False
    legacy: bool = False
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    conflicts: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.bad_lines and not self.conflicts and not self.legacy

    def summary(self) -> str:
        lines = [f"store:      {self.path}",
                 f"header:     {'campaign ' + self.header['format'] if self.header else 'missing'}",
                 f"toys:       {self.n_rows} ({self.n_ok} ok, {self.n_failed} failed)"
                 + (f", {self.duplicates} identical duplicate line(s) counted once" if self.duplicates else "")]
        if self.torn_tail:
            lines.append("torn tail:  the last line was cut by a kill (ignored; cut off at the next append)")
        for number, problem in self.bad_lines:
            lines.append(f"bad line:   {number}: {problem}")
        for toy, first, second in self.conflicts:
            lines.append(f"conflict:   toy {toy} has different results on lines {first} and {second}")
        if self.legacy:
            lines.append(f"status:     {LEGACY_PROBLEM}")
        else:
            lines.append("status:     " + ("healthy" if self.healthy else "damaged: `nplm store repair` moves the bad "
                                          "lines to a side file"))
        return "\n".join(lines)


def dumps(record: dict[str, Any]) -> str:
    """One JSON line (orjson: numpy scalars and arrays as numbers and lists)."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _toy_problem(row: Any) -> str | None:
    """Why `row` is not a valid toy record (None when it is). The common case, a well-formed row
    with a float t, is checked first and cheaply (a million rows read in seconds)."""
    if type(row) is dict and type(row.get("toy")) is int and row["toy"] >= 0 and row.get("record") == "toy" \
            and "seed" in row and type(row.get("status")) is str:
        t = row.get("t", row)
        if type(t) is float and t - t == 0.0 or row["status"] != STATUS_OK and "t" in row:
            return None
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    if row.get("record") != "toy":
        return f"record is {row.get('record')!r}, expected 'toy' (a campaign header may only be line 1)"
    missing = [key for key in ("toy", "seed", "status", "t") if key not in row]
    if missing:
        return f"missing key(s) {missing}"
    if not (isinstance(row["toy"], int) and not isinstance(row["toy"], bool) and row["toy"] >= 0):
        return f"toy must be a non-negative integer, got {row['toy']!r}"
    if not isinstance(row["status"], str):
        return f"status must be a string, got {row['status']!r}"
    if row["status"] == STATUS_OK and not _finite_numbers(row["t"]):
        return f"a successful toy needs a finite number t (or a list of them, one per width), got {row['t']!r}"
    return None


def _finite_numbers(value: Any) -> bool:
    """A finite number, or a non-empty list of finite numbers (x - x == 0 exactly when x is finite)."""
    values = value if isinstance(value, list) and value else [value]
    return all(isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item) for item in values)


def _header_problem(row: dict[str, Any]) -> str | None:
    """Why a campaign header `row` is unusable (None when it is fine)."""
    if row.get("format") != FORMAT:
        return f"unknown store format {row.get('format')!r} (this version reads {FORMAT!r})"
    if not isinstance(row.get("identity"), dict):
        return "the campaign header has no identity"
    return None


def _same_result(first: dict[str, Any], second: dict[str, Any]) -> bool:
    return all(first.get(name) == second.get(name) for name in RESULT_FIELDS)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (restored after): parsing a store creates millions
    of small dicts, which hold no cycles but trigger full collections that double the read time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _scan(path: Path) -> tuple[StoreReport, StoreContent]:
    """Read every line; collect the valid content and every problem."""
    report = StoreReport(path=path)
    header, rows, numbers, by_toy = None, [], [], {}
    if not path.exists():
        return report, StoreContent(None, (), ())
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    report.torn_tail = bool(lines[-1])
    complete_bytes = len(data) - len(lines[-1])
    with _cyclic_gc_paused():
        for number, raw in enumerate(lines[:-1], start=1):
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                report.bad_lines.append((number, "blank line" if not raw.strip() else f"not valid JSON ({error})"))
                continue
            if number == 1 and isinstance(row, dict) and "record" not in row and "toy" in row:
                report.legacy = True
                break
            if number == 1 and isinstance(row, dict) and row.get("record") == "campaign":
                problem = _header_problem(row)
                if problem:
                    report.bad_lines.append((number, problem))
                else:
                    header = report.header = row
                continue
            problem = _toy_problem(row)
            if problem:
                report.bad_lines.append((number, problem))
                continue
            previous = by_toy.get(row["toy"])
            if previous is not None:
                if _same_result(rows[previous], row):
                    report.duplicates += 1
                else:
                    report.conflicts.append((row["toy"], numbers[previous], number))
                continue
            by_toy[row["toy"]] = len(rows)
            rows.append(row)
            numbers.append(number)
    report.n_rows = len(rows)
    report.n_ok = sum(row["status"] == STATUS_OK for row in rows)
    report.n_failed = report.n_rows - report.n_ok
    content = StoreContent(header, tuple(rows), tuple(numbers), report.duplicates, complete_bytes)
    return report, content


def check_store(path: str | os.PathLike) -> StoreReport:
    """Report a store's content and damage without changing it."""
    return _scan(Path(path))[0]


def read_store(path: str | os.PathLike) -> StoreContent:
    """The valid content of a store; StoreCorruptError (file, line, problem) or StoreConflictError
    if any line other than a torn last line is damaged. A missing file is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: toy store not found.")
    report, content = _scan(path)
    if report.legacy:
        raise StoreError(f"{path}: {LEGACY_PROBLEM}.")
    if report.bad_lines:
        number, problem = report.bad_lines[0]
        more = f" (and {len(report.bad_lines) - 1} more bad line(s))" if len(report.bad_lines) > 1 else ""
        raise StoreCorruptError(f"{path}, line {number}: {problem}{more}. Run `nplm store check {path}` to see "
                                f"the damage and `nplm store repair {path}` to move bad lines to a side file.")
    if report.conflicts:
        toy, first, second = report.conflicts[0]
        raise StoreConflictError(f"{path}: toy {toy} has two different results (lines {first} and {second}); "
                                 "the store was written by two campaigns at once. `nplm store repair` keeps the first "
                                 "and moves the others to a side file.")
    return content


def repair_store(path: str | os.PathLike) -> tuple[StoreReport, Path | None]:
    """Move bad lines, conflicting later rows and a torn tail to `<store>.rejected` (appended, each
    with its line number) and rewrite the store atomically with what remains. Identical duplicate
    lines are dropped (they are the same toy). Returns (report before repair, side file or None)."""
    path = Path(path)
    report = check_store(path)
    if report.legacy:
        raise StoreError(f"{path}: {LEGACY_PROBLEM}; repair cannot add the missing identity.")
    if report.healthy and not report.torn_tail and not report.duplicates:
        return report, None
    lines = path.read_bytes().split(b"\n")
    bad = {number for number, _ in report.bad_lines if number >= 1}
    bad |= {second for _, _, second in report.conflicts}
    side = path.with_name(path.name + ".rejected")
    kept, rejected = [], []
    seen: dict[int, dict] = {}
    for number, raw in enumerate(lines[:-1], start=1):
        if number in bad:
            rejected.append({"line": number, "text": raw.decode("utf-8", errors="replace")})
            continue
        row = orjson.loads(raw)
        if row.get("record") == "toy":
            if row["toy"] in seen:
                continue
            seen[row["toy"]] = row
        kept.append(raw)
    if lines[-1]:
        rejected.append({"line": len(lines), "text": lines[-1].decode("utf-8", errors="replace"), "torn": True})
    if rejected:
        with open(side, "a", encoding="utf-8") as handle:
            for item in rejected:
                handle.write(dumps(item) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    temporary = path.with_name(path.name + ".repairing")
    with open(temporary, "wb") as handle:
        handle.write(b"".join(raw + b"\n" for raw in kept))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return report, side if rejected else None


def campaign_header(identity: dict[str, Any]) -> dict[str, Any]:
    """The first line of a store."""
    return {"record": "campaign", "format": FORMAT, "identity": identity, "package_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def verify_identity(path: Path, content: StoreContent, identity: dict[str, Any], part: str | None = None) -> None:
    """CampaignMismatchError unless the store's identity (or its `part`, e.g. 'test') equals
    `identity`; an empty store matches anything."""
    if content.header is None:
        return
    stored = content.identity if part is None else content.identity.get(part, {})
    differences = identity_differences(stored, identity)
    if differences:
        what = "campaign" if part is None else part
        raise CampaignMismatchError(
            f"{path} holds toys of another {what}; it was left untouched. What differs:\n  "
            + format_differences(differences, "the store", "this run")
            + "\nUse another store for this setting (or delete this one to start over).")


def t_values(rows: Iterable[dict[str, Any]]) -> np.ndarray:
    """t of the successful toys: (n,), or (n, K) for a multi-scale test with K widths."""
    return np.array([row["t"] for row in rows if row["status"] == STATUS_OK], dtype=np.float64)
