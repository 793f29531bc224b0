"""The broker alone, against its ceiling, and end-to-end latency.

    .venv/bin/python bench/bench_broker.py [--mb 512] [--quick] [--rounds 3]
        [--door grpc|kafka|both] [--ceiling-fsync-kib 512]
        [--latency-mode process|thread] [--sync always]

1. ceiling: a bare asyncio server (BufferedProtocol into a reused buffer) receives
   length-prefixed 16 KiB frames over loopback and appends them to a file: the MB/s a
   Python process on this machine can take in and write.
2. broker: a sender replays pre-encoded Produce requests (32 RecordBatches of 16 KiB
   each, serialized once) with 8 in flight, so the client is not what is measured; the
   broker validates, stamps, appends to the WAL and fsyncs (``--sync always``).
3. end-to-end latency: a producer at 5,000 msgs/s (linger 1 ms) and a consumer following
   the log; latency is from send to the consumer seeing the record. Each producer has
   one record delivered before its clock starts (connected, the leader known: the
   client's start-up is not a following consumer's latency). By default producer
   and consumer run in their own processes (``--latency-mode process``; the send time
   travels in the record, read on the system-wide monotonic clock), as real clients do;
   ``thread`` runs both in this process. Then the broker's maximum rate for the same
   records from one producer process (acks 1, no rate limit), and the latency at half
   of it.

``--rounds N`` interleaves N rounds of: the ceiling, the ceiling with an fsync every
``--ceiling-fsync-kib`` (512) KiB (a second reference: the ceiling fsyncs once at the
end, the broker once per group commit), a bare acks-after-fsync server (a third: the
same requests, ``--in-flight`` pipelined, appended to 4 files as they arrive and each
answered once a group-commit fsync of the files written covers it: what the disk's
fsync latency leaves of the ceiling for any server that acknowledges after fsync,
with no validation, stamping or index), then the broker through each ``--door``
(``grpc``, ``kafka`` or ``both``, the default), one fresh server per run; each figure
names its door and its ratio to the round's ceiling. Both doors send the same
pre-encoded requests (32 x 16 KiB batches for one of 4 partitions each, 8 in flight)
with acks 1 (the gRPC ProduceRequest's default, ACKS_LEADER), which under
``--sync always`` is answered once the batches are fsynced. The Kafka door's sender
pipelines Produce v7 requests on one raw socket, matches each response by correlation
id and checks its error code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).parent))

import grpc

from _common import emit
from bench_client import server_doors
from sentinel.client import Consumer, Producer
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import build_batch

BENCH = "broker"
FRAME = 16 * 1024
_LEN = struct.Struct(">I")


# ------------------------------------------------------------------ ceiling


class _Sink(asyncio.BufferedProtocol):
    def __init__(
        self, path: str, done: asyncio.Future[int], expected: int, fsync_every: int = 0
    ) -> None:
        self._buffer = bytearray(1024 * 1024)
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed on eof
        self._done = done
        self._expected = expected
        self._received = 0
        self._fsync_every = fsync_every
        self._unsynced = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self._file.write(memoryview(self._buffer)[:nbytes])
        self._received += nbytes
        if self._fsync_every:
            self._unsynced += nbytes
            if self._unsynced >= self._fsync_every:
                os.fsync(self._file.fileno())
                self._unsynced = 0
        if self._received >= self._expected and not self._done.done():
            os.fsync(self._file.fileno())
            self._done.set_result(self._received)

    def eof_received(self) -> bool:
        self._file.close()
        return False


async def _timed_send(
    send: Callable[[], None], done: asyncio.Future[int], srv: asyncio.AbstractServer
) -> float:
    """Seconds from starting ``send`` in a thread until the server says ``done``; the
    server is closed after."""
    started = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    await done
    elapsed = time.perf_counter() - started
    sender.join()
    srv.close()
    return elapsed


async def _ceiling(total: int, directory: str, fsync_every: int = 0) -> float:
    """MB/s of the bare server; ``fsync_every`` > 0: also an fsync each time that many
    bytes arrived (on the event loop, as a second reference: the broker fsyncs once per
    group commit), else one fsync at the end (THE ceiling)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    frame = _LEN.pack(FRAME) + os.urandom(FRAME)
    count = total // FRAME
    expected = count * len(frame)
    srv = await loop.create_server(
        lambda: _Sink(os.path.join(directory, "ceiling.bin"), done, expected, fsync_every),
        "127.0.0.1",
        0,
    )
    port = srv.sockets[0].getsockname()[1]

    def send() -> None:
        import socket

        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(count):
                sock.sendall(frame)

    return expected / await _timed_send(send, done, srv) / 1e6


