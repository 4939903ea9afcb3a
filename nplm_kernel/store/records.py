"""The toy store: an append-only JSON-Lines file that knows what it is a null of.

Line 1 is the campaign header, {"record": "campaign", "format": ..., "identity": {...}, "n_toys": N,
...}, where the identity (identity.py) describes the test (backend and hyperparameters, nuisances,
reference sample), the toy generator and the campaign seed; the header also records the toys the
campaign holds (n_toys, and for a shard which of them: `shard`), what t depends on besides the
identity (`execution`: threads per toy, batch size, the backend's execution settings) and, where
the test guarantees one, the lowest t a fit can give (`t_floor`). A line {"record": "n_toys",
"n_toys": M} records that a resumed campaign was extended to M toys. Every other line is one toy,
{"record": "toy", "toy": i, "seed": s, "status": "ok" | "failed: ...", "t": ..., ...}; a row with
"retry": true replaces the failed row of its toy (a resume with retry_failed).

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
- Rows that cannot belong to the campaign are bad lines: a toy index at or beyond n_toys, a toy of
  another shard, a successful t below the test's floor. A store with toy rows but no campaign header
  is refused (what its toys are a null of is unknown); repair adds a header only when given one.
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

FORMAT = "nplm-toys/3"
#: Formats this version reads: nplm-toys/2 headers lack n_toys, shard, execution and t_floor.
READABLE_FORMATS = ("nplm-toys/2", FORMAT)
STATUS_OK = "ok"
LEGACY_PROBLEM = ("no campaign header: the store was written by an earlier version (before campaign identities), "
                  "so what it is a null of cannot be checked; run the campaign again into a new store")
HEADERLESS_PROBLEM = ("toy rows but no campaign header on line 1, so what they are a null of is unknown; `nplm store "
                      "repair STORE --header-from OTHER` puts the header of another store of the same campaign (a "
                      "shard, a copy) on line 1, or start a new store")
#: Fields that must agree between two rows of one toy for them to count as the same toy.
RESULT_FIELDS = ("status", "t", "tau", "delta")
#: A successful t may lie this far (times 1 + N_D) below the test's floor (rounding of the loss).
T_FLOOR_TOLERANCE = 1e-9


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
class Shard:
    """Shard `index` of `count` of a campaign: the toys of the campaign's blocks index,
    index + count, index + 2 count, ..., block b holding toys [b block, (b + 1) block) (`block`:
    the toys fitted together, so that a shard's toys are batched as in one run of the campaign)."""

    index: int
    count: int
    block: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.index < self.count and self.block >= 1):
            raise ConfigurationError(f"a shard K/N needs 0 <= K < N, got {self.index}/{self.count}.")

    @classmethod
    def parse(cls, setting: str | tuple[int, int] | Shard, block: int = 1) -> Shard:
        """'K/N' (or (K, N)) as the shard of blocks of `block` toys; ConfigurationError otherwise."""
        if isinstance(setting, Shard):
            return cls(setting.index, setting.count, block)
        parts = setting.split("/") if isinstance(setting, str) else list(setting)
        try:
            index, count = (int(part) for part in parts)
        except (TypeError, ValueError):
            raise ConfigurationError(f"shard must be 'K/N' (run the K-th of N parts, 0 <= K < N), got {setting!r}.") \
                from None
        return cls(index, count, block)

    def owns(self, toy: int) -> bool:
        return (toy // self.block) % self.count == self.index

    def toys(self, n_toys: int) -> list[int]:
        """This shard's toys of a campaign of n_toys toys, in order."""
        return [toy for start in range(self.index * self.block, n_toys, self.count * self.block)
                for toy in range(start, min(start + self.block, n_toys))]

    def record(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count, "block": self.block}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class StoreContent:
    """What a store holds: the header (None for an empty store), the toy rows counted once (by
    toy index, in file order; a retry replaces the failed row of its toy) with their line
    numbers, identical duplicate lines skipped, and the campaign's n_toys (None where unrecorded)."""

    header: dict[str, Any] | None
    rows: tuple[dict[str, Any], ...]
    line_numbers: tuple[int, ...]
    duplicates: int = 0
    complete_bytes: int = 0
    n_toys: int | None = None

    @property
    def identity(self) -> dict[str, Any] | None:
        return None if self.header is None else self.header["identity"]

    @property
    def shard(self) -> Shard | None:
        """The shard the store holds (None: the whole campaign)."""
        recorded = None if self.header is None else self.header.get("shard")
        return None if recorded is None else Shard(**recorded)


@dataclass
class StoreReport:
    """What check_store found: counts, problems (line number, description) and conflicts."""

    path: Path
    header: dict[str, Any] | None = None
    n_rows: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_toys: int | None = None
    duplicates: int = 0
    retried: int = 0
    torn_tail: bool = False
    legacy: bool = False
    headerless: bool = False
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    conflicts: list[tuple[int, int, int]] = field(default_factory=list)
    duplicate_lines: list[int] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.bad_lines and not self.conflicts and not self.legacy and not self.headerless

    def summary(self) -> str:
        shard = None if self.header is None else self.header.get("shard")
        lines = [f"store:      {self.path}",
                 f"header:     {'campaign ' + self.header['format'] if self.header else 'missing'}"
                 + (f", shard {shard['index']}/{shard['count']}" if shard else "")
                 + (f", n_toys = {self.n_toys}" if self.n_toys is not None else ""),
                 f"toys:       {self.n_rows} ({self.n_ok} ok, {self.n_failed} failed)"
                 + (f", {self.duplicates} identical duplicate line(s) counted once" if self.duplicates else "")
                 + (f", {self.retried} failed toy(s) retried" if self.retried else "")]
        if self.torn_tail:
            lines.append("torn tail:  the last line was cut by a kill (ignored; cut off at the next append)")
        for number, problem in self.bad_lines:
            lines.append(f"bad line:   {number}: {problem}")
        for toy, first, second in self.conflicts:
            lines.append(f"conflict:   toy {toy} has different results on lines {first} and {second}")
        if self.legacy:
            lines.append(f"status:     {LEGACY_PROBLEM}")
        elif self.headerless:
            lines.append(f"status:     damaged: {HEADERLESS_PROBLEM}")
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


def t_floor_problem(t: float | list[float], floor: float | list[float | None] | None, n_data: Any) -> str | None:
    """Why a successful t cannot come from a test whose t is never below `floor` (None when it can,
    or when the test has no floor): a value below floor - T_FLOOR_TOLERANCE (1 + N_D). A test of
    several members has one floor per member (None for a member without one, e.g. the excess scan)."""
    values = t if isinstance(t, list) else [t]
    floors = floor if isinstance(floor, list) else [floor] * len(values)
    size = n_data if isinstance(n_data, int) and not isinstance(n_data, bool) and n_data >= 0 else 0
    for value, lowest in zip(values, floors):
        if lowest is not None and value < lowest - T_FLOOR_TOLERANCE * (1 + size):
            return (f"t = {value!r} is below {lowest!r}, the lowest t this test can give (its loss is minimised from "
                    "f = 0); no fit of this campaign wrote it")
    return None


def _belonging_problem(row: dict[str, Any], header: dict[str, Any], n_toys: int | None) -> str | None:
    """Why a valid toy row cannot belong to the campaign of `header` (None when it can)."""
    toy = row["toy"]
    if n_toys is not None and toy >= n_toys:
        return f"toy index {toy} is beyond the campaign's n_toys = {n_toys}: no run of this campaign wrote it"
    shard = header.get("shard")
    if shard is not None and not Shard(**shard).owns(toy):
        return f"toy {toy} belongs to another shard than this store's {shard['index']}/{shard['count']}"
    if row["status"] == STATUS_OK:
        return t_floor_problem(row["t"], header.get("t_floor"), row.get("n_data"))
    return None


def _finite_numbers(value: Any) -> bool:
    """A finite number, or a non-empty list of finite numbers (x - x == 0 exactly when x is finite)."""
    values = value if isinstance(value, list) and value else [value]
    return all(isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item) for item in values)


