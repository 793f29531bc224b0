"""The listener in-process, with handlers that fail: a bug is answered with
UNKNOWN_SERVER_ERROR (one log line with the trace), a ``SentinelError`` with its
error code, and the connections go on (every API: ``test_kafka_failed_handlers``)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest
from kafka_raw import RawKafka

from listen_queue import burst_overflows
from sentinel.broker.request_budget import RequestBudget
from sentinel.broker.service import BrokerService
from sentinel.errors import NotLeaderError
from sentinel.protocol.kafka.messages import api_versions as av
from sentinel.protocol.kafka.messages import describe_cluster as dc
from sentinel.protocol.kafka.messages import metadata as md
from sentinel.server.kafka.handlers import KafkaRequestContext
from sentinel.server.kafka.handlers.api_versions import api_versions
from sentinel.server.kafka.listener import KafkaListener
from sentinel.server.kafka.response_errors import first_error_code
from sentinel.server.metrics import Metrics


async def bug(service: BrokerService, ctx: KafkaRequestContext, request: Any) -> Any:
    raise RuntimeError("a bug in a handler")


async def refusal(service: BrokerService, ctx: KafkaRequestContext, request: Any) -> Any:
    raise NotLeaderError("not the leader")


async def test_failing_handlers_are_answered_and_their_connections_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    # The handlers here never reach the service; the listener draws from its budget.
    service = cast(BrokerService, SimpleNamespace(request_budget=RequestBudget(1 << 30)))
    listener = KafkaListener(service, metrics, max_frame_bytes=1 << 20)
    listener.handlers = {18: api_versions, 3: bug, 60: refusal}
    port = await listener.start("127.0.0.1", 0)
    address = f"127.0.0.1:{port}"
    loop = asyncio.get_running_loop()

    def scenario() -> None:
        with RawKafka(address) as good, RawKafka(address) as victim:
            # DescribeCluster has a top-level error code: the refusal is answered.
            answer = good.call(60, 0, dc.DescribeClusterRequest())
            assert answer.error_code == NotLeaderError.kafka_code
            # Metadata's errors are per topic: a bug is answered in each topic named.
            answer = victim.call(3, 12, md.MetadataRequest(topics=(
                md.MetadataRequestTopic(name="a"), md.MetadataRequestTopic(name="b"))))
            assert [(t.name, t.error_code) for t in answer.topics] == [("a", -1), ("b", -1)]
            versions = good.call(18, 3, av.ApiVersionsRequest())  # the other one goes on
            assert versions.error_code == 0
            assert {3, 18, 60} <= {k.api_key for k in versions.api_keys}

    with caplog.at_level(logging.WARNING, logger="sentinel.server.kafka.socket_protocol"):
        await loop.run_in_executor(None, scenario)
        await listener.stop(1.0)
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert metrics.kafka_closed_connections.labels("internal")._value.get() == 0
    assert metrics.kafka_connections._value.get() == 0


def test_first_error_code_finds_a_partition_error() -> None:
    ok = md.MetadataResponse(topics=(md.MetadataResponseTopic(name="a"),))
    assert first_error_code(ok) == 0
    bad = md.MetadataResponse(topics=(
        md.MetadataResponseTopic(name="a"),
        md.MetadataResponseTopic(name="b", partitions=(
            md.MetadataResponsePartition(partition_index=0),
            md.MetadataResponsePartition(partition_index=1, error_code=56),)),))  # fmt: skip
    assert first_error_code(bad) == 56


async def test_a_burst_of_connections_fits_the_listen_queue() -> None:
    metrics = Metrics()
    service = cast(BrokerService, SimpleNamespace(request_budget=RequestBudget(1 << 30)))
    listener = KafkaListener(service, metrics, max_frame_bytes=1 << 20)
    port = await listener.start("127.0.0.1", 0)
    try:
        overflows = await asyncio.to_thread(burst_overflows, port)
    finally:
        await listener.stop(1.0)
    assert overflows == 0
