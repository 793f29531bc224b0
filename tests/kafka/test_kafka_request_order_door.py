"""The door's request order in-process (the listener with handlers that only record when
they start and end): requests that are not barriers overlap, a barrier runs alone in its
place, a barrier whose handler raises still lets the requests behind it go, and a
connection closed while a barrier waits leaves nothing behind."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from kafka_raw import RawKafka

from sentinel.broker.request_budget import RequestBudget
from sentinel.broker.service import BrokerService
from sentinel.errors import NotLeaderError
from sentinel.protocol.kafka.messages import RESPONSES
from sentinel.protocol.kafka.messages.create_topics import CreateTopicsRequest
from sentinel.protocol.kafka.messages.init_producer_id import InitProducerIdRequest
from sentinel.protocol.kafka.messages.metadata import MetadataRequest
from sentinel.protocol.kafka.messages.produce import ProduceRequest
from sentinel.server.kafka.handlers import KafkaRequestContext
from sentinel.server.kafka.listener import KafkaListener
from sentinel.server.metrics import Metrics

PRODUCE, METADATA, CREATE_TOPICS, INIT_PRODUCER_ID = 0, 3, 19, 22
REQUESTS: dict[int, tuple[int, Any]] = {
    PRODUCE: (7, ProduceRequest(acks=1, timeout_ms=1000)),
    METADATA: (12, MetadataRequest(topics=None)),
    CREATE_TOPICS: (4, CreateTopicsRequest()),
    INIT_PRODUCER_ID: (4, InitProducerIdRequest()),
}


class Recorder:
    """Handlers that record ("start" | "end" | "raise", correlation id) and take a
    while; ``hold`` makes a handler wait until ``gate`` is set."""

    def __init__(self) -> None:
        self.trace: list[tuple[str, int]] = []
        self.gate = asyncio.Event()
        self.hold: set[int] = set()
        self.raises: set[int] = set()

    async def handle(self, service: BrokerService, ctx: KafkaRequestContext,
                     request: Any) -> Any:
        cid = ctx.correlation_id
        self.trace.append(("start", cid))
        await asyncio.sleep(0.02)
        if cid in self.hold:
            await self.gate.wait()
        if cid in self.raises:
            self.trace.append(("raise", cid))
            raise NotLeaderError("refused")
        self.trace.append(("end", cid))
        return RESPONSES[ctx.api_key].body.cls()

    def at(self, event: str, cid: int) -> int:
        return self.trace.index((event, cid))


async def listening(recorder: Recorder) -> tuple[KafkaListener, str]:
    service = cast(BrokerService, SimpleNamespace(request_budget=RequestBudget(1 << 30)))
    listener = KafkaListener(service, Metrics(), max_frame_bytes=1 << 20)
    listener.handlers = {key: recorder.handle for key in REQUESTS}
    port = await listener.start("127.0.0.1", 0)
    return listener, f"127.0.0.1:{port}"


def send(kafka: RawKafka, api_keys: list[int]) -> list[int]:
    """Pipeline requests of ``api_keys`` in one write; their correlation ids."""
    frames, ids = [], []
    for api_key in api_keys:
        version, request = REQUESTS[api_key]
        cid, payload = kafka.request_bytes(api_key, version, request)
        frames.append(len(payload).to_bytes(4, "big") + payload)
        ids.append(cid)
    kafka.sock.sendall(b"".join(frames))
    return ids


async def test_barriers_run_alone_in_their_place_and_the_rest_overlaps() -> None:
    recorder = Recorder()
    recorder.raises.add(6)
    listener, address = await listening(recorder)
    keys = [PRODUCE, PRODUCE, CREATE_TOPICS, PRODUCE, METADATA, INIT_PRODUCER_ID, METADATA]

    def scenario() -> list[Any]:
        with RawKafka(address) as kafka:
            ids = send(kafka, keys)
            return [kafka.read_response(k, REQUESTS[k][0], cid) for k, cid in zip(keys, ids,
                                                                                   strict=True)]

    try:
        answers = await asyncio.to_thread(scenario)
    finally:
        await listener.stop(1.0)
    at = recorder.at
    assert at("start", 2) < at("end", 1)  # produce requests overlap
    assert at("start", 3) > max(at("end", 1), at("end", 2))  # the barrier waits for them
    assert at("end", 3) < min(at("start", 4), at("start", 5))  # and holds back the rest
    assert at("start", 5) < at("end", 4)  # which overlap again
    assert at("start", 6) > max(at("end", 4), at("end", 5))
    assert at("start", 7) > at("raise", 6)  # a barrier that raised let the next one go
    assert answers[5].error_code == NotLeaderError.kafka_code
    assert len(recorder.trace) == 14


async def test_a_connection_closed_while_a_barrier_waits_leaves_nothing_behind() -> None:
    recorder = Recorder()
    recorder.hold.add(1)
    listener, address = await listening(recorder)
    with RawKafka(address) as kafka:
        await asyncio.to_thread(send, kafka, [PRODUCE, CREATE_TOPICS, METADATA])
        for _ in range(200):
            if recorder.trace:
                break
            await asyncio.sleep(0.01)
    # The client is gone; the produce handler still holds the barrier and the metadata.
    await asyncio.sleep(0.1)
    assert recorder.trace == [("start", 1)]
    await listener.stop(0.1)  # cancels what is left; stops without waiting for the gate
    recorder.gate.set()
    await asyncio.sleep(0.05)
    assert recorder.trace == [("start", 1)]
    assert listener.metrics.kafka_connections._value.get() == 0
