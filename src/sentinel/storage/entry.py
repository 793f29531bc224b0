"""What every layer of the engine's read path speaks: entries and entry sources.

An entry is ``(key, value)``; a value of ``None`` is a tombstone (the key was deleted).
Each source (a memtable, an SSTable) holds at most one entry per key, so the engine
needs no sequence numbers: when sources are merged, the newer source wins, and the
engine orders its sources newest first.

Generators are the iterator protocol: in CPython a generator is the cheapest way to
walk a structure, and ``heapq.merge`` composes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Protocol

Entry = tuple[bytes, bytes | None]


class Absent(Enum):
    """The answer of ``get`` when a source holds no entry for the key at all."""

    ABSENT = 0


ABSENT = Absent.ABSENT


class EntrySource(Protocol):
    """A sorted set of entries, one per key."""

    def get(self, key: bytes) -> bytes | None | Absent:
        """The value, ``None`` for a tombstone, or ``ABSENT``."""
        ...

    def entries(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        """Entries in ascending key order with ``start <= key < end`` (``None``: unbounded),
        tombstones included."""
        ...

    def floor(self, key: bytes, *, strict: bool = False) -> Entry | None:
        """The entry with the greatest key ``<= key`` (``< key`` if ``strict``), or None."""
        ...
