"""The block cache: LRU by bytes, per-file eviction, stats, and a thread-safety smoke test."""

from __future__ import annotations

import random
import threading

import pytest

from sentinel.errors import InvalidArgumentError
from sentinel.storage.block import Block
from sentinel.storage.block_cache import BlockCache


def block(tag: int) -> Block:
    return Block([tag.to_bytes(4, "big")], [b"v"], 100)


def test_hit_and_miss_counts() -> None:
    cache = BlockCache(1000)
    b = block(1)
    assert cache.get((1, 0)) is None
    cache.put((1, 0), b, 100)
    assert cache.get((1, 0)) is b
    assert (cache.hits, cache.misses, cache.size_bytes) == (1, 1, 100)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size_bytes, stats.entries) == (1, 1, 100, 1)
    assert stats.capacity_bytes == 1000


def test_evicts_least_recently_used_by_bytes() -> None:
    cache = BlockCache(300)
    for offset in range(3):
        cache.put((1, offset), block(offset), 100)
    assert cache.get((1, 0)) is not None  # 0 becomes the most recent; 1 is now oldest
    cache.put((1, 3), block(3), 100)
    assert cache.get((1, 1)) is None
    assert all(cache.get((1, o)) is not None for o in (0, 2, 3))
    cache.put((2, 0), block(9), 250)  # needs room for 250: drops three blocks of 100
    assert cache.size_bytes == 250
    assert len(cache) == 1
    assert cache.get((2, 0)) is not None


def test_replacing_a_key_keeps_the_size_right() -> None:
    cache = BlockCache(1000)
    cache.put((1, 0), block(1), 100)
    cache.put((1, 0), block(2), 300)
    assert cache.size_bytes == 300
    assert len(cache) == 1


def test_block_larger_than_the_cache_is_not_kept() -> None:
    cache = BlockCache(100)
    cache.put((1, 0), block(1), 60)
    cache.put((1, 1), block(2), 101)
    assert cache.get((1, 1)) is None
    assert cache.get((1, 0)) is not None
    assert cache.size_bytes == 60


def test_zero_capacity_disables_caching() -> None:
    cache = BlockCache(0)
    cache.put((1, 0), block(1), 1)
    assert cache.get((1, 0)) is None
    with pytest.raises(InvalidArgumentError):
        BlockCache(-1)


def test_evict_file_drops_only_that_file() -> None:
    cache = BlockCache(10_000)
    for number in (1, 2):
        for offset in range(5):
            cache.put((number, offset * 100), block(offset), 100)
    cache.evict_file(1)
    assert cache.size_bytes == 500
    assert all(cache.get((1, o * 100)) is None for o in range(5))
    assert all(cache.get((2, o * 100)) is not None for o in range(5))
    cache.evict_file(1)  # nothing left: a no-op
    cache.evict_file(3)
    # LRU eviction keeps the per-file bookkeeping straight
    small = BlockCache(200)
    for offset in range(4):
        small.put((7, offset), block(offset), 100)
    small.evict_file(7)
    assert small.size_bytes == 0
    assert len(small) == 0


def test_clear() -> None:
    cache = BlockCache(1000)
    cache.put((1, 0), block(1), 100)
    cache.clear()
    assert cache.size_bytes == 0
    assert cache.get((1, 0)) is None


def test_threads_share_a_cache() -> None:
    cache = BlockCache(50 * 100)
    blocks = {(n, o): block(n * 1000 + o) for n in range(4) for o in range(40)}
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(3000):
            key = (rng.randrange(4), rng.randrange(40))
            action = rng.random()
            if action < 0.6:
                got = cache.get(key)
                if got is not None and got is not blocks[key]:
                    errors.append(f"{key} returned another block")
            elif action < 0.98:
                cache.put(key, blocks[key], 100)
            else:
                cache.evict_file(key[0])
            stats = cache.stats()  # a consistent snapshot, taken under the lock
            if stats.size_bytes > stats.capacity_bytes:
                errors.append("over capacity")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = cache.stats()
    assert stats.size_bytes == 100 * stats.entries <= cache.capacity_bytes
    assert stats.hits + stats.misses > 0
