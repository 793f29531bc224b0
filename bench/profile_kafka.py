"""Where the broker's event loop spends its time under the Kafka door's produce and fetch.

    PYTHONPATH=src .venv/bin/python bench/profile_kafka.py --size 1024 --count 200000
    PYTHONPATH=src .venv/bin/python bench/profile_kafka.py --size 100 --count 1000000 --fetch

Starts a ``sentinel-server`` (default ``--sync always``) whose main thread (the event loop)
runs under cProfile only between two ``SIGRTMIN+3`` (the first starts it, the second stops it
and writes the stats): the server's start-up and topic creation are not counted. Then
``bench/kafka_producer.c`` (as bench_kafka.py builds it) produces ``--count`` records of
``--size`` bytes into a fresh topic; with ``--fetch``, ``kcat -C`` reads them back under
a second profile. With ``--raw``, ``bench/kafka_raw.c`` (no librdkafka, near-zero cost
per record) produces and consumes instead. Prints the top functions by own time and by
cumulative time.

Nothing here changes the server: the profiler is installed by the wrapper below, which
then calls the CLI's ``main``.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_client import _wait_ready
from bench_kafka import (
    KCAT_PRODUCE,
    c_producer,
    c_raw,
    create_topic,
    kafka_consume,
    raw_consume,
)

# Run as the server process: SIGRTMIN+3 toggles a cProfile of the main thread.
WRAPPER = """
import cProfile, os, signal, sys
from sentinel.cli.server import main
profile = None
dumps = 0
def toggle(_signum, _frame):
    global profile, dumps
    if profile is None:
        profile = cProfile.Profile()
        profile.enable()
    else:
        profile.disable()
        dumps += 1
        profile.dump_stats(os.environ["BENCH_KAFKA_PROFILE"] + f".{dumps}")
        profile = None
signal.signal(signal.SIGRTMIN + 3, toggle)
sys.argv[0] = "sentinel-server"
main()
"""


TOGGLE = signal.SIGRTMIN + 3


def profiled(proc: subprocess.Popen[str], out: str, action: Callable[[], object]) -> float:
    """Profile the server while ``action`` runs; ``out`` is where the child dumps."""
    proc.send_signal(TOGGLE)
    time.sleep(0.2)
    start = time.perf_counter()
    action()
    elapsed = time.perf_counter() - start
    proc.send_signal(TOGGLE)
    deadline = time.monotonic() + 30
    while not os.path.exists(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the dump is being written
    return elapsed


def show(path: str, title: str, top: int) -> None:
    print(f"\n===== {title} =====")
    stats = pstats.Stats(path)
    print(f"total profiled CPU {stats.total_tt:.3f} s")  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--fetch", action="store_true", help="also profile kcat -C reading")
    parser.add_argument("--raw", action="store_true", help="produce and consume with kafka_raw.c")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", help="copy the stats files to PATH.produce / PATH.fetch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sentinel-profile-") as directory:
        producer = c_raw(directory) if args.raw else c_producer(directory)
        if producer is None:
            raise SystemExit("needs cc (and librdkafka-dev without --raw)")
        data = os.path.join(directory, "data")
        out = os.path.join(directory, "server.prof")
        cmd = [sys.executable, "-c", WRAPPER, "--host", "127.0.0.1", "--port", "0",
               "--kafka-port", "0", "--data", data, "--metrics-port", "0",
               "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_KAFKA_PROFILE": out}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        try:
            grpc, kafka = _wait_ready(proc)
            topic = create_topic(grpc, args.partitions, "profile")
            configs = [c for c in KCAT_PRODUCE if c != "-X"]
            produce = [producer, kafka, topic, str(args.count), str(args.size), *configs]
            if args.raw:
                produce = [producer, "produce", kafka, topic, str(args.partitions),
                           str(args.count), str(args.size)]  # fmt: skip
            seconds = profiled(proc, out + ".1", lambda: subprocess.run(produce, check=True))
            rate = args.count * args.size / seconds / 1e6
            print(f"produce: {args.count} x {args.size} B in {seconds:.3f} s ({rate:.0f} MB/s)")
            show(out + ".1", f"produce {args.size} B", args.top)
            if args.save:
                shutil.copy(out + ".1", args.save + ".produce")
            if args.fetch:
                fetch_out = out + ".2"
                if args.raw:
                    raw = producer
                    consume = lambda: raw_consume(raw, kafka, topic, args.partitions, args.count)  # noqa: E731
                else:
                    consume = lambda: kafka_consume(kafka, topic, args.count)  # noqa: E731
                seconds = profiled(proc, fetch_out, consume)
                print(f"fetch: {args.count} records in {seconds:.3f} s")
                show(fetch_out, f"fetch {args.size} B", args.top)
                if args.save:
                    shutil.copy(fetch_out, args.save + ".fetch")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