def _positive_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _header_problem(row: dict[str, Any]) -> str | None:
    """Why a campaign header `row` is unusable (None when it is fine)."""
    if row.get("format") not in READABLE_FORMATS:
        return f"unknown store format {row.get('format')!r} (this version reads {', '.join(READABLE_FORMATS)})"
    if not isinstance(row.get("identity"), dict):
        return "the campaign header has no identity"
    if row.get("n_toys") is not None and not _positive_integer(row["n_toys"]):
        return f"n_toys must be a positive integer, got {row['n_toys']!r}"
    shard = row.get("shard")
    if shard is not None:
        try:
            Shard(**shard)
        except (TypeError, ConfigurationError) as error:
            return f"the campaign header's shard {shard!r} is not a shard: {error}"
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


def _scan(path: Path, adopted: dict[str, Any] | None = None) -> tuple[StoreReport, StoreContent]:
    """Read every line; collect the valid content and every problem. `adopted`: the campaign
    header to read the rows under when line 1 is not one (repair_store)."""
    report = StoreReport(path=path)
    header, rows, numbers, by_toy = adopted, [], [], {}
    if not path.exists():
        return report, StoreContent(None, (), ())
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    report.torn_tail = bool(lines[-1])
    complete_bytes = len(data) - len(lines[-1])
    n_toys = None
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
                    n_toys = row.get("n_toys")
                continue
            if number == 1 and adopted is not None and not (isinstance(row, dict) and row.get("record") == "toy"):
                report.bad_lines.append((number, "not a campaign header (replaced by the header given)"))
                continue
            if header is not None and isinstance(row, dict) and row.get("record") == "n_toys":
                if _positive_integer(row.get("n_toys")) and (n_toys is None or row["n_toys"] > n_toys):
                    n_toys = row["n_toys"]
                else:
                    report.bad_lines.append((number, f"n_toys record {row.get('n_toys')!r} does not extend the "
                                                     f"campaign's n_toys = {n_toys}"))
                continue
            problem = _toy_problem(row) or (None if header is None else _belonging_problem(row, header, n_toys))
            if problem:
                report.bad_lines.append((number, problem))
                continue
            previous = by_toy.get(row["toy"])
            if previous is not None:
                if _same_result(rows[previous], row):
                    report.duplicates += 1
                    report.duplicate_lines.append(number)
                elif row.get("retry") is True and rows[previous]["status"] != STATUS_OK:
                    rows[previous], numbers[previous] = row, number
                    report.retried += 1
                else:
                    report.conflicts.append((row["toy"], numbers[previous], number))
                continue
            by_toy[row["toy"]] = len(rows)
            rows.append(row)
            numbers.append(number)
    report.headerless = header is None and bool(rows) and not report.legacy
    report.n_rows = len(rows)
    report.n_ok = sum(row["status"] == STATUS_OK for row in rows)
    report.n_failed = report.n_rows - report.n_ok
    report.n_toys = n_toys
    content = StoreContent(header, tuple(rows), tuple(numbers), report.duplicates, complete_bytes, n_toys)
    return report, content


