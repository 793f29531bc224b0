"""The Python client end to end, like kafka-producer-perf-test. One JSON object per figure.

    .venv/bin/python bench/bench_client.py                 # the default cases
    .venv/bin/python bench/bench_client.py --messages 1000000 --size 100 --partitions 4 \\
        --acks 1 --linger-ms 5 --batch-size 65536         # one case
    .venv/bin/python bench/bench_client.py --bootstrap 127.0.0.1:9092 ...   # a running broker

Without ``--bootstrap`` it starts ``sentinel-server`` on a free loopback port with a
temporary data directory (``--sync`` is passed on: the broker's default fsyncs before
every ack). Client and broker share the machine's cores.

Per case:

- produce: msgs/s and MB/s of values from the first ``send`` to the end of ``flush``;
  latency p50 / p99 / p99.9 from ``send()`` to its future's resolution, sampled on
  every ``--latency-every``-th record (a done-callback on every record would slow the
  producer it measures). Unthrottled, the producer fills its buffer and the latency
  is mostly queueing; ``--throughput N`` paces the sends to show latency at a load;
- consume: msgs/s and MB/s of a ``Consumer`` reading the topic from the beginning.

``cpu_client`` and ``cpu_server`` are each process's CPU seconds over the wall time
(1.0 = one core busy): well below the sum of 2 on a shared machine means neighbours
took the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.client import Admin, Consumer, Producer, TopicPartition

BENCH = "client"
READY = re.compile(r"sentinel-server ready grpc=([\d.]+):(\d+).* kafka=([\d.]+):(\d+)")
PRODUCE_TARGETS = {100: ("msgs/s", 300_000), 1024: ("MB/s", 250)}
CONSUME_TARGET = 500_000


@dataclass(frozen=True)
class Case:
    messages: int
    size: int
    partitions: int
    acks: str
    linger_ms: float
    batch_size: int
    compression: str | None
    consume: bool
    throughput: float = 0  # msgs/s to send at; 0: as fast as possible


DEFAULT_CASES = (
    Case(1_000_000, 100, 4, "1", 5, 256 * 1024, None, True),
    Case(300_000, 1024, 4, "1", 5, 1024 * 1024, None, False),
)


@contextlib.contextmanager
def server(sync: str | None) -> Iterator[tuple[str, psutil.Process | None]]:
    """A sentinel-server on a free loopback port, stopped afterwards."""
    with server_doors(sync) as (grpc, _kafka, proc):
        yield grpc, proc


@contextlib.contextmanager
def server_doors(sync: str | None) -> Iterator[tuple[str, str, psutil.Process]]:
    """A sentinel-server on free loopback ports: (gRPC address, Kafka address, process)."""
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as data:
        cmd = [
            sys.executable, "-m", "sentinel.cli.server", "--host", "127.0.0.1", "--port", "0",
            "--kafka-port", "0", "--data", data, "--metrics-port", "0", "--log-level", "warning",
        ]  # fmt: skip
        if sync:
            cmd += ["--sync", sync]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            grpc, kafka = _wait_ready(proc)
            yield grpc, kafka, psutil.Process(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[str]) -> tuple[str, str]:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.2):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            match = READY.search(line)
            if match:
                return f"{match.group(1)}:{match.group(2)}", f"{match.group(3)}:{match.group(4)}"
    finally:
        selector.close()
    raise SystemExit("sentinel-server did not start")


class CpuMeter:
    """CPU seconds of this process and the broker's over a stretch of wall time."""

    def __init__(self, broker: psutil.Process | None) -> None:
        self._broker = broker
        self._wall = time.perf_counter()
        self._client = time.process_time()
        self._server = self._broker_cpu()

    def _broker_cpu(self) -> float:
        if self._broker is None:
            return 0.0
        times = self._broker.cpu_times()
        return float(times.user + times.system)

    def shares(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        out = {"cpu_client": round((time.process_time() - self._client) / wall, 2)}
        if self._broker is not None:
            out["cpu_server"] = round((self._broker_cpu() - self._server) / wall, 2)
        return out


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


def produce(
    address: str, broker: psutil.Process | None, case: Case, topic: str, every: int
) -> float:
    """Emits the case's produce figures; returns its msgs/s."""
    acks: Any = "all" if case.acks == "all" else int(case.acks)
    value = os.urandom(case.size // 2) + b"x" * (case.size - case.size // 2)
    latencies: list[float] = []
    clock = time.perf_counter
    with Producer(
        address,
        acks=acks,
        linger_ms=case.linger_ms,
        batch_size=case.batch_size,
        compression=case.compression,
    ) as producer:
        producer.send(topic, b"warm-up").result(30)
        send = producer.send
        note = latencies.append

        def sampled(started: float) -> Any:
            return lambda _f: note(clock() - started)

        meter = CpuMeter(broker)
        start = clock()
        pace = case.throughput
        for i in range(case.messages):
            if pace and not i % 100:  # as --throughput in kafka-producer-perf-test
                ahead = start + i / pace - clock()
                if ahead > 0:
                    time.sleep(ahead)
            if i % every:
                send(topic, value)
            else:
                send(topic, value).add_done_callback(sampled(clock()))
        producer.flush()
        elapsed = clock() - start
        cpu = meter.shares()
    extra = {
        "size": case.size,
        "messages": case.messages,
        "partitions": case.partitions,
        "acks": case.acks,
        "linger_ms": case.linger_ms,
        "batch_size": case.batch_size,
        "compression": case.compression or "none",
        "throttle": case.throughput or "none",
        **cpu,
    }
    unit, target = PRODUCE_TARGETS.get(case.size, ("msgs/s", 0))
    rate = case.messages / elapsed
    mbs = case.messages * case.size / elapsed / 1e6
    emit(BENCH, f"produce_{case.size}B", rate, "msgs/s", **extra,
         **({"target": target} if unit == "msgs/s" and target else {}))  # fmt: skip
    emit(BENCH, f"produce_{case.size}B_throughput", mbs, "MB/s", **extra,
         **({"target": target} if unit == "MB/s" and target else {}))  # fmt: skip
    latencies.sort()
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
        emit(
            BENCH,
            f"produce_{case.size}B_latency_{name}",
            percentile(latencies, q) * 1000,
            "ms",
            samples=len(latencies),
            sample_every=every,
            **extra,
        )
    return rate


def consume(address: str, broker: psutil.Process | None, case: Case, topic: str) -> float:
    """Emits the case's consume figures; returns its msgs/s."""
    want = case.messages + 1  # and the warm-up record
    with Consumer(address, auto_offset_reset="earliest", max_poll_records=10_000) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(case.partitions)])
        for p in range(case.partitions):
            consumer.position(TopicPartition(topic, p))
        meter = CpuMeter(broker)
        start = time.perf_counter()
        got = 0
        total = 0
        deadline = start + 300
        while got < want and time.perf_counter() < deadline:
            records = consumer.poll(1.0)
            got += len(records)
            for record in records:
                total += len(record.value or b"")
        elapsed = time.perf_counter() - start
        cpu = meter.shares()
    extra = {"size": case.size, "messages": got, "partitions": case.partitions, **cpu}
    emit(BENCH, f"consume_{case.size}B", got / elapsed, "msgs/s", target=CONSUME_TARGET, **extra)
    emit(BENCH, f"consume_{case.size}B_throughput", total / elapsed / 1e6, "MB/s", **extra)
    return got / elapsed


