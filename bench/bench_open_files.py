"""Files per open partition log, and what a release and a reopen cost (issue 7).

    .venv/bin/python bench/bench_open_files.py [--partitions 200] [--record 1024]
        [--rounds 5]

In one process, on the real filesystem (a temporary directory), ``--partitions``
partition logs with the broker's engine options (shared resources, ``--sync always``,
no engine LOCK: a broker holds its data directory's): the open files they hold, counted
in /proc/self/fd, new, with one table read, released and reopened; then the time of a
release (``PartitionLog.release_files``: close its files) and of a reopen
(``open_files``), and of an append + fsync with and without a release and a reopen
before it. Older trees without ``EngineOptions.hold_lock`` run with their LOCK.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from sentinel.storage.resources import ResourceSizes, SharedResources
from sentinel.storage.wal import SyncMode, WalOptions

BENCH = "open_files"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partitions", type=int, default=200)
    parser.add_argument("--record", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, rounds = args.partitions, args.rounds
    shared = SharedResources(ResourceSizes())
    options = shared.engine_options(EngineOptions(wal=WalOptions(sync_mode=SyncMode.ALWAYS)))
    if "hold_lock" in {f.name for f in dataclasses.fields(EngineOptions)}:
        options = dataclasses.replace(options, hold_lock=False)
    batch = build_batch([(None, os.urandom(args.record), (), int(time.time() * 1000))])
    with tempfile.TemporaryDirectory() as root:
        base = open_fds()
        logs = [
            PartitionLog.open(OsFS(), f"{root}/p{i}", TopicConfig(), SystemClock(), options)
            for i in range(n)
        ]
        emit(BENCH, "files_per_new_log", (open_fds() - base) / n, "files")
        for log in logs:
            log.append(batch)
            log.engine.flush()
            log.read(0, 1 << 20)
        emit(BENCH, "files_per_log_with_a_table_read", (open_fds() - base) / n, "files")
        for log in logs:
            log.release_files()
        emit(BENCH, "files_per_released_log", (open_fds() - base) / n, "files")
        for log in logs:
            log.open_files()
        emit(BENCH, "files_per_reopened_log", (open_fds() - base) / n, "files")
        release = reopen = 0.0
        for _ in range(rounds):
            started = time.perf_counter()
            for log in logs:
                log.release_files()
            release += time.perf_counter() - started
            started = time.perf_counter()
            for log in logs:
                log.open_files()
            reopen += time.perf_counter() - started
        emit(BENCH, "release", release / (rounds * n) * 1e6, "us")
        emit(BENCH, "reopen", reopen / (rounds * n) * 1e6, "us")
        started = time.perf_counter()
        for _ in range(rounds):
            for log in logs:
                log.append(batch)
        emit(BENCH, "append_fsync", (time.perf_counter() - started) / (rounds * n) * 1e6, "us")
        started = time.perf_counter()
        for _ in range(rounds):
            for log in logs:
                log.release_files()
                log.open_files()
                log.append(batch)
        churned = (time.perf_counter() - started) / (rounds * n) * 1e6
        emit(BENCH, "release_reopen_append_fsync", churned, "us")
        for log in logs:
            log.close()
    shared.close()


if __name__ == "__main__":
    main()
