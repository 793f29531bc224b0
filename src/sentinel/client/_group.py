"""Consumer group membership, on the client's event loop.

The broker assigns the partitions (the gRPC door has no SyncGroup): ``JoinGroup``
returns when the rebalance is complete, with this member's partitions. Then the member
heartbeats every ``heartbeat_interval_ms``; a heartbeat answered
REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION means "join again", UNKNOWN_MEMBER_ID
means "join again as a new member"::

        ┌──────────────────────────────────────────────────────────────┐
        v                                                              │
    [revoke: commit, on_revoke] -> JoinGroup (waits for the rebalance) │
        -> [assign: on_assign] -> heartbeat ... rebalance signalled ───┘

Revocation is eager (as Kafka's classic protocol): before rejoining, the member stops
fetching its partitions, commits what the application has consumed (``before_revoke``,
when auto-commit is on) and calls ``on_revoke``; after joining it calls ``on_assign``
with the new partitions. ``leave`` sends LeaveGroup, so the others get the partitions
at once instead of after the session timeout; a static member (``group_instance_id``,
KIP-345) does not: a restart within the session timeout takes its partitions back with
no rebalance, and a newer instance fences it (FENCED_INSTANCE_ID: the membership ends).

Every group request goes to the group coordinator (``Metadata.coordinator_call``): in
a cluster the leader of the group's partition of ``__consumer_offsets``. When it moves
(NOT_COORDINATOR, or its broker died) the request is sent again to the one the
metadata names next; the new coordinator does not know the member
(UNKNOWN_MEMBER_ID), so it joins again, and its partitions start from the offsets
committed to that partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sentinel.client._channel import unary
from sentinel.client._fetcher import Fetcher
from sentinel.client._metadata import Metadata
from sentinel.client.errors import (
    ClientClosedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    RebalanceInProgressError,
    SentinelClientError,
    UnknownMemberIdError,
)
from sentinel.client.types import TopicPartition
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

__all__ = ["GroupConfig", "GroupMember", "RebalanceCallback"]

log = logging.getLogger(__name__)

RebalanceCallback = Callable[[list[TopicPartition]], object]
"""``on_assign`` / ``on_revoke``: called with the partitions (may return an awaitable
in ``AsyncConsumer``)."""


async def _join_call(
    stub: pb_grpc.SentinelStub, *, request: pb.JoinGroupRequest, timeout: float
) -> pb.JoinGroupResponse:
    resp: pb.JoinGroupResponse = await unary(stub.JoinGroup(request, timeout=timeout))
    return resp


async def _heartbeat_call(
    stub: pb_grpc.SentinelStub, *, request: pb.HeartbeatRequest, timeout: float
) -> None:
    await unary(stub.Heartbeat(request, timeout=timeout))


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Membership settings. See ``Consumer`` for the meaning."""

    group_id: str
    client_id: str
    session_timeout_ms: int
    heartbeat_interval_ms: int
    rebalance_timeout_ms: int
    assignor: str
    request_timeout_ms: int
    retry_backoff_ms: float
    allow_auto_create_topics: bool = False
    group_instance_id: str | None = None  # a static member (KIP-345)


