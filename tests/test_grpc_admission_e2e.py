"""A real broker whose gRPC door is held by calls that send their headers and never their
request message (a slowloris): such a call must not hold room in the broker's request
budget that it has not used, so every other call is served at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from broker_process import BrokerProcess
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

PROMPT_S = 3.0
"""Each other call must be answered within this (the budget's wait was ~9 s)."""


class StalledCalls:
    """Calls on their own channels whose request iterator blocks before its first
    message: gRPC sends the call's headers, then nothing."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._gate = threading.Event()
        self._held: list[tuple[grpc.Channel, Any]] = []

    def _never(self) -> Iterator[Any]:
        self._gate.wait()
        yield from ()

    def open(self, method: str, request_cls: Any, response_cls: Any, streaming: bool) -> None:
        channel = grpc.insecure_channel(self._address)
        path = f"/sentinel.v1.Sentinel/{method}"
        if streaming:
            rpc: Any = channel.stream_stream(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            call = rpc(self._never())
        else:
            rpc = channel.stream_unary(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            call = rpc.future(self._never())
        self._held.append((channel, call))

    def close(self) -> None:
        self._gate.set()
        for channel, call in self._held:
            call.cancel()
            channel.close()


@pytest.fixture
def stalled(broker: BrokerProcess) -> Iterator[StalledCalls]:
    calls = StalledCalls(broker.address)
    yield calls
    calls.close()


def answered_promptly(call: Callable[[], object]) -> float:
    """Seconds ``call`` took; it must succeed within ``PROMPT_S``."""
    started = time.monotonic()
    call()
    took = time.monotonic() - started
    assert took < PROMPT_S, took
    return took


@pytest.mark.parametrize(
    ("method", "request_cls", "response_cls", "streaming"),
    [
        ("ListTopics", pb.ListTopicsRequest, pb.ListTopicsResponse, False),
        ("Produce", pb.ProduceRequest, pb.ProduceResponse, False),
        ("Consume", pb.ConsumeRequest, pb.ConsumeResponse, True),
    ],
)
def test_calls_stalled_before_their_message_do_not_lock_the_door(
    broker: BrokerProcess,
    stalled: StalledCalls,
    method: str,
    request_cls: Any,
    response_cls: Any,
    streaming: bool,
) -> None:
    # Two such calls once held the whole budget (2 x --max-request-bytes, 64 MiB each,
    # of the 128 MiB in flight) until they closed: every other call waited ~9 s and
    # failed RESOURCE_EXHAUSTED.
    for _ in range(3):
        stalled.open(method, request_cls, response_cls, streaming)
    time.sleep(0.5)  # the door has admitted them
    stub = pb_grpc.SentinelStub(grpc.insecure_channel(broker.address))  # type: ignore[no-untyped-call]
    timeout = PROMPT_S + 2
    answered_promptly(lambda: stub.ListTopics(pb.ListTopicsRequest(), timeout=timeout))
    answered_promptly(
        lambda: stub.CreateTopic(pb.CreateTopicRequest(name="v", partitions=1), timeout=timeout)
    )
    produce = pb.ProduceRequest(topic="v", partition=0, records=[pb.Record(value=b"hi")])
    answered_promptly(lambda: stub.Produce(produce, timeout=timeout))
    answered_promptly(lambda: stub.ListTopics(pb.ListTopicsRequest(), timeout=timeout))