def check_store(path: str | os.PathLike) -> StoreReport:
    """Report a store's content and damage without changing it."""
    return _scan(_existing_store(path))[0]


def _existing_store(path: str | os.PathLike) -> Path:
    """`path` as a Path; InputError when it is a directory or does not exist."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a toy store: give the store's file (JSON Lines).")
    if not path.is_file():
        raise InputError(f"{path}: toy store not found.")
    return path


def stored_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """The campaign header on a store's first line (None when there is no store, or no valid
    header there), read without the rest of the file."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        first = handle.readline()
    try:
        header = orjson.loads(first) if first.endswith(b"\n") else None
    except orjson.JSONDecodeError:
        return None
    usable = isinstance(header, dict) and header.get("record") == "campaign" and _header_problem(header) is None
    return header if usable else None


def read_store(path: str | os.PathLike) -> StoreContent:
    """The valid content of a store; StoreCorruptError (file, line, problem) or StoreConflictError
    if any line other than a torn last line is damaged, StoreError for toy rows without a campaign
    header. A missing file or a directory is an InputError."""
    path = _existing_store(path)
    report, content = _scan(path)
    if report.legacy:
        raise StoreError(f"{path}: {LEGACY_PROBLEM}.")
    if report.headerless:
        raise StoreError(f"{path}: {HEADERLESS_PROBLEM}.")
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


def repair_store(path: str | os.PathLike, header: dict[str, Any] | None = None) -> tuple[StoreReport, Path | None]:
    """Move bad lines, conflicting later rows and a torn tail to `<store>.rejected` (appended, each
    with its line number) and rewrite the store atomically with what remains. Identical duplicate
    lines are dropped (they are the same toy). A store whose campaign header is missing or
    damaged is repaired only with `header` (the header of another store of the same campaign, as
    read_store(...).header): its identity goes on line 1; without it StoreError, and nothing
    changes. Returns (report before repair, side file or None)."""
    path = _existing_store(path)
    report = check_store(path)
    if report.legacy:
        raise StoreError(f"{path}: {LEGACY_PROBLEM}; repair cannot add the missing identity.")
    lines = path.read_bytes().split(b"\n")
    needs_header = report.header is None and (report.n_rows or report.bad_lines)
    if needs_header and header is None:
        raise StoreError(f"{path}: {HEADERLESS_PROBLEM}; nothing was changed.")
    if report.healthy and not report.torn_tail and not report.duplicates:
        return report, None
    if needs_header:
        adopted = campaign_header(header["identity"], execution=header.get("execution"),
                                  t_floor=header.get("t_floor"))
        return report, _rewrite(path, lines, _scan(path, adopted)[0], dumps(adopted).encode())
    return report, _rewrite(path, lines, report, None)