class _AckedSink(asyncio.BufferedProtocol):
    """The least a server must do for acks after fsync: append each length-prefixed
    request to its partition's file as it arrives (request i to file i % files), and
    answer it once an fsync wave covering it is done (group commit: one wave at a
    time, every file written since the last wave fsynced in parallel, in threads)."""

    def __init__(
        self, directory: str, files: int, done: asyncio.Future[int], expected: int
    ) -> None:
        self._buffer = bytearray(1024 * 1024)
        self._files = [
            open(os.path.join(directory, f"acked-{i}.bin"), "wb", buffering=0)  # noqa: SIM115
            for i in range(files)
        ]
        self._done, self._expected = done, expected
        self._head = bytearray()  # a length prefix split between reads
        self._left = 0  # bytes of the current request still to come
        self._request = 0
        self._dirty: set[int] = set()
        self._covered = 0  # requests whose last byte was written
        self._acked = 0
        self._wave: asyncio.Future[None] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(files)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        view = memoryview(self._buffer)[:nbytes]
        while view:
            if self._left == 0:
                take = 4 - len(self._head)
                self._head += view[:take]
                view = view[take:]
                if len(self._head) == 4:
                    (self._left,) = _LEN.unpack(self._head)
                    self._head.clear()
                continue
            piece = view[: self._left]
            index = self._request % len(self._files)
            self._files[index].write(piece)
            self._dirty.add(index)
            self._left -= len(piece)
            view = view[len(piece) :]
            if self._left == 0:
                self._request += 1
                self._covered = self._request
        if self._covered > self._acked and self._wave is None:
            self._wave = asyncio.ensure_future(self._sync_wave())

    async def _sync_wave(self) -> None:
        loop = asyncio.get_running_loop()
        while self._covered > self._acked:
            covered, dirty = self._covered, self._dirty
            self._dirty = set()
            fds = [self._files[i].fileno() for i in dirty]
            syncs = [loop.run_in_executor(self._pool, os.fdatasync, fd) for fd in fds]
            await asyncio.gather(*syncs)
            assert self._transport is not None
            self._transport.write(b"\x00\x00\x00\x00" * (covered - self._acked))
            self._acked = covered
        self._wave = None
        if self._acked >= self._expected and not self._done.done():
            self._done.set_result(self._acked)

    def eof_received(self) -> bool:
        for file in self._files:
            file.close()
        self._pool.shutdown()
        return False


