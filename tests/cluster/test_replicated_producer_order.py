"""An idempotent producer's batches at a replicated partition's leader, in-process
(three ``BrokerService``s on loopback): the answers that keep a Kafka client retrying
in order, and a retried duplicate answered no sooner than its original.

Found by an outside attack (SIGTERM of all three brokers under an idempotent acks=all
librdkafka producer): a stopping leader refused batch k as NOT_LEADER (its leadership
hand-off was under way) but stayed leader; the pipelined batch k+1 then heard
OUT_OF_ORDER_SEQUENCE, on which librdkafka bumps its epoch and re-sends what it had
in flight, and a record already stored was stored twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

from cluster.test_cluster_service import Trio, eventually, running, user_values
from sentinel.broker.replicated_partition import ReplicatedPartition
from sentinel.broker.service import BrokerService
from sentinel.broker.validation import Acks
from sentinel.errors import NotLeaderError
from sentinel.log.errors import OutOfOrderSequenceError
from sentinel.raft.errors import ProposalRefusedError
from sentinel.raft.messages import AppendEntries
from sentinel.raft.multi import Envelope
from sentinel.record import build_batch

PID = 4242


def seq_batch(seq: int, epoch: int = 0) -> bytes:
    """Producer ``PID``'s one-record batch at sequence ``seq``; its value names it."""
    return build_batch(
        [(None, b"seq-%d" % seq, (), 1_700_000_000_000 + seq)],
        producer_id=PID,
        producer_epoch=epoch,
        base_sequence=seq,
    )


@pytest.fixture
async def trio() -> AsyncIterator[Trio]:
    async with running(Trio()) as t:
        yield t


async def leader_of(trio: Trio, topic: str) -> tuple[BrokerService, ReplicatedPartition]:
    async def create() -> None:
        await trio.services[1].create_topic(topic, 1)

    await eventually(create)

    async def leader() -> int:
        found = trio.leader_of(topic, 0)
        assert found is not None
        return found

    service = trio.services[await eventually(leader)]
    part = service.partition(topic, 0)
    assert isinstance(part, ReplicatedPartition)
    return service, part


@contextmanager
def refuse_next_proposal(part: ReplicatedPartition) -> Iterator[list[int]]:
    """The leader's next proposal to ``part``'s group is refused as during a leadership
    hand-off (``ProposalRefusedError``), and the leader stays leader; yields the list of
    refusals made."""
    driver = part._driver
    real = driver.propose
    refused: list[int] = []

    def propose(group: int, data: bytes, count: int):  # type: ignore[no-untyped-def]
        if group == part.group and not refused:
            refused.append(group)
            raise ProposalRefusedError("node is handing leadership to 2 (test)")
        return real(group, data, count)

    driver.propose = propose  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        driver.propose = real  # type: ignore[method-assign]


def stored_values(part: ReplicatedPartition) -> list[bytes | None]:
    stored = part.log.read(0, 1 << 20, include_uncommitted=True).batches
    return user_values(b"".join(bytes(b) for b in stored))


async def test_a_batch_behind_a_refused_proposal_hears_not_leader_not_out_of_order(
    trio: Trio,
) -> None:
    """Batch 1 is refused (NOT_LEADER, the leader stays); the pipelined batch 2 is
    answered NOT_LEADER_OR_FOLLOWER too (retriable: the client refreshes its metadata
    and re-sends 1 then 2 in order, same epoch), never OUT_OF_ORDER_SEQUENCE; after
    the re-send each is stored exactly once."""
    service, part = await leader_of(trio, "gap")
    await service.produce("gap", 0, seq_batch(0), Acks.ALL)
    with refuse_next_proposal(part) as refused, pytest.raises(NotLeaderError):
        await service.produce("gap", 0, seq_batch(1), Acks.ALL)
    assert refused
    with pytest.raises(NotLeaderError) as behind:
        await service.produce("gap", 0, seq_batch(2), Acks.ALL)
    assert behind.value.kafka_code == 6
    # The client re-sends in order: both stored, once each.
    one = await service.produce("gap", 0, seq_batch(1), Acks.ALL)
    two = await service.produce("gap", 0, seq_batch(2), Acks.ALL)
    assert not one.duplicate and not two.duplicate
    assert two.base_offset > one.base_offset
    assert stored_values(part) == [b"seq-0", b"seq-1", b"seq-2"]
    # Once the refused batch is stored, a real gap is OUT_OF_ORDER_SEQUENCE again.
    with pytest.raises(OutOfOrderSequenceError):
        await service.produce("gap", 0, seq_batch(5), Acks.ALL)
    assert stored_values(part) == [b"seq-0", b"seq-1", b"seq-2"]


