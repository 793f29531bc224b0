"""A partition of a cluster: the same seam as ``Partition``, with Raft inside.

The Raft group of the partition (``raft/multi_driver``) owns its log: the leader
proposes each produced batch as one entry (KIP-595: the entry's offsets are the
batch's, its term the batch's partition leader epoch) and the followers store the
leader's bytes unchanged. What ``append`` waits for, by acks level:

    acks 0     nothing: the entry is in the leader's log (not yet durable)
    acks 1     the leader's own log holds it durably (its WAL fsync)
    acks all   a majority holds it durably: Raft committed it

Consumers read up to the high watermark, which is the group's commit (the driver
sets it after each Ready and the partition wakes its waiters when it moves). Only the
leader serves produce and fetch; a follower answers ``NOT_LEADER_OR_FOLLOWER`` with the
leader it knows, so clients refresh their metadata and go there.

Idempotent producers: a batch whose (producer, epoch, sequence) the log already holds
is answered with the original offsets and never proposed again; one out of turn is
refused before it reaches the group (the log's producer state is the leader's, and a
follower's follows every batch it stores, so a new leader keeps deduplicating).

A retried duplicate is answered no sooner than its original would be: the log may
hold the original without Raft having committed it yet (a leader that appended it,
then lost its followers for a while, or a new leader that has not committed its
predecessor's tail), and acks=all promises a majority holds the batch. So the retry
waits for the original's entry as the original's request did (persisted here for
acks 1, committed for acks all), and hears NOT_LEADER_OR_FOLLOWER if it was replaced.

A batch refused NOT_LEADER_OR_FOLLOWER leaves a gap its producer will fill by
re-sending it, while the batches it pipelined after it arrive first: as long as the
gap is that refused batch (``producer_order.RefusedBatches``: same producer and epoch,
the log does not hold the refused sequence, a few seconds at most), they are answered
NOT_LEADER_OR_FOLLOWER too, never OUT_OF_ORDER_SEQUENCE. That matters when a leader
refuses a proposal during a leadership hand-off and then stays leader (the hand-off
failed: every broker was stopping): to librdkafka, OUT_OF_ORDER_SEQUENCE means lost
batches, and it bumps its epoch and re-sends whatever it had in flight, storing twice
the batches that were in fact stored. A Kafka broker that is not the leader answers
every batch NOT_LEADER_OR_FOLLOWER, and clients retry that in order, same epoch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from sentinel.broker.arrivals import Place
from sentinel.broker.partition import AppendOutcome, Partition
from sentinel.broker.producer_order import RefusedBatches
from sentinel.broker.validation import Acks
from sentinel.errors import InvalidArgumentError, NotLeaderError, SentinelError
from sentinel.log.errors import OffsetOutOfRangeError
from sentinel.log.leader_epochs import check_current_epoch
from sentinel.log.partition_log import PartitionLog
from sentinel.log.producer_state import ProducerBatch, check_append
from sentinel.log.types import ReadResult
from sentinel.raft.errors import ProposalRefusedError
from sentinel.raft.log import Entry
from sentinel.raft.partition_log_adapter import PartitionRaftLog, log_start_batch
from sentinel.record import BatchHeader, iter_batches, parse_header

if TYPE_CHECKING:
    from sentinel.raft.multi_driver import MultiRaftDriver

__all__ = ["ReplicatedPartition"]


class ReplicatedPartition(Partition):
    """Partition ``index`` of ``topic``, replicated by Raft group ``group``."""

    def __init__(
        self,
        topic: str,
        index: int,
        plog: PartitionLog,
        *,
        driver: MultiRaftDriver,
        group: int,
        raft_log: PartitionRaftLog,
        address_of: Callable[[int | None], str | None],
    ) -> None:
        super().__init__(topic, index, plog, sync_always=True)
        self.group = group
        self._driver = driver
        self._raft_log = raft_log
        self._address_of = address_of
        #: Producers' batches answered NOT_LEADER_OR_FOLLOWER, whose gap is theirs.
        self._refused = RefusedBatches()

    # ------------------------------------------------------------ leadership

    @property
    def leader(self) -> int | None:
        try:
            return self._driver.core(self.group).leader
        except NotLeaderError:  # the group is gone (the topic was deleted)
            return None

    @property
    def term(self) -> int:
        """The group's term: the partition leader epoch Kafka clients see."""
        return self._driver.core(self.group).term

    @property
    def leader_epoch(self) -> int:
        return self.term

    def check_leader(self) -> None:
        """Raise NOT_LEADER_OR_FOLLOWER (with the leader's client address, if known)
        unless this broker leads the partition now."""
        core = self._driver.core(self.group)
        if core.lead is None:
            raise NotLeaderError(
                f"broker {core.id} does not lead partition {self.name}"
                + (f" (broker {core.leader} does)" if core.leader is not None else ""),
                self._address_of(core.leader),
            )

    # ----------------------------------------------------------------- reads

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        self.check_leader()
        return super().read(offset, max_bytes)

    def end_offset_for_epoch(self, requested: int, current: int = -1) -> tuple[int, int]:
        """Kafka's OffsetForLeaderEpoch at the leader: epochs are the Raft terms the
        batches carry (``PartitionRaftLog.epoch_end_offset``)."""
        self.check_leader()
        check_current_epoch(self.name, current, self.term)
        return self._raft_log.epoch_end_offset(requested)

    # ---------------------------------------------------------------- append

    async def append(
        self, batches: bytes | memoryview, acks: Acks, place: Place | None = None
    ) -> AppendOutcome:
        if place is None:
            place = self.arrivals.enter()
        try:
            views = list(iter_batches(batches))
            if not views:
                raise InvalidArgumentError("the produce request carries no record batch")
            try:
                return await self._append(views, acks, place)
            except NotLeaderError:
                # The producer re-sends this batch; until then its batches after it are
                # answered so as well (module docstring).
                self._note_refused(views[0])
                raise
        finally:
            place.leave()

    async def _append(self, views: list[memoryview], acks: Acks, place: Place) -> AppendOutcome:
        """Propose the batches in ``place``'s turn (``Partition.take_turn``), leave it,
        then wait for them as ``acks`` asks."""
        self.check_leader()
        await self.take_turn(views[0], place, open_files=False)
        self.check_leader()  # leadership may have moved while we waited
        first = parse_header(views[0])
        if first.producer_id >= 0:
            entry = self.log.producer_state(first.producer_id)
            if self._refused.behind_refusal(entry, first, _now()):
                raise NotLeaderError(
                    f"partition {self.name}: an earlier batch of producer "
                    f"{first.producer_id} was refused and is not stored yet (sequence "
                    f"{first.base_sequence} comes after it): send that one first",
                    None,
                )
            original = check_append(entry, first)
            if original is not None:  # a retry of a batch the log holds: its offsets
                place.leave()
                await self._wait_original(original, acks)
                return AppendOutcome(
                    original.base_offset,
                    original.log_append_time_ms,
                    self.log.log_start_offset,
                    True,
                    original.last_offset - original.base_offset + 1,
                    self.log.high_watermark,
                )
        # Every batch is checked before any is proposed: a bad one refuses the whole
        # request and none of it reaches the group (as at a single broker).
        checked = []
        for view in views:
            data = bytes(view)  # the entry's own bytes (the request's buffer is reused)
            checked.append((data, self.log.check_produce(data)[1]))
        entries: list[Entry] = []
        try:
            for data, header in checked:
                self._raft_log.expect((data, header))
                try:
                    entries.append(
                        self._driver.propose(self.group, data, header.last_offset_delta + 1)
                    )
                finally:
                    self._raft_log.expect(None)
        except ProposalRefusedError as exc:  # a leadership transfer is under way
            raise NotLeaderError(
                f"partition {self.name} is moving to another leader: {exc}", None
            ) from exc
        finally:
            if entries:
                self.appended_signal.fire()
        place.leave()
        await self._wait_entry(entries[-1], acks)
        return AppendOutcome(
            entries[0].base,
            -1,
            self.log.log_start_offset,
            False,
            sum(e.count for e in entries),
            self.log.high_watermark,
        )

    async def _wait_entry(self, entry: Entry, acks: Acks) -> None:
        """Wait until ``entry`` is as durable as ``acks`` asks; NOT_LEADER_OR_FOLLOWER,
        naming the leader, if another leader's entry replaced it meanwhile."""
        try:
            if acks is Acks.LEADER:
                await self._driver.wait_persisted(self.group, entry)
            elif acks is Acks.ALL:
                await self._driver.wait_committed(self.group, entry)
        except NotLeaderError as exc:  # replaced by another leader's entry: name it
            raise NotLeaderError(str(exc), self._address_of(self.leader)) from exc

    async def _wait_original(self, original: ProducerBatch, acks: Acks) -> None:
        """A retried duplicate: wait for its original's entry as the original's request
        did, unless the high watermark (the commit) already covers it."""
        if acks is Acks.NONE or self.log.high_watermark > original.last_offset:
            return
        base = original.base_offset
        if base < self._raft_log.log_start:
            return  # retention removed it: it was committed
        term = self._raft_log.term_at(base)
        if term is None:  # the log no longer holds it (truncated under us)
            raise NotLeaderError(
                f"partition {self.name}: the batch at {base} is no longer in the log",
                self._address_of(self.leader),
            )
        await self._wait_entry(Entry(base, term, original.last_offset - base + 1), acks)

    def _note_refused(self, first_batch: memoryview) -> None:
        try:
            header: BatchHeader = parse_header(first_batch)
        except SentinelError:
            return  # not a batch: no producer to remember (the log would refuse it)
        self._refused.refused(header, _now())

    # ------------------------------------------------------------ DeleteRecords

    async def delete_records(self, before_offset: int) -> int:
        """Kafka's DeleteRecords, decided here at the leader: an entry of the group's
        log carrying the new log start; every replica moves its start there once it is
        committed (down to the batch boundary at or below it: a batch is never split).
        Returns this replica's log start after the move."""
        self.check_leader()
        hw, start = self.log.high_watermark, self.log.log_start_offset
        if before_offset == -1:
            before_offset = hw
        if not 0 <= before_offset <= hw:
            raise OffsetOutOfRangeError(before_offset, start, hw)
        if before_offset <= start:
            return start
        try:
            entry = self._driver.propose(self.group, log_start_batch(before_offset), 1)
        except ProposalRefusedError as exc:  # a leadership transfer is under way
            raise NotLeaderError(
                f"partition {self.name} is moving to another leader: {exc}", None
            ) from exc
        try:
            await self._driver.wait_committed(self.group, entry)
        except NotLeaderError as exc:
            raise NotLeaderError(str(exc), self._address_of(self.leader)) from exc
        return await self._driver.advance_start(self.group, before_offset)

    # ------------------------------------------------------------ the driver

    def committed(self) -> None:
        """The driver moved the high watermark: wake the consumers waiting on it."""
        self._announce()

    def role_changed(self) -> None:
        """Leadership moved: every waiter looks again (and hears NOT_LEADER here)."""
        self.wake_all()


def _now() -> float:
    """The event loop's clock (monotonic, seconds): the refusals' time."""
    return asyncio.get_running_loop().time()
