"""SSTable build, scan and point-read rates on the real filesystem.

Run: .venv/bin/python bench/bench_sstable.py [--quick]

Keys are 8-byte big-endian integers (the log's offsets), even numbers only so that the
odd ones are absent keys inside the table's range (they exercise the bloom filter).
The OS page cache is warm throughout: "cold" means the block cache is empty, so every
read is a ``pread`` + CRC + decode. Each figure also carries ``cpu_rate``: the same
rate over this process's CPU time, steadier than wall time on a shared machine.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from _common import emit
from sentinel.fs import OsFS
from sentinel.storage.block_cache import BlockCache
from sentinel.storage.bloom import BloomBuilder
from sentinel.storage.entry import ABSENT
from sentinel.storage.sstable import TableOptions, TableReader, write_table

BENCH = "sstable"


def key(i: int) -> bytes:
    return (2 * i).to_bytes(8, "big")


def entries(count: int, values: list[bytes]) -> Iterator[tuple[bytes, bytes | None]]:
    for i in range(count):
        yield key(i), values[i % len(values)]


def measure(fn: Callable[[], object], repeat: int = 1) -> tuple[float, float]:
    """Best (wall seconds, cpu seconds) of ``repeat`` calls."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu


def report(
    metric: str, amount: float, unit: str, times: tuple[float, float], **extra: object
) -> None:
    wall, cpu = times
    emit(BENCH, metric, amount / wall, unit, cpu_rate=round(amount / max(cpu, 1e-9), 1), **extra)


def scan_all(fs: OsFS, path: str) -> None:
    reader = TableReader.open(fs, path, 1)
    total = 0
    for k, v in reader.entries():
        total += len(k) + (0 if v is None else len(v))
    reader.close()


def get_all(reader: TableReader, keys: list[bytes], present: bool) -> Callable[[], None]:
    def run() -> None:
        for k in keys:
            if (reader.get(k) is ABSENT) == present:
                raise AssertionError(f"get({k!r}) answered wrong")

    return run


def point_reads(fs: OsFS, path: str, count: int, label: str, probes: int) -> None:
    rng = random.Random(7)
    present = [key(rng.randrange(count)) for _ in range(probes)]
    absent = [(2 * rng.randrange(count) + 1).to_bytes(8, "big") for _ in range(probes)]
    wall, cpu = measure(lambda: TableReader.open(fs, path, 1).close(), repeat=10)
    emit(BENCH, f"{label}.open", wall * 1e6, "us", cpu_us=round(cpu * 1e6, 1),
         note="footer + filter + index + meta, verified")  # fmt: skip

    cold = TableReader.open(fs, path, 1, cache=None)  # every get: pread + verify + decode
    times = measure(get_all(cold, present, True))
    report(f"{label}.get_present_cold", probes, "gets/s", times,
           us_per_get=round(times[0] / probes * 1e6, 2))  # fmt: skip
    cold.close()

    cache = BlockCache(256 * 1024 * 1024)
    warm = TableReader.open(fs, path, 1, cache=cache)
    get_all(warm, present, True)()
    hits = cache.hits
    times = measure(get_all(warm, present, True))
    report(f"{label}.get_present_warm", probes, "gets/s", times,
           us_per_get=round(times[0] / probes * 1e6, 2),
           hit_ratio=round((cache.hits - hits) / probes, 3))  # fmt: skip
    misses = cache.misses
    times = measure(get_all(warm, absent, False))
    report(f"{label}.get_absent", probes, "gets/s", times,
           us_per_get=round(times[0] / probes * 1e6, 2),
           block_reads_per_get=round((cache.misses - misses) / probes, 4))  # fmt: skip
    warm.close()


def large_values(fs: OsFS, directory: str, quick: bool) -> None:
    count = 2048 if quick else 8192
    rng = random.Random(1)
    values = [rng.randbytes(16 * 1024) for _ in range(16)]
    path = os.path.join(directory, "large.sst")
    mb = count * (16 * 1024 + 8) / 1e6
    times = measure(lambda: write_table(fs, path, 1, entries(count, values)))
    report("16k.build", mb, "MB/s", times, entries=count, incl="fsync",
           file_mb=round(fs.file_size(path) / 1e6, 1))  # fmt: skip
    times = measure(lambda: scan_all(fs, path), repeat=3)
    report("16k.full_scan", mb, "MB/s", times, entries=count)
    point_reads(fs, path, count, "16k", 2000 if quick else 5000)


def small_values(fs: OsFS, directory: str, quick: bool) -> None:
    count = 20_000 if quick else 100_000
    rng = random.Random(2)
    values = [rng.randbytes(100) for _ in range(1024)]
    for prefix in (False, True):
        label = "100b.prefix" if prefix else "100b"
        path = os.path.join(directory, f"{label}.sst")
        options = TableOptions(prefix_compression=prefix)
        times = measure(lambda p=path, o=options: write_table(fs, p, 1, entries(count, values), o))
        report(f"{label}.build", count, "entries/s", times,
               mb_per_s=round(count * 108 / times[0] / 1e6, 1),
               file_mb=round(fs.file_size(path) / 1e6, 2))  # fmt: skip
        times = measure(lambda p=path: scan_all(fs, p), repeat=3)
        report(f"{label}.full_scan", count, "entries/s", times,
               mb_per_s=round(count * 108 / times[0] / 1e6, 1))  # fmt: skip
    point_reads(fs, os.path.join(directory, "100b.sst"), count, "100b", 20_000 if quick else 50_000)


def bloom_build(quick: bool) -> None:
    count = 200_000 if quick else 1_000_000
    keys = [i.to_bytes(8, "big") for i in range(count)]
    size = 0

    def run() -> None:
        nonlocal size
        builder = BloomBuilder(10)
        builder.add_keys(keys)
        size = len(builder.finish())

    times = measure(run)
    report("bloom.build", count, "keys/s", times, keys=count, seconds=round(times[0], 3),
           filter_kb=round(size / 1024, 1))  # fmt: skip


def main() -> None:
    quick = "--quick" in sys.argv
    fs = OsFS()
    with tempfile.TemporaryDirectory(prefix="bench_sstable_") as directory:
        large_values(fs, directory, quick)
        small_values(fs, directory, quick)
    bloom_build(quick)


if __name__ == "__main__":
    main()