async def test_a_refusal_covers_only_its_producer_and_epoch(trio: Trio) -> None:
    """The refusal of one producer's batch changes nothing for another producer's gap,
    nor for the same producer in a new epoch (which numbers from 0 again)."""
    service, part = await leader_of(trio, "gap2")
    await service.produce("gap2", 0, seq_batch(0), Acks.ALL)
    with refuse_next_proposal(part), pytest.raises(NotLeaderError):
        await service.produce("gap2", 0, seq_batch(1), Acks.ALL)
    other = build_batch(
        [(None, b"other", (), 1_700_000_000_000)],
        producer_id=PID + 1, producer_epoch=0, base_sequence=0,
    )
    await service.produce("gap2", 0, other, Acks.ALL)
    gap = build_batch(
        [(None, b"other-gap", (), 1_700_000_000_000)],
        producer_id=PID + 1, producer_epoch=0, base_sequence=3,
    )
    with pytest.raises(OutOfOrderSequenceError):
        await service.produce("gap2", 0, gap, Acks.ALL)
    # The same producer in epoch 1 must start at 0: 4 is out of order, as ever.
    with pytest.raises(OutOfOrderSequenceError):
        await service.produce("gap2", 0, seq_batch(4, epoch=1), Acks.ALL)
    await service.produce("gap2", 0, seq_batch(0, epoch=1), Acks.ALL)
    assert stored_values(part) == [b"seq-0", b"other", b"seq-0"]


@contextmanager
def hold_appends(part: ReplicatedPartition) -> Iterator[None]:
    """The leader sends no AppendEntries of ``part``'s group (heartbeats still go, so
    the followers keep it as leader): nothing it appends now can commit."""
    driver = part._driver
    real = driver._send

    def send(env: Envelope) -> None:
        kept = tuple(
            (g, m) for g, m in env.messages
            if not (g == part.group and isinstance(m, AppendEntries))
        )
        real(Envelope(env.src, env.dst, env.beats, env.acks, kept))

    driver._send = send
    try:
        yield
    finally:
        driver._send = real


async def test_a_retried_duplicate_with_acks_all_waits_for_its_original_to_commit(
    trio: Trio,
) -> None:
    """acks=all promises that a majority holds the batch: a retry of a batch the
    leader's log holds but has not committed is answered (with the original offsets)
    only once the commit covers it, never before."""
    service, part = await leader_of(trio, "dup")
    await service.produce("dup", 0, seq_batch(0), Acks.ALL)
    with hold_appends(part):
        first = await service.produce("dup", 0, seq_batch(1), Acks.NONE)
        assert part.high_watermark <= first.base_offset  # in the leader's log only
        retry = asyncio.ensure_future(service.produce("dup", 0, seq_batch(1), Acks.ALL))
        await asyncio.sleep(0.3)  # many ticks: the followers hear heartbeats only
        assert part.high_watermark <= first.base_offset
        assert not retry.done(), "a duplicate was acknowledged before it was committed"
    # The appends go out again: the original commits and the retry hears its offsets.
    answered = await asyncio.wait_for(retry, 10.0)
    assert answered.duplicate and answered.base_offset == first.base_offset
    assert part.high_watermark > first.base_offset
    assert stored_values(part) == [b"seq-0", b"seq-1"]


async def test_a_retried_duplicate_of_a_committed_batch_is_answered_at_once(
    trio: Trio,
) -> None:
    service, _ = await leader_of(trio, "dup2")
    first = await service.produce("dup2", 0, seq_batch(0), Acks.ALL)
    for acks in (Acks.ALL, Acks.LEADER, Acks.NONE):
        again = await asyncio.wait_for(service.produce("dup2", 0, seq_batch(0), acks), 1.0)
        assert again.duplicate and again.base_offset == first.base_offset
