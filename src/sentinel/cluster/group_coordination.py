"""Which broker coordinates which consumer group in a cluster, and where the group's
committed offsets become durable: the partitions of ``__consumer_offsets``
(``cluster/offsets_topic``), as Kafka's ``GroupMetadataManager`` does.

- A group's coordinator is the leader of its offsets partition. A group request at a
  broker that does not lead it answers NOT_COORDINATOR (the client finds the
  coordinator again); at the leader, before the partition is loaded,
  COORDINATOR_LOAD_IN_PROGRESS (Kafka's code 14: retry here).
- Load on election: when this broker becomes the leader of an offsets partition (in
  term T), it waits until the high watermark reaches the log end it saw (everything
  of the earlier terms is then committed: a leader commits them with its own no-op),
  replays the partition from its log start, and restores every group hashing there.
  Only then, and only while it still leads in term T, does it serve those groups.
- When it stops leading, the groups of that partition are dropped from memory: their
  waiting joins and syncs fail with NOT_COORDINATOR and the members rejoin at the new
  coordinator, which has read the same offsets back from the log.
- A commit (the ``OffsetPersister`` of ``GroupDriver``) is one batch appended through
  the partition's ``ReplicatedPartition.append`` with acks=all; the commit is answered
  after Raft committed it. A deleted group leaves tombstones for its offsets.
- Rewrite instead of a log cleaner: the partition is compacted (the topic's
  ``cleanup.policy``), but a replicated log takes no gaps between batches, so once a
  partition's leader has appended ``rewrite_after_bytes`` (and twice the live offsets'
  size) since its last rewrite, it appends every live offset of the partition again,
  as one request (contiguous: it is taken and proposed without yielding, so every
  commit proposed before it is in it and every later one follows it), and once that is
  committed moves the log start to it (DeleteRecords, a Raft entry every replica
  applies). Replay from the new start restores the same offsets; the log stays within
  a few times the live offsets, however long the groups commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from sentinel.broker.group_driver import GroupDriver, GroupError
from sentinel.broker.group_events import ErrorCode, OffsetAndMetadata, TopicPartition
from sentinel.broker.replicated_partition import ReplicatedPartition
from sentinel.broker.validation import Acks
from sentinel.clock import Clock
from sentinel.cluster.metadata import MetadataImage, TopicImage
from sentinel.cluster.offsets_topic import (
    OFFSETS_TOPIC,
    commit_batch,
    partition_for,
    replay,
    tombstone_batch,
)
from sentinel.errors import NotLeaderError, SentinelError
from sentinel.raft.multi_driver import MultiRaftDriver
from sentinel.stopping import cancel_and_wait

log = logging.getLogger(__name__)

LOAD_POLL_S = 0.02  # how often a loading leader looks at its high watermark
LOAD_CHUNK_BYTES = 1 << 20
#: Appended to an offsets partition since its last rewrite before the next one.
REWRITE_AFTER_BYTES = 4 << 20

REWRITE_BATCH_OFFSETS = 1000  # offsets per batch of a rewrite (~100 KB)

Offsets = dict[str, dict[TopicPartition, OffsetAndMetadata]]
T = TypeVar("T")


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class GroupCoordination:
    """The offsets partitions this broker leads, their load state, and the commits."""

    def __init__(
        self,
        node_id: int,
        groups: GroupDriver,
        *,
        driver: MultiRaftDriver,
        image: Callable[[], MetadataImage],
        replica: Callable[[int], ReplicatedPartition | None],
        clock: Clock,
    ) -> None:
        self._node_id = node_id
        self._groups = groups
        self._driver = driver
        self._image = image
        self._replica = replica
        self._clock = clock
        #: offsets partition index -> the term this broker loaded it in (and leads in).
        self._loaded: dict[int, int] = {}
        self._loading: dict[int, tuple[int, asyncio.Task[None]]] = {}
        #: Offsets partition index -> the live offsets of its groups, as proposed (what
        #: a rewrite copies, and the keys a deleted group's tombstones name).
        self._live: dict[int, Offsets] = {}
        #: Offsets partition index -> (bytes appended since the last rewrite or load,
        #: bytes of that rewrite).
        self._written: dict[int, tuple[int, int]] = {}
        self._rewrites: dict[int, asyncio.Task[None]] = {}
        self.rewrite_after_bytes = REWRITE_AFTER_BYTES
        self.rewrites = 0

    # ------------------------------------------------------------ where a group lives

    def _topic(self) -> TopicImage | None:
        return self._image().topics.get(OFFSETS_TOPIC)

    def locate(self, group_id: str) -> tuple[int, int] | None:
        """(partition index, Raft group) of ``group_id``'s offsets partition, or None
        while ``__consumer_offsets`` does not exist yet."""
        topic = self._topic()
        if topic is None or not topic.partitions:
            return None
        index = partition_for(group_id, len(topic.partitions))
        return index, topic.partitions[index].group

    def leader_of(self, group_id: str) -> int | None:
        """The broker coordinating ``group_id`` as this broker knows it (None: unknown)."""
        found = self.locate(group_id)
        if found is None:
            return None
        index, group = found
        part = self._replica(group)
        if part is not None:
            return part.leader
        reported = self._image().leader_of(group)  # no replica here: as reported
        if reported is not None:
            return reported[0]
        topic = self._topic()
        assert topic is not None
        replicas = topic.partitions[index].replicas
        return replicas[0] if replicas else None

    def check(self, group_id: str) -> int:
        """Raise NOT_COORDINATOR unless this broker leads ``group_id``'s offsets
        partition, COORDINATOR_LOAD_IN_PROGRESS while it is loading it; returns the
        partition index."""
        found = self.locate(group_id)
        if found is None:
            raise GroupError(ErrorCode.COORDINATOR_NOT_AVAILABLE,
                             f"topic {OFFSETS_TOPIC} is not created yet")
        index, group = found
        part = self._replica(group)
        core = None if part is None else self._driver.core(group)
        if core is None or core.lead is None:
            leader = self.leader_of(group_id)
            raise GroupError(
                ErrorCode.NOT_COORDINATOR,
                f"broker {self._node_id} does not coordinate group {group_id!r}"
                + (f": broker {leader} does" if leader is not None else "")
                + f" (leader of {OFFSETS_TOPIC}-{index})",
            )
        if self._loaded.get(index) != core.term:
            raise GroupError(
                ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
                f"broker {self._node_id} is loading {OFFSETS_TOPIC}-{index} "
                f"(group {group_id!r}): retry",
            )
        return index

    # ------------------------------------------------------------ leadership

    def role_changed(self, part: ReplicatedPartition) -> None:
        """The Raft group of offsets partition ``part`` changed role, leader or term."""
        index = part.index
        try:
            core = self._driver.core(part.group)
        except NotLeaderError:  # the group is gone
            self._give_up(index)
            return
        if core.lead is None:
            self._give_up(index)
            return
        term = core.term
        if self._loaded.get(index) == term:
            return
        loading = self._loading.get(index)
        if loading is not None and loading[0] == term:
            return
        self._give_up(index)
        task = asyncio.get_running_loop().create_task(
            self._load(index, part, term), name=f"load-{OFFSETS_TOPIC}-{index}"
        )
        self._loading[index] = (term, task)

    def _leads(self, part: ReplicatedPartition, term: int) -> bool:
        try:
            core = self._driver.core(part.group)
        except NotLeaderError:
            return False
        return core.lead is not None and core.term == term

    def _give_up(self, index: int) -> None:
        """Stop loading or serving partition ``index``: drop its groups from memory."""
        loading = self._loading.pop(index, None)
        if loading is not None:
            loading[1].cancel()
        was_loaded = self._loaded.pop(index, None) is not None
        self._written.pop(index, None)
        rewrite = self._rewrites.pop(index, None)
        if rewrite is not None:
            rewrite.cancel()
        if was_loaded or loading is not None:
            dropped = self._unload(index)
            if dropped:
                log.info("no longer coordinating %d groups of %s-%d",
                         dropped, OFFSETS_TOPIC, index)

    def _unload(self, index: int) -> int:
        topic = self._topic()
        count = len(topic.partitions) if topic is not None else 0
        if count == 0:
            return 0
        mine = [
            listing.group_id for listing in self._groups.coordinator.list_groups()
            if partition_for(listing.group_id, count) == index
        ]
        mine += [g for g in self._live.pop(index, {}) if g not in mine]
        self._groups.unload(mine)
        return len(mine)

    async def _load(self, index: int, part: ReplicatedPartition, term: int) -> None:
        plog = part.log
        try:
            target = plog.log_end_offset
            while plog.high_watermark < target:
                if not self._leads(part, term):
                    return
                await asyncio.sleep(LOAD_POLL_S)
            offsets: Offsets = {}
            at, end = plog.log_start_offset, plog.high_watermark
            read = 0
            while at < end:
                result = plog.read(at, LOAD_CHUNK_BYTES)
                if not result.batches:
                    break
                replay(result.batches, offsets)
                read += sum(len(b) for b in result.batches)
                at = result.next_offset
                await asyncio.sleep(0)  # a long partition does not stall the loop
            current = self._loading.get(index)
            if not self._leads(part, term) or current is None or current[0] != term:
                return
            self._unload(index)  # what a former term left in memory
            topic = self._topic()
            count = len(topic.partitions) if topic is not None else 0
            live: Offsets = {}
            for group_id, committed in offsets.items():
                if count and partition_for(group_id, count) != index:
                    continue
                try:
                    self._groups.coordinator.load_offsets(group_id, committed)
                except SentinelError as exc:
                    log.warning("skipping group %r of %s-%d: %s", group_id,
                                OFFSETS_TOPIC, index, exc)
                    continue
                live[group_id] = dict(committed)
            self._loading.pop(index, None)
            self._loaded[index] = term
            self._live[index] = live
            self._written[index] = (read, 0)
            log.info("coordinating %d groups of %s-%d (term %d, offsets %d..%d read)",
                     len(offsets), OFFSETS_TOPIC, index, term, plog.log_start_offset, at)
        except asyncio.CancelledError:
            raise
        except Exception:  # a storage failure: the partition stays unloaded here
            log.exception("loading %s-%d failed", OFFSETS_TOPIC, index)

    async def stop(self) -> None:
        tasks = [task for _, task in self._loading.values()] + list(self._rewrites.values())
        await cancel_and_wait(tasks, "the group coordination's loads and rewrites")
        self._loading.clear()
        self._rewrites.clear()
        self._loaded.clear()

    # ------------------------------------------------------------ OffsetPersister

    def _leading_replica(self, group_id: str) -> tuple[int, ReplicatedPartition, int]:
        index = self.check(group_id)
        found = self.locate(group_id)
        assert found is not None
        part = self._replica(found[1])
        assert part is not None
        return index, part, self._driver.core(part.group).term

    async def _append(
        self, group_id: str, batch: bytes, change: Callable[[Offsets], None]
    ) -> None:
        index, part, term = self._leading_replica(group_id)
        live = self._live.get(index)
        if live is not None:  # before the proposal: a rewrite taken after it holds it
            change(live)
        written, rewritten = self._written.get(index, (0, 0))
        self._written[index] = (written + len(batch), rewritten)
        self._maybe_rewrite(index, part, term)
        try:
            await part.append(batch, Acks.ALL)
        except NotLeaderError as exc:
            raise GroupError(ErrorCode.NOT_COORDINATOR,
                             f"{OFFSETS_TOPIC}-{index} moved to another leader: {exc}") from exc
        if self._loaded.get(index) != term or not self._leads(part, term):
            # Committed, but this broker no longer coordinates the group: the client
            # asks the new coordinator (which read this commit back) again.
            raise GroupError(ErrorCode.NOT_COORDINATOR,
                             f"{OFFSETS_TOPIC}-{index} moved to another leader")

    async def commit_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        if not offsets:
            return
        def change(live: Offsets) -> None:
            live.setdefault(group_id, {}).update(offsets)

        await self._append(group_id, commit_batch(group_id, offsets, self._now_ms()), change)

    async def delete_group_offsets(self, group_id: str) -> None:
        index = self.check(group_id)
        keys = self._live.get(index, {}).get(group_id)
        if not keys:
            return
        def change(live: Offsets) -> None:
            live.pop(group_id, None)

        await self._append(
            group_id, tombstone_batch(group_id, sorted(keys), self._now_ms()), change
        )

    async def delete_offsets(self, group_id: str, partitions: Sequence[TopicPartition]) -> None:
        """OffsetDelete in a cluster: tombstones for the group's offsets of
        ``partitions`` (those it has), committed by Raft before this returns."""
        index = self.check(group_id)
        held = self._live.get(index, {}).get(group_id, {})
        gone = sorted(tp for tp in set(partitions) if tp in held)
        if not gone:
            return

        def change(live: Offsets) -> None:
            group = live.get(group_id)
            if group is not None:
                for tp in gone:
                    group.pop(tp, None)
                if not group:
                    live.pop(group_id, None)

        await self._append(group_id, tombstone_batch(group_id, gone, self._now_ms()), change)

    # ------------------------------------------------------------ rewrites

    def _maybe_rewrite(self, index: int, part: ReplicatedPartition, term: int) -> None:
        written, rewritten = self._written.get(index, (0, 0))
        if written < max(self.rewrite_after_bytes, 2 * rewritten) or index in self._rewrites:
            return
        self._rewrites[index] = asyncio.get_running_loop().create_task(
            self._rewrite(index, part, term), name=f"rewrite-{OFFSETS_TOPIC}-{index}"
        )

    async def _rewrite(self, index: int, part: ReplicatedPartition, term: int) -> None:
        """Append every live offset of partition ``index`` again, then move the log
        start to that copy (see the module's docstring)."""
        try:
            live = self._live.get(index)
            if live is None or self._loaded.get(index) != term or not self._leads(part, term):
                return
            now = self._now_ms()
            # Taken and proposed with no await in between (``append`` proposes before
            # it first yields): no commit lands between the copy and what it copies.
            batches = [
                commit_batch(g, dict(chunk), now)
                for g, offsets in live.items()
                for chunk in _chunks(list(offsets.items()), REWRITE_BATCH_OFFSETS)
            ]
            if batches:
                data = b"".join(batches)
                self._written[index] = (0, len(data))
                appended = await part.append(data, Acks.ALL)
                start = appended.base_offset
            else:  # nothing live: everything before the log end can go
                self._written[index] = (0, 0)
                start = part.log.high_watermark
            if not self._leads(part, term):
                return
            await part.delete_records(start)
            self.rewrites += 1
            log.info("rewrote the live offsets of %s-%d (%d groups); its log starts at %d",
                     OFFSETS_TOPIC, index, len(batches), start)
        except asyncio.CancelledError:
            raise
        except SentinelError as exc:  # leadership moved, a full disk: the next one tries
            log.info("rewriting %s-%d did not finish: %s", OFFSETS_TOPIC, index, exc)
        except Exception:
            log.exception("rewriting %s-%d failed", OFFSETS_TOPIC, index)
        finally:
            if self._rewrites.get(index) is asyncio.current_task():
                del self._rewrites[index]

    def _now_ms(self) -> int:
        return int(self._clock.wall() * 1000)
