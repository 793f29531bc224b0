"""Deleting a group's committed offsets of some partitions (Kafka's OffsetDelete, KIP-496)
and whole groups (DeleteGroups): the coordinator's rules as pure calls, then
``BrokerService`` in process on the in-memory filesystem, including that a deletion
survives a restart and that a commit landing while a deletion is written is kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest

from sentinel.broker.group_driver import GroupDriver, GroupError
from sentinel.broker.group_events import (
    ErrorCode,
    JoinProtocol,
    OffsetAndMetadata,
    OffsetDeleteResult,
    TopicPartition,
)
from sentinel.broker.groups import GroupCoordinator
from sentinel.broker.outcomes import OffsetDeleteOutcome
from sentinel.broker.service import BrokerService
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import MemFS

OM = OffsetAndMetadata


# --- the coordinator, pure ------------------------------------------------------------


def coordinator_with(group: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
                     ) -> GroupCoordinator:
    coord = GroupCoordinator({"t": 2, "u": 2}.get)
    coord.load_offsets(group, offsets)
    return coord


def join(coord: GroupCoordinator, group: str, *topics: str, protocol_type: str = "consumer"
         ) -> None:
    result = coord.join(group, None, client_id="c", session_timeout_s=10.0,
                        protocol_type=protocol_type,
                        protocols=[JoinProtocol("range", topics)], now=0.0)
    assert result.error is ErrorCode.NONE


def test_an_empty_group_may_lose_any_offset_and_nothing_changes_before_the_driver_says_so(
) -> None:
    t0, t1, u0 = OM(5, "a"), OM(6), OM(7)
    coord = coordinator_with("g", {("t", 0): t0, ("t", 1): t1, ("u", 0): u0})
    result = coord.delete_offsets("g", [("t", 0), ("u", 0), ("u", 1)])
    # u1 had no offset: nothing to delete, no error (as Kafka answers).
    assert result == OffsetDeleteResult(ErrorCode.NONE, {}, {("t", 0): t0, ("u", 0): u0})
    assert coord.fetch_offsets("g") == {("t", 0): t0, ("t", 1): t1, ("u", 0): u0}
    coord.offsets_deleted("g", result.to_delete)
    assert coord.fetch_offsets("g") == {("t", 1): t1}


def test_a_group_with_members_keeps_the_offsets_of_the_topics_they_subscribe_to() -> None:
    coord = coordinator_with("g", {("t", 0): OM(1), ("u", 0): OM(2)})
    join(coord, "g", "t")
    result = coord.delete_offsets("g", [("t", 0), ("t", 1), ("u", 0)])
    assert result.error is ErrorCode.NONE
    assert result.partition_errors == {
        ("t", 0): ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC,
        ("t", 1): ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC,
    }
    assert result.to_delete == {("u", 0): OM(2)}
    assert result.error_for(("u", 0)) is ErrorCode.NONE


def test_whole_request_refusals() -> None:
    coord = coordinator_with("g", {("t", 0): OM(1)})
    assert coord.delete_offsets("nope", [("t", 0)]) == OffsetDeleteResult(
        ErrorCode.GROUP_ID_NOT_FOUND
    )
    assert coord.delete_offsets("", [("t", 0)]).error is ErrorCode.INVALID_GROUP_ID
    # Members of another protocol type: their subscriptions are opaque, nothing goes.
    join(coord, "g", "u", protocol_type="connect")
    refused = coord.delete_offsets("g", [("t", 0)])
    assert refused.error is ErrorCode.NON_EMPTY_GROUP
    assert refused.error_for(("t", 0)) is ErrorCode.NON_EMPTY_GROUP
    assert refused.to_delete == {}


def test_delete_group_refuses_an_empty_id() -> None:
    coord = coordinator_with("g", {("t", 0): OM(1)})
    assert coord.delete_group("").error is ErrorCode.INVALID_GROUP_ID


def test_a_commit_landing_while_the_deletion_is_written_is_kept() -> None:
    coord = coordinator_with("g", {("t", 0): OM(1), ("t", 1): OM(2)})
    result = coord.delete_offsets("g", [("t", 0), ("t", 1)])
    newer = coord.commit_offsets("g", "", -1, {("t", 0): OM(1)}, 0.0)  # an equal value
    assert newer.to_persist is not None
    coord.offsets_persisted(newer.to_persist)
    coord.offsets_deleted("g", result.to_delete)
    assert coord.fetch_offsets("g") == {("t", 0): OM(1)}


def test_an_empty_group_left_without_offsets_is_reaped() -> None:
    coord = coordinator_with("g", {("t", 0): OM(1)})
    result = coord.delete_offsets("g", [("t", 0)])
    coord.offsets_deleted("g", result.to_delete)
    coord.tick(1.0)
    assert coord.list_groups() == []


# --- the broker service ---------------------------------------------------------------


def config() -> BrokerConfig:
    return BrokerConfig(data_dir="/data", node_id=1, port=9555,
                        group_min_session_timeout_ms=500, sync_mode="always")


@pytest.fixture
def fs() -> MemFS:
    return MemFS()


@pytest.fixture
async def service(fs: MemFS) -> AsyncIterator[BrokerService]:
    svc = BrokerService(config(), fs, SystemClock())
    await svc.start()
    await svc.create_topic("a", 2)
    await svc.create_topic("b", 1)
    try:
        yield svc
    finally:
        await svc.stop()


async def commit(service: BrokerService, group: str, *tps: TopicPartition) -> None:
    results = await service.commit_offsets(group, "", -1, {tp: OM(9, "m") for tp in tps})
    assert [r.error for r in results] == [None] * len(tps)


def codes(outcomes: tuple[OffsetDeleteOutcome, ...]) -> list[tuple[str, int, int]]:
    return [(o.topic, o.partition, o.error_code) for o in outcomes]


async def test_delete_offsets_answers_per_partition_in_the_order_given(
        service: BrokerService) -> None:
    await commit(service, "g", ("a", 0), ("a", 1), ("b", 0))
    outcomes = await service.delete_offsets(
        "g", [("a", 1), ("nope", 0), ("a", 5), ("b", 0)]
    )
    assert codes(outcomes) == [("a", 1, 0), ("nope", 0, 3), ("a", 5, 3), ("b", 0, 0)]
    assert outcomes[0].error is None
    assert service.fetch_offsets("g") == {("a", 0): OM(9, "m")}


async def test_a_member_reading_the_topic_keeps_its_offsets(service: BrokerService) -> None:
    await commit(service, "g", ("a", 0), ("b", 0))
    joined = await service.join_group("g", "", topics=["a"], session_timeout_ms=10_000)
    outcomes = await service.delete_offsets("g", [("a", 0), ("b", 0)])
    assert codes(outcomes) == [("a", 0, 86), ("b", 0, 0)]
    refused = outcomes[0].error
    assert isinstance(refused, GroupError) and "subscribes to 'a'" in str(refused)
    assert service.fetch_offsets("g") == {("a", 0): OM(9, "m")}
    # Once the member is gone, the group is Empty and the offset may go.
    service.leave_group("g", joined.member_id)
    assert codes(await service.delete_offsets("g", [("a", 0)])) == [("a", 0, 0)]
    assert service.fetch_offsets("g") == {}


async def test_an_unknown_group_is_refused_whole(service: BrokerService) -> None:
    with pytest.raises(GroupError) as caught:
        await service.delete_offsets("nope", [("a", 0), ("zzz", 0)])
    assert caught.value.kafka_code == 69  # GROUP_ID_NOT_FOUND
    assert "unknown group 'nope'" in str(caught.value)


async def test_deleted_offsets_stay_deleted_after_a_restart(
        service: BrokerService, fs: MemFS) -> None:
    await commit(service, "g", ("a", 0), ("a", 1))
    await commit(service, "gone", ("b", 0))
    await service.delete_offsets("g", [("a", 0)])
    await service.delete_group("gone")
    await service.stop()
    again = BrokerService(config(), fs, SystemClock())
    await again.start()
    try:
        assert again.fetch_offsets("g") == {("a", 1): OM(9, "m")}
        assert again.fetch_offsets("gone") == {}
        assert [g.group_id for g in again.list_groups()] == ["g"]
    finally:
        await again.stop()


async def test_delete_group_codes(service: BrokerService) -> None:
    await commit(service, "empty", ("a", 0))
    await service.join_group("busy", "", topics=["a"], session_timeout_ms=10_000)
    await service.delete_group("empty")
    assert service.fetch_offsets("empty") == {}
    for group, code in (("busy", 68), ("empty", 69), ("", 24)):
        with pytest.raises(GroupError) as caught:
            await service.delete_group(group)
        assert caught.value.kafka_code == code, group


class _OffsetsLog:
    """An ``OffsetPersister`` like a cluster's ``__consumer_offsets``: records deletions."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, list[TopicPartition]]] = []

    async def commit_offsets(self, group_id: str,
                             offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        await asyncio.sleep(0)

    async def delete_group_offsets(self, group_id: str) -> None:
        await asyncio.sleep(0)

    async def delete_offsets(self, group_id: str, partitions: Sequence[TopicPartition]) -> None:
        await asyncio.sleep(0)
        self.deleted.append((group_id, list(partitions)))


async def test_with_an_offsets_log_partition_deletion_goes_through_it(
        service: BrokerService) -> None:
    driver: GroupDriver = service.groups
    await commit(service, "g", ("a", 0), ("a", 1))
    log = _OffsetsLog()
    driver.use_offset_log(log)
    await driver.delete_offsets("g", [("a", 0)])
    assert log.deleted == [("g", [("a", 0)])]
    assert driver.fetch_offsets("g", None) == {("a", 1): OM(9, "m")}
