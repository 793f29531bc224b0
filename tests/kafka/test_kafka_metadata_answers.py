"""Metadata answers built from kept parts: a struct encoded once (``serde.encode_nested``)
writes the same bytes as the value it stands for, in every response of every version;
a broker alone keeps each topic's placement (``Placements``) and the Kafka door each
topic's encoded answer only while the topic stays as it was: after every change
(created, grown, deleted and made again, configs altered, a partition offline) the
answer is the one built from scratch."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_values import all_versions, message_values

from sentinel.broker.service import BrokerService
from sentinel.broker.standalone_metadata import Placements
from sentinel.broker.topics import OfflinePartition
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.errors import InvalidArgumentError
from sentinel.fs import MemFS
from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.messages import metadata as metadata_messages
from sentinel.protocol.kafka.schema import Message
from sentinel.server.kafka.handlers import KafkaRequestContext
from sentinel.server.kafka.handlers import metadata as metadata_handler
from sentinel.server.kafka.response_errors import first_error_code

RESPONSES = [case for case in all_versions() if case[1] == "response"]
NODE = 2


def _nested_arrays(message: Message, version: int) -> list[str]:
    """The body's fields, present at ``version``, that are arrays of structs."""
    return [f.name for f in message.body.fields
            if f.is_array and f.struct is not None and f.present(version)]


@pytest.mark.parametrize(("api", "kind", "message", "version"), RESPONSES,
                         ids=[f"{a}-v{v}" for a, _, _, v in RESPONSES])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_an_encoded_struct_writes_the_bytes_of_its_value(
    api: str, kind: str, message: Message, version: int, data: Any
) -> None:
    value = data.draw(message_values(message, version))
    plain = serde.encode(message, version, value)
    swapped = {}
    for name in _nested_arrays(message, version):
        items = getattr(value, name)
        if items:
            swapped[name] = tuple(
                serde.encode_nested(message, version, item, first_error_code(item))
                for item in items
            )
    assert serde.encode(message, version, dataclasses.replace(value, **swapped)) == plain


def test_an_encoded_struct_is_refused_at_another_version_or_place() -> None:
    message = metadata_messages.RESPONSE
    topic = metadata_messages.MetadataResponseTopic(name="a")
    at_9 = serde.encode_nested(message, 9, topic)
    serde.encode(message, 9, metadata_messages.MetadataResponse(topics=(at_9,)))  # type: ignore[arg-type]
    for version in (8, 10, 12):  # 8: not flexible; 10 and 12: other fields
        with pytest.raises(InvalidArgumentError):
            serde.encode(message, version, metadata_messages.MetadataResponse(topics=(at_9,)))  # type: ignore[arg-type]
    broker = serde.encode_nested(message, 9, metadata_messages.MetadataResponseBroker())
    with pytest.raises(InvalidArgumentError):  # a broker's bytes in a topic's place
        serde.encode(message, 9, metadata_messages.MetadataResponse(topics=(broker,)))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):  # not a struct of this message
        serde.encode_nested(message, 9, OfflinePartition("x", "y"))


@pytest.fixture
async def service() -> AsyncIterator[BrokerService]:
    config = BrokerConfig(data_dir="/data", node_id=NODE, port=9555, sync_mode="none")
    svc = BrokerService(config, MemFS(), SystemClock())
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def _answer(service: BrokerService, version: int,
                  names: list[str] | None = None) -> metadata_messages.MetadataResponse:
    """What the Kafka door answers, encoded and decoded again."""
    ctx = KafkaRequestContext(3, version, 1, "test", "127.0.0.1:1", 1)
    topics = None if names is None else tuple(
        metadata_messages.MetadataRequestTopic(name=n) for n in names)
    request = metadata_messages.MetadataRequest(topics=topics, allow_auto_topic_creation=False)
    response = await metadata_handler.metadata(service, ctx, request)
    data = serde.encode(metadata_messages.RESPONSE, version, response)
    decoded: metadata_messages.MetadataResponse = serde.decode(
        metadata_messages.RESPONSE, version, data)
    return decoded


async def _expected(service: BrokerService, names: list[str] | None = None
                    ) -> list[tuple[str, int, list[tuple[int, int, int, tuple[int, ...]]]]]:
    """Each topic as described from scratch, with offsets (no value kept)."""
    described = await service.metadata(names or ())
    return [
        (t.name, t.error_code,
         [(p.partition, p.error_code, p.leader, p.replicas) for p in t.partitions])
        for t in described.topics
    ]


def _seen(answer: metadata_messages.MetadataResponse
          ) -> list[tuple[str, int, list[tuple[int, int, int, tuple[int, ...]]]]]:
    return [
        (t.name or "", t.error_code,
         [(p.partition_index, p.error_code, p.leader_id, p.replica_nodes)
          for p in t.partitions])
        for t in answer.topics
    ]


async def _check(service: BrokerService, names: list[str] | None = None) -> None:
    expected = await _expected(service, names)
    for version in (1, 8, 9, 12):  # before and after flexible versions, twice each
        for _ in range(2):
            assert _seen(await _answer(service, version, names)) == expected


async def test_every_change_of_a_topic_changes_its_answer(service: BrokerService) -> None:
    await service.create_topic("a", 3)
    await service.create_topic("b", 1)
    await _check(service)
    await service.add_partitions("a", 5)
    await _check(service)
    await _check(service, ["a", "nope"])
    await service.delete_topic("b")
    await _check(service)
    await service.create_topic("b", 4)
    await _check(service)
    await service.alter_topic_configs("a", {"retention.ms": "1000"})
    await _check(service, ["b", "a"])
    topic = service.registry.get("a")
    topic.partitions[1] = OfflinePartition("a-1", "damaged here")
    await _check(service)
    assert (await _answer(service, 12, ["a"])).topics[0].partitions[1].error_code == 56


async def test_a_topic_unchanged_is_answered_from_kept_parts(service: BrokerService) -> None:
    await service.create_topic("a", 4)
    first = (await service.metadata(["a"], offsets=False)).topics[0]
    again = (await service.metadata(offsets=False)).topics[0]
    assert again is first  # kept, not built again
    assert all(p.log_end_offset == -1 for p in first.partitions)  # not described
    await service.add_partitions("a", 6)
    grown = (await service.metadata(["a"], offsets=False)).topics[0]
    assert grown is not first and len(grown.partitions) == 6
    # With offsets the value is always built anew, from the logs.
    described = (await service.metadata(["a"])).topics[0]
    assert described is not grown and described.partitions[0].log_end_offset == 0


async def test_placements_hold_no_topic_gone(service: BrokerService) -> None:
    placements = Placements(NODE, service.registry)
    for i in range(5):
        await service.create_topic(f"t{i}", 1)
        placements(service.registry.get(f"t{i}"))
    for i in range(5):
        await service.delete_topic(f"t{i}")
    await service.create_topic("last", 1)
    placements(service.registry.get("last"))
    assert len(placements._placed) == 1


async def test_kept_answers_are_bounded(service: BrokerService,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    kept = metadata_handler.EncodedTopics()
    monkeypatch.setattr(metadata_handler, "_ENCODED_TOPICS", kept)
    monkeypatch.setattr(metadata_handler, "KEPT_TOPIC_ANSWERS", 4)
    for i in range(7):
        await service.create_topic(f"t{i}", 1)
    await _check(service)
    assert len(kept) <= 4
    await _check(service, ["nope", "other"])  # names that do not exist are not kept
    assert len(kept) <= 4