async def _ceiling_acked(total: int, directory: str, in_flight: int, request_bytes: int) -> float:
    """MB/s of the bare acks-after-fsync server (``_AckedSink``, 4 files as the broker's
    4 partitions) for requests of ``request_bytes`` with ``in_flight`` pipelined: what
    the disk's fsync latency leaves of the ceiling when every request waits for one."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    count = total // request_bytes
    request = _LEN.pack(request_bytes) + os.urandom(request_bytes)
    srv = await loop.create_server(
        lambda: _AckedSink(directory, 4, done, count), "127.0.0.1", 0
    )
    port = srv.sockets[0].getsockname()[1]

    def send() -> None:
        import socket

        slots = threading.Semaphore(in_flight)
        with socket.create_connection(("127.0.0.1", port)) as sock:

            def read_acks() -> None:
                left = count * 4
                while left:
                    got = sock.recv(min(left, 65536))
                    if not got:
                        return
                    left -= len(got)
                    for _ in range(len(got) // 4):
                        slots.release()

            reader = threading.Thread(target=read_acks)
            reader.start()
            for _ in range(count):
                slots.acquire()
                sock.sendall(request)
            reader.join()

    return count * request_bytes / await _timed_send(send, done, srv) / 1e6


# ------------------------------------------------------------------- broker


async def _replay(address: str, total: int, in_flight: int, batches_per_request: int) -> float:
    value = os.urandom(FRAME - 100)
    batch = build_batch([(None, value, (), 1_700_000_000_000)])
    # As a Kafka producer does, one request carries several batches.
    payload = batch * batches_per_request
    requests = [
        pb.ProduceRequest(topic="replay", partition=p, record_batches=payload).SerializeToString()
        for p in range(4)
    ]
    count = total // len(payload)
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        produce = channel.unary_unary(
            "/sentinel.v1.Sentinel/Produce",
            request_serializer=None,
            response_deserializer=pb.ProduceResponse.FromString,
        )
        create = channel.unary_unary(
            "/sentinel.v1.Sentinel/CreateTopic",
            request_serializer=pb.CreateTopicRequest.SerializeToString,
            response_deserializer=pb.CreateTopicResponse.FromString,
        )
        await create(pb.CreateTopicRequest(name="replay", partitions=len(requests)))
        queue = iter(range(count))

        async def worker() -> None:
            for i in queue:
                await produce(requests[i % len(requests)])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    return count * len(payload) / elapsed / 1e6


KAFKA_PRODUCE_VERSION = 7  # not flexible: the request header is v1, the response's v0
KAFKA_ACKS = 1  # as the gRPC run's ProduceRequest default (ACKS_LEADER)


def _kafka_produce_bodies(payload: bytes, topic: str, partitions: int) -> list[bytes]:
    """Pre-encoded Produce v7 bodies (what follows the request header), one per partition:
    acks 1, one partition's ``payload`` of concatenated batches each."""
    from sentinel.protocol.kafka import serde
    from sentinel.protocol.kafka.messages import REQUESTS
    from sentinel.protocol.kafka.messages.produce import (
        PartitionProduceData,
        ProduceRequest,
        TopicProduceData,
    )

    bodies = []
    for p in range(partitions):
        request = ProduceRequest(
            acks=KAFKA_ACKS,
            timeout_ms=30_000,
            topic_data=(
                TopicProduceData(
                    name=topic, partition_data=(PartitionProduceData(index=p, records=payload),)
                ),
            ),
        )
        bodies.append(serde.encode(REQUESTS[0], KAFKA_PRODUCE_VERSION, request))
    return bodies


def _kafka_error_codes(frame: bytes) -> list[int]:
    """The partition error codes of a Produce v7 response body (after the correlation id)."""
    from sentinel.protocol.kafka import serde, wire
    from sentinel.protocol.kafka.messages import RESPONSES

    response = serde.decode_body(wire.Reader(frame), RESPONSES[0], KAFKA_PRODUCE_VERSION)
    return [p.error_code for t in response.responses for p in t.partition_responses]


