"""The block cache: decoded, verified data blocks, LRU, bounded in bytes.

It also holds the verified WAL frames that value pointers are read from
(``get_frame``/``put_frame``, ``value_log``), under keys of their own: one bound in
bytes for both, per broker. (Each engine kept its own 8 MiB of frames before: a
consumer reading 1,000 partitions from the start could hold 8 GB.)

One cache is shared by every table of an engine, and a broker shares one among all its
engines (``ScopedBlockCache``: each engine's view, keys prefixed by the engine). Keys
are ``(file_number, offset)``: file numbers are never reused, so a block can't be
confused with another table's, and ``evict_file`` drops a deleted table's blocks at
once instead of waiting for LRU.

Thread safety: every method takes one lock; the critical sections are a few dict
operations. Blocks are immutable, so a block handed out stays valid after eviction.
Two threads that miss on the same block may both read it; the second ``put`` replaces
the first (same bytes).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sentinel.errors import InvalidArgumentError
from sentinel.storage.block import Block

CacheKey = tuple[int, int]


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    size_bytes: int
    entries: int
    capacity_bytes: int


class BlockCache:
    """LRU over decoded blocks, bounded by the sum of their charges."""

    def __init__(self, capacity_bytes: int = 32 * 1024 * 1024) -> None:
        if capacity_bytes < 0:
            raise InvalidArgumentError(f"capacity_bytes must be >= 0, not {capacity_bytes}")
        self._capacity = capacity_bytes
        self._lock = threading.Lock()
        self._blocks: OrderedDict[CacheKey, tuple[Block | bytes, int]] = OrderedDict()
        self._by_file: dict[int, set[int]] = {}
        self._size = 0
        self._hits = 0
        self._misses = 0

    @property
    def capacity_bytes(self) -> int:
        return self._capacity

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def size_bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._blocks)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._size, len(self._blocks), self._capacity
            )

    def get(self, key: CacheKey) -> Block | None:
        found = self._lookup(key)
        return found if isinstance(found, Block) else None

    def get_frame(self, key: CacheKey) -> bytes | None:
        """A WAL frame's verified payload (``value_log``), or None."""
        found = self._lookup(key)
        return found if isinstance(found, bytes) else None

    def _lookup(self, key: CacheKey) -> Block | bytes | None:
        with self._lock:
            found = self._blocks.get(key)
            if found is None:
                self._misses += 1
                return None
            self._blocks.move_to_end(key)
            self._hits += 1
            return found[0]

    def put(self, key: CacheKey, block: Block, charge: int) -> None:
        """Insert (or replace) ``key``; a block larger than the whole cache is not kept."""
        self._store(key, block, charge)

    def put_frame(self, key: CacheKey, frame: bytes) -> None:
        """Keep a WAL frame's verified payload, charged its length."""
        self._store(key, frame, len(frame))

    def _store(self, key: CacheKey, block: Block | bytes, charge: int) -> None:
        if charge > self._capacity:
            return
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._blocks[key] = (block, charge)
            self._by_file.setdefault(key[0], set()).add(key[1])
            self._size += charge
            while self._size > self._capacity:
                (file_number, offset), (_, dropped) = self._blocks.popitem(last=False)
                self._size -= dropped
                self._forget(file_number, offset)

    def evict_file(self, file_number: int) -> None:
        """Drop every block of one table (it was deleted or closed for good)."""
        with self._lock:
            for offset in self._by_file.pop(file_number, ()):
                _, charge = self._blocks.pop((file_number, offset))
                self._size -= charge

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._by_file.clear()
            self._size = 0

    def _forget(self, file_number: int, offset: int) -> None:
        offsets = self._by_file[file_number]
        offsets.discard(offset)
        if not offsets:
            del self._by_file[file_number]


_owners = itertools.count(1)


class ScopedBlockCache(BlockCache):
    """One engine's view of a cache shared by every engine of a broker: keys are
    ``(owner, file number, offset)`` (file numbers are only unique within an engine),
    the capacity in bytes is the shared cache's, and ``clear`` drops this engine's
    blocks only. Hits and misses are counted per view."""

    def __init__(self, shared: BlockCache) -> None:
        super().__init__(shared.capacity_bytes)
        self._shared = shared
        self._base = next(_owners) << 40
        self._files: set[int] = set()

    @property
    def size_bytes(self) -> int:
        return self._shared.size_bytes

    def __len__(self) -> int:
        return len(self._shared)

    def stats(self) -> CacheStats:
        shared = self._shared.stats()
        return CacheStats(self._hits, self._misses, shared.size_bytes, shared.entries,
                          shared.capacity_bytes)

    def get(self, key: CacheKey) -> Block | None:
        found = self._shared.get((self._base | key[0], key[1]))
        self._count(found is not None)
        return found

    def get_frame(self, key: CacheKey) -> bytes | None:
        found = self._shared.get_frame((self._base | key[0], key[1]))
        self._count(found is not None)
        return found

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    def put(self, key: CacheKey, block: Block, charge: int) -> None:
        with self._lock:
            self._files.add(key[0])
        self._shared.put((self._base | key[0], key[1]), block, charge)

    def put_frame(self, key: CacheKey, frame: bytes) -> None:
        with self._lock:
            self._files.add(key[0])
        self._shared.put_frame((self._base | key[0], key[1]), frame)

    def evict_file(self, file_number: int) -> None:
        with self._lock:
            self._files.discard(file_number)
        self._shared.evict_file(self._base | file_number)

    def clear(self) -> None:
        with self._lock:
            files, self._files = self._files, set()
        for number in files:
            self._shared.evict_file(self._base | number)
