"""The broker-alone replay (``bench_broker.py``'s throughput part) from several source
trees, interleaved.

    .venv/bin/python bench/ab_broker.py --tree base=/tmp/base/src --tree new=src --rounds 3

As ``ab_kafka.py`` does for the Kafka clients: per round and tree a fresh
``sentinel-server --sync always`` started with that tree first on ``PYTHONPATH`` takes
the same pre-encoded Produce requests (32 x 16 KiB batches each, 8 in flight) through
each ``--door``; the order of the trees alternates between rounds. Besides MB/s, the
server's CPU seconds (user + system, all threads) per GB, its event loop's (the main
thread's) CPU seconds per GB and its minor page faults per MB: less at the mercy of the
machine's other load than a rate. One JSON line per figure, then each tree's medians
and their ratio to the first tree's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from ab_kafka import minor_faults
from bench_broker import _replay, _replay_kafka
from bench_client import server_doors

BENCH = "broker_ab"


def loop_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process's main thread, the broker's event loop."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", action="append", required=True, help="NAME=SRC_DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--door", choices=("grpc", "kafka", "both"), default="kafka")
    args = parser.parse_args()
    trees = [(name, os.path.abspath(src)) for name, src in (t.split("=", 1) for t in args.tree)]
    doors = ("grpc", "kafka") if args.door == "both" else (args.door,)
    total = args.mb * 1024 * 1024
    figures: dict[tuple[str, str], list[float]] = {}
    for index in range(args.rounds):
        for name, src in trees if index % 2 == 0 else trees[::-1]:
            os.environ["PYTHONPATH"] = src
            for door in doors:
                with server_doors("always") as (grpc, kafka, broker):
                    before, faults = broker.cpu_times(), minor_faults(broker.pid)
                    loop = loop_cpu(broker.pid)
                    if door == "grpc":
                        rate = asyncio.run(_replay(grpc, total, 8, 32))
                    else:
                        rate = asyncio.run(_replay_kafka(grpc, kafka, total, 8, 32))
                    after, faults = broker.cpu_times(), minor_faults(broker.pid) - faults
                    loop = loop_cpu(broker.pid) - loop
                cpu = (after.user + after.system) - (before.user + before.system)
                per_gb = cpu / (total / 1e9)
                figures.setdefault((name, f"{door}_MB_s"), []).append(rate)
                figures.setdefault((name, f"{door}_cpu_s_per_GB"), []).append(per_gb)
                loop_per_gb = loop / (total / 1e9)
                figures.setdefault((name, f"{door}_loop_cpu_s_per_GB"), []).append(loop_per_gb)
                emit(BENCH, f"{door}_produce_16KiB_batches", rate, "MB/s", tree=name,
                     round=index, server_cpu_s_per_GB=round(per_gb, 3),
                     loop_cpu_s_per_GB=round(loop_per_gb, 3),
                     server_minor_faults_per_MB=round(faults / args.mb, 1),
                     load=round(os.getloadavg()[0], 2))  # fmt: skip
    first = trees[0][0]
    for (name, metric), values in sorted(figures.items()):
        median = statistics.median(values)
        base = statistics.median(figures[(first, metric)])
        emit(BENCH, f"median_{metric}", median, "MB/s" if "MB_s" in metric else "s",
             tree=name, vs_first=round(median / base, 3), rounds=len(values))  # fmt: skip


if __name__ == "__main__":
    main()
