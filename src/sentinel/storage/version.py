"""The set of live tables, level by level: an immutable ``Version`` and the ``VersionEdit``
that turns one version into the next.

Levels:

- L0 holds the tables flushed from memtables. Their ranges may overlap, so a read checks
  every L0 table whose range holds the key, NEWEST FIRST. Newest means the largest file
  number: the engine must number a flushed table above every older L0 table (it does,
  by allocating the number at flush time), and ``Version`` keeps L0 sorted that way.
- L1..Ln each hold tables sorted by ``min_key`` whose ranges never overlap, so a read
  checks at most one table per level. Every entry in level i is newer than any entry for
  the same key in level i + 1.

A version is a value: ``apply`` returns a new one and validates the result, raising
``InvariantError`` (a bug in whoever built the edit, never a disk problem) for an edit
that removes a table the version does not hold, adds a table twice, or breaks the
ordering of a level.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from sentinel.errors import SentinelError
from sentinel.storage.files import TableMeta

#: Levels in a version made by ``Version.empty()``: L0..L6.
NUM_LEVELS = 7


class InvariantError(SentinelError):
    """An edit or version breaks the level invariants: a bug in the code that built it."""


@dataclass(frozen=True, slots=True)
class VersionEdit:
    """A change to the version, as the manifest records it.

    ``removed`` applies before ``added``, so an edit can move a table between levels.
    ``log_number`` is the first WAL segment still needed (older ones hold nothing that
    is not in a table); ``next_file_number`` is above every file number handed out so
    far. Either is None when the edit does not change it.
    """

    added: tuple[tuple[int, TableMeta], ...] = ()
    removed: tuple[tuple[int, int], ...] = ()
    log_number: int | None = None
    next_file_number: int | None = None

    def __post_init__(self) -> None:
        for level, meta in self.added:
            if level < 0:
                raise InvariantError(f"table {meta.file_number} added at level {level}")
            if meta.min_key > meta.max_key:
                raise InvariantError(f"table {meta.file_number} has min_key > max_key")
        for level, number in self.removed:
            if level < 0 or number < 0:
                raise InvariantError(f"bad removal of table {number} at level {level}")
        for name, value in (
            ("log_number", self.log_number),
            ("next_file_number", self.next_file_number),
        ):
            if value is not None and value < 0:
                raise InvariantError(f"{name} is negative: {value}")


def _check_level(level: int, tables: tuple[TableMeta, ...]) -> None:
    for table in tables:
        if table.min_key > table.max_key:
            raise InvariantError(f"table {table.file_number} has min_key > max_key")
    if level == 0:
        for newer, older in pairwise(tables):
            if newer.file_number <= older.file_number:
                raise InvariantError("L0 is not ordered by file number, newest first")
        return
    for left, right in pairwise(tables):
        if left.max_key >= right.min_key:
            raise InvariantError(
                f"tables {left.file_number} and {right.file_number} overlap or are out of "
                f"order in L{level}"
            )


@dataclass(frozen=True, slots=True)
class Version:
    """The live tables: ``levels[0]`` is L0 (newest first), then L1..Ln by key."""

    levels: tuple[tuple[TableMeta, ...], ...]
    # Per level L1..Ln: the tables' max keys, for bisect (L0's entry is unused).
    _max_keys: tuple[tuple[bytes, ...], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        if not self.levels:
            raise InvariantError("a version needs at least one level")
        seen: set[int] = set()
        for level, tables in enumerate(self.levels):
            _check_level(level, tables)
            for table in tables:
                if table.file_number in seen:
                    raise InvariantError(f"table {table.file_number} appears twice")
                seen.add(table.file_number)
        max_keys = tuple(tuple(t.max_key for t in tables) for tables in self.levels)
        object.__setattr__(self, "_max_keys", max_keys)

    @classmethod
    def empty(cls, num_levels: int = NUM_LEVELS) -> Version:
        return cls(levels=((),) * num_levels)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    # ------------------------------------------------------------------ edits

    def apply(self, edit: VersionEdit) -> Version:
        """The version after ``edit``; raises ``InvariantError`` if it does not fit."""
        levels = [list(tables) for tables in self.levels]
        for level, number in edit.removed:
            if level >= len(levels):
                raise InvariantError(f"removal of table {number} from missing level {level}")
            kept = [t for t in levels[level] if t.file_number != number]
            if len(kept) == len(levels[level]):
                raise InvariantError(f"removal of table {number}, which is not in L{level}")
            levels[level] = kept
        touched: set[int] = set()
        for level, meta in edit.added:
            if level >= len(levels):
                raise InvariantError(
                    f"table {meta.file_number} added at level {level} of {len(levels)}"
                )
            levels[level].append(meta)
            touched.add(level)
        for level in touched:
            if level == 0:
                levels[0].sort(key=lambda t: t.file_number, reverse=True)
            else:
                levels[level].sort(key=lambda t: t.min_key)
        return Version(levels=tuple(tuple(tables) for tables in levels))

    def snapshot_edit(self, log_number: int, next_file_number: int) -> VersionEdit:
        """An edit that builds this version from an empty one (a manifest's first record)."""
        added = tuple((level, t) for level, tables in enumerate(self.levels) for t in tables)
        return VersionEdit(added=added, log_number=log_number, next_file_number=next_file_number)

    # ---------------------------------------------------------------- queries

    def tables_for_key(self, key: bytes) -> list[TableMeta]:
        """The tables whose range holds ``key``, in read order: L0 newest first, then at
        most one table per level L1..Ln."""
        found = [t for t in self.levels[0] if t.min_key <= key <= t.max_key]
        for level in range(1, len(self.levels)):
            tables = self.levels[level]
            index = bisect.bisect_left(self._max_keys[level], key)
            if index < len(tables) and tables[index].min_key <= key:
                found.append(tables[index])
        return found

    def all_tables(self) -> list[TableMeta]:
        """Every table in read order: L0 newest first, then L1..Ln by key."""
        return [t for tables in self.levels for t in tables]

    def overlapping(
        self, level: int, start: bytes | None, end: bytes | None
    ) -> tuple[TableMeta, ...]:
        """The tables of ``level`` whose range meets ``[start, end]`` (both inclusive;
        None is unbounded), in the level's order. For a half-open scan ``[start, end)``
        this may include one table that starts exactly at ``end``."""
        tables = self.levels[level]
        if level == 0:
            return tuple(
                t
                for t in tables
                if (start is None or t.max_key >= start) and (end is None or t.min_key <= end)
            )
        first = 0 if start is None else bisect.bisect_left(self._max_keys[level], start)
        last = first
        while last < len(tables) and (end is None or tables[last].min_key <= end):
            last += 1
        return tables[first:last]

    def level_bytes(self, level: int) -> int:
        return sum(t.size for t in self.levels[level])

    def all_file_numbers(self) -> frozenset[int]:
        return frozenset(t.file_number for tables in self.levels for t in tables)

    def find(self, file_number: int) -> tuple[int, TableMeta] | None:
        """The level and metadata of table ``file_number``, or None."""
        for level, tables in enumerate(self.levels):
            for table in tables:
                if table.file_number == file_number:
                    return level, table
        return None

    def table_count(self) -> int:
        return sum(len(tables) for tables in self.levels)

    def __iter__(self) -> Iterator[tuple[int, TableMeta]]:
        """``(level, table)`` for every table, in read order."""
        for level, tables in enumerate(self.levels):
            for table in tables:
                yield level, table


def key_range(tables: Iterable[TableMeta]) -> tuple[bytes, bytes]:
    """The smallest ``min_key`` and the largest ``max_key`` of ``tables`` (not empty)."""
    items = list(tables)
    if not items:
        raise InvariantError("key_range of no tables")
    return min(t.min_key for t in items), max(t.max_key for t in items)