async def _replay_kafka(
    grpc_address: str, kafka_address: str, total: int, in_flight: int, batches_per_request: int
) -> float:
    """The Kafka door: pre-encoded Produce requests (the same batches as ``_replay``) on
    one raw socket, ``in_flight`` pipelined, each response matched by correlation id and
    checked for error code 0."""
    value = os.urandom(FRAME - 100)
    batch = build_batch([(None, value, (), 1_700_000_000_000)])
    payload = batch * batches_per_request
    bodies = _kafka_produce_bodies(payload, "replay", 4)
    count = total // len(payload)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        create = channel.unary_unary(
            "/sentinel.v1.Sentinel/CreateTopic",
            request_serializer=pb.CreateTopicRequest.SerializeToString,
            response_deserializer=pb.CreateTopicResponse.FromString,
        )
        await create(pb.CreateTopicRequest(name="replay", partitions=len(bodies)))
    host, _, port = kafka_address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    client_id = b"bench-broker"
    head = struct.Struct(f">ihhih{len(client_id)}s")
    slots = asyncio.Semaphore(in_flight)
    errors: list[str] = []

    async def read_responses() -> None:
        for cid in range(count):
            (size,) = _LEN.unpack(await reader.readexactly(4))
            frame = await reader.readexactly(size)
            (got,) = struct.unpack_from(">i", frame)
            if got != cid:
                errors.append(f"response for correlation id {got}, expected {cid}")
            codes = _kafka_error_codes(frame[4:])
            if codes != [0]:
                errors.append(f"request {cid}: error codes {codes}")
            slots.release()

    started = time.perf_counter()
    responses = asyncio.ensure_future(read_responses())
    for cid in range(count):
        await slots.acquire()
        body = bodies[cid % len(bodies)]
        size = head.size - 4 + len(body)
        writer.writelines(
            (head.pack(size, 0, KAFKA_PRODUCE_VERSION, cid, len(client_id), client_id), body)
        )
        await writer.drain()
    await responses
    elapsed = time.perf_counter() - started
    writer.close()
    await writer.wait_closed()
    if errors:
        raise RuntimeError(f"the Kafka door refused: {errors[:3]}")
    return count * len(payload) / elapsed / 1e6


# ------------------------------------------------------------------ latency


