"""Python calls and loop CPU per Kafka request, sequential (one in flight).

    PYTHONPATH=src .venv/bin/python bench/profile_requests.py [--api produce|api_versions]
        [--count 3000] [--sync none|always]

Starts a ``sentinel-server`` whose event loop runs under cProfile only while the requests
run (``profile_kafka``'s wrapper), sends ``--count`` requests from a raw blocking client
(``tests/kafka/kafka_raw.py``: a Produce v7 of one 7-record batch, or ApiVersions v3) and
prints, one JSON line each: the Python function calls per request (cProfile's count:
the same on a fast or a slow machine, unlike a rate) and the profiled CPU per request
(inflated by the profiler; compare only with itself).
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "kafka"))

from kafka_raw import RawKafka

from _common import emit
from bench_client import _wait_ready
from profile_kafka import WRAPPER, profiled
from sentinel.client import Admin
from sentinel.protocol.kafka.messages.api_versions import ApiVersionsRequest
from sentinel.protocol.kafka.messages.produce import (
    PartitionProduceData,
    ProduceRequest,
    TopicProduceData,
)
from sentinel.record import build_batch

BENCH = "kafka_requests"


def request_for(api: str) -> tuple[int, int, Any]:
    if api == "api_versions":
        return 18, 3, ApiVersionsRequest(client_software_name="x", client_software_version="1")
    batch = build_batch([(None, b"x" * 30, (), 0)] * 7)
    part = PartitionProduceData(index=0, records=batch)
    topic = TopicProduceData(name="t", partition_data=(part,))
    return 0, 7, ProduceRequest(
        transactional_id=None, acks=1, timeout_ms=30_000, topic_data=(topic,)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", choices=["produce", "api_versions"], default="produce")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--sync", default="none")
    args = parser.parse_args()
    key, version, request = request_for(args.api)
    with tempfile.TemporaryDirectory(prefix="sentinel-profile-") as directory:
        out = os.path.join(directory, "server.prof")
        cmd = [sys.executable, "-c", WRAPPER, "--host", "127.0.0.1", "--port", "0",
               "--kafka-port", "0", "--data", os.path.join(directory, "data"),
               "--metrics-port", "0", "--log-level", "warning", "--sync", args.sync]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_KAFKA_PROFILE": out}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        try:
            grpc, kafka = _wait_ready(proc)
            with Admin(grpc) as admin:
                admin.create_topic("t", partitions=1)
            with RawKafka(kafka) as client:
                for _ in range(200):  # warm up
                    client.call(key, version, request)
                profiled(
                    proc,
                    out + ".1",
                    lambda: [client.call(key, version, request) for _ in range(args.count)],
                )
            stats = pstats.Stats(out + ".1")
            calls = stats.total_calls  # type: ignore[attr-defined]
            cpu = stats.total_tt  # type: ignore[attr-defined]
        finally:
            proc.terminate()
            proc.wait(30)
    labels = {"api": args.api, "sync": args.sync, "requests": args.count}
    emit(BENCH, "python_calls_per_request", round(calls / args.count, 1), "calls", **labels)
    emit(BENCH, "profiled_loop_cpu_per_request", round(cpu / args.count * 1e6), "us", **labels)


if __name__ == "__main__":
    main()
