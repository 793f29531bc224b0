"""Broker-to-broker transport: framed binary over asyncio streams (``PeerTransport``)
against a gRPC bidi stream carrying the same encoded frames (issue 8 asks us to choose
by measurement). One JSON object per figure: ``value`` is ours, ``peer`` is gRPC's.

    .venv/bin/python bench/bench_transport.py [--quick] [--rounds 3]

The same stream of AppendEntries envelopes (one entry of 1 KiB or 64 KiB each, a
window of 64 unacknowledged) goes from broker 1 to broker 2, which decodes each one
and answers with an encoded AppendEntriesResponse envelope; broker 1 decodes the
answers. Both run in one process and one event loop (the default asyncio loop, as
grpc.aio wants), on 127.0.0.1. gRPC carries the frame as one ``bytes`` message
(identity serializers, generic handlers, no proto), so it pays one join per envelope
that ``writelines`` avoids. Rounds alternate: ours, gRPC, ours, gRPC... and the
median of the rounds is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))

from _common import emit
from sentinel.cluster.peers import Peer
from sentinel.cluster.transport import PeerTransport
from sentinel.cluster.wire import FrameDecoder, encode
from sentinel.raft.log import Entry
from sentinel.raft.messages import AppendEntries, AppendEntriesResponse
from sentinel.raft.multi import Envelope

BENCH = "transport"
WINDOW = 64
GROUP = 1
METHOD = "/sentinel.bench.Peer/Stream"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def stream(entry_bytes: int, count: int) -> list[Envelope]:
    data = bytes(range(256)) * (entry_bytes // 256)
    return [
        Envelope(1, 2, messages=((GROUP, AppendEntries(1, 1, 2, i, 1 if i else 0, (
            Entry(i, 1, 1, data),), i)),))
        for i in range(count)
    ]


def ack_of(env: Envelope) -> Envelope:
    """What broker 2 answers: the AppendEntriesResponse for the envelope's entries."""
    group, m = env.messages[0]
    assert isinstance(m, AppendEntries)
    return Envelope(2, 1, messages=((group, AppendEntriesResponse(
        m.term, 2, 1, True, m.entries[-1].end)),))


async def run_ours(envs: list[Envelope]) -> float:
    p1, p2 = free_ports(2)
    peers = {1: Peer(1, "127.0.0.1", p1), 2: Peer(2, "127.0.0.1", p2)}
    window = asyncio.Semaphore(WINDOW)
    done = asyncio.Event()
    acked = 0

    async def no_call(src: int, kind: str, body: bytes) -> bytes:
        return b""

    def on_ack(env: Envelope) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == len(envs):
            done.set()

    one = PeerTransport(1, "bench", peers, on_envelope=on_ack, on_call=no_call)
    two: PeerTransport

    def on_append(env: Envelope) -> None:
        two.send(ack_of(env))

    two = PeerTransport(2, "bench", peers, on_envelope=on_append, on_call=no_call)
    await one.start()
    await two.start()
    try:
        start = time.perf_counter()
        for env in envs:
            await window.acquire()
            one.send(env)
        await done.wait()
        elapsed = time.perf_counter() - start
        assert one.dropped == 0 and two.dropped == 0
        return elapsed
    finally:
        await one.stop()
        await two.stop()


async def _servicer(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    decoder = FrameDecoder()
    async for message in requests:
        for env in decoder.feed(message):
            assert isinstance(env, Envelope)
            yield b"".join(encode(ack_of(env)))


async def run_grpc(envs: list[Envelope]) -> float:
    (port,) = free_ports(1)
    options = [("grpc.max_receive_message_length", 128 << 20),
               ("grpc.max_send_message_length", 128 << 20)]
    server = grpc.aio.server(options=options)
    handler = grpc.method_handlers_generic_handler("sentinel.bench.Peer", {
        "Stream": grpc.stream_stream_rpc_method_handler(_servicer),
    })
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    try:
        call = channel.stream_stream(METHOD)()
        window = asyncio.Semaphore(WINDOW)

        async def read() -> int:
            decoder = FrameDecoder()
            acked = 0
            while acked < len(envs):
                message = await call.read()
                assert isinstance(message, bytes)
                for frame in decoder.feed(message):
                    assert isinstance(frame, Envelope)
                    acked += 1
                    window.release()
            return acked

        start = time.perf_counter()
        reader = asyncio.ensure_future(read())
        for env in envs:
            await window.acquire()
            await call.write(b"".join(encode(env)))
        await reader
        elapsed = time.perf_counter() - start
        await call.done_writing()
        return elapsed
    finally:
        await channel.close()
        await server.stop(None)


async def main(quick: bool, rounds: int) -> None:
    sizes = [(1024, 5_000 if quick else 40_000), (64 * 1024, 500 if quick else 4_000)]
    results: dict[tuple[int, str], list[float]] = {}
    for _ in range(rounds):
        for size, count in sizes:
            envs = stream(size, count)
            for name, run in (("ours", run_ours), ("grpc", run_grpc)):
                elapsed = await run(envs)
                results.setdefault((size, name), []).append(elapsed)
    for size, count in sizes:
        label = f"{size // 1024}KiB"
        ours = statistics.median(results[(size, "ours")])
        theirs = statistics.median(results[(size, "grpc")])
        extra = {"entry_bytes": size, "envelopes": count, "rounds": rounds, "window": WINDOW}
        emit(BENCH, f"append_entries_{label}_mb_s", size * count / ours / 1e6, "MB/s",
             peer=round(size * count / theirs / 1e6, 3), **extra)
        emit(BENCH, f"append_entries_{label}_envelopes_s", count / ours, "envelopes/s",
             peer=round(count / theirs, 3), **extra)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.rounds))