def _latency(address: str, rate: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    total = int(rate * seconds)
    sent_at: dict[int, float] = {}
    with Consumer(address, auto_offset_reset="latest") as consumer:
        from sentinel.client import TopicPartition

        with Producer(address, acks=1, linger_ms=0) as warm:
            warm.send("latency", b"warm", partition=0).result(10)
        tp = TopicPartition("latency", 0)
        consumer.assign([tp])
        consumer.seek_to_end([tp])
        consumer.position(tp)

        def consume() -> None:
            deadline = time.monotonic() + seconds + 30
            while len(latencies) < total and time.monotonic() < deadline:
                for record in consumer.poll(0.5):
                    seq = int(record.value or b"-1")
                    if seq in sent_at:
                        latencies.append(time.perf_counter() - sent_at[seq])

        reader = threading.Thread(target=consume)
        reader.start()
        with Producer(address, acks=1, linger_ms=1) as producer:
            start = time.perf_counter()
            for seq in range(total):
                target = start + seq / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent_at[seq] = time.perf_counter()
                producer.send("latency", b"%d" % seq, partition=0)
            producer.flush(30)
        reader.join()
    return sorted(latencies)


# ------------------------------------------- latency, one process per client


def _consumer_role(address: str, total: int, seconds: float) -> None:
    """Follow partition 0 of ``latency`` from its end; print "ready", then the sorted
    latencies (seconds) of the first ``total`` records as JSON."""
    from sentinel.client import TopicPartition

    latencies: list[float] = []
    with Consumer(address, auto_offset_reset="latest") as consumer:
        tp = TopicPartition("latency", 0)
        consumer.assign([tp])
        consumer.seek_to_end([tp])
        consumer.position(tp)
        print("ready", flush=True)
        deadline = time.monotonic() + seconds + 30
        while len(latencies) < total and time.monotonic() < deadline:
            for record in consumer.poll(0.5):
                now = time.monotonic()
                sent = float(record.value or b"0")
                if sent > 0:
                    latencies.append(now - sent)
    print(json.dumps(sorted(latencies)), flush=True)


def _send_paced(send: Callable[[], None], rate: int, seconds: float) -> int:
    """Call ``send`` ``rate * seconds`` times at ``rate`` a second (0: as fast as it
    goes, for ``seconds``); how many times it was called."""
    start = time.monotonic()
    if rate > 0:
        for seq in range(int(rate * seconds)):
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            send()
        return int(rate * seconds)
    count = 0
    while time.monotonic() - start < seconds:
        for _ in range(100):
            send()
        count += 100
    return count


def _producer_role(address: str, rate: int, seconds: float) -> None:
    """Send ``rate * seconds`` records at ``rate`` msgs/s (0: as fast as acks allow), each
    holding its send time; print the msgs/s reached, once every record is acknowledged."""
    with Producer(address, acks=1, linger_ms=1) as producer:
        # Connected and the partition's leader known before the clock starts (the
        # consumer skips this record's value 0), as the Kafka role does.
        producer.send("latency", b"0", partition=0).result(30)
        start = time.monotonic()
        count = _send_paced(
            lambda: producer.send("latency", b"%.6f" % time.monotonic(), partition=0),
            rate,
            seconds,
        )
        producer.flush(60)
        print(json.dumps(count / (time.monotonic() - start)), flush=True)


def _kafka_consumer_role(address: str, total: int, seconds: float) -> None:
    """``_consumer_role`` through the Kafka door with librdkafka (confluent-kafka): read
    partition 0 of ``latency`` from its high watermark, as a following consumer does."""
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition as KafkaTopicPartition

    consumer = KafkaConsumer(
        {
            "bootstrap.servers": address,
            "group.id": "bench-latency",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "fetch.min.bytes": 1,
        }
    )
    try:
        part = KafkaTopicPartition("latency", 0)
        _low, high = consumer.get_watermark_offsets(part, timeout=10)
        consumer.assign([KafkaTopicPartition("latency", 0, high)])
        print("ready", flush=True)
        latencies: list[float] = []
        deadline = time.monotonic() + seconds + 30
        while len(latencies) < total and time.monotonic() < deadline:
            # What has arrived, without waiting (``consume`` waits for all it asks for
            # or its timeout: a 0.5 s wait there measured librdkafka's queue, not us);
            # when nothing has, wait for one record.
            messages = consumer.consume(num_messages=1000, timeout=0)
            if not messages:
                one = consumer.poll(0.5)
                messages = [] if one is None else [one]
            for message in messages:
                now = time.monotonic()
                if message.error() is not None:
                    raise SystemExit(f"the Kafka consumer failed: {message.error()}")
                sent = float(message.value() or b"0")
                if sent > 0:
                    latencies.append(now - sent)
    finally:
        consumer.close()
    print(json.dumps(sorted(latencies)), flush=True)


def _kafka_producer_role(address: str, rate: int, seconds: float) -> None:
    """``_producer_role`` through the Kafka door with librdkafka: acks 1, linger 1 ms."""
    from confluent_kafka import Producer as KafkaProducer

    failed: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(str(error))

    producer = KafkaProducer(
        {"bootstrap.servers": address, "acks": 1, "linger.ms": 1, "enable.idempotence": False}
    )

    # A following consumer's latency is measured, not librdkafka's start: its first
    # records waited up to ~100 ms for the bootstrap (connection, metadata, then the
    # partition leader's own connection), in about one run in three the only records
    # past 10 ms. So one record (value 0, which the consumer skips) is delivered first.
    producer.produce("latency", b"0", partition=0, on_delivery=delivered)
    if producer.flush(30) or failed:
        raise SystemExit(f"the Kafka producer could not start: {failed[:3]}")

    def send() -> None:
        while True:
            try:
                value = b"%.6f" % time.monotonic()
                producer.produce("latency", value, partition=0, on_delivery=delivered)
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                producer.poll(0.005)
        producer.poll(0)  # serve delivery callbacks

    start = time.monotonic()
    count = _send_paced(send, rate, seconds)
    if producer.flush(60) or failed:
        raise SystemExit(f"the Kafka producer failed: {failed[:3]}")
    print(json.dumps(count / (time.monotonic() - start)), flush=True)


#: The client processes the latency runs spawn (``--role``): (address, rate, seconds).
_ROLES: dict[str, Callable[[str, int, float], None]] = {
    "consumer": _consumer_role,
    "producer": _producer_role,
    "kafka-consumer": _kafka_consumer_role,
    "kafka-producer": _kafka_producer_role,
}


def _spawn(role: str, address: str, rate: int, seconds: float) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--role", role, "--address", address]
    cmd += ["--rate", str(rate), "--seconds", str(seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _latency_processes(
    address: str, rate: int, seconds: float, door: str = "grpc", kafka: str = ""
) -> list[float]:
    """Producer and consumer each in its own process; the sorted latencies (seconds).
    ``door`` "kafka": librdkafka's producer and consumer through the Kafka door at
    ``kafka`` (the topic is made through gRPC at ``address`` first)."""
    with Producer(address, acks=1, linger_ms=0) as warm:
        warm.send("latency", b"0", partition=0).result(10)
    total = int(rate * seconds)
    prefix, target = ("kafka-", kafka) if door == "kafka" else ("", address)
    consumer = _spawn(prefix + "consumer", target, total, seconds)
    assert consumer.stdout is not None
    if consumer.stdout.readline().strip() != "ready":
        consumer.kill()
        raise RuntimeError("the consumer process did not start")
    producer = _spawn(prefix + "producer", target, rate, seconds)
    producer.communicate(timeout=seconds + 120)
    out, _ = consumer.communicate(timeout=seconds + 120)
    return list(json.loads(out))


def _max_rate(address: str, seconds: float, door: str = "grpc", kafka: str = "") -> float:
    """msgs/s one producer process reaches with acks 1 and no rate limit."""
    prefix, target = ("kafka-", kafka) if door == "kafka" else ("", address)
    producer = _spawn(prefix + "producer", target, 0, seconds)
    out, _ = producer.communicate(timeout=seconds + 120)
    return float(json.loads(out))


def _cpu(proc: Any) -> float:
    """CPU seconds (user + system) the broker process used so far."""
    times = proc.cpu_times()
    return float(times.user + times.system)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=512, help="MiB to send in each run")
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--batches-per-request", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved ceiling/broker")
    parser.add_argument("--door", choices=("grpc", "kafka", "both"), default="both")
    parser.add_argument(
        "--ceiling-fsync-kib", type=int, default=512,
        help="the second reference: the ceiling with an fsync per this many KiB (0: none)",
    )  # fmt: skip
    parser.add_argument("--latency-mode", choices=("process", "thread"), default="process")
    parser.add_argument("--sync", default="always", help="the server's --sync for latency")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-half-max", action="store_true")
    parser.add_argument(
        "--latency-door", choices=("grpc", "kafka", "both"), default="both",
        help="the clients of the latency runs: ours (gRPC) or librdkafka (Kafka door)",
    )  # fmt: skip
    parser.add_argument(
        "--role", choices=sorted(_ROLES), help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        _ROLES[args.role](args.address, args.rate, args.seconds)
        return
    total = (64 if args.quick else args.mb) * 1024 * 1024
    doors = ("grpc", "kafka") if args.door == "both" else (args.door,)
    fsync_every = args.ceiling_fsync_kib * 1024
    for round_ in range(0 if args.skip_throughput else args.rounds):
        with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as directory:
            ceiling = asyncio.run(_ceiling(total, directory))
        emit(BENCH, "ceiling_asyncio_recv_append_16KiB", ceiling, "MB/s", round=round_)
        if fsync_every:
            with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as directory:
                synced = asyncio.run(_ceiling(total, directory, fsync_every))
            emit(
                BENCH, "ceiling_with_fsync_per_chunk", synced, "MB/s",
                fsync_every_kib=args.ceiling_fsync_kib, ceiling=round(ceiling, 1),
                ratio=round(synced / ceiling, 3), round=round_,
            )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as directory:
            acked = asyncio.run(
                _ceiling_acked(
                    total, directory, args.in_flight, FRAME * args.batches_per_request
                )
            )
        emit(
            BENCH, "ceiling_acks_after_fsync", acked, "MB/s", files=4,
            in_flight=args.in_flight, request_kib=FRAME * args.batches_per_request // 1024,
            ceiling=round(ceiling, 1), ratio=round(acked / ceiling, 3), round=round_,
        )  # fmt: skip
        for door in doors:
            with server_doors("always") as (address, kafka, _proc):
                if door == "grpc":
                    ours = asyncio.run(
                        _replay(address, total, args.in_flight, args.batches_per_request)
                    )
                else:
                    ours = asyncio.run(
                        _replay_kafka(
                            address, kafka, total, args.in_flight, args.batches_per_request
                        )
                    )
            emit(
                BENCH,
                "broker_produce_16KiB_batches_sync_always",
                ours,
                "MB/s",
                door=door,
                acks=1,
                batches_per_request=args.batches_per_request,
                in_flight=args.in_flight,
                ceiling=round(ceiling, 1),
                ratio=round(ours / ceiling, 3),
                target_ratio=0.7,
                acked_ceiling=round(acked, 1),
                ratio_to_acked=round(ours / acked, 3),
                round=round_,
            )
    if args.skip_latency:
        return
    seconds = 2 if args.quick else 10
    mode = args.latency_mode
    latency_doors = ("grpc", "kafka") if args.latency_door == "both" else (args.latency_door,)
    for door in latency_doors:
        if door == "kafka" and mode != "process":
            continue  # librdkafka's clients run in their own processes only
        _latency_runs(args, door, mode, seconds)


def _latency_runs(args: argparse.Namespace, door: str, mode: str, seconds: float) -> None:
    """The latency figures through one door: at 5,000 msgs/s, then at half of one
    producer's maximum rate (each on a fresh server)."""
    labels = {"mode": mode, "sync": args.sync, "door": door}
    with server_doors(args.sync) as (address, kafka, proc):
        cpu = _cpu(proc)
        if mode == "process":
            latencies = _latency_processes(address, 5000, seconds, door, kafka)
        else:
            latencies = _latency(address, 5000, seconds)
        cpu = _cpu(proc) - cpu
    emit(BENCH, "broker_cpu_seconds_at_5000_msgs", cpu, "s", run_seconds=seconds, **labels)
    emit(
        BENCH, "e2e_latency_p50_at_5000_msgs", _pct(latencies, 0.5), "ms",
        samples=len(latencies), **labels,
    )  # fmt: skip
    emit(BENCH, "e2e_latency_p99_at_5000_msgs", _pct(latencies, 0.99), "ms", target=10, **labels)
    emit(BENCH, "e2e_latency_p999_at_5000_msgs", _pct(latencies, 0.999), "ms", **labels)
    if mode != "process" or args.skip_half_max:
        return
    with server_doors(args.sync) as (address, kafka, _proc):
        with Producer(address, acks=1, linger_ms=0) as warm:
            warm.send("latency", b"0", partition=0).result(10)
        top = _max_rate(address, seconds, door, kafka)
        half = max(1, int(top / 2))
        emit(BENCH, "max_msgs_per_s_one_producer_acks_1", top, "msgs/s", **labels)
        latencies = _latency_processes(address, half, seconds, door, kafka)
    emit(
        BENCH, "e2e_latency_p50_at_half_max", _pct(latencies, 0.5), "ms", rate=half,
        samples=len(latencies), **labels,
    )  # fmt: skip
    emit(BENCH, "e2e_latency_p99_at_half_max", _pct(latencies, 0.99), "ms", target=50, **labels)


if __name__ == "__main__":
    main()
