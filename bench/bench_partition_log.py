"""Partition log benchmarks: append and read throughput of 16 KiB batches on the real
filesystem. One JSON object per figure.

    .venv/bin/python bench/bench_partition_log.py [--quick]

Figures:
- ``append_16KiB_sync_none``: ``append`` one batch at a time, sync ``none``, until the
  engine has flushed it all (the ceiling is a plain Python file append of the same bytes);
- ``append_many_16x16KiB_sync_none``: 16 batches per ``append_many`` (one WAL entry);
- ``append_16KiB_sync_always``: one writer, ``wait=True``: an fsync per batch;
- ``append_16KiB_sync_always_pipelined``: ``wait=False`` and one ``sync_to`` per 32
  batches (what a broker's concurrent producers share through group commit);
- ``read_16KiB_from_0_memtable`` / ``read_16KiB_from_0_tables``: ``read(offset, 1 MiB)``
  from offset 0 to the end, as a consumer fetches, while the data is in the memtable and
  after a reopen (from the tables).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.broker.topic_config import TopicConfig
from sentinel.clock import SystemClock
from sentinel.fs import OsFS
from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions

BENCH = "partition_log"
BATCH = 16 * 1024
CONFIG = TopicConfig(max_message_bytes=1024 * 1024, retention_ms=-1)


def make_batches(count: int) -> list[bytes]:
    """Distinct ~16 KiB batches of 16 records of 1 KiB (random, incompressible)."""
    now = int(time.time() * 1000)
    out = []
    for _ in range(count):
        records = [(b"key-%d" % i, os.urandom(1000), (), now) for i in range(16)]
        out.append(build_batch(records))
    return out


def open_log(directory: str, mode: SyncMode) -> PartitionLog:
    options = EngineOptions(wal=WalOptions(sync_mode=mode))
    return PartitionLog.open(OsFS(), directory, CONFIG, SystemClock(), options)


def plain_ceiling(root: str, batches: list[bytes], count: int) -> float:
    path = os.path.join(root, "plain.bin")
    start = time.perf_counter()
    with open(path, "wb") as handle:
        for i in range(count):
            handle.write(batches[i % len(batches)])
    rate = count * len(batches[0]) / (time.perf_counter() - start) / 1e6
    os.remove(path)
    return rate


def append_none(root: str, batches: list[bytes], count: int, ceiling: float) -> str:
    directory = os.path.join(root, "none")
    size = len(batches[0])
    with open_log(directory, SyncMode.NONE) as log:
        append = log.append
        start = time.perf_counter()
        for i in range(count):
            append(batches[i % len(batches)])
        log.engine.flush()
        rate = count * size / (time.perf_counter() - start) / 1e6
        amplification = log.engine_stats().write_amplification
    emit(
        BENCH,
        "append_16KiB_sync_none",
        rate,
        "MB/s",
        batch_bytes=size,
        batches_per_s=round(rate * 1e6 / size),
        ceiling=round(ceiling, 1),
        ratio=round(rate / ceiling, 3),
        write_amplification=round(amplification, 2),
    )
    return directory


def append_many_none(root: str, batches: list[bytes], count: int) -> None:
    size = len(batches[0])
    group = [batches[i % len(batches)] for i in range(16)]
    with open_log(os.path.join(root, "many"), SyncMode.NONE) as log:
        start = time.perf_counter()
        for _ in range(count // 16):
            log.append_many(group)
        log.engine.flush()
        rate = (count // 16) * 16 * size / (time.perf_counter() - start) / 1e6
    emit(BENCH, "append_many_16x16KiB_sync_none", rate, "MB/s")


def append_always(root: str, batches: list[bytes], count: int) -> None:
    size = len(batches[0])
    with open_log(os.path.join(root, "always"), SyncMode.ALWAYS) as log:
        start = time.perf_counter()
        for i in range(count):
            log.append(batches[i % len(batches)])
        elapsed = time.perf_counter() - start
    emit(
        BENCH,
        "append_16KiB_sync_always",
        count * size / elapsed / 1e6,
        "MB/s",
        fsyncs_per_s=round(count / elapsed),
        us_per_append=round(elapsed / count * 1e6, 1),
    )
    with open_log(os.path.join(root, "pipelined"), SyncMode.ALWAYS) as log:
        start = time.perf_counter()
        lsn = 0
        for i in range(count):
            lsn = log.append(batches[i % len(batches)], wait=False).lsn
            if i % 32 == 31:
                log.sync_to(lsn)
        log.sync_to(lsn)
        elapsed = time.perf_counter() - start
    emit(BENCH, "append_16KiB_sync_always_pipelined", count * size / elapsed / 1e6, "MB/s",
         batches_per_sync=32)


def read_all(log: PartitionLog) -> tuple[int, float]:
    offset, total = 0, 0
    end = log.high_watermark
    start = time.perf_counter()
    while offset < end:
        result = log.read(offset, 1024 * 1024)
        total += sum(len(b) for b in result.batches)
        offset = result.next_offset
    return total, time.perf_counter() - start


def read_from_zero(root: str, batches: list[bytes], count: int, directory: str) -> None:
    memtable = EngineOptions(wal=WalOptions(sync_mode=SyncMode.NONE), memtable_bytes=1 << 30)
    hot = os.path.join(root, "hot")
    with PartitionLog.open(OsFS(), hot, CONFIG, SystemClock(), memtable) as log:
        for i in range(min(count, 4096)):
            log.append(batches[i % len(batches)])
        total, elapsed = read_all(log)
    emit(BENCH, "read_16KiB_from_0_memtable", total / elapsed / 1e6, "MB/s", bytes=total)
    with open_log(directory, SyncMode.NONE) as log:
        total, elapsed = read_all(log)
    emit(BENCH, "read_16KiB_from_0_tables", total / elapsed / 1e6, "MB/s", bytes=total)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    count = (512 * 1024 * 1024 // BATCH) // scale
    always = 4000 // scale
    batches = make_batches(64)
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-log-") as root:
        ceiling = plain_ceiling(root, batches, count)
        directory = append_none(root, batches, count, ceiling)
        append_many_none(root, batches, count)
        append_always(root, batches, always)
        read_from_zero(root, batches, count, directory)


if __name__ == "__main__":
    main()
