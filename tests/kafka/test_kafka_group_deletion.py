"""The Kafka door's DeleteGroups (42) and OffsetDelete (47) handlers, in process against
a ``BrokerService`` on the in-memory filesystem: every code they answer, at every
version, with each response also decoded by aiokafka's own classes where it has them
(DeleteGroups v0-1), and ApiVersions advertising both."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from test_kafka_groups import call, commit, join, subscription_v0

from sentinel.broker.service import BrokerService
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import MemFS
from sentinel.protocol.kafka.messages.delete_groups import (
    DeletableGroupResult,
    DeleteGroupsRequest,
)
from sentinel.protocol.kafka.messages.offset_delete import (
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
    OffsetDeleteResponse,
    OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic,
)
from sentinel.protocol.kafka.versions import api_versions_response
from sentinel.server.kafka.handlers import HANDLERS
from sentinel.server.kafka.handlers import group_deletion as h

NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, INVALID_GROUP_ID = 68, 69, 24
GROUP_SUBSCRIBED_TO_TOPIC, UNKNOWN_TOPIC_OR_PARTITION = 86, 3


@pytest.fixture
async def service() -> AsyncIterator[BrokerService]:
    config = BrokerConfig(data_dir="/data", node_id=3, port=9555, kafka_port=9556,
                          group_min_session_timeout_ms=500, sync_mode="always")
    svc = BrokerService(config, MemFS(), SystemClock())
    await svc.start()
    await svc.create_topic("t", 4)
    await svc.create_topic("u", 1)
    try:
        yield svc
    finally:
        await svc.stop()


def test_both_apis_are_advertised_and_handled() -> None:
    advertised = {k.api_key: (k.min_version, k.max_version)
                  for k in api_versions_response().api_keys}
    assert (advertised[42], advertised[47]) == ((0, 2), (0, 0))
    assert (HANDLERS[42], HANDLERS[47]) == (h.delete_groups, h.offset_delete)


@pytest.mark.parametrize("version", [0, 1, 2])
async def test_delete_groups_answers_per_group(service: BrokerService, version: int) -> None:
    await commit(service, "", -1, {0: 5})  # group "g": offsets, no member yet
    assert service.fetch_offsets("g")
    request = DeleteGroupsRequest(groups_names=("g", "nope", ""))
    response = await call(h.delete_groups, version, request, service)
    assert response.results == (
        DeletableGroupResult(group_id="g", error_code=0),
        DeletableGroupResult(group_id="nope", error_code=GROUP_ID_NOT_FOUND),
        DeletableGroupResult(group_id="", error_code=INVALID_GROUP_ID),
    )
    assert service.fetch_offsets("g") == {}
    assert [g.group_id for g in service.list_groups()] == []


async def test_delete_groups_refuses_a_group_with_a_member(service: BrokerService) -> None:
    joined = await join(service, subscription_v0("t"))
    assert joined.error_code == 0
    response = await call(h.delete_groups, 2, DeleteGroupsRequest(groups_names=("g",)), service)
    assert response.results == (DeletableGroupResult(group_id="g", error_code=NON_EMPTY_GROUP),)
    assert [g.group_id for g in service.list_groups()] == ["g"]


def offset_delete(group: str, **topics: tuple[int, ...]) -> OffsetDeleteRequest:
    return OffsetDeleteRequest(group_id=group, topics=tuple(
        OffsetDeleteRequestTopic(name=name, partitions=tuple(
            OffsetDeleteRequestPartition(partition_index=p) for p in ps))
        for name, ps in topics.items()))


def answered(response: OffsetDeleteResponse) -> dict[tuple[str, int], int]:
    return {(t.name, p.partition_index): p.error_code
            for t in response.topics for p in t.partitions}


async def test_offset_delete_answers_per_partition(service: BrokerService) -> None:
    await commit(service, "", -1, {0: 5, 1: 6, 2: 7})
    await commit(service, "", -1, {0: 1}, topic="u")
    request = offset_delete("g", t=(0, 2, 9), u=(0,), zzz=(0,))
    response = await call(h.offset_delete, 0, request, service)
    assert response.error_code == 0
    assert answered(response) == {
        ("t", 0): 0, ("t", 2): 0, ("t", 9): UNKNOWN_TOPIC_OR_PARTITION, ("u", 0): 0,
        ("zzz", 0): UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert set(service.fetch_offsets("g")) == {("t", 1)}


async def test_offset_delete_keeps_the_topics_a_member_subscribes_to(
        service: BrokerService) -> None:
    await commit(service, "", -1, {0: 5})
    await commit(service, "", -1, {0: 1}, topic="u")
    joined = await join(service, subscription_v0("t"))
    assert joined.error_code == 0
    response = await call(h.offset_delete, 0, offset_delete("g", t=(0,), u=(0,)), service)
    assert response == OffsetDeleteResponse(topics=(
        OffsetDeleteResponseTopic(name="t", partitions=(OffsetDeleteResponsePartition(
            partition_index=0, error_code=GROUP_SUBSCRIBED_TO_TOPIC),)),
        OffsetDeleteResponseTopic(name="u", partitions=(OffsetDeleteResponsePartition(
            partition_index=0, error_code=0),)),
    ))
    assert set(service.fetch_offsets("g")) == {("t", 0)}


async def test_offset_delete_keeps_every_topic_of_a_member_whose_subscription_is_unread(
        service: BrokerService) -> None:
    """Bytes of the consumer protocol that are no subscription: the broker cannot tell
    what the member reads, and counts every topic as subscribed (Kafka's rule)."""
    await commit(service, "", -1, {0: 5})
    await commit(service, "", -1, {0: 1}, topic="u")
    joined = await join(service, b"\x00\x00\xff")  # version 0, then a cut count
    assert joined.error_code == 0
    response = await call(h.offset_delete, 0, offset_delete("g", t=(0,), u=(0,)), service)
    assert response == OffsetDeleteResponse(topics=tuple(
        OffsetDeleteResponseTopic(name=name, partitions=(OffsetDeleteResponsePartition(
            partition_index=0, error_code=GROUP_SUBSCRIBED_TO_TOPIC),))
        for name in ("t", "u")
    ))
    assert set(service.fetch_offsets("g")) == {("t", 0), ("u", 0)}


@pytest.mark.parametrize(("group", "code"), [("nope", GROUP_ID_NOT_FOUND),
                                             ("", INVALID_GROUP_ID)])
async def test_offset_delete_refused_whole_has_no_topics(
        service: BrokerService, group: str, code: int) -> None:
    response = await call(h.offset_delete, 0, offset_delete(group, t=(0,)), service)
    assert response == OffsetDeleteResponse(error_code=code)
