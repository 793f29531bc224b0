"""WAL benchmarks on the real filesystem (OsFS in a temp dir). One JSON object per figure.

    .venv/bin/python bench/bench_wal.py [--quick]

- appends/s of 100-byte payloads with sync NONE;
- appends/s with sync ALWAYS, one writer (one fsync per append);
- appends/s with sync ALWAYS, 64 writer threads (group commit: one fsync covers many);
- MB/s of 16 KiB payloads with sync NONE, beside a plain ``os.write`` loop of the same
  bytes to one file (the ceiling; ``ratio`` = WAL / ceiling): once with the default
  64 MiB segments (each roll fsyncs the finished segment, part of the price), once with
  segments big enough that nothing rolls (the steady append path alone).

MB here means MiB (2**20 bytes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.fs import OsFS
from sentinel.storage.wal import SyncMode, WalOptions, WriteAheadLog

BENCH = "wal"
SMALL = b"s" * 100
LARGE = b"L" * (16 * 1024)


class SyncLog:
    """Collects ``on_sync`` reports."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.entries = 0

    def __call__(self, seconds: float, entries: int) -> None:
        self.seconds.append(seconds)
        self.entries += entries

    def extras(self) -> dict[str, float]:
        if not self.seconds:
            return {"fsyncs": 0}
        ordered = sorted(self.seconds)
        return {
            "fsyncs": len(ordered),
            "entries_per_fsync": round(self.entries / len(ordered), 1),
            "fsync_ms_mean": round(statistics.fmean(ordered) * 1000, 3),
            "fsync_ms_p50": round(ordered[len(ordered) // 2] * 1000, 3),
            "fsync_ms_p99": round(ordered[len(ordered) * 99 // 100] * 1000, 3),
        }


def append_none(root: str, count: int) -> None:
    wal = WriteAheadLog(OsFS(), os.path.join(root, "none"), 1, WalOptions(SyncMode.NONE))
    append = wal.append
    start = time.perf_counter()
    for _ in range(count):
        append(SMALL)
    elapsed = time.perf_counter() - start
    wal.close()
    frame = len(SMALL) + 9
    ceiling = ceiling_mib_s(root, b"f" * frame, count) * (1 << 20) / frame
    emit(
        BENCH,
        "append_100B_sync_none",
        count / elapsed,
        "appends/s",
        count=count,
        ceiling=round(ceiling, 3),
        ratio=round(count / elapsed / ceiling, 3),
    )


def append_always(root: str, writers: int, seconds: float) -> None:
    syncs = SyncLog()
    directory = os.path.join(root, f"always{writers}")
    wal = WriteAheadLog(OsFS(), directory, 1, WalOptions(SyncMode.ALWAYS), on_sync=syncs)
    stop = threading.Event()
    counts = [0] * writers
    barrier = threading.Barrier(writers + 1)

    def writer(index: int) -> None:
        append_sync = wal.append_sync
        barrier.wait()
        done = 0
        while not stop.is_set():
            append_sync(SMALL)
            done += 1
        counts[index] = done

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    wal.close()
    total = sum(counts)
    metric = f"append_sync_100B_sync_always_{writers}_writer{'s' if writers > 1 else ''}"
    emit(BENCH, metric, total / elapsed, "appends/s", appends=total, **syncs.extras())


def ceiling_mib_s(root: str, payload: bytes, count: int) -> float:
    """MiB/s of a plain ``os.write`` loop appending ``payload`` to one file."""
    path = os.path.join(root, "plain.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    write = os.write
    start = time.perf_counter()
    for _ in range(count):
        write(fd, payload)
    elapsed = time.perf_counter() - start
    os.close(fd)
    os.remove(path)
    return count * len(payload) / (1 << 20) / elapsed


def wal_mib_s(root: str, payload: bytes, count: int, segment_bytes: int) -> tuple[float, int]:
    """MiB/s of ``append`` with sync NONE (rolls and their fsyncs included), and rolls."""
    directory = os.path.join(root, "large")
    syncs = SyncLog()
    options = WalOptions(SyncMode.NONE, segment_bytes=segment_bytes)
    wal = WriteAheadLog(OsFS(), directory, 1, options, on_sync=syncs)
    append = wal.append
    start = time.perf_counter()
    for _ in range(count):
        append(payload)
    elapsed = time.perf_counter() - start
    wal.close()
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))
    os.rmdir(directory)
    return count * len(payload) / (1 << 20) / elapsed, len(syncs.seconds) - 1


def throughput_none(root: str, total_bytes: int, repeats: int) -> None:
    """Medians over ``repeats`` pairs, each WAL run next to a ceiling run so that both see
    the same disk and page-cache weather; ``ratio`` is the median of the pair ratios."""
    count = total_bytes // len(LARGE)
    mib = round(count * len(LARGE) / (1 << 20), 1)
    cases = [("append_16KiB_sync_none", WalOptions().segment_bytes)]
    cases.append(("append_16KiB_sync_none_no_roll", 2 * total_bytes))
    for metric, segment_bytes in cases:
        wal_speeds: list[float] = []
        ceilings: list[float] = []
        rolls = 0
        for attempt in range(repeats):
            if attempt % 2:  # alternate which of the pair runs first
                ceilings.append(ceiling_mib_s(root, LARGE, count))
            speed, rolls = wal_mib_s(root, LARGE, count, segment_bytes)
            wal_speeds.append(speed)
            if not attempt % 2:
                ceilings.append(ceiling_mib_s(root, LARGE, count))
        ratios = [w / c for w, c in zip(wal_speeds, ceilings, strict=True)]
        emit(
            BENCH,
            metric,
            statistics.median(wal_speeds),
            "MB/s",
            ceiling=round(statistics.median(ceilings), 3),
            ratio=round(statistics.median(ratios), 3),
            mib=mib,
            rolls=rolls,
            repeats=repeats,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = parser.parse_args()
    quick: bool = args.quick
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-wal-") as root:
        append_none(root, 50_000 if quick else 300_000)
        append_always(root, 1, 0.5 if quick else 2.0)
        append_always(root, 64, 0.5 if quick else 2.0)
        throughput_none(root, (16 if quick else 128) << 20, 1 if quick else 5)


if __name__ == "__main__":
    main()