def run_case(address: str, broker: psutil.Process | None, case: Case, every: int) -> None:
    topic = f"bench-{case.size}B-{os.getpid()}-{time.monotonic_ns()}"
    with Admin(address) as admin:
        admin.create_topic(topic, partitions=case.partitions)
    produce(address, broker, case, topic, every)
    if case.consume:
        consume(address, broker, case, topic)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--sync", choices=["always", "interval", "none"], help="broker WAL sync")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--acks", default="1", choices=["0", "1", "all"])
    parser.add_argument("--linger-ms", type=float, default=5)
    parser.add_argument("--batch-size", type=int, default=256 * 1024)
    parser.add_argument("--compression", choices=["gzip", "snappy", "lz4", "zstd"])
    parser.add_argument("--no-consume", action="store_true", help="skip the consume figure")
    parser.add_argument("--latency-every", type=int, default=16, help="sample every Nth send")
    parser.add_argument(
        "--throughput", type=float, default=0, help="msgs/s to send at (latency at a given load)"
    )
    parser.add_argument("--quick", action="store_true", help="the default cases, 10x smaller")
    args = parser.parse_args()
    if args.messages:
        cases: tuple[Case, ...] = (
            Case(
                args.messages,
                args.size,
                args.partitions,
                args.acks,
                args.linger_ms,
                args.batch_size,
                args.compression,
                not args.no_consume,
                args.throughput,
            ),
        )
    else:
        scale = 10 if args.quick else 1
        cases = tuple(
            Case(**{**c.__dict__, "messages": c.messages // scale}) for c in DEFAULT_CASES
        )
    if args.bootstrap:
        for case in cases:
            run_case(args.bootstrap, None, case, args.latency_every)
        return
    for case in cases:  # a fresh broker per case: the second does not read the first's log
        with server(args.sync) as (address, broker):
            run_case(address, broker, case, args.latency_every)


if __name__ == "__main__":
    main()
