"""One broker, many partitions (issue 7, "Speed").

    .venv/bin/python bench/bench_partitions.py [--topics 100] [--per-topic 100]
        [--spread 1000] [--mb 100] [--rounds 3] [--door grpc|kafka|both]
        [--server-flags "..."  (both parts)]

1. scale: a fresh ``sentinel-server --sync always`` creates ``topics x per-topic``
   partitions (through ``sentinel.client.Admin``), serves one produce and one fetch on
   each, restarts; figures: creation time, time to serve them all, threads, open files
   and RSS of the broker (psutil), restart to ready. Then Kafka's Metadata: a full
   answer (every partition) against one for one topic, 20 of each from one
   connection, medians; and the one-topic answer's wait while ``METADATA_FLOOD``
   connections ask for full answers back to back (p50 and max). And a ``/metrics``
   scrape, whole against one family (``metrics_scrape``). And a caught-up consumer's
   Fetch of every partition: a full one against an incremental one in a fetch session
   (KIP-227) that names nothing, 20 of each interleaved, medians; then a one-topic
   Metadata request's round trip (p50, max) while another connection sends full
   fetches back to back. And the broker's CPU while one idle librdkafka consumer is
   assigned every partition (its Fetch names them all: librdkafka keeps no fetch
   sessions).
2. spread: 1 KiB records with acks=all, pre-encoded produce requests of one 64 KiB
   batch each (the same batches in both cases), 32 requests in flight, round-robin over
   ``spread`` partitions, against the same producers writing to 1 partition, in the
   same run on a fresh broker each; MB/s of both and their ratio, for ``--rounds``
   rounds whose order alternates (1 first, then ``spread`` first), then the median
   ratio: this VM's speed drifts by tens of percent within minutes. That is the gRPC
   door (``--door grpc``): one partition per request. The Kafka door (``--door
   kafka``) runs a real Kafka producer (librdkafka, through confluent-kafka) in its own
   process: keyless 1 KiB records, acks=all, ``batch.size`` 64 KiB (as the gRPC
   batches), linger 5 ms, moving to the next partition after the records one batch
   holds (63: ``KAFKA_BATCH_RECORDS``; the sticky partitioner of Kafka's Java client,
   KIP-480, moves when a batch is full. librdkafka's own moves on a timer, every 10 ms,
   and wrote ~130 of 1,000 partitions in a run). Until 2026-12-03 it moved after 64
   records, one more than fit: each partition's stint was a full batch and a batch of
   one record, 1.5 requests per 63 records where one partition sent 1, so the spread
   was measured with smaller batches than the 1-partition case. A Produce request
   may carry the batches of every partition ready, as Kafka's does, one sync wave for
   them all; this producer sends each batch as it fills, one partition a request. The
   figures name the partitions the run wrote (``partitions_written``).
3. crash: ``crash-topics x per-topic`` partitions written once each, then kill -9 and
   a restart, twice on fresh brokers: once after the partitions the open-files limit
   released were marked clean by the retention passes (``--retention-check-interval-s
   1``, waited for), once with no pass yet (an interval of an hour: every partition is
   recovered at the start). Figures: seconds to ready after the kill, both, the
   partitions each start recovered, and the seconds of a clean stop after a produce
   and a fetch on each partition again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import grpc
import psutil

from _common import emit
from sentinel.client import Admin
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.protocol.kafka import serde, wire
from sentinel.protocol.kafka.headers import (
    RequestHeader,
    encode_request_header,
    request_header_version,
)
from sentinel.protocol.kafka.messages import REQUESTS, RESPONSES
from sentinel.protocol.kafka.messages.fetch import FetchPartition, FetchRequest, FetchTopic
from sentinel.protocol.kafka.messages.metadata import MetadataRequest, MetadataRequestTopic
from sentinel.record import build_batch

BENCH = "partitions"
RECORD = 1024
BATCH_RECORDS = 64
#: The bytes a keyless 1 KiB record adds to its value in a v2 batch, at most (length
#: 2, attributes 1, timestamp delta 3, offset delta 1, key length 1, value length 2,
#: header count 1), and a v2 batch's header.
RECORD_FRAMING, BATCH_HEADER = 11, 61
KAFKA_BATCH_BYTES = BATCH_RECORDS * RECORD
#: The records one Kafka producer batch of ``KAFKA_BATCH_BYTES`` holds (63): the
#: producer moves to the next partition after that many, as a sticky partitioner
#: moves when its batch is full.
KAFKA_BATCH_RECORDS = (KAFKA_BATCH_BYTES - BATCH_HEADER) // (RECORD + RECORD_FRAMING)
IN_FLIGHT = 32


class Server:
    def __init__(self, data: str, *flags: str) -> None:
        self.data = data
        self.flags = flags
        self.port = 0
        self.kafka_port = 0
        self.metrics_port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Start; seconds to ready."""
        cmd = [
            sys.executable, "-m", "sentinel.cli.server", "--host", "127.0.0.1",
            "--port", str(self.port), "--kafka-port", str(self.kafka_port), "--data", self.data,
            "--metrics-port", "0",
            "--log-level", "warning", "--sync", "always", *self.flags,
        ]  # fmt: skip
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if selector.select(1):
                line = self.proc.stdout.readline()
                if "sentinel-server ready" in line:
                    self.port = int(line.split("grpc=")[1].split()[0].rsplit(":", 1)[1])
                    self.kafka_port = int(line.split("kafka=")[1].split()[0].rsplit(":", 1)[1])
                    self.metrics_port = int(line.split("metrics=")[1].split()[0])
                    return time.perf_counter() - started
                if not line:
                    break
        raise RuntimeError("the server did not become ready")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kafka_address(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def figures(self) -> tuple[int, int, int]:
        assert self.proc is not None
        process = psutil.Process(self.proc.pid)
        return process.num_threads(), process.num_fds(), process.memory_info().rss

    def stop(self) -> float:
        assert self.proc is not None
        started = time.perf_counter()
        self.proc.terminate()
        self.proc.wait(300)
        return time.perf_counter() - started


@contextlib.contextmanager
def server(*flags: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as data:
        running = Server(data, *flags)
        running.start()
        try:
            yield running
        finally:
            if running.proc is not None and running.proc.poll() is None:
                running.proc.kill()
                running.proc.wait()


async def _produce_fetch_all(address: str, topics: int, per_topic: int) -> None:
    now = int(time.time() * 1000)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for t in range(topics):
            batch = build_batch([(None, b"x" * 100, (), now)])
            await asyncio.gather(*(
                stub.Produce(pb.ProduceRequest(topic=f"t{t}", partition=p, record_batches=batch))
                for p in range(per_topic)
            ))  # fmt: skip
            fetched = await asyncio.gather(*(
                stub.Fetch(pb.FetchRequest(topic=f"t{t}", partition=p, offset=0))
                for p in range(per_topic)
            ))  # fmt: skip
            assert all(f.record_batches for f in fetched)


METADATA_FLOOD = 8
"""Connections asking for full Metadata answers at once, in the flood figure."""


def _metadata_request(names: list[str] | None) -> bytes:
    """A framed Metadata v12 request for ``names`` (None: every topic)."""
    out = bytearray()
    encode_request_header(out, RequestHeader(3, 12, 1, "bench"), request_header_version(3, 12))
    topics = None if names is None else tuple(MetadataRequestTopic(name=n) for n in names)
    serde.encode_into(out, REQUESTS[3], 12,
                      MetadataRequest(topics=topics, allow_auto_topic_creation=False))
    return struct.pack(">i", len(out)) + bytes(out)


class _Asker:
    """One connection sending a framed request and reading its answer's bytes (not
    decoded: the broker's time is measured, not a client's)."""

    def __init__(self, address: str, request: bytes) -> None:
        host, _, port = address.rpartition(":")
        self._sock = socket.create_connection((host, int(port)), timeout=60)
        self._request = request

    def ask(self, request: bytes | None = None) -> float:
        """Seconds from sending ``request`` (by default the one given at the start) to
        the answer's last byte."""
        started = time.perf_counter()
        self.exchange(request)
        return time.perf_counter() - started

    def exchange(self, request: bytes | None = None) -> bytes:
        """Send ``request`` (by default the one given at the start); the answer's body."""
        self._sock.sendall(self._request if request is None else request)
        (size,) = struct.unpack(">i", self._read(4))
        return self._read(size)

    def _read(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self._sock.close()


def _metadata(kafka_address: str, total: int) -> None:
    extra = {"partitions": total}
    full, one = _metadata_request(None), _metadata_request(["t0"])
    every, single = _Asker(kafka_address, full), _Asker(kafka_address, one)
    every.ask()  # the first full answer is built and encoded once
    full_s, one_s = [], []
    for _ in range(20):  # interleaved
        full_s.append(every.ask())
        one_s.append(single.ask())
    emit(BENCH, "kafka_metadata_all", statistics.median(full_s) * 1000, "ms",
         one_topic_ms=round(statistics.median(one_s) * 1000, 3), **extra)  # fmt: skip
    stop = threading.Event()
    asked = [0]

    def flood() -> None:
        asker = _Asker(kafka_address, full)
        try:
            while not stop.is_set():
                asker.ask()
                asked[0] += 1
        finally:
            asker.close()

    threads = [threading.Thread(target=flood) for _ in range(METADATA_FLOOD)]
    for thread in threads:
        thread.start()
    waits = []
    for _ in range(40):
        waits.append(single.ask())
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join()
    every.close()
    single.close()
    emit(BENCH, "kafka_metadata_one_topic_under_flood_p50",
         statistics.median(waits) * 1000, "ms", max_ms=round(max(waits) * 1000, 1),
         flood_connections=METADATA_FLOOD, full_answers_during=asked[0], **extra)  # fmt: skip


def _scrapes(metrics_port: int, total: int) -> None:
    """``/metrics`` whole (one sample per partition in each of four families) against
    one family of one sample, 5 of each interleaved, medians."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    whole_s, one_s, size = [], [], 0
    for _ in range(5):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as answer:
            size = len(answer.read())
        whole_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        with urllib.request.urlopen(url + "?name[]=sentinel_active_connections",
                                    timeout=60) as answer:  # fmt: skip
            answer.read()
        one_s.append(time.perf_counter() - started)
    emit(BENCH, "metrics_scrape", statistics.median(whole_s) * 1000, "ms",
         one_family_ms=round(statistics.median(one_s) * 1000, 2), bytes=size,
         partitions=total)  # fmt: skip


IDLE_S = 10.0
"""How long the idle-consumer figure watches the broker's CPU."""


def _broker_cpu(pid: int, seconds: float, poll: Callable[[], object]) -> float:
    """Cores the broker used over ``seconds`` while ``poll`` is called in a loop."""
    process = psutil.Process(pid)
    used = sum(process.cpu_times()[:2])
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        poll()
    return (sum(process.cpu_times()[:2]) - used) / (time.monotonic() - started)


def _fetch_request(epoch: int, session_id: int, names: dict[str, int], offset: int) -> bytes:
    """A framed Fetch v11 request (max wait 0) naming ``per_topic`` partitions of each
    topic of ``names`` at ``offset``, in fetch session ``session_id`` at ``epoch``."""
    out = bytearray()
    encode_request_header(out, RequestHeader(1, 11, 1, "bench"), request_header_version(1, 11))
    topics = tuple(FetchTopic(topic=name, partitions=tuple(
        FetchPartition(partition=p, fetch_offset=offset, partition_max_bytes=1 << 20)
        for p in range(count))) for name, count in names.items())
    serde.encode_into(out, REQUESTS[1], 11, FetchRequest(
        replica_id=-1, max_wait_ms=0, min_bytes=1, max_bytes=50 << 20,
        session_id=session_id, session_epoch=epoch, topics=topics))
    return struct.pack(">i", len(out)) + bytes(out)


def _fetch_sessions(kafka_address: str, topics: int, per_topic: int) -> None:
    """A caught-up consumer's fetch of every partition (nothing new anywhere): a full
    request without a session against an incremental one in a session (KIP-227) that
    names nothing, interleaved, each on its own connection; the time from request to
    the answer's last byte, medians."""
    names = {f"t{t}": per_topic for t in range(topics)}
    full = _Asker(kafka_address, _fetch_request(-1, 0, names, 1))
    opener = _Asker(kafka_address, _fetch_request(0, 0, names, 1))
    answer = wire.Reader(memoryview(opener.exchange()))
    answer.int32()  # correlation id (v11 is not flexible: no header tags)
    opened = serde.decode_body(answer, RESPONSES[1], 11)
    full.ask()
    full_s, incremental_s = [], []
    for epoch in range(1, 21):
        full_s.append(full.ask())
        incremental_s.append(opener.ask(_fetch_request(epoch, opened.session_id, {}, 1)))
    opener.close()
    emit(BENCH, "kafka_fetch_quiet_in_a_session", statistics.median(incremental_s) * 1000,
         "ms", full_fetch_ms=round(statistics.median(full_s) * 1000, 3),
         session=opened.session_id != 0, partitions=topics * per_topic)  # fmt: skip
    # What another client waits meanwhile: a one-topic Metadata request's round trip
    # while this connection sends full fetches back to back (each holds the event loop
    # for a slice of its partitions at a time), against the same with no fetch.
    single = _Asker(kafka_address, _metadata_request(["t0"]))
    alone = [single.ask() for _ in range(50)]
    stop = threading.Event()
    fetched = [0]

    def fetch_flood() -> None:
        while not stop.is_set():
            full.ask()
            fetched[0] += 1

    flood = threading.Thread(target=fetch_flood)
    flood.start()
    during: list[float] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline or len(during) < 20:
        during.append(single.ask())
        time.sleep(0.01)
    stop.set()
    flood.join()
    full.close()
    single.close()
    emit(BENCH, "kafka_metadata_one_topic_during_full_fetches_p50",
         statistics.median(during) * 1000, "ms",
         max_ms=round(max(during) * 1000, 1),
         alone_p50_ms=round(statistics.median(alone) * 1000, 3),
         full_fetches_during=fetched[0], partitions=topics * per_topic)  # fmt: skip


def _idle_consumer(broker: Server, topics: int, per_topic: int) -> None:
    """The broker's CPU while one librdkafka consumer assigned every partition waits
    for records that do not come (a Fetch naming every partition, long-polling), against
    the same broker with no client."""
    from confluent_kafka import Consumer, TopicPartition

    assert broker.proc is not None
    alone = _broker_cpu(broker.proc.pid, IDLE_S, lambda: time.sleep(0.2))
    consumer = Consumer({"bootstrap.servers": broker.kafka_address, "group.id": "idle",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(f"t{t}", p, 1)
                         for t in range(topics) for p in range(per_topic)])  # fmt: skip
        _broker_cpu(broker.proc.pid, 3.0, lambda: consumer.poll(0.2))  # its first fetches
        idle = _broker_cpu(broker.proc.pid, IDLE_S, lambda: consumer.poll(0.2))
    finally:
        consumer.close()
    emit(BENCH, "broker_cpu_one_idle_consumer_of_all", idle, "cores",
         no_client_cores=round(alone, 3), partitions=topics * per_topic)  # fmt: skip


def scale(topics: int, per_topic: int, flags: list[str]) -> None:
    total = topics * per_topic
    extra = {"partitions": total}
    with server("--max-partitions", str(max(total, 1)), *flags) as broker:
        started = time.perf_counter()
        with Admin(broker.address, request_timeout_ms=600_000) as admin:
            for t in range(topics):
                admin.create_topic(f"t{t}", per_topic)
        emit(BENCH, "create", time.perf_counter() - started, "s", **extra)
        started = time.perf_counter()
        asyncio.run(_produce_fetch_all(broker.address, topics, per_topic))
        emit(BENCH, "produce_and_fetch_each", time.perf_counter() - started, "s", **extra)
        _metadata(broker.kafka_address, total)
        _fetch_sessions(broker.kafka_address, topics, per_topic)
        _scrapes(broker.metrics_port, total)
        _idle_consumer(broker, topics, per_topic)
        threads, fds, rss = broker.figures()
        emit(BENCH, "threads", threads, "threads", **extra)
        emit(BENCH, "open_files", fds, "files", **extra)
        emit(BENCH, "rss", rss / 2**20, "MiB", **extra)
        emit(BENCH, "stop", broker.stop(), "s", **extra)
        emit(BENCH, "restart_to_ready", broker.start(), "s", **extra)
        asyncio.run(_produce_fetch_all(broker.address, topics, per_topic))
        threads, fds, rss = broker.figures()
        emit(BENCH, "threads_after_restart", threads, "threads", **extra)
        emit(BENCH, "open_files_after_restart", fds, "files", **extra)


async def _spread(address: str, partitions: int, total_bytes: int) -> float:
    batch = build_batch(
        [(None, os.urandom(RECORD), (), int(time.time() * 1000)) for _ in range(BATCH_RECORDS)]
    )
    requests = [
        pb.ProduceRequest(topic="s", partition=p, record_batches=batch, acks=pb.ACKS_ALL)
        for p in range(partitions)
    ]
    count = max(IN_FLIGHT, total_bytes // len(batch))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        for request in requests[: min(partitions, 64)]:  # warm up
            await stub.Produce(request)
        next_index = 0
        started = time.perf_counter()

        async def sender() -> None:
            nonlocal next_index
            while next_index < count:
                index = next_index
                next_index += 1
                await stub.Produce(requests[index % partitions])

        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        seconds = time.perf_counter() - started
    return count * len(batch) / seconds / 2**20


def _kafka_producer(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    """The Kafka door's producer (``--kafka-producer``, its own process): ``count`` keyless
    1 KiB records, acks=all, a batch's worth to each partition in turn; prints its MB/s
    once every record is acknowledged."""
    from confluent_kafka import Producer as KafkaProducer

    producer = KafkaProducer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
        "batch.size": KAFKA_BATCH_BYTES, "enable.idempotence": False,
    })  # fmt: skip
    failed: list[object] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failed.append(error)

    value = os.urandom(RECORD)
    started = time.perf_counter()
    for index in range(count):
        while True:
            try:
                partition = index // KAFKA_BATCH_RECORDS % partitions  # a full batch each
                producer.produce(topic, value, partition=partition, on_delivery=delivered)
                break
            except BufferError:  # its queue is full: let it drain
                producer.poll(0.001)
        if index % 1000 == 0:
            producer.poll(0)
    left = producer.flush(300)
    seconds = time.perf_counter() - started
    if left or failed:
        raise SystemExit(f"the Kafka producer failed: {left} unsent, {failed[:3]}")
    print(count * RECORD / seconds / 2**20, flush=True)


def _kafka_spread(broker: Server, partitions: int, total_bytes: int) -> float:
    cmd = [sys.executable, __file__, "--kafka-producer", broker.kafka_address, "s",
           str(max(1, total_bytes // RECORD)), str(partitions)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1200)
    return float(out.stdout.strip().splitlines()[-1])


def _partitions_written(address: str) -> int:
    with Admin(address) as admin:
        described = admin.describe_topic("s")
    return sum(1 for p in described.partitions if p.log_end_offset > 0)


def spread(
    partitions: int, mb: int, flags: list[str], rounds: int = 3, doors: tuple[str, ...] = ("grpc",)
) -> None:
    """``rounds`` rounds of 1 partition and ``partitions`` partitions through each of
    ``doors``, each on a fresh broker, the order alternating between rounds (this VM's
    speed drifts within minutes): each round's figures and ratio, then the median
    ratio of each door."""
    ratios: dict[str, list[float]] = {door: [] for door in doors}
    for round_ in range(rounds):
        for door in doors:
            figures, written = {}, {}
            order = (1, partitions) if round_ % 2 == 0 else (partitions, 1)
            for count in order:
                with server("--max-partitions", str(max(partitions, 1)), *flags) as broker:
                    with Admin(broker.address, request_timeout_ms=600_000) as admin:
                        admin.create_topic("s", count)
                    if door == "kafka":
                        figures[count] = _kafka_spread(broker, count, mb * 2**20)
                    else:
                        figures[count] = asyncio.run(_spread(broker.address, count, mb * 2**20))
                    written[count] = _partitions_written(broker.address)
            ratio = figures[partitions] / figures[1]
            ratios[door].append(ratio)
            prefix = "" if door == "grpc" else "kafka_"
            emit(BENCH, f"{prefix}acks_all_1_partition", figures[1], "MB/s",
                 record_bytes=RECORD, round=round_, door=door)  # fmt: skip
            emit(BENCH, f"{prefix}acks_all_{partitions}_partitions", figures[partitions],
                 "MB/s", record_bytes=RECORD, round=round_, door=door,
                 partitions_written=written[partitions])  # fmt: skip
            emit(BENCH, f"{prefix}spread_ratio", ratio, "x", partitions=partitions,
                 target=0.8, round=round_, door=door)  # fmt: skip
    for door in doors:
        prefix = "" if door == "grpc" else "kafka_"
        emit(BENCH, f"{prefix}spread_ratio_median", statistics.median(ratios[door]), "x",
             partitions=partitions, rounds=rounds, target=0.8, door=door)  # fmt: skip


def _marks(data: str) -> int:
    return len(list(Path(data).glob("topics/*/*/CLEAN_SHUTDOWN")))


def _killed_restart(topics: int, per_topic: int, flags: list[str], interval_s: int) -> None:
    total = topics * per_topic
    with server("--max-partitions", str(total), "--retention-check-interval-s",
                str(interval_s), *flags) as broker:  # fmt: skip
        with Admin(broker.address, request_timeout_ms=600_000) as admin:
            for t in range(topics):
                admin.create_topic(f"t{t}", per_topic)
        asyncio.run(_produce_fetch_all(broker.address, topics, per_topic))
        released = total - 256  # the default open-partitions limit keeps 256 open
        waited = time.monotonic()
        deadline = waited + (600 if interval_s < 60 else 0)
        while _marks(broker.data) < released and time.monotonic() < deadline:
            time.sleep(0.5)
        marked, waited = _marks(broker.data), time.monotonic() - waited
        assert broker.proc is not None
        broker.proc.kill()
        broker.proc.wait()
        ready = broker.start()
        asyncio.run(_produce_fetch_all(broker.address, topics, per_topic))  # all served
        stopped = broker.stop()  # a clean stop after every partition was used again
    emit(BENCH, "restart_after_kill_9", ready, "s", partitions=total,
         marked_clean_before_the_kill=marked, recovered_at_start=total - marked,
         waited_for_the_marks_s=round(waited, 1),
         then_used_and_stopped_in_s=round(stopped, 2))  # fmt: skip


def crash(topics: int, per_topic: int, flags: list[str]) -> None:
    _killed_restart(topics, per_topic, flags, 1)
    _killed_restart(topics, per_topic, flags, 3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--per-topic", type=int, default=100)
    parser.add_argument("--spread", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="spread: alternated rounds")
    parser.add_argument("--crash-topics", type=int, default=20)
    parser.add_argument("--only", choices=["scale", "spread", "crash"], default=None)
    parser.add_argument("--door", choices=["grpc", "kafka", "both"], default="both",
                        help="spread: through which door")  # fmt: skip
    parser.add_argument("--server-flags", default="", help="more sentinel-server flags")
    parser.add_argument("--kafka-producer", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kafka_producer:
        bootstrap, topic, count, partitions = args.kafka_producer
        _kafka_producer(bootstrap, topic, int(count), int(partitions))
        return
    if args.only in (None, "scale"):
        scale(args.topics, args.per_topic, args.server_flags.split())
    if args.only in (None, "spread"):
        doors = ("grpc", "kafka") if args.door == "both" else (args.door,)
        spread(args.spread, args.mb, args.server_flags.split(), args.rounds, doors)
    if args.only in (None, "crash"):
        crash(args.crash_topics, args.per_topic, args.server_flags.split())


if __name__ == "__main__":
    main()
