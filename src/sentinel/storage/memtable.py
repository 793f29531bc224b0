"""The memtable: the engine's newest, in-memory entry source.

A ``SkipList`` plus two things the engine needs around it: a size that bounds the
real memory it holds (the engine flushes at a threshold, 64 MiB by default), and a
frozen state (a memtable being flushed takes no more writes).

Size
====

``approximate_size = key_bytes + value_bytes + len * ENTRY_OVERHEAD``. The payload
alone understates memory badly for small entries: each entry keeps two ``bytes``
objects alive (a 33-byte header each, rounded up by the allocator to 16 bytes) and
two list slots, plus its share of the skip list's blocks. Measured on CPython 3.11,
64-bit, with the default node size:

==================================  ==============================================
tracemalloc, any key/value sizes    85 B/entry beyond the payload (2 x 33 headers,
                                    2 x 8 list slots, ~3 B of list slack and blocks)
RSS (psutil), 1 M entries 16/16 B   116 B/entry beyond the payload (pymalloc rounds
                                    each 49-byte object up to 64)
RSS, 8 B keys / 100 B values        104 B/entry; 1000 B values: 113 B/entry
RSS, tombstones (no value object)   68 B/entry
==================================  ==============================================

``ENTRY_OVERHEAD = 120`` covers the worst rounding (15 B on each of two objects) on
top of the tracemalloc figure, so the size bounds resident memory rather than
guessing under it. Replacing a key's value does not add an entry, so only the
value's length changes the size.

Thread safety
=============

As ``SkipList``: one writer at a time (``put``, ``delete``, ``freeze``), readers in
any thread concurrently. ``freeze`` is called by the writer, so no ``put`` races it;
after it returns, every ``put`` raises ``StateError`` and the contents never change.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from sentinel.errors import StateError
from sentinel.storage.entry import Absent, Entry
from sentinel.storage.skiplist import SkipList

ENTRY_OVERHEAD = 120
"""Bytes of CPython memory per entry beyond its key and value (see the module doc)."""


class Memtable:
    """A mutable, then frozen, ``EntrySource`` held in memory."""

    __slots__ = ("_frozen", "_list")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._list = SkipList(rng)
        self._frozen = False

    def put(self, key: bytes, value: bytes | None) -> None:
        """Insert or replace ``key`` (``value=None``: a tombstone).

        Raises ``StateError`` once the memtable is frozen.
        """
        if self._frozen:
            raise StateError("memtable is frozen: it takes no more writes")
        self._list.put(key, value)

    def delete(self, key: bytes) -> None:
        """Store a tombstone for ``key``; raises ``StateError`` once frozen."""
        self.put(key, None)

    def freeze(self) -> None:
        """Refuse every later write. Idempotent."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        """Whether ``freeze`` was called."""
        return self._frozen

    def get(self, key: bytes) -> bytes | Absent | None:
        """The value, ``None`` for a tombstone, or ``ABSENT`` if there is no entry."""
        return self._list.get(key)

    def entries(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        """Entries with ``start <= key < end`` in ascending key order, tombstones
        included (``None``: unbounded)."""
        return self._list.entries(start, end)

    def floor(self, key: bytes, *, strict: bool = False) -> Entry | None:
        """The entry with the greatest key ``<= key`` (``< key`` if ``strict``), or None."""
        return self._list.floor(key, strict=strict)

    def first_key(self) -> bytes | None:
        """The smallest key (tombstones count), or None if empty."""
        return self._list.first_key()

    def last_key(self) -> bytes | None:
        """The greatest key (tombstones count), or None if empty."""
        return self._list.last_key()

    def __len__(self) -> int:
        """Number of entries, tombstones included."""
        return len(self._list)

    @property
    def approximate_size(self) -> int:
        """Bytes of memory held: keys, values and ``ENTRY_OVERHEAD`` per entry."""
        lst = self._list
        return lst.key_bytes + lst.value_bytes + len(lst) * ENTRY_OVERHEAD