class GroupMember:
    """One consumer's membership of its group: join, heartbeat, rejoin, leave."""

    def __init__(
        self,
        config: GroupConfig,
        metadata: Metadata,
        fetcher: Fetcher,
        *,
        before_revoke: Callable[[list[TopicPartition]], Awaitable[None]],
        run_callback: Callable[[str, list[TopicPartition]], Awaitable[None]],
    ) -> None:
        self.config = config
        self._metadata = metadata
        self._fetcher = fetcher
        self._before_revoke = before_revoke
        self._run_callback = run_callback
        self.topics: list[str] = []
        self.member_id = ""
        self.generation = -1
        self.assignment: list[TopicPartition] = []
        self.error: SentinelClientError | None = None  # surfaced by poll()
        self.joined = asyncio.Event()
        self._rejoin = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timeout = config.request_timeout_ms / 1000.0
        self._backoff = config.retry_backoff_ms / 1000.0

    # --- control (on the loop) ---------------------------------------------------------

    def subscribe(self, topics: list[str]) -> None:
        """Follow ``topics``: start membership, or rejoin with the new list."""
        self.topics = list(topics)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sentinel-group-{self.config.group_id}"
            )
        else:
            self._rejoin.set()

    async def leave(self) -> None:
        """Stop the membership: revoke (with commit), then LeaveGroup, unless this is a
        static member (Kafka's rule: its partitions wait for it until the session
        timeout, so that a restart within it takes them back without a rebalance).
        Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._revoke()
        if self.member_id and self.config.group_instance_id is None:
            request = pb.LeaveGroupRequest(group_id=self.config.group_id, member_id=self.member_id)
            try:
                await self._metadata.coordinator_call(
                    lambda stub: unary(stub.LeaveGroup(request, timeout=self._timeout)),
                    timeout=self._timeout,
                    backoff_s=self._backoff,
                    what="LeaveGroup",
                    group_id=self.config.group_id,
                )
            except (SentinelClientError, ClientClosedError) as exc:
                log.info("LeaveGroup for %s failed: %s", self.config.group_id, exc)
        self.member_id = ""
        self.generation = -1
        self.joined.clear()

    # --- the membership task -----------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._join()
                await self._heartbeat_until_rebalance()
            except asyncio.CancelledError:
                raise
            except FencedInstanceIdError as exc:
                # A newer instance holds our group.instance.id: joining again would
                # fence it in turn. The membership ends; poll() raises this.
                log.warning("group %s: %s", self.config.group_id, exc)
                self.error = exc
                self.member_id, self.generation = "", -1
                await self._lose()
                return
            except SentinelClientError as exc:
                if not exc.retriable:
                    log.warning("group %s: %s", self.config.group_id, exc)
                    self.error = exc
                await asyncio.sleep(self._backoff)
            except Exception:  # a bug: report it, keep the membership going
                log.exception("group %s: membership failed", self.config.group_id)
                await asyncio.sleep(self._backoff)

    async def _join(self) -> None:
        await self._revoke()
        self._rejoin.clear()
        config = self.config
        join_timeout = (config.rebalance_timeout_ms + config.request_timeout_ms) / 1000.0
        while True:
            request = pb.JoinGroupRequest(
                group_id=config.group_id,
                member_id=self.member_id,
                client_id=config.client_id,
                topics=self.topics,
                assignor=config.assignor,
                session_timeout_ms=config.session_timeout_ms,
                rebalance_timeout_ms=config.rebalance_timeout_ms,
                allow_auto_topic_creation=config.allow_auto_create_topics,
                group_instance_id=config.group_instance_id or "",
            )
            try:
                resp: pb.JoinGroupResponse = await self._metadata.coordinator_call(
                    functools.partial(_join_call, request=request, timeout=join_timeout),
                    timeout=join_timeout,
                    backoff_s=self._backoff,
                    what="JoinGroup",
                    group_id=self.config.group_id,
                )
                break
            except UnknownMemberIdError:
                self.member_id = ""
            except (RebalanceInProgressError, IllegalGenerationError):
                await asyncio.sleep(min(self._backoff, 0.05))
            except SentinelClientError as exc:
                if not exc.retriable:
                    raise
                await asyncio.sleep(self._backoff)
        self.error = None
        self.member_id = resp.member_id
        self.generation = resp.generation
        assignment = sorted(
            TopicPartition(tps.topic, p) for tps in resp.assignment for p in tps.partitions
        )
        log.debug(
            "group %s generation %d: %s owns %s",
            config.group_id,
            self.generation,
            self.member_id,
            assignment,
        )
        self.assignment = assignment
        self._fetcher.assign(assignment)
        self.joined.set()
        await self._run_callback("on_assign", assignment)

    async def _heartbeat_until_rebalance(self) -> None:
        config = self.config
        interval = config.heartbeat_interval_ms / 1000.0
        session = config.session_timeout_ms / 1000.0
        last_ok = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rejoin.wait(), interval)
            if self._rejoin.is_set():
                return
            request = pb.HeartbeatRequest(
                group_id=config.group_id,
                member_id=self.member_id,
                generation=self.generation,
                group_instance_id=config.group_instance_id or "",
            )
            try:
                await self._metadata.coordinator_call(
                    functools.partial(_heartbeat_call, request=request, timeout=self._timeout),
                    timeout=min(self._timeout, session),
                    backoff_s=self._backoff,
                    what="Heartbeat",
                    group_id=self.config.group_id,
                )
                last_ok = time.monotonic()
            except (RebalanceInProgressError, IllegalGenerationError):
                return
            except UnknownMemberIdError:
                self.member_id = ""
                self.generation = -1
                return
            except FencedInstanceIdError:
                raise
            except SentinelClientError as exc:
                if not exc.retriable or time.monotonic() - last_ok > session:
                    log.info("group %s: heartbeat failed (%s); joining again", config.group_id, exc)
                    return

    async def _lose(self) -> None:
        """The partitions are gone without a chance to commit (a newer instance holds
        them): stop fetching, tell the application (Kafka's onPartitionsLost, whose
        default is onPartitionsRevoked)."""
        lost = self.assignment
        self.joined.clear()
        self.assignment = []
        self._fetcher.assign([])
        if lost:
            await self._run_callback("on_revoke", lost)

    async def _revoke(self) -> None:
        """Give the partitions up: stop fetching, commit, tell the application."""
        revoked = self.assignment
        self.joined.clear()
        if not revoked:
            return
        try:
            await self._before_revoke(revoked)
        except SentinelClientError as exc:
            log.warning("group %s: commit before rebalance failed: %s", self.config.group_id, exc)
        await self._run_callback("on_revoke", revoked)
        self.assignment = []
        self._fetcher.assign([])
