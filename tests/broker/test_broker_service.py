"""``BrokerService`` in-process on the in-memory filesystem: produce and a fetch over many
partitions (min bytes, max wait, byte limits, errors per partition), the follow
iterator, per-partition commit results, metadata, the group calls with their defaults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sentinel.broker.group_driver import GroupError
from sentinel.broker.group_events import JoinProtocol, MemberAssignment, OffsetAndMetadata
from sentinel.broker.outcomes import FetchPosition, ProduceEntry
from sentinel.broker.service import BrokerService
from sentinel.broker.topics import UnknownTopicOrPartitionError
from sentinel.broker.validation import Acks
from sentinel.clock import SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import MemFS
from sentinel.record import build_batch

NODE = 3


def batch(n: int = 1, size: int = 10, tag: str = "v") -> bytes:
    return build_batch(
        [(b"k", (tag * size).encode()[:size], (), 1_700_000_000_000 + i) for i in range(n)]
    )


@pytest.fixture
async def service() -> AsyncIterator[BrokerService]:
    config = BrokerConfig(
        data_dir="/data",
        node_id=NODE,
        port=9555,
        advertised_host="broker.test",
        group_min_session_timeout_ms=500,
        sync_mode="always",
    )
    svc = BrokerService(config, MemFS(), SystemClock())
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def test_produce_then_fetch_over_many_partitions(service: BrokerService) -> None:
    await service.create_topic("a", 3)
    b0, b2 = batch(2, tag="x"), batch(3, tag="y")
    assert (await service.produce("a", 0, b0, Acks.ALL)).base_offset == 0
    assert (await service.produce("a", 2, b2, Acks.LEADER)).records == 3
    out = await service.fetch_many([FetchPosition("a", p, 0) for p in range(3)])
    assert [(o.partition, o.error_code, o.high_watermark) for o in out] == [
        (0, 0, 2),
        (1, 0, 0),
        (2, 0, 3),
    ]
    assert out[0].batches == service.partition("a", 0).read(0, 1 << 20).batches[0]
    assert out[1].batches == b"" and out[2].next_offset == 3


async def test_byte_limits_per_partition_and_per_response(service: BrokerService) -> None:
    await service.create_topic("a", 2)
    for _ in range(3):
        await service.produce("a", 0, batch(1, 300))
    await service.produce("a", 1, batch(1, 300))
    one = len(batch(1, 300))
    # Per partition: one batch fits; at least one whole batch even under the limit.
    (o,) = await service.fetch_many([FetchPosition("a", 0, 0, one + 10)])
    assert len(o.batches) == one and o.next_offset == 1
    (o,) = await service.fetch_many([FetchPosition("a", 0, 0, 1)])
    assert len(o.batches) == one
    # Per response: the first partition fills it; the second waits for the next fetch.
    first, second = await service.fetch_many(
        [FetchPosition("a", 0, 0), FetchPosition("a", 1, 0)], max_bytes=2 * one
    )
    assert len(first.batches) == 2 * one
    assert second.batches == b"" and second.next_offset == 0 and second.error is None
    # A response limit below one batch still returns the first partition's first batch.
    first, second = await service.fetch_many(
        [FetchPosition("a", 0, 0), FetchPosition("a", 1, 0)], max_bytes=1
    )
    assert len(first.batches) == one and second.batches == b""


async def test_fetch_waits_for_min_bytes_over_all_partitions(service: BrokerService) -> None:
    await service.create_topic("a", 2)
    one = len(batch(1, 50))
    positions = [FetchPosition("a", 0, 0), FetchPosition("a", 1, 0)]
    fetch = asyncio.ensure_future(
        service.fetch_many(positions, min_bytes=2 * one, max_wait_ms=30_000)
    )
    await service.produce("a", 0, batch(1, 50))
    await asyncio.sleep(0.05)
    assert not fetch.done()  # one batch is there, min bytes asks for two
    await service.produce("a", 1, batch(1, 50))
    out = await fetch
    assert [len(o.batches) for o in out] == [one, one]


async def test_fetch_answers_after_max_wait_with_what_there_is(service: BrokerService) -> None:
    await service.create_topic("a", 2)
    await service.produce("a", 1, batch(1, 50))
    loop = asyncio.get_running_loop()
    started = loop.time()
    out = await service.fetch_many(
        [FetchPosition("a", 0, 0), FetchPosition("a", 1, 0)], min_bytes=1 << 20, max_wait_ms=200
    )
    assert loop.time() - started >= 0.15
    assert out[0].batches == b"" and out[1].batches


async def test_a_waiting_fetch_wakes_on_any_partition(service: BrokerService) -> None:
    await service.create_topic("a", 3)
    fetch = asyncio.ensure_future(
        service.fetch_many([FetchPosition("a", p, 0) for p in range(3)], max_wait_ms=30_000)
    )
    await asyncio.sleep(0.01)
    assert not fetch.done()
    await service.produce("a", 2, batch(1))
    out = await fetch
    assert [bool(o.batches) for o in out] == [False, False, True]


async def test_an_error_is_per_partition_and_answers_at_once(service: BrokerService) -> None:
    await service.create_topic("a", 1)
    await service.produce("a", 0, batch(2))
    out = await service.fetch_many(
        [
            FetchPosition("a", 0, 0),
            FetchPosition("a", 5, 0),
            FetchPosition("nope", 0, 0),
            FetchPosition("a", 0, 99),
        ],
        min_bytes=1 << 20,
        max_wait_ms=30_000,
    )
    assert [o.error_code for o in out] == [0, 3, 3, 1]
    assert out[0].batches
    with pytest.raises(UnknownTopicOrPartitionError):
        await service.fetch("nope", 0, 0, 1 << 20)


async def test_deleting_a_topic_wakes_its_waiting_fetch(service: BrokerService) -> None:
    await service.create_topic("gone", 1)
    fetch = asyncio.ensure_future(service.fetch("gone", 0, 0, 1 << 20, max_wait_ms=30_000))
    await asyncio.sleep(0.01)
    await service.delete_topic("gone")
    with pytest.raises(UnknownTopicOrPartitionError):
        await fetch


async def test_consume_iterates_until_the_end_or_follows(service: BrokerService) -> None:
    await service.create_topic("a", 1)
    for i in range(3):
        await service.produce("a", 0, batch(1, 100, tag=str(i)))
    got = [o.next_offset async for o in service.consume("a", 0, 0, 1)]
    assert got == [1, 2, 3]
    follow = service.consume("a", 0, 3, 1 << 20, follow=True)
    nxt = asyncio.ensure_future(follow.__anext__())
    await asyncio.sleep(0.01)
    await service.produce("a", 0, batch(1))
    assert (await nxt).next_offset == 4
    await follow.aclose()


async def test_commit_answers_per_partition(service: BrokerService) -> None:
    await service.create_topic("a", 2)
    results = await service.commit_offsets(
        "g",
        "",
        -1,
        {
            ("a", 0): OffsetAndMetadata(5, "m"),
            ("nope", 0): OffsetAndMetadata(1, ""),
            ("a", 7): OffsetAndMetadata(1, ""),
            ("a", 1): OffsetAndMetadata(-5, ""),
        },
    )
    assert [(r.topic, r.partition, r.error_code) for r in results] == [
        ("a", 0, 0),
        ("nope", 0, 3),
        ("a", 7, 3),
        ("a", 1, 42),
    ]
    assert service.fetch_offsets("g") == {("a", 0): OffsetAndMetadata(5, "m")}


async def test_a_commit_the_group_refuses_is_refused_for_every_partition(
    service: BrokerService,
) -> None:
    await service.create_topic("a", 2)
    joined = await service.join_group("g", "", topics=["a"], session_timeout_ms=10_000)
    offsets = {("a", 0): OffsetAndMetadata(1, ""), ("a", 1): OffsetAndMetadata(1, "")}
    results = await service.commit_offsets("g", joined.member_id, joined.generation + 5, offsets)
    assert {r.error_code for r in results} == {22}  # ILLEGAL_GENERATION
    assert all(isinstance(r.error, GroupError) for r in results)
    ok = await service.commit_offsets("g", joined.member_id, joined.generation, offsets)
    assert [r.error for r in ok] == [None, None]


async def test_groups_with_defaults_heartbeat_list_and_leave(service: BrokerService) -> None:
    await service.create_topic("a", 2)
    joined = await service.join_group("g", "", topics=["a"], session_timeout_ms=10_000)
    assert joined.assignment is not None
    assert joined.assignment.partitions == {"a": (0, 1)}
    assert joined.protocol == "roundrobin"
    service.heartbeat("g", joined.member_id, joined.generation)
    (summary,) = service.list_groups()
    assert (summary.group_id, summary.state, summary.members) == ("g", "Stable", 1)
    assert service.describe_group("g")[0].members[0].client_id == "sentinel-client"
    service.leave_group("g", joined.member_id)
    with pytest.raises(GroupError) as caught:
        service.heartbeat("g", joined.member_id, joined.generation)
    assert caught.value.kafka_code == 25  # UNKNOWN_MEMBER_ID


async def test_metadata_names_this_broker_and_every_partition(service: BrokerService) -> None:
    await service.create_topic("a", 2)
    meta = await service.metadata()
    assert [(b.node_id, b.host, b.port) for b in meta.brokers] == [(NODE, "broker.test", 9555)]
    assert meta.controller_id == NODE
    (topic,) = meta.topics
    assert [(p.partition, p.leader, p.replicas, p.isr) for p in topic.partitions] == [
        (0, NODE, (NODE,), (NODE,)),
        (1, NODE, (NODE,), (NODE,)),
    ]
    assert topic.configs["cleanup.policy"] == "delete" and topic.error_code == 0
    named = await service.metadata(["a", "nope"])
    assert [(t.name, t.error_code) for t in named.topics] == [("a", 0), ("nope", 3)]
    created = await service.metadata(["fresh"], auto_create=True)
    assert created.topics[0].error is None and len(created.topics[0].partitions) == 1


async def test_produce_many_answers_per_partition(service: BrokerService) -> None:
    await service.create_topic("a", 2)
    out = await service.produce_many(
        [
            ProduceEntry("a", 0, batch(2)),
            ProduceEntry("a", 1, batch(1)),
            ProduceEntry("a", 9, batch(1)),
            ProduceEntry("a", 0, b"\x00" * 70),
        ],
        acks=-1,
    )
    assert [(o.partition, o.error_code) for o in out] == [(0, 0), (1, 0), (9, 3), (0, 2)]
    assert (out[0].base_offset, out[1].base_offset) == (0, 0)
    assert service.partition("a", 0).high_watermark == 2
    # One partition (the usual request, served without gathering): the same answers.
    (alone,) = await service.produce_many([ProduceEntry("a", 1, batch(3))], acks=-1)
    assert (alone.partition, alone.error_code, alone.base_offset) == (1, 0, 1)
    (refused,) = await service.produce_many([ProduceEntry("a", 9, batch(1))], acks=-1)
    assert (refused.partition, refused.error_code, refused.base_offset) == (9, 3, -1)


async def test_kafka_mode_join_and_sync_hand_the_leaders_assignment(
    service: BrokerService,
) -> None:
    await service.create_topic("a", 2)
    protocols = [JoinProtocol("range", ("a",), b"meta")]
    joined = await service.join_group(
        "k", "", topics=["a"], session_timeout_ms=10_000, protocols=protocols
    )
    assert joined.leader_id == joined.member_id
    assert [(m.member_id, m.metadata) for m in joined.members] == [(joined.member_id, b"meta")]
    mine = MemberAssignment({"a": (0, 1)}, b"raw")
    synced = await service.sync_group(
        "k", joined.member_id, joined.generation, {joined.member_id: mine}
    )
    assert synced.assignment.partitions == {"a": (0, 1)} and synced.assignment.raw == b"raw"
    with pytest.raises(GroupError) as caught:
        await service.sync_group("k", joined.member_id, joined.generation + 1, None)
    assert caught.value.kafka_code == 22
