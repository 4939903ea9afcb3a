"""Several stores of one campaign: the shards of a campaign split across jobs (`run_toys(...,
shard="K/N")`, `nplm toys --shard K/N`), read together or merged into one store.

A shard's header records the campaign's n_toys and which toys the shard owns (Shard: index,
count, block), so that merging can prove that the shards hold every toy of the campaign once.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.exceptions import InputError
from ..core.identity import format_differences, identity_differences
from .records import (
    RESULT_FIELDS,
    STATUS_OK,
    CampaignMismatchError,
    Shard,
    StoreConflictError,
    StoreContent,
    StoreError,
    campaign_header,
    dumps,
    read_store,
    write_durably,
)
from .writer import StoreLock

logger = logging.getLogger(__name__)

#: Toy indices named in an error, at most.
SHOWN_TOYS = 8

StorePaths = str | os.PathLike | Sequence[str | os.PathLike]


def store_paths(stores: StorePaths) -> list[Path]:
    """The store files `stores` names: paths, or glob patterns ('null-*.jsonl', matches sorted)
    where no file has that name; each file once, in the order given. InputError for a pattern that
    matches nothing."""
    named = [stores] if isinstance(stores, (str, os.PathLike)) else list(stores)
    if not named:
        raise InputError("no toy store given.")
    paths: list[Path] = []
    for item in named:
        text = os.fspath(item)
        if not Path(text).exists() and glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise InputError(f"{text}: no toy store matches this pattern.")
            paths += [Path(match) for match in matches]
        else:
            paths.append(Path(text))
    unique = {path.resolve(): path for path in reversed(paths)}
    return [path for path in paths if unique.get(path.resolve()) is path]


def _same_campaign(first: Path, first_identity: dict[str, Any], path: Path, identity: dict[str, Any]) -> None:
    """CampaignMismatchError unless two stores hold toys of one campaign (the same identity)."""
    differences = identity_differences(first_identity, identity)
    if differences:
        raise CampaignMismatchError(f"{first} and {path} hold toys of different campaigns; what differs:\n  "
                                    + format_differences(differences, str(first), str(path)))


def read_stores(stores: StorePaths) -> StoreContent:
    """The toys of one campaign held by one or several stores (shards, or copies): each read with
    read_store, all of the first one's identity (CampaignMismatchError names the store and what
    differs), each toy counted once (the same row in two stores is one toy; two different rows
    StoreConflictError, naming both stores). The header is the first store's, without a shard."""
    paths = store_paths(stores)
    first = read_store(paths[0])
    if len(paths) == 1:
        return first
    rows: dict[int, tuple[dict[str, Any], Path]] = {}
    header, header_path, duplicates, n_toys = None, None, 0, None
    for path in paths:
        content = first if path is paths[0] else read_store(path)
        if content.header is None:
            continue
        if header is None:
            header, header_path = content.header, path
        _same_campaign(header_path, header["identity"], path, content.identity)
        n_toys = max(n_toys or 0, content.n_toys or 0) or None
        duplicates += content.duplicates
        for row in content.rows:
            stored = rows.get(row["toy"])
            if stored is None:
                rows[row["toy"]] = (row, path)
            elif all(stored[0].get(name) == row.get(name) for name in RESULT_FIELDS):
                duplicates += 1
            else:
                raise StoreConflictError(f"toy {row['toy']} has different results in {stored[1]} and {path}: they "
                                         "are not parts of one campaign's run; read them apart.")
    merged_header = None if header is None else {key: value for key, value in header.items() if key != "shard"}
    ordered = tuple(rows[toy][0] for toy in sorted(rows))
    return StoreContent(merged_header, ordered, (), duplicates, 0, n_toys)


@dataclass(frozen=True)
class MergeSummary:
    """What merge_stores wrote: the output, its rows (ok and failed), the shards it read and the
    toys missing from each shard (empty when the campaign is complete)."""

    output: Path
    n_rows: int
    n_failed: int
    shards: tuple[Path, ...]
    missing: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"merged:     {len(self.shards)} shard(s) into {self.output}: {self.n_rows} toys "
                 f"({self.n_failed} failed)"]
        for shard, toys in self.missing.items():
            lines.append(f"missing:    shard {shard}: {len(toys)} toy(s) ({_shown(toys)})")
        if not self.missing:
            lines.append("complete:   every toy of the campaign, each once")
        return "\n".join(lines)


