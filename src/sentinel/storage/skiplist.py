"""The memtable's ordered map: a blocked ("unrolled") skip list ``bytes -> bytes | None``.

Structure
=========

A skip list stacks sorted lists: every key is on level 0, and each key on level ``l``
is also on level ``l + 1`` with probability ``P``, decided by coins when the key is
inserted (its *height*). A classic skip list gives each key its own node and walks
every level node by node; in CPython each hop costs bytecodes and a cache miss, and
at a million keys a lookup makes ~25 of them: 3-5x slower than ``sortedcontainers``.
So each level here is cut into *blocks* that hold runs of consecutive keys of that
level in a Python list, searched with ``bisect`` (C)::

    level 2   [""  f                 t]                    the root block
               |   |                 |
    level 1   [""  c]  [f  j  m]     [t  x]                keys, each with its child
               |   |    |  |  |       |  |
    level 0   [a b][c d][f h][j][m p r][t v][x y z]        keys + values (leaves)
              head -> next -> next -> ...

- A block of level ``l`` starts at a key of level ``l + 1`` and holds the keys of
  level ``l`` up to the next one. So the key found by bisecting a block of level
  ``l + 1`` leads *down* (its child) to exactly the block of level ``l`` that covers
  the search key: a search is one bisect per level and never walks sideways. ``""``
  stands first on every upper level for "minus infinity" (a real key ``b""`` stays
  on level 0).
- Blocks of level 0 (*leaves*) hold a sorted list of keys and the parallel list of
  their values, and are chained by ``next`` for iteration. Upper blocks hold keys and
  the parallel list of their children. A key of height ``h`` goes into its leaf and
  the blocks above it up to level ``h - 1``, and splits every block it enters below
  that top one. Blocks therefore hold ``1 / P`` keys on average (the ``node_size``,
  tuned with ``bench/bench_skiplist.py``) and a search is ``O(log n)`` comparisons,
  most of them inside C; at a million keys there are two upper levels. Block sizes
  are geometric rather than capped (the largest of the ~7,700 leaves of a million
  keys holds ~1,100), which costs an insert one ``memmove`` of at most a few KiB.
  Given the keys' heights, the shape does not depend on the order of inserts.
  Nothing is ever removed: a delete is a tombstone, and a memtable is dropped whole
  after its flush.
- Appends (each key greater than every key before: the log's pattern) skip the
  descent: a key of height 1 goes straight to the end of the last leaf, a taller
  one starts new last blocks on its levels.
- Keys and values in parallel lists, not ``(key, value)`` tuples, because a bisect
  over keys touches one object per probe (a tuple costs two, and the probes are
  cache misses) and a tuple per entry costs 56 bytes.

Thread safety
=============

One writer at a time (the engine serializes ``put``/``delete``); any number of
readers in other threads at the same time, under the GIL:

- The writer changes the structure (an insert that shifts entries, a split, a new
  level) holding ``_lock``, with the sequence number ``_seq`` odd meanwhile.
  Appending a key of height 1 to the last leaf (value first, then key) and
  replacing a value (one list store) take neither: no index a reader computed goes
  stale through them.
- Readers take no lock on the way: ``get``, ``floor``, ``first_key``, the start of
  ``entries`` and each leaf copy that ``entries`` makes read optimistically and then
  check ``_seq``. If it moved (or an index went stale under them and raised
  ``IndexError``, which they catch), they redo the read holding the lock, which the
  writer holds only for one structural change. So every answer was true at some
  instant during the call.
- ``entries`` is weakly consistent: it never raises, never yields a key twice, never
  goes backwards, yields every key that existed when it started and that it had not
  passed yet, and may or may not yield keys inserted after it started. It walks the
  leaves by ``next``, copying each one's keys and values, and skips keys up to the
  last one it yielded (a split can show them again in the next leaf). The value
  yielded for a key is one it had while its leaf was copied.
- The writer also orders its steps so that a stale reader never lands to the right
  of its key: children are inserted before their keys and keys truncated before
  their children, and a split links the new leaf before it truncates the old one.

The same holds when the writer and an iteration interleave in one thread.

Measured (``bench/bench_skiplist.py``, 1 M random 16-byte keys, same run as
``SortedDict``): random puts ~0.9x its rate, gets ~0.2x (its get is a hash lookup),
ascending puts ~2x, iteration ~10x.
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any

from sentinel.errors import InvalidArgumentError
from sentinel.storage.entry import ABSENT, Absent, Entry

DEFAULT_NODE_SIZE = 128
"""Expected keys per block, ``1 / P`` (tuned with ``bench/bench_skiplist.py``)."""

MAX_HEIGHT = 32
"""A key's height is capped here; it matters after ``node_size ** 31`` keys."""

_SEED = 0x5EED
_MINUS_INFINITY = b""


class _Leaf:
    """A block of level 0: consecutive keys, their values, and the next leaf."""

    __slots__ = ("keys", "next", "values")

    def __init__(self, keys: list[bytes], values: list[bytes | None]) -> None:
        self.keys = keys
        self.values = values
        self.next: _Leaf | None = None


