"""Broker-wide resources: one block cache bounded in bytes, one memtable budget."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable

from sentinel.fs import MemFS
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.resources import ResourceSizes, SharedResources
from sentinel.storage.wal import SyncMode, WalOptions


def _large(engine: int, key: int) -> bytes:
    """A value past ``value_separation_bytes`` (4 KiB): stored in its WAL entry."""
    return b"engine %d value %d " % (engine, key) * 300


def _wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def _sharing(
    count: int, sizes: ResourceSizes, options: EngineOptions | None = None
) -> tuple[MemFS, SharedResources, list[Engine]]:
    """``count`` engines (``/e0``, ``/e1``...) on one filesystem, sharing one broker's
    resources."""
    fs = MemFS()
    shared = SharedResources(sizes)
    opened = shared.engine_options(options or EngineOptions())
    return fs, shared, [Engine.open(f"/e{i}", opened, fs=fs) for i in range(count)]


def test_engines_share_one_cache_bounded_in_bytes_without_mixing_blocks() -> None:
    _fs, shared, engines = _sharing(10, ResourceSizes(block_cache_bytes=64 * 1024))
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
    _fs, shared, engines = _sharing(
        8,
        ResourceSizes(memtable_budget_bytes=256 * 1024),
        EngineOptions(memtable_bytes=64 * 1024 * 1024),
    )
    for round_ in range(100):
        for i, engine in enumerate(engines):
            engine.put(b"k%04d" % round_, b"x" * (100 * (i + 1)))
    _wait_for(lambda: shared.write_buffer.total_bytes <= 256 * 1024)
    assert shared.write_buffer.flushes_requested > 0
    # The largest memtable (the last engine's) was flushed; each one's data is intact.
    _wait_for(lambda: engines[-1].stats().flushes >= 1)
    for i, engine in enumerate(engines):
        assert engine.get(b"k0050") == b"x" * (100 * (i + 1))
        engine.close()
    shared.close()


def test_the_budget_lets_large_values_go_to_their_wal_instead_of_flushing() -> None:
    fs, shared, engines = _sharing(
        4,
        ResourceSizes(memtable_budget_bytes=256 * 1024),
        EngineOptions(memtable_bytes=64 * 1024 * 1024),
    )
    for k in range(40):  # 4 x 40 x 6 KiB: 960 KiB, past the budget
        for i, engine in enumerate(engines):
            engine.put(b"k%04d" % k, _large(i, k))
    _wait_for(lambda: shared.write_buffer.total_bytes <= 256 * 1024)
    assert sum(e.values_released for e in engines) > 0
    # No table, no roll: the values are read back from the WAL segment they are in.
    assert all(e.stats().flushes == 0 for e in engines)
    assert sum(e.stats().memtable_bytes for e in engines) <= 256 * 1024
    for i, engine in enumerate(engines):
        assert engine.get(b"k0003") == _large(i, 3)
        assert list(engine.scan()) == [(b"k%04d" % k, _large(i, k)) for k in range(40)]
        assert [bytes(v) for _k, v in engine.scan_views()] == [_large(i, k) for k in range(40)]
        assert engine.seek_floor(b"k0039z") == (b"k0039", _large(i, 39))
    engines[0].flush()  # a table of pointers, some taken from the memtable itself
    assert engines[0].stats().flushes == 1
    for engine in engines:
        engine.close()
    shared.close()
    for i in range(4):
        with Engine.open(f"/e{i}", EngineOptions(), fs=fs) as engine:
            assert list(engine.scan()) == [(b"k%04d" % k, _large(i, k)) for k in range(40)]


def test_values_let_go_were_made_durable_first() -> None:
    fs = MemFS()
    shared = SharedResources(ResourceSizes(memtable_budget_bytes=64 * 1024))
    wal = WalOptions(sync_mode=SyncMode.NONE)  # acknowledged without fsync
    options = shared.engine_options(EngineOptions(memtable_bytes=64 * 1024 * 1024, wal=wal))
    engine = Engine.open("/e", options, fs=fs)
    for k in range(30):
        engine.put(b"k%04d" % k, _large(0, k))
    _wait_for(lambda: engine.values_released > 0)
    released = engine.values_released
    fs.crash()  # what was not fsynced is lost: the values let go were not
    shared.close()
    with Engine.open("/e", EngineOptions(), fs=fs) as reopened:
        found = dict(reopened.scan())
    assert len(found) >= released
    assert all(found[b"k%04d" % k] == _large(0, k) for k in range(released))


def test_the_wal_still_rolls_at_memtable_bytes_when_values_are_let_go() -> None:
    fs = MemFS()
    shared = SharedResources(ResourceSizes(memtable_budget_bytes=64 * 1024 * 1024))
    options = shared.engine_options(EngineOptions(memtable_bytes=256 * 1024))
    engine = Engine.open("/e", options, fs=fs)
    for k in range(300):  # 1.7 MiB of values (5.7 KiB each), 256 KiB per memtable
        engine.put(b"k%04d" % k, _large(0, k))
        if k % 10 == 9:
            engine._relieve_memory()  # as the budget asks
    assert engine.values_released >= 250
    # A memtable rolls once the values it took pass 256 KiB, in memory or let go (so
    # its WAL segment stays that size, for retention): 6 times.
    _wait_for(lambda: engine.stats().flushes >= 6)
    assert list(engine.scan()) == [(b"k%04d" % k, _large(0, k)) for k in range(300)]
    engine.close()
    shared.close()


def _ten_large_values() -> tuple[SharedResources, Engine]:
    """An engine under a budget that asks nothing by itself, holding ten large values."""
    shared = SharedResources(ResourceSizes(memtable_budget_bytes=64 * 1024 * 1024))
    options = shared.engine_options(EngineOptions(memtable_bytes=64 * 1024 * 1024))
    engine = Engine.open("/e", options, fs=MemFS())
    for k in range(10):
        engine.put(b"k%04d" % k, _large(0, k))
    return shared, engine


def test_a_value_replaced_while_the_wal_syncs_is_not_let_go() -> None:
    shared, engine = _ten_large_values()
    sync = engine.make_durable

    def sync_then_overwrite(lsn: int) -> None:
        sync(lsn)
        engine.put(b"k0003", b"small")  # another writer, between the sync and the swap
        engine.put(b"k0005", _large(0, 55))

    engine.make_durable = sync_then_overwrite  # type: ignore[method-assign]
    engine._relieve_memory()
    assert engine.values_released == 8  # not the two replaced meanwhile
    assert engine.get(b"k0003") == b"small"
    assert engine.get(b"k0005") == _large(0, 55)
    assert engine.get(b"k0004") == _large(0, 4)
    engine.close()
    shared.close()


def test_a_failed_sync_lets_no_value_go() -> None:
    shared, engine = _ten_large_values()
    size = engine.stats().memtable_bytes

    def failing(lsn: int) -> None:
        raise OSError(28, "No space left on device")

    engine.make_durable = failing  # type: ignore[method-assign]
    engine._relieve_memory()
    assert engine.values_released == 0
    assert engine.stats().memtable_bytes == size
    assert list(engine.scan()) == [(b"k%04d" % k, _large(0, k)) for k in range(10)]
    del engine.make_durable  # the disk has room again: the next request lets them go
    engine._relieve_memory()
    assert engine.values_released == 10
    assert engine.stats().memtable_bytes < size // 10
    engine.close()
    shared.close()


def test_a_released_engine_lets_its_values_go() -> None:
    fs = MemFS()
    shared = SharedResources(ResourceSizes(memtable_budget_bytes=64 * 1024 * 1024))
    journal_less = EngineOptions(memtable_bytes=64 * 1024 * 1024)
    engine = Engine.open("/e", shared.engine_options(journal_less), fs=fs)
    for k in range(10):
        engine.put(b"k%04d" % k, _large(0, k))
    assert engine.suspend_files()
    engine._relieve_memory()  # the budget's request reaches an engine with files closed
    assert engine.values_released == 10
    assert engine.files_suspended
    engine.resume_files()
    assert list(engine.scan()) == [(b"k%04d" % k, _large(0, k)) for k in range(10)]
    engine.close()
    shared.close()


def test_value_frames_read_back_are_held_within_the_shared_cache_bound() -> None:
    _fs, shared, engines = _sharing(20, ResourceSizes(block_cache_bytes=256 * 1024))
    for i, engine in enumerate(engines):
        for k in range(100):  # 570 KiB of large values each, one WAL frame apiece
            engine.put(b"k%04d" % k, _large(i, k))
        engine.flush()  # the table points into the WAL: reads go to its frames
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, engine in enumerate(engines):
        assert [v for _k, v in engine.scan()] == [_large(i, k) for k in range(100)]
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert shared.block_cache.size_bytes <= 256 * 1024
    # Each engine kept 8 MiB of frames of its own before: 11 MB here, and 8 GB for a
    # consumer of 1,000 partitions.
    assert grown < 2 * 1024 * 1024, grown
    hits = engines[0].stats().block_cache_hits
    assert engines[0].get(b"k0003") == engines[0].get(b"k0003") == _large(0, 3)
    assert engines[0].stats().block_cache_hits > hits  # its frame (and block), read twice
    for engine in engines:
        engine.close()
    assert shared.block_cache.size_bytes == 0
    shared.close()


def test_the_pointers_kept_for_large_values_are_not_objects_the_collector_walks() -> None:
    """Per large value the engine keeps where it sits in its WAL. Kept as class
    instances, those were two GC-tracked objects per value (a produced batch, in a
    broker), which every full collection walks on the event loop. Kept as plain bytes
    they are not tracked at all."""
    engine = Engine.open("/e", EngineOptions(background=False), fs=MemFS())
    try:
        gc.collect()
        before = len(gc.get_objects())
        for key in range(3000):
            engine.put(b"k%05d" % key, _large(0, key))
        gc.collect()
        assert len(gc.get_objects()) - before < 300  # 2 per value (6,000) before
        assert engine.get(b"k00042") == _large(0, 42)
        engine.flush()
        assert engine.get(b"k02999") == _large(0, 2999)  # the flushed table's pointer
    finally:
        engine.close()
