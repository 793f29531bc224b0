"""A handler that fails is answered, at every API and every version the door speaks.

Kafka's broker answers a request whose handling failed with the error in each item the
request named (every partition of a produce, every topic of a metadata request, every
group of a describe) and at the top level where the version has one; it closes the
connection only for a produce with acks 0, which has no answer. Here every handler of
an in-process listener raises, a bug (UNKNOWN_SERVER_ERROR, -1) or a typed refusal (its
code), and each request is sent at every supported version: the connection stays open,
the answer decodes, and carries the code once per item named, where that version has a
place for it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import fields
from types import SimpleNamespace
from typing import Any, cast

import pytest
from kafka_raw import RawKafka

from sentinel.broker.request_budget import RequestBudget
from sentinel.broker.service import BrokerService
from sentinel.errors import StorageUnavailableError
from sentinel.protocol.kafka.messages import API_NAMES, REQUESTS, RESPONSES
from sentinel.protocol.kafka.schema import Struct
from sentinel.protocol.kafka.versions import SUPPORTED
from sentinel.server.kafka.handlers import KafkaRequestContext
from sentinel.server.kafka.listener import KafkaListener
from sentinel.server.metrics import Metrics

UNKNOWN_SERVER_ERROR = -1
STORAGE = StorageUnavailableError.kafka_code

_PLAIN: dict[str, Any] = {
    "int8": 1, "int16": 1, "int32": 1, "int64": 1, "uint16": 1, "float64": 0.5,
    "bool": False, "string": "s", "bytes": b"x", "records": None,
}


def sample(struct: Struct, version: int, depth: int = 0) -> Any:
    """A request of ``struct`` at ``version`` with two items in every list: names and
    indexes distinct per item, so that an answer that mirrors them can be checked."""
    values: dict[str, Any] = {}
    for row in struct.fields:
        if not row.present(version):
            continue
        if row.struct is not None:
            values[row.name] = tuple(
                _renamed(sample(row.struct, version, depth + 1), i) for i in range(2))
        elif row.type == "[]string":
            values[row.name] = (f"{row.name}-a", f"{row.name}-b")
        elif row.type.startswith("[]"):
            values[row.name] = (0, 1)
        elif row.type == "uuid":
            values[row.name] = uuid.UUID(int=0)
        else:
            values[row.name] = _PLAIN[row.type]
    if struct.cls.__name__ == "ProduceRequest":
        values["acks"] = -1
    return struct.cls(**values)


def _renamed(item: Any, i: int) -> Any:
    """``item`` with its name-like fields made distinct (``name-i``) and index-like
    fields set to ``i``."""
    changes: dict[str, Any] = {}
    for f in fields(item):
        value = getattr(item, f.name)
        if isinstance(value, str) and f.name in {"name", "topic", "group_id", "resource_name"}:
            changes[f.name] = f"{f.name}-{i}"
        elif isinstance(value, int) and not isinstance(value, bool) and f.name in {
                "index", "partition", "partition_index"}:
            changes[f.name] = i
    return type(item)(**{**{f.name: getattr(item, f.name) for f in fields(item)}, **changes})


def codes(struct: Struct, version: int, value: Any) -> list[int]:
    """Every ``error_code`` that ``version`` of the answer carries, depth first."""
    found: list[int] = []
    for row in struct.fields:
        if not row.present(version):
            continue
        if row.name == "error_code":
            found.append(getattr(value, row.name))
        elif row.struct is not None:
            for item in getattr(value, row.name):
                found.extend(codes(row.struct, version, item))
    return found


# By API: how many places carry the error in the answer to a sample request (two
# topics of two partitions, two groups, two resources...), as a function of version.
EXPECTED_PLACES: dict[int, Any] = {
    0: lambda v: 4,                    # each partition of each topic
    1: lambda v: 4 + (v >= 7),         # each partition, and the top from v7
    2: lambda v: 4,
    3: lambda v: 2,                    # each topic named
    8: lambda v: 4,
    9: lambda v: 2 if v >= 8 else 4 + (v >= 2),  # groups at v8; partitions (+ top)
    15: lambda v: 2,
    19: lambda v: 2,
    20: lambda v: 2,
    21: lambda v: 4,
    23: lambda v: 4,
    32: lambda v: 2,
    33: lambda v: 2,
    37: lambda v: 2,
    42: lambda v: 2,
    44: lambda v: 2,
}


async def bug(service: BrokerService, ctx: KafkaRequestContext, request: Any) -> Any:
    raise RuntimeError("a bug in a handler")


async def refusal(service: BrokerService, ctx: KafkaRequestContext, request: Any) -> Any:
    raise StorageUnavailableError("the disk is full")


@pytest.mark.parametrize(("handler", "code"), [(bug, UNKNOWN_SERVER_ERROR),
                                               (refusal, STORAGE)])
async def test_every_api_at_every_version_answers_a_failed_handler(
    handler: Any, code: int, caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    service = cast(BrokerService, SimpleNamespace(request_budget=RequestBudget(1 << 30)))
    listener = KafkaListener(service, metrics, max_frame_bytes=1 << 20)
    listener.handlers = {key: handler for key in SUPPORTED}
    port = await listener.start("127.0.0.1", 0)
    answered: list[tuple[str, int]] = []

    def scenario() -> None:
        with RawKafka(f"127.0.0.1:{port}") as client:
            for key, (lo, hi) in sorted(SUPPORTED.items()):
                for version in range(lo, hi + 1):
                    request = sample(REQUESTS[key].body, version)
                    answer = client.call(key, version, request)
                    where = f"{API_NAMES[key]} v{version}"
                    found = codes(RESPONSES[key].body, version, answer)
                    places = EXPECTED_PLACES.get(key, lambda v: 1)(version)
                    assert found.count(code) == places, (where, found, answer)
                    assert set(found) == {code}, (where, found)
                    answered.append((API_NAMES[key], version))

    with caplog.at_level(logging.ERROR, logger="sentinel.server.kafka.socket_protocol"):
        await asyncio.get_running_loop().run_in_executor(None, scenario)
        await listener.stop(1.0)
    assert len(answered) == sum(hi - lo + 1 for lo, hi in SUPPORTED.values())
    traces = [r for r in caplog.records if "handler failed" in r.getMessage()]
    # A bug leaves its trace once per request; a typed refusal is no bug.
    assert len(traces) == (len(answered) if code == UNKNOWN_SERVER_ERROR else 0)
    assert metrics.kafka_closed_connections.labels("internal")._value.get() == 0


async def test_a_failed_produce_with_acks_0_closes_its_connection_only() -> None:
    metrics = Metrics()
    service = cast(BrokerService, SimpleNamespace(request_budget=RequestBudget(1 << 30)))
    listener = KafkaListener(service, metrics, max_frame_bytes=1 << 20)
    listener.handlers = {key: bug for key in SUPPORTED}
    port = await listener.start("127.0.0.1", 0)

    def scenario() -> None:
        with RawKafka(f"127.0.0.1:{port}") as victim, RawKafka(f"127.0.0.1:{port}") as good:
            request = sample(REQUESTS[0].body, 9)
            _cid, body = victim.request_bytes(0, 9, type(request)(
                acks=0, timeout_ms=1000, topic_data=request.topic_data))
            victim.send_frame(body)
            assert victim.read_frame() == b""  # no answer to carry it: closed
            answer = good.call(0, 9, request)  # the other connection is answered
            assert codes(RESPONSES[0].body, 9, answer) == [UNKNOWN_SERVER_ERROR] * 4

    await asyncio.get_running_loop().run_in_executor(None, scenario)
    await listener.stop(1.0)
    assert metrics.kafka_closed_connections.labels("internal")._value.get() == 1