class _Index:
    """A block of an upper level: consecutive keys, and the block each one starts.

    ``children`` are ``_Leaf`` on level 1 and ``_Index`` above; typed ``Any`` because
    the descent loops only learn which when they reach level 0.
    """

    __slots__ = ("children", "keys", "next")

    def __init__(self, keys: list[bytes], children: list[Any]) -> None:
        self.keys = keys
        self.children = children
        self.next: _Index | None = None


class SkipList:
    """An ordered map ``bytes -> bytes | None`` (``None`` is a tombstone).

    An ``EntrySource``. See the module docstring for the structure and the
    thread-safety contract (one writer, concurrent readers).
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        node_size: int = DEFAULT_NODE_SIZE,
    ) -> None:
        if node_size < 2:
            raise InvalidArgumentError(f"node_size must be >= 2, got {node_size}")
        self._rand = (rng if rng is not None else random.Random(_SEED)).random
        self._p = 1.0 / node_size
        self._head = _Leaf([], [])
        # The root and ``range(number of upper levels)``, published together.
        self._top: tuple[Any, range] = (self._head, range(0))
        # The last leaf, and the last block of level ``l`` at ``_index_tails[l - 1]``.
        self._tail = self._head
        self._index_tails: list[_Index] = []
        self._last_key: bytes | None = None
        self._count = 0
        self._key_bytes = 0
        self._value_bytes = 0
        self._lock = threading.Lock()
        self._seq = 0  # odd while the writer changes the structure

    # -- writes (one writer at a time) ------------------------------------------------

    def put(self, key: bytes, value: bytes | None) -> None:
        """Insert or replace ``key``; ``value=None`` stores a tombstone."""
        last = self._last_key
        if last is None or key > last:
            if self._rand() >= self._p or not key:
                tail = self._tail
                tail.values.append(value)  # value first: never more keys than values
                tail.keys.append(key)
            else:
                self._insert_tall(key, value, self._height())
            self._last_key = key
        else:
            node, uppers = self._top
            for _ in uppers:
                node = node.children[bisect_right(node.keys, key) - 1]
            keys: list[bytes] = node.keys
            i = bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                values: list[bytes | None] = node.values
                old = values[i]
                values[i] = value  # one atomic store
                self._value_bytes += (0 if value is None else len(value)) - (
                    0 if old is None else len(old)
                )
                return
            if self._rand() >= self._p or not key:
                lock = self._lock
                lock.acquire()
                try:
                    self._seq += 1
                    node.values.insert(i, value)
                    keys.insert(i, key)
                    self._seq += 1
                finally:
                    lock.release()
            else:
                self._insert_tall(key, value, self._height())
        self._count += 1
        self._key_bytes += len(key)
        if value is not None:
            self._value_bytes += len(value)

    def delete(self, key: bytes) -> None:
        """Store a tombstone for ``key``."""
        self.put(key, None)

    def _height(self) -> int:
        """The height of a key that already won its first coin: 2 or more."""
        height = 2
        while height < MAX_HEIGHT and self._rand() < self._p:
            height += 1
        return height

    def _insert_tall(self, key: bytes, value: bytes | None, height: int) -> None:
        """Insert a new key of ``height >= 2``: into its leaf, splitting it at the key,
        and into the blocks above, splitting all but the top one."""
        with self._lock:
            self._seq += 1
            try:
                root, uppers = self._top
                while len(uppers) < height - 1:  # grow: a new root above the old one
                    root = _Index([_MINUS_INFINITY], [root])
                    uppers = range(len(uppers) + 1)
                    self._index_tails.append(root)
                    self._top = (root, uppers)
                path: list[_Index] = []  # blocks from the root down to level 1
                node = root
                for _ in uppers:
                    path.append(node)
                    node = node.children[bisect_right(node.keys, key) - 1]
                i = bisect_left(node.keys, key)
                node.values.insert(i, value)
                node.keys.insert(i, key)
                child: Any = self._split_leaf(node, i)
                for level in range(1, height):
                    block = path[-level]
                    j = bisect_right(block.keys, key)
                    block.children.insert(j, child)  # children first: never more keys
                    block.keys.insert(j, key)
                    if level < height - 1:
                        child = self._split_index(block, j, level)
            finally:
                self._seq += 1

    def _split_leaf(self, leaf: _Leaf, i: int) -> _Leaf:
        """Move ``leaf``'s entries from ``i`` on into a new leaf right after it."""
        new = _Leaf(leaf.keys[i:], leaf.values[i:])
        new.next = leaf.next
        leaf.next = new  # published before the entries leave ``leaf``
        del leaf.keys[i:]  # keys first: never more keys than values
        del leaf.values[i:]
        if self._tail is leaf:
            self._tail = new
        return new

    def _split_index(self, block: _Index, j: int, level: int) -> _Index:
        """Move ``block``'s keys from ``j`` on into a new block right after it."""
        new = _Index(block.keys[j:], block.children[j:])
        new.next = block.next
        block.next = new
        del block.keys[j:]  # keys first: never more keys than children
        del block.children[j:]
        if self._index_tails[level - 1] is block:
            self._index_tails[level - 1] = new
        return new

    # -- reads (any thread) -----------------------------------------------------------

    def _leaf(self, key: bytes, strict: bool) -> _Leaf:
        """The leaf that holds the floor of ``key``: the last one whose first key is
        ``<= key`` (``< key`` if ``strict``). Exact only while the writer is quiet."""
        find = bisect_left if strict else bisect_right
        node, uppers = self._top
        for _ in uppers:
            node = node.children[find(node.keys, key) - 1]
        leaf: _Leaf = node
        return leaf

    def get(self, key: bytes) -> bytes | Absent | None:
        """The value, ``None`` for a tombstone, or ``ABSENT`` if there is no entry."""
        seq = self._seq
        node, uppers = self._top
        try:
            for _ in uppers:
                node = node.children[bisect_right(node.keys, key) - 1]
            keys: list[bytes] = node.keys
            i = bisect_left(keys, key)
            found: bytes | Absent | None = (
                node.values[i] if i < len(keys) and keys[i] == key else ABSENT
            )
        except IndexError:  # a block was cut under us
            seq = -1
        if seq & 1 or seq != self._seq:
            with self._lock:
                leaf = self._leaf(key, False)
                i = bisect_left(leaf.keys, key)
                if i < len(leaf.keys) and leaf.keys[i] == key:
                    return leaf.values[i]
                return ABSENT
        return found

    def floor(self, key: bytes, *, strict: bool = False) -> Entry | None:
        """The entry with the greatest key ``<= key`` (``< key`` if ``strict``), or None."""
        if strict and not key:
            return None  # nothing is below b""
        seq = self._seq
        try:
            found = _floor_in(self._leaf(key, strict), key, strict)
        except IndexError:  # a block was cut under us
            seq = -1
        if seq & 1 or seq != self._seq:
            with self._lock:
                return _floor_in(self._leaf(key, strict), key, strict)
        return found

    def _copy(self, leaf: _Leaf) -> tuple[list[bytes], list[bytes | None]]:
        """A consistent copy of ``leaf``'s keys and values (values may run longer)."""
        seq = self._seq
        keys = leaf.keys[:]
        values = leaf.values[:]
        if seq & 1 or seq != self._seq:
            with self._lock:
                return leaf.keys[:], leaf.values[:]
        return keys, values

    def entries(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[Entry]:
        """Entries with ``start <= key < end`` in ascending key order, tombstones
        included (``None``: unbounded). Weakly consistent under concurrent writes."""
        if start is not None and end is not None and end <= start:
            return
        leaf: _Leaf | None
        if start is None:
            leaf = self._head
        else:
            seq = self._seq
            try:
                leaf = self._leaf(start, False)
            except IndexError:  # a block was cut under us
                seq = -1
            if seq & 1 or seq != self._seq:
                with self._lock:
                    leaf = self._leaf(start, False)
        after: bytes | None = None  # the last key yielded
        while leaf is not None:
            keys, values = self._copy(leaf)
            if after is not None:
                i = bisect_right(keys, after)
            elif start is not None:
                i = bisect_left(keys, start)
            else:
                i = 0
            j = len(keys)
            if end is not None:
                j = bisect_left(keys, end)
            if i < j:
                # ``values`` may run longer than ``keys`` (see ``_copy``), never shorter.
                yield from zip(keys[i:j], values[i:j], strict=False)
                after = keys[j - 1]
            if j < len(keys):  # the end is in this leaf
                return
            leaf = leaf.next

    def first_key(self) -> bytes | None:
        """The smallest key (tombstones count), or None if empty."""
        seq = self._seq
        found = self._first_key()
        if seq & 1 or seq != self._seq:
            with self._lock:
                return self._first_key()
        return found

    def _first_key(self) -> bytes | None:
        leaf: _Leaf | None = self._head  # only the head leaf can be empty
        while leaf is not None:
            keys = leaf.keys[:]
            if keys:
                return keys[0]
            leaf = leaf.next
        return None

    def last_key(self) -> bytes | None:
        """The greatest key (tombstones count), or None if empty."""
        return self._last_key

    def __len__(self) -> int:
        """Number of entries, tombstones included."""
        return self._count

    @property
    def key_bytes(self) -> int:
        """Total length of all keys held."""
        return self._key_bytes

    @property
    def value_bytes(self) -> int:
        """Total length of all values held (a tombstone counts 0)."""
        return self._value_bytes


def _floor_in(leaf: _Leaf, key: bytes, strict: bool) -> Entry | None:
    """The floor of ``key`` within ``leaf``, or None."""
    keys = leaf.keys
    i = bisect_right(keys, key) if not strict else bisect_left(keys, key)
    return (keys[i - 1], leaf.values[i - 1]) if i else None
