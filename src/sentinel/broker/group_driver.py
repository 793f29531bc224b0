"""The asyncio driver of the sans-IO group coordinator.

It owns what the coordinator may not: the clock, a periodic tick, a future per parked
JoinGroup / SyncGroup, and the durable write of committed offsets (meta store) between
``commit_offsets`` and ``offsets_persisted``.

One group's offset writes (commits, OffsetDelete, the group's deletion) run one at a
time, in the order they arrive (``_GroupWrites``): each is checked, made durable and made
visible before the next one is checked. The durable writes run in the default executor's
threads, which may finish in any order: without this, of two pipelined commits (a
client's async commits, both acknowledged, in order) the older could be written last,
answered by OffsetFetch and found again after a restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Protocol

from sentinel.broker.group_config import GroupConfig
from sentinel.broker.group_events import (
    ErrorCode,
    Event,
    GroupDescription,
    GroupListing,
    JoinCompleted,
    JoinFailed,
    JoinProtocol,
    MemberAssignment,
    OffsetAndMetadata,
    SyncCompleted,
    SyncFailed,
    TopicPartition,
)
from sentinel.broker.groups import GroupCoordinator
from sentinel.broker.meta_store import MetaStore
from sentinel.clock import Clock
from sentinel.errors import CallerError
from sentinel.stopping import cancel_and_wait

log = logging.getLogger(__name__)

TICK_S = 0.1


class GroupError(CallerError):
    """A group request was refused; ``code`` is Kafka's error code."""

    def __init__(self, code: ErrorCode, message: str = "", *, member_id: str = "") -> None:
        super().__init__(message or f"group request failed: {code.name}")
        self.code = code
        self.kafka_code = int(code)
        self.code_name = code.name
        #: The id the client must join again with (MEMBER_ID_REQUIRED); "" otherwise.
        self.member_id = member_id


Answer = JoinCompleted | SyncCompleted


class _GroupWrites:
    """A lock per group for its offset writes, first come first served (asyncio.Lock's
    waiters are woken in order), dropped once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def of(self, group_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(group_id, asyncio.Lock())
        self._users[group_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[group_id] -= 1
            if not self._users[group_id]:
                del self._users[group_id], self._locks[group_id]


class OffsetPersister(Protocol):
    """Makes a group's committed offsets durable somewhere other than the meta store."""

    async def commit_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None: ...

    async def delete_group_offsets(self, group_id: str) -> None: ...

    async def delete_offsets(self, group_id: str, partitions: Sequence[TopicPartition]) -> None:
        ...


