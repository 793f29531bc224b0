"""Broker-wide resources: one block cache bounded in bytes, one memtable budget."""

from __future__ import annotations

import time

from sentinel.fs import MemFS
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.resources import ResourceSizes, SharedResources


def test_engines_share_one_cache_bounded_in_bytes_without_mixing_blocks() -> None:
    fs = MemFS()
    shared = SharedResources(ResourceSizes(block_cache_bytes=64 * 1024))
    options = shared.engine_options(EngineOptions())
    engines = [Engine.open(f"/e{i}", options, fs=fs) for i in range(10)]
    for i, engine in enumerate(engines):
        for k in range(200):
            engine.put(b"k%04d" % k, b"engine %d value %d " % (i, k) * 10)
        engine.flush()  # table file numbers are alike in every engine
    for _ in range(2):
        for i, engine in enumerate(engines):
            for k in range(0, 200, 7):
                assert engine.get(b"k%04d" % k) == b"engine %d value %d " % (i, k) * 10
    assert 0 < shared.block_cache.size_bytes <= 64 * 1024
    assert sum(e.stats().block_cache_hits for e in engines) > 0
    for engine in engines:
        engine.close()
    assert shared.block_cache.size_bytes == 0  # a closed engine leaves no block behind
    shared.close()


def test_the_memtable_budget_flushes_the_largest_memtables() -> None:
    fs = MemFS()
    shared = SharedResources(ResourceSizes(memtable_budget_bytes=256 * 1024))
    options = shared.engine_options(EngineOptions(memtable_bytes=64 * 1024 * 1024))
    engines = [Engine.open(f"/e{i}", options, fs=fs) for i in range(8)]
    for round_ in range(100):
        for i, engine in enumerate(engines):
            engine.put(b"k%04d" % round_, b"x" * (100 * (i + 1)))
    deadline = time.monotonic() + 30
    while shared.write_buffer.total_bytes > 256 * 1024 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shared.write_buffer.total_bytes <= 256 * 1024
    assert shared.write_buffer.flushes_requested > 0
    # The largest memtable (the last engine's) was flushed; each one's data is intact.
    deadline = time.monotonic() + 30
    while engines[-1].stats().flushes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engines[-1].stats().flushes >= 1
    for i, engine in enumerate(engines):
        assert engine.get(b"k0050") == b"x" * (100 * (i + 1))
        engine.close()
    shared.close()
