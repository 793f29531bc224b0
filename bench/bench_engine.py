"""Engine benchmarks (issue: the storage engine). One JSON object per figure.

.venv/bin/python bench/bench_engine.py [--quick]

``log_layout_compaction_bytes_per_flushed_byte``: a partition log's key pattern (ascending
data keys with a value-separated 16 KiB value, a checkpoint key every 16 entries, the
oldest of three deleted)
through 4 MiB memtables, then a full compaction; the bytes merges wrote per byte
flushes wrote, with the log's table families (``log.layout.TABLE_FAMILIES``) and, as
the peer in the same run, without them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.log.layout import TABLE_FAMILIES
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.write_batch import WriteBatch

BENCH = "engine"


def put_none(root: str, count: int) -> None:
    rng = random.Random(1)
    keys = [rng.randbytes(16) for _ in range(count)]
    value = b"v" * 100
    opts = EngineOptions(wal=WalOptions(sync_mode=SyncMode.NONE))
    with Engine.open(os.path.join(root, "put_none"), opts) as engine:
        put = engine.put
        start = time.perf_counter()
        for key in keys:
            put(key, value)
        elapsed = time.perf_counter() - start
    emit(BENCH, "put_100B_sync_none", count / elapsed, "puts/s", target=100_000)


def put_always_concurrent(root: str, writers: int, per_writer: int) -> None:
    value = b"v" * 100
    opts = EngineOptions(wal=WalOptions(sync_mode=SyncMode.ALWAYS))
    with Engine.open(os.path.join(root, "put_always"), opts) as engine:
        barrier = threading.Barrier(writers + 1)

        def run(worker: int) -> None:
            barrier.wait()
            for i in range(per_writer):
                engine.put(b"%04d-%08d" % (worker, i), value)

        threads = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    emit(
        BENCH,
        f"put_100B_sync_always_{writers}_writers",
        writers * per_writer / elapsed,
        "puts/s",
        target=20_000,
    )


def _plain_append(root: str, value: bytes, count: int) -> float:
    """The ceiling: a plain Python loop appending the same bytes to a file (MB/s)."""
    path = os.path.join(root, "plain.bin")
    start = time.perf_counter()
    with open(path, "wb") as handle:
        for i in range(count):
            handle.write(i.to_bytes(8, "big"))
            handle.write(value)
    rate = count * len(value) / (time.perf_counter() - start) / 1e6
    os.remove(path)
    return rate


def _engine_append(directory: str, value: bytes, count: int) -> tuple[float, float]:
    opts = EngineOptions(wal=WalOptions(sync_mode=SyncMode.NONE))
    with Engine.open(directory, opts) as engine:
        put = engine.put
        start = time.perf_counter()
        for i in range(count):
            put(i.to_bytes(8, "big"), value)
        engine.flush()
        rate = count * len(value) / (time.perf_counter() - start) / 1e6
        amplification = engine.stats().write_amplification
    return rate, amplification


def log_pattern(root: str, total_bytes: int, rounds: int = 3) -> None:
    """Ascending 8-byte keys, 16 KiB values. The ceiling and the engine take turns, and
    each figure is the median of its rounds: this machine's write speed drifts."""
    value = os.urandom(16 * 1024)
    count = total_bytes // len(value)
    plain: list[float] = []
    ours: list[float] = []
    amplification = 0.0
    for round_ in range(rounds):
        plain.append(_plain_append(root, value, count))
        directory = os.path.join(root, f"log{round_}")
        rate, amplification = _engine_append(directory, value, count)
        ours.append(rate)
        if round_ < rounds - 1:
            shutil.rmtree(directory)
    ceiling, rate = statistics.median(plain), statistics.median(ours)
    emit(
        BENCH,
        "log_append_16KiB_sync_none",
        rate,
        "MB/s",
        ceiling=round(ceiling, 1),
        ratio=round(rate / ceiling, 3),
        target_ratio=0.5,
        write_amplification=round(amplification, 2),
        rounds=rounds,
    )
    opts = EngineOptions(wal=WalOptions(sync_mode=SyncMode.NONE))
    with Engine.open(os.path.join(root, f"log{rounds - 1}"), opts) as engine:
        start = time.perf_counter()
        scanned = sum(len(v) for _k, v in engine.scan())
        rate = scanned / (time.perf_counter() - start) / 1e6
    emit(BENCH, "log_full_scan_16KiB", rate, "MB/s", target=300)


def _log_layout_run(directory: str, entries: int, families: tuple[bytes, ...]) -> float:
    compaction = CompactionOptions(table_families=families)
    options = EngineOptions(memtable_bytes=4 * 1024 * 1024, compaction=compaction)
    value = os.urandom(16 * 1024)
    with Engine.open(directory, options) as engine:
        for i in range(entries):
            batch = WriteBatch().put(b"D" + i.to_bytes(8, "big"), value)
            if i % 16 == 0:  # a checkpoint; as the log does, the oldest of 3 goes
                batch.put(b"MC" + i.to_bytes(8, "big"), b"c" * 64)
                if i >= 48:
                    batch.delete(b"MC" + (i - 48).to_bytes(8, "big"))
            engine.write(batch)
        engine.flush()
        engine.compact()
        stats = engine.stats()
    return stats.compaction_bytes_written / max(1, stats.flush_bytes_written)


def log_layout(root: str, total_bytes: int) -> None:
    entries = total_bytes // (16 * 1024)
    figures = {}
    for name, families in (("with", TABLE_FAMILIES), ("without", ())):
        directory = os.path.join(root, f"layout-{name}")
        figures[name] = _log_layout_run(directory, entries, families)
        shutil.rmtree(directory)
    emit(
        BENCH, "log_layout_compaction_bytes_per_flushed_byte", round(figures["with"], 3), "x",
        without_families=round(figures["without"], 3), bytes=total_bytes,
    )  # fmt: skip


def point_gets(root: str, count: int) -> None:
    directory = os.path.join(root, "gets")
    rng = random.Random(7)
    keys = sorted(rng.randbytes(16) for _ in range(count))
    opts = EngineOptions(wal=WalOptions(sync_mode=SyncMode.NONE))
    with Engine.open(directory, opts) as engine:
        for key in keys:
            engine.put(key, b"v" * 100)
        engine.flush()
    sample = rng.sample(keys, 2000)
    absent = [rng.randbytes(15) for _ in range(20000)]
    with Engine.open(directory, opts) as engine:
        start = time.perf_counter()
        for key in sample:
            engine.get(key)
        cold = (time.perf_counter() - start) / len(sample)
        start = time.perf_counter()
        for _ in range(5):
            for key in sample:
                engine.get(key)
        warm = (time.perf_counter() - start) / (5 * len(sample))
        start = time.perf_counter()
        for key in absent:
            engine.get(key)
        miss = (time.perf_counter() - start) / len(absent)
    emit(BENCH, "get_present_table_cold_cache", cold * 1e6, "us/get")
    emit(BENCH, "get_present_table_warm_cache", warm * 1e6, "us/get")
    emit(BENCH, "get_absent_bloom", miss * 1e6, "us/get")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as root:
        put_none(root, 300_000 // scale)
        put_always_concurrent(root, 64, 1_000 // scale)
        log_pattern(root, (512 * 1024 * 1024) // scale)
        log_layout(root, (1024 * 1024 * 1024) // scale)
        point_gets(root, 200_000 // scale)


if __name__ == "__main__":
    main()
