"""The shared worker pool: bounded threads, one engine's jobs never concurrent."""

from __future__ import annotations

import threading
import time

from sentinel.fs import MemFS
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.workers import Strand, WorkerPool


def test_a_strand_never_runs_its_job_twice_at_once() -> None:
    pool = WorkerPool(4)
    running = 0
    most = 0
    runs = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal running, most, runs
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.001)
        with lock:
            running -= 1
            runs += 1

    strand = Strand(pool, job)
    for _ in range(200):
        strand.schedule()
    deadline = time.monotonic() + 10
    while runs == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    strand.close()
    pool.shutdown()
    assert most == 1 and runs >= 1


def test_a_delayed_run_happens_later() -> None:
    pool = WorkerPool(1)
    done = threading.Event()
    strand = Strand(pool, done.set)
    strand.schedule(0.05)
    assert done.wait(10)
    pool.shutdown()


def test_fifty_engines_share_two_threads_for_flushes_and_compactions() -> None:
    fs = MemFS()
    pool = WorkerPool(2, "test-pool")
    options = EngineOptions(memtable_bytes=4096, workers=pool)
    before = threading.active_count()
    engines = [Engine.open(f"/e{i}", options, fs=fs) for i in range(50)]
    for round_ in range(20):
        for i, engine in enumerate(engines):
            engine.put(b"k%04d" % round_, b"v%d" % i * 100)
    for engine in engines:
        engine.flush()
    assert threading.active_count() - before <= 2
    assert pool.thread_count == 2
    for i, engine in enumerate(engines):
        assert engine.get(b"k0007") == b"v%d" % i * 100
        assert engine.stats().flushes >= 1
        engine.close()
    pool.shutdown()
