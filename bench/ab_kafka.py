"""The Kafka door's produce and consume rates from several source trees, interleaved.

    .venv/bin/python bench/ab_kafka.py --tree base=/tmp/base/src --tree new=src --rounds 3

This machine's speed drifts between minutes, so a change to the broker is judged by
servers of the trees compared taking turns, round after round, on the same records:
per round and tree a fresh ``sentinel-server`` (default ``--sync always``) started with
that tree first on ``PYTHONPATH``, then ``bench/kafka_producer.c`` producing 1 M x 100 B
and 200 k x 1 KiB into fresh one-partition topics and ``kcat -C`` reading the 100 B
topic back (as ``bench_kafka.py`` does); with ``--raw``, ``bench/kafka_raw.c`` produces
and consumes instead (near-zero cost per record: the broker is what is measured).
Besides the rates, the server's CPU time (user + system, all threads) per produced (or
consumed) GB: less at the mercy of the machine's other load than a rate. Prints one JSON
line per figure and, at the end, each tree's median and its ratio to the first tree's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from bench_client import server_doors
from bench_kafka import (
    c_producer,
    c_raw,
    create_topic,
    kafka_consume,
    kafka_produce,
    raw_consume,
    raw_produce,
    records_file,
)

BENCH = "kafka_ab"


def minor_faults(pid: int) -> int:
    """The process's minor page faults so far (``/proc/PID/stat``, field 10)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages-100", type=int, default=1_000_000)
    parser.add_argument("--messages-1024", type=int, default=200_000)
    parser.add_argument("--sizes", default="100,1024", help="record sizes, of 100 and 1024")
    parser.add_argument("--raw", action="store_true", help="produce and consume with kafka_raw.c")
    args = parser.parse_args()
    trees = [(name, os.path.abspath(src)) for name, src in (t.split("=", 1) for t in args.tree)]
    sizes = {int(size) for size in args.sizes.split(",")}
    counts = {s: n for s, n in ((100, args.messages_100), (1024, args.messages_1024)) if s in sizes}
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-ab-") as directory:
        files = {size: records_file(directory, size, n) for size, n in counts.items()}
        producer = c_raw(directory) if args.raw else c_producer(directory)
        if producer is None:
            raise SystemExit("needs cc (and librdkafka-dev without --raw)")
        for index in range(args.rounds):
            order = trees if index % 2 == 0 else trees[::-1]
            for name, src in order:
                os.environ["PYTHONPATH"] = src
                with server_doors(None) as (grpc, kafka, broker):
                    for size, n in counts.items():
                        topic = create_topic(grpc, 1, f"ab-{size}")
                        before, faults = broker.cpu_times(), minor_faults(broker.pid)
                        if args.raw:
                            s = raw_produce(producer, kafka, topic, 1, size, n)
                        else:
                            s = kafka_produce(kafka, topic, files[size], size, n, producer)
                        after, faults = broker.cpu_times(), minor_faults(broker.pid) - faults
                        cpu = (after.user + after.system) - (before.user + before.system)
                        rate = n * size / s / 1e6
                        figures.setdefault((name, f"produce_{size}B"), []).append(rate)
                        per_gb = cpu / (n * size / 1e9)
                        figures.setdefault((name, f"cpu_s_per_GB_{size}B"), []).append(per_gb)
                        per_mb = faults / (n * size / 1e6)
                        emit(BENCH, f"produce_{size}B_throughput", rate, "MB/s", tree=name,
                             round=index, server_cpu_s_per_GB=round(per_gb, 3),
                             server_minor_faults_per_MB=round(per_mb, 1))  # fmt: skip
                        if size == 100:
                            before = broker.cpu_times()
                            if args.raw:
                                s = raw_consume(producer, kafka, topic, 1, n)
                            else:
                                s = kafka_consume(kafka, topic, n)
                            after = broker.cpu_times()
                            cpu = (after.user + after.system) - (before.user + before.system)
                            figures.setdefault((name, "consume_100B"), []).append(n / s)
                            per_gb = cpu / (n * size / 1e9)
                            figures.setdefault((name, "consume_cpu_s_per_GB"), []).append(per_gb)
                            emit(BENCH, "consume_100B", n / s, "msgs/s", tree=name, round=index,
                                 server_cpu_s_per_GB=round(per_gb, 3))  # fmt: skip
    first = trees[0][0]
    for (name, metric), values in sorted(figures.items()):
        median = statistics.median(values)
        base = statistics.median(figures[(first, metric)])
        unit = "s" if "cpu" in metric else "MB/s" if "produce" in metric else "msgs/s"
        emit(BENCH, f"median_{metric}", median, unit,
             tree=name, vs_first=round(median / base, 3), rounds=len(values))  # fmt: skip


if __name__ == "__main__":
    main()