def _rewrite(path: Path, lines: list[bytes], report: StoreReport, header: bytes | None) -> Path | None:
    """Rewrite `path` without the bad, conflicting and duplicate lines of `report` (moved, but for
    the duplicates, to `<store>.rejected`), `header` first when given; the side file or None."""
    dropped = {number for number, _ in report.bad_lines} | {second for _, _, second in report.conflicts}
    duplicates = set(report.duplicate_lines)
    side = path.with_name(path.name + ".rejected")
    kept = [] if header is None else [header]
    rejected = []
    for number, raw in enumerate(lines[:-1], start=1):
        if number in dropped:
            rejected.append({"line": number, "text": raw.decode("utf-8", errors="replace")})
        elif number not in duplicates:
            kept.append(raw)
    if lines[-1]:
        rejected.append({"line": len(lines), "text": lines[-1].decode("utf-8", errors="replace"), "torn": True})
    if rejected:
        write_durably(side, "".join(dumps(item) + "\n" for item in rejected).encode(), append=True)
    temporary = path.with_name(path.name + ".repairing")
    write_durably(temporary, b"".join(raw + b"\n" for raw in kept))
    os.replace(temporary, path)
    return side if rejected else None


def write_durably(path: Path, data: bytes, append: bool = False) -> None:
    """Write (or append) `data`, flush and fsync; a failure (a full disk, ...) is a StoreError naming
    the file."""
    try:
        with open(path, "ab" if append else "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise StoreError(f"{path}: cannot write the toy store: {error.strerror or error} (the rows written before "
                         "are kept; free space or fix the folder, then resume).") from error


def campaign_header(identity: dict[str, Any], n_toys: int | None = None, shard: Shard | None = None,
                    execution: dict[str, Any] | None = None, t_floor: float | None = None) -> dict[str, Any]:
    """The first line of a store (module docstring); fields that are None are left out."""
    header = {"record": "campaign", "format": FORMAT, "identity": identity, "n_toys": n_toys,
              "shard": None if shard is None else shard.record(), "execution": execution, "t_floor": t_floor,
              "package_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return {key: value for key, value in header.items() if value is not None}


def verify_identity(path: str | os.PathLike, content: StoreContent, identity: dict[str, Any], part: str | None = None) -> None:
    """CampaignMismatchError unless the store's identity (or its `part`, e.g. 'test') equals
    `identity`; an empty store matches anything."""
    if content.header is None:
        return
    stored = content.identity if part is None else content.identity.get(part, {})
    differences = identity_differences(stored, identity)
    if differences:
        what = "campaign" if part is None else part
        hint = ""
        if any(key.endswith(".code") and stored_value is None for key, stored_value, _ in differences):
            hint = ("\nThe store names its generator function by name only (written before functions were identified "
                    "by their code), which cannot tell two functions of one name apart: start a new store, and give "
                    "generator_name='...' to name the generator yourself.")
        for key, stored_value, value in differences:
            names = key.split(".")  # "test.widths" for a campaign, "widths" for its test alone
            if names[-1] == "widths" and stored_value is None and isinstance(value, list):
                hint += ("\nThe store holds a one-width test; this run is the default test, which fits the kernel "
                         "widths found on the reference. For one width, pass width_quantiles=None (--width-quantiles "
                         "none in nplm test and nplm toys) or fix the width (sigma).")
            elif names[-1] == "widths" and isinstance(stored_value, list) and value is None:
                hint += ("\nThe store holds the default test, with one fit per kernel width; this run fits one width. "
                         "Drop width_quantiles=None (--width-quantiles none) and the fixed width to resume it.")
            elif "excess_scan" in names and stored_value is None and "excess scan" not in hint:
                hint += ("\nThe store holds a test without the excess scan (e.g. the previous default test, the widths "
                         "at quantiles 0.5 and 0.9); this run's test has it. To resume the store, pass "
                         "width_quantiles=(0.5, 0.9), excess_scan=False (--width-quantiles 0.5,0.9 --no-excess-scan; "
                         "nplm run: test: {width_quantiles: [0.5, 0.9], excess_scan: false}).")
        raise CampaignMismatchError(
            f"{path} holds toys of another {what}; it was left untouched. What differs:\n  "
            + format_differences(differences, "the store", "this run")
            + "\nUse another store for this setting (or delete this one to start over)." + hint)


def t_values(rows: Iterable[dict[str, Any]]) -> np.ndarray:
    """t of the successful toys: (n,), or (n, K) for a multi-scale test with K widths."""
    return np.array([row["t"] for row in rows if row["status"] == STATUS_OK], dtype=np.float64)