def _shown(toys: list[int]) -> str:
    return ", ".join(map(str, toys[:SHOWN_TOYS])) + (", ..." if len(toys) > SHOWN_TOYS else "")


def merge_stores(output: str | os.PathLike, shards: StorePaths, allow_incomplete: bool = False) -> MergeSummary:
    """Combine the shard stores of one campaign into a new store `output` (a whole-campaign store:
    it resumes, calibrates and is checked like any other). Refused, with nothing written, unless
    every shard has the same identity, split (count, block) and n_toys, each shard index appears
    once, and (unless allow_incomplete) every shard is there and holds each of its toys."""
    output = Path(output)
    if output.exists():
        raise InputError(f"{output} exists; merge writes a new store (give another name, or delete it).")
    paths = store_paths(shards)
    contents = [(path, read_store(path)) for path in paths]
    first_path, first = contents[0]
    by_index: dict[int, tuple[Path, StoreContent]] = {}
    for path, content in contents:
        if content.shard is None or content.n_toys is None:
            raise StoreError(f"{path} is not a shard (its campaign was run without a shard): merge combines the "
                             "shards of one campaign; read whole stores together with read_stores or "
                             "`nplm calibrate --store A B`.")
        _same_campaign(first_path, first.identity, path, content.identity)
        split, first_split = content.shard, first.shard
        if (split.count, split.block, content.n_toys) != (first_split.count, first_split.block, first.n_toys):
            raise CampaignMismatchError(
                f"{path} is shard {split} of {content.n_toys} toys in blocks of {split.block}, {first_path} shard "
                f"{first_split} of {first.n_toys} toys in blocks of {first_split.block}: the shards of one campaign "
                "share n_toys, the number of shards and the batch size.")
        if split.index in by_index:
            raise StoreError(f"shard {split} is given twice ({by_index[split.index][0]} and {path}).")
        by_index[split.index] = (path, content)
    missing: dict[Shard, list[int]] = {}
    for index in range(first.shard.count):
        shard = Shard(index, first.shard.count, first.shard.block)
        present = {row["toy"] for row in by_index[index][1].rows} if index in by_index else set()
        lacking = [toy for toy in shard.toys(first.n_toys) if toy not in present]
        if lacking:
            missing[shard] = lacking
    if missing and not allow_incomplete:
        lines = [f"shard {shard}: {len(toys)} toy(s) missing ({_shown(toys)}) in {by_index[shard.index][0]}"
                 if shard.index in by_index else f"shard {shard}: no store given ({len(toys)} toys)"
                 for shard, toys in missing.items()]
        raise StoreError("the shards do not hold every toy of the campaign, so nothing was merged:\n  "
                         + "\n  ".join(lines) + "\nRun the missing shards (`nplm toys ... --shard K/N --store FILE` "
                         "resumes a shard's store), or merge with allow_incomplete (--allow-incomplete).")
    executions = {dumps(content.header.get("execution") or {}) for _, content in contents}
    if len(executions) > 1:
        logger.warning("the shards record different execution settings (%s): their t agree to solver tolerance, "
                       "not bit for bit", "; ".join(sorted(executions)))
    header = campaign_header(first.identity, first.n_toys, None, first.header.get("execution") if len(executions) == 1
                             else None, first.header.get("t_floor")) | {"merged_from": [str(path) for path in paths]}
    rows = sorted((row for _, content in contents for row in content.rows), key=lambda row: row["toy"])
    with StoreLock(output):
        temporary = output.with_name(output.name + ".merging")
        write_durably(temporary, "".join(dumps(line) + "\n" for line in [header, *rows]).encode())
        os.replace(temporary, output)
    return MergeSummary(output, len(rows), sum(row["status"] != STATUS_OK for row in rows), tuple(paths),
                        {str(shard): toys for shard, toys in missing.items()})
