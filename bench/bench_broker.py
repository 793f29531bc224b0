"""The broker alone, against its ceiling, and end-to-end latency.

    .venv/bin/python bench/bench_broker.py [--mb 512] [--quick]

1. ceiling: a bare asyncio server (BufferedProtocol into a reused buffer) receives
   length-prefixed 16 KiB frames over loopback and appends them to a file: the MB/s a
   Python process on this machine can take in and write.
2. broker: a sender replays pre-encoded Produce requests (one 16 KiB RecordBatch each,
   serialized once) with many calls in flight, so the client is not what is measured;
   the broker validates, stamps, appends to the WAL and fsyncs (``--sync always``).
3. end-to-end latency: a producer at 5,000 msgs/s (linger 1 ms) and a consumer following
   the log; latency is from send to the consumer seeing the record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import grpc

from _common import emit
from bench_client import server
from sentinel.client import Consumer, Producer
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.record import build_batch

BENCH = "broker"
FRAME = 16 * 1024
_LEN = struct.Struct(">I")


# ------------------------------------------------------------------ ceiling


class _Sink(asyncio.BufferedProtocol):
    def __init__(self, path: str, done: asyncio.Future[int], expected: int) -> None:
        self._buffer = bytearray(1024 * 1024)
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed on eof
        self._done = done
        self._expected = expected
        self._received = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self._file.write(memoryview(self._buffer)[:nbytes])
        self._received += nbytes
        if self._received >= self._expected and not self._done.done():
            os.fsync(self._file.fileno())
            self._done.set_result(self._received)

    def eof_received(self) -> bool:
        self._file.close()
        return False


async def _ceiling(total: int, directory: str) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    frame = _LEN.pack(FRAME) + os.urandom(FRAME)
    count = total // FRAME
    expected = count * len(frame)
    srv = await loop.create_server(
        lambda: _Sink(os.path.join(directory, "ceiling.bin"), done, expected), "127.0.0.1", 0
    )
    port = srv.sockets[0].getsockname()[1]

    def send() -> None:
        import socket

        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(count):
                sock.sendall(frame)

    started = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    await done
    elapsed = time.perf_counter() - started
    sender.join()
    srv.close()
    return expected / elapsed / 1e6


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
    args = parser.parse_args()
    total = (64 if args.quick else args.mb) * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as directory:
        ceiling = asyncio.run(_ceiling(total, directory))
    emit(BENCH, "ceiling_asyncio_recv_append_16KiB", ceiling, "MB/s")
    with server("always") as (address, _proc):
        ours = asyncio.run(_replay(address, total, args.in_flight, args.batches_per_request))
    emit(
        BENCH,
        "broker_produce_16KiB_batches_sync_always",
        ours,
        "MB/s",
        batches_per_request=args.batches_per_request,
        ceiling=round(ceiling, 1),
        ratio=round(ours / ceiling, 3),
        target_ratio=0.5,
    )
    with server("always") as (address, _proc):
        latencies = _latency(address, 5000, 2 if args.quick else 10)
    emit(BENCH, "e2e_latency_p50_at_5000_msgs", _pct(latencies, 0.5), "ms", samples=len(latencies))
    emit(BENCH, "e2e_latency_p99_at_5000_msgs", _pct(latencies, 0.99), "ms", target=10)
    emit(BENCH, "e2e_latency_p999_at_5000_msgs", _pct(latencies, 0.999), "ms")


if __name__ == "__main__":
    main()