class GroupDriver:
    def __init__(
        self,
        meta: MetaStore,
        partition_counts: Callable[[str], int | None],
        clock: Clock,
        config: GroupConfig | None = None,
    ) -> None:
        self._meta = meta
        self._clock = clock
        self.coordinator = GroupCoordinator(
            partition_counts, config, member_ids=lambda: str(uuid.uuid4())
        )
        self._parked: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self._ticker: asyncio.Task[None] | None = None
        #: Where committed offsets become durable: the meta store of this broker, or
        #: (a cluster) the group's partition of ``__consumer_offsets`` (``use_offset_log``).
        self._persist: OffsetPersister | None = None
        self._writes = _GroupWrites()

    def use_offset_log(self, persister: OffsetPersister) -> None:
        """Persist commits and group deletions through ``persister`` (a cluster: a batch
        appended to the group's partition of ``__consumer_offsets``, answered once Raft
        committed it) instead of the meta store directly."""
        self._persist = persister

    def unload(self, group_ids: Iterable[str] | None = None) -> None:
        """Give groups up (all if None): another broker coordinates them now. Their
        waiting joins and syncs fail with NOT_COORDINATOR; their members rejoin there."""
        self._deliver(self.coordinator.unload(group_ids))

    def start(self) -> None:
        for group, offsets in self._meta.all_offsets().items():
            self.coordinator.load_offsets(group, offsets)
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            await cancel_and_wait([self._ticker], "the group coordinator's ticker")
        for future in self._parked.values():
            if not future.done():
                future.set_exception(GroupError(ErrorCode.COORDINATOR_NOT_AVAILABLE))
        self._parked.clear()

    def _now(self) -> float:
        return self._clock.monotonic()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._deliver(self.coordinator.tick(self._now()))

    def _deliver(self, events: Sequence[Event]) -> None:
        _log_rebalances(events)
        for event in events:
            if isinstance(event, JoinCompleted | SyncCompleted):
                future = self._parked.pop((event.group_id, event.member_id), None)
                if future is not None and not future.done():
                    future.set_result(event)
            elif isinstance(event, JoinFailed | SyncFailed):
                future = self._parked.pop((event.group_id, event.member_id), None)
                if future is not None and not future.done():
                    future.set_exception(GroupError(event.error))

    def _park(self, group_id: str, member_id: str) -> asyncio.Future[Answer]:
        older = self._parked.pop((group_id, member_id), None)
        if older is not None and not older.done():
            older.set_exception(GroupError(ErrorCode.REBALANCE_IN_PROGRESS, "superseded"))
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._parked[(group_id, member_id)] = future
        return future

    async def _wait(
        self, key: tuple[str, str], future: asyncio.Future[Answer], timeout: float
    ) -> Answer:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS, "join timed out") from None
        finally:
            if self._parked.get(key) is future and not future.done():
                # The caller went away (cancelled or timed out): forget the future; the
                # member's session expires unless it joins again.
                self._parked.pop(key, None)

    async def join(
        self,
        group_id: str,
        member_id: str,
        *,
        client_id: str,
        topics: Sequence[str],
        assignor: str,
        session_timeout_s: float,
        rebalance_timeout_s: float,
        protocols: Sequence[JoinProtocol] | None = None,
        protocol_type: str = "consumer",
        client_host: str = "",
        require_known_member_id: bool = False,
        group_instance_id: str | None = None,
    ) -> JoinCompleted:
        """Join and return when the join phase completes. Without ``protocols`` the
        coordinator assigns (``assignor`` over ``topics``: the group is Stable and the
        answer carries this member's share); with them (the Kafka door) the leader
        assigns and every member calls ``sync`` next. ``require_known_member_id``: a new
        member gets ``GroupError`` MEMBER_ID_REQUIRED carrying its id (JoinGroup v4+).
        ``group_instance_id``: a static member (KIP-345); a new one replaces the member
        holding it, whose waiting join or sync fails with FENCED_INSTANCE_ID."""
        server_assign = protocols is None
        result = self.coordinator.join(
            group_id,
            member_id or None,
            client_id=client_id,
            session_timeout_s=session_timeout_s,
            rebalance_timeout_s=rebalance_timeout_s,
            protocol_type=protocol_type,
            protocols=(
                [JoinProtocol(assignor or "roundrobin", tuple(topics))]
                if protocols is None
                else protocols
            ),
            now=self._now(),
            server_assign=server_assign,
            require_known_member_id=require_known_member_id,
            client_host=client_host,
            group_instance_id=group_instance_id,
        )
        if result.error is ErrorCode.MEMBER_ID_REQUIRED:
            raise GroupError(
                result.error,
                f"join group {group_id!r} again with member id {result.member_id!r}",
                member_id=result.member_id,
            )
        if result.error is not ErrorCode.NONE:
            raise GroupError(result.error, result.reason)
        key = (group_id, result.member_id)
        future = self._park(*key)
        self._deliver(result.events)
        answer = await self._wait(key, future, rebalance_timeout_s + 5.0)
        assert isinstance(answer, JoinCompleted)
        return answer

    async def sync(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        assignments: Mapping[str, MemberAssignment] | None,
        timeout_s: float,
        *,
        group_instance_id: str | None = None,
    ) -> SyncCompleted:
        """SyncGroup (the leader hands every member's assignment, the others None):
        returns this member's share once the leader's sync arrives."""
        key = (group_id, member_id)
        future = self._park(*key)
        outcome = self.coordinator.sync(
            group_id,
            member_id,
            generation,
            assignments,
            self._now(),
            group_instance_id=group_instance_id,
        )
        if outcome.error is not ErrorCode.NONE:
            if self._parked.get(key) is future:
                self._parked.pop(key, None)
            raise GroupError(outcome.error)
        self._deliver(outcome.events)
        answer = await self._wait(key, future, timeout_s)
        assert isinstance(answer, SyncCompleted)
        return answer

    def heartbeat(
        self, group_id: str, member_id: str, generation: int, group_instance_id: str | None = None
    ) -> None:
        code = self.coordinator.heartbeat(
            group_id, member_id, generation, self._now(), group_instance_id=group_instance_id
        )
        if code is not ErrorCode.NONE:
            raise GroupError(code)

    def leave(self, group_id: str, member_id: str, group_instance_id: str | None = None) -> None:
        outcome = self.coordinator.leave(
            group_id, member_id, self._now(), group_instance_id=group_instance_id
        )
        self._deliver(outcome.events)
        if outcome.error is not ErrorCode.NONE:
            raise GroupError(outcome.error)

    def leave_members(
        self, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> tuple[ErrorCode, ...]:
        """LeaveGroup v3+: (member id, instance id) pairs; the code of each, in order."""
        outcomes = self.coordinator.leave_members(group_id, members, self._now())
        for outcome in outcomes:
            self._deliver(outcome.events)
        return tuple(o.error for o in outcomes)

    async def commit(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_instance_id: str | None = None,
    ) -> dict[TopicPartition, ErrorCode]:
        """Commit and persist ``offsets``: the code of each partition (Kafka's
        OffsetCommit answers per partition; a refusal of the whole request is every
        partition's code). With no offsets, a refusal of the request raises. The group's
        earlier offset writes take effect first (checked, durable, visible)."""
        async with self._writes.of(group_id):
            return await self._commit(
                group_id, member_id, generation, offsets, group_instance_id
            )

    async def _commit(
        self,
        group_id: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        group_instance_id: str | None,
    ) -> dict[TopicPartition, ErrorCode]:
        result = self.coordinator.commit_offsets(
            group_id,
            member_id,
            generation,
            offsets,
            self._now(),
            group_instance_id=group_instance_id,
        )
        if not offsets and result.error is not ErrorCode.NONE:
            raise GroupError(result.error)
        codes = {tp: result.error_for(tp) for tp in offsets}
        if result.to_persist is not None:
            persisted = result.to_persist
            if self._persist is not None:
                await self._persist.commit_offsets(persisted.group_id, persisted.offsets)
            else:
                await asyncio.get_running_loop().run_in_executor(
                    None, self._meta.commit_offsets, persisted.group_id, persisted.offsets
                )
            self.coordinator.offsets_persisted(persisted)
        return codes

    async def delete_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, ErrorCode]:
        """OffsetDelete: remove the group's committed offsets of ``partitions``, durably
        before this returns; the code of each partition (GROUP_SUBSCRIBED_TO_TOPIC: kept,
        its topic is read by a member). A refusal of the whole request raises
        ``GroupError``: GROUP_ID_NOT_FOUND, INVALID_GROUP_ID, NON_EMPTY_GROUP."""
        async with self._writes.of(group_id):
            return await self._delete_offsets(group_id, partitions)

    async def _delete_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, ErrorCode]:
        result = self.coordinator.delete_offsets(group_id, partitions)
        if result.error is ErrorCode.GROUP_ID_NOT_FOUND:
            raise GroupError(result.error, f"unknown group {group_id!r}")
        if result.error is ErrorCode.NON_EMPTY_GROUP:
            raise GroupError(
                result.error,
                f"group {group_id!r} has members whose subscriptions are not a consumer's: "
                "its offsets can be deleted only while it has none",
            )
        if result.error is not ErrorCode.NONE:
            raise GroupError(result.error)
        if result.to_delete and self._persist is not None:  # a cluster's offsets log
            await self._persist.delete_offsets(group_id, list(result.to_delete))
            self.coordinator.offsets_deleted(group_id, result.to_delete)
        elif result.to_delete:
            await asyncio.get_running_loop().run_in_executor(
                None, self._meta.delete_offsets, group_id, list(result.to_delete)
            )
            self.coordinator.offsets_deleted(group_id, result.to_delete)
        return {tp: result.error_for(tp) for tp in partitions}

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[TopicPartition] | None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return self.coordinator.fetch_offsets(group_id, partitions)

    def list_groups(self) -> list[GroupListing]:
        return self.coordinator.list_groups()

    def describe(self, group_id: str) -> GroupDescription:
        return self.coordinator.describe_group(group_id)

    def partitions_changed(self, topic: str) -> None:
        self._deliver(self.coordinator.partitions_changed(topic, self._now()))

    async def delete_group(self, group_id: str) -> None:
        """DeleteGroups: an Empty group and its stored offsets; ``GroupError`` with
        NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND if unknown."""
        async with self._writes.of(group_id):
            await self._delete_group(group_id)

    async def _delete_group(self, group_id: str) -> None:
        outcome = self.coordinator.delete_group(group_id)
        if outcome.error is ErrorCode.NON_EMPTY_GROUP:
            members = len(self.coordinator.describe_group(group_id).members)
            raise GroupError(
                outcome.error,
                f"group {group_id!r} has {members} active member{'' if members == 1 else 's'}: "
                "only a group without members can be deleted (stop its consumers first)",
            )
        if outcome.error is ErrorCode.GROUP_ID_NOT_FOUND:
            raise GroupError(outcome.error, f"unknown group {group_id!r}")
        if outcome.error is not ErrorCode.NONE:
            raise GroupError(outcome.error)
        self._deliver(outcome.events)
        if self._persist is not None:
            await self._persist.delete_group_offsets(group_id)
            return
        await asyncio.get_running_loop().run_in_executor(
            None, self._meta.delete_group_offsets, group_id
        )


def _log_rebalances(events: Sequence[Event]) -> None:
    """One line per group whose join completed: its generation, leader and members."""
    members: dict[tuple[str, int], list[str]] = {}
    leaders: dict[tuple[str, int], str] = {}
    for event in events:
        if isinstance(event, JoinCompleted):
            key = (event.group_id, event.generation)
            members.setdefault(key, []).append(event.member_id)
            leaders[key] = event.leader_id
    for (group_id, generation), ids in members.items():
        log.info(
            "group %s rebalanced: generation %d, %d members %s, leader %s",
            group_id,
            generation,
            len(ids),
            sorted(ids),
            leaders[(group_id, generation)],
        )


def assignment_of(event: JoinCompleted) -> MemberAssignment:
    return event.assignment if event.assignment is not None else MemberAssignment()
