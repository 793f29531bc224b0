"""The consumer's machinery shared by ``Consumer`` and ``AsyncConsumer``: settings,
assignment (by hand or through a ``GroupMember``), positions, seeks and commits.

``ConsumerCore`` lives on one event loop (the IO thread's, or the caller's for
``AsyncConsumer``); only ``note_poll`` and ``raise_group_error`` run on the polling
thread. The fetching and decoding is the ``Fetcher``'s.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sentinel.client._channel import Connections, parse_bootstrap, unary
from sentinel.client._fetcher import FetchConfig, Fetcher
from sentinel.client._group import GroupConfig, GroupMember, RebalanceCallback
from sentinel.client._metadata import Metadata
from sentinel.client.errors import ClientStateError, SentinelClientError
from sentinel.client.types import OffsetAndTimestamp, TopicPartition
from sentinel.errors import InvalidArgumentError
from sentinel.proto_gen import sentinel_pb2 as pb

__all__ = ["ConsumerConfig", "ConsumerCore", "TopicPartitionArg", "as_timestamps", "as_tp"]

log = logging.getLogger(__name__)

TopicPartitionArg = TopicPartition | tuple[str, int]


def as_tp(item: TopicPartitionArg) -> TopicPartition:
    topic, partition = item
    if not isinstance(topic, str) or not isinstance(partition, int) or partition < 0:
        raise InvalidArgumentError(f"a topic partition is (str, int >= 0), got {item!r}")
    return TopicPartition(topic, partition)


def as_timestamps(timestamps: Mapping[TopicPartitionArg, int]) -> dict[TopicPartition, int]:
    """``offsets_for_times``' argument, checked: a time in ms (>= 0) per partition."""
    checked: dict[TopicPartition, int] = {}
    for item, timestamp in timestamps.items():
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
            raise InvalidArgumentError(
                f"a timestamp is an int of ms >= 0, got {timestamp!r} for {item!r}"
            )
        checked[as_tp(item)] = timestamp
    return checked


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """A consumer's settings, checked. See ``Consumer`` for what each means."""

    bootstrap: tuple[str, ...]
    group_id: str | None
    client_id: str
    enable_auto_commit: bool
    auto_commit_interval_ms: int
    max_poll_records: int
    fetch: FetchConfig
    group: GroupConfig | None

    @classmethod
    def build(cls, bootstrap: str | Sequence[str], options: dict[str, Any]) -> ConsumerConfig:
        reset = options["auto_offset_reset"]
        if reset not in ("earliest", "latest", "none"):
            raise InvalidArgumentError(
                f"auto_offset_reset must be 'earliest', 'latest' or 'none', got {reset!r}"
            )
        if options["assignor"] not in ("roundrobin", "range"):
            raise InvalidArgumentError(
                f"assignor must be 'roundrobin' or 'range', got {options['assignor']!r}"
            )
        for name in (
            "max_poll_records",
            "fetch_max_bytes",
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "auto_commit_interval_ms",
            "request_timeout_ms",
        ):
            if options[name] < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, got {options[name]}")
        if options["fetch_max_wait_ms"] < 0 or options["retry_backoff_ms"] < 0:
            raise InvalidArgumentError("fetch_max_wait_ms and retry_backoff_ms must be >= 0")
        group_id = options["group_id"]
        if group_id is not None and not group_id:
            raise InvalidArgumentError("group_id must be a non-empty string or None")
        instance_id = options["group_instance_id"]
        if instance_id is not None and not (instance_id and group_id is not None):
            raise InvalidArgumentError(
                "group_instance_id must be a non-empty string, with a group_id, or None"
            )
        fetch = FetchConfig(
            fetch_max_bytes=options["fetch_max_bytes"],
            fetch_max_wait_ms=options["fetch_max_wait_ms"],
            auto_offset_reset=reset,
            request_timeout_ms=options["request_timeout_ms"],
            retry_backoff_ms=options["retry_backoff_ms"],
        )
        group = None
        if group_id is not None:
            group = GroupConfig(
                group_id=group_id,
                client_id=options["client_id"],
                session_timeout_ms=options["session_timeout_ms"],
                heartbeat_interval_ms=options["heartbeat_interval_ms"],
                rebalance_timeout_ms=options["rebalance_timeout_ms"]
                or options["session_timeout_ms"],
                assignor=options["assignor"],
                request_timeout_ms=options["request_timeout_ms"],
                retry_backoff_ms=options["retry_backoff_ms"],
                allow_auto_create_topics=bool(options["allow_auto_create_topics"]),
                group_instance_id=instance_id,
            )
        return cls(
            bootstrap=tuple(parse_bootstrap(bootstrap)),
            group_id=group_id,
            client_id=options["client_id"],
            enable_auto_commit=bool(options["enable_auto_commit"]) and group_id is not None,
            auto_commit_interval_ms=options["auto_commit_interval_ms"],
            max_poll_records=options["max_poll_records"],
            fetch=fetch,
            group=group,
        )


class ConsumerCore:
    """Everything but ``poll``'s waiting, on one event loop (the IO thread's or the caller's)."""

    def __init__(self, config: ConsumerConfig, *, callbacks_on_thread: bool) -> None:
        self.config = config
        self.connections = Connections(config.bootstrap)
        self.metadata = Metadata(self.connections, list(config.bootstrap))
        self.fetcher = Fetcher(
            config.fetch,
            self.metadata,
            committed=self.committed if config.group_id is not None else None,
        )
        self.group: GroupMember | None = None
        self.callbacks: dict[str, RebalanceCallback | None] = {"on_assign": None, "on_revoke": None}
        self.consumed: dict[TopicPartition, int] = {}  # positions at the latest poll's start
        self.mode: str | None = None  # "subscribe" | "assign"
        self.closing = False
        self._callbacks_on_thread = callbacks_on_thread
        self._last_committed: dict[TopicPartition, int] = {}
        self._auto_commit: asyncio.Task[None] | None = None
        self._timeout = config.fetch.request_timeout_ms / 1000.0
        self._backoff = config.fetch.retry_backoff_ms / 1000.0
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.fetcher.bind(self.loop)
        if self.config.enable_auto_commit:
            self._auto_commit = self.loop.create_task(self._auto_commit_forever())

    async def close(self, *, commit: bool) -> None:
        self.closing = True
        if self._auto_commit is not None:
            self._auto_commit.cancel()
        if self.group is not None:
            await self.group.leave()  # commits through before_revoke
        elif commit and self.config.enable_auto_commit:
            await self._commit_quietly(self.fetcher.positions())
        await self.fetcher.close()
        await self.connections.close()

    # --- assignment ---------------------------------------------------------------------

    async def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None,
        on_revoke: RebalanceCallback | None,
    ) -> None:
        group_config = self.config.group
        if group_config is None:
            raise ClientStateError("subscribe() needs a group_id; use assign() without one")
        if self.mode == "assign":
            raise ClientStateError("the consumer has partitions assigned by hand: unassign first")
        if not topics:
            await self.unsubscribe()
            return
        if on_assign is not None:
            self.callbacks["on_assign"] = on_assign
        if on_revoke is not None:
            self.callbacks["on_revoke"] = on_revoke
        self.mode = "subscribe"
        if self.group is None:
            self.group = GroupMember(
                group_config,
                self.metadata,
                self.fetcher,
                before_revoke=self._before_revoke,
                run_callback=self._run_callback,
            )
        self.group.subscribe(topics)

    async def unsubscribe(self) -> None:
        if self.group is not None:
            group, self.group = self.group, None
            await group.leave()
        self.fetcher.assign([])
        self.mode = None

    async def assign(self, tps: list[TopicPartition]) -> None:
        if self.mode == "subscribe":
            raise ClientStateError("the consumer is subscribed to a group: unsubscribe first")
        self.mode = "assign" if tps else None
        self.fetcher.assign(tps)

    async def assign_topics(self, topics: list[str]) -> None:
        """Assign every partition of ``topics`` (a consumer without a group)."""
        resp = await self.metadata.fetch(topics, timeout=self._timeout)
        tps = [
            TopicPartition(t.name, p.partition)
            for t in resp.topics
            for p in sorted(t.partitions, key=lambda p: p.partition)
        ]
        await self.assign(tps)

    async def _run_callback(self, name: str, tps: list[TopicPartition]) -> None:
        callback = self.callbacks.get(name)
        if callback is None:
            return
        try:
            if self._callbacks_on_thread:
                assert self.loop is not None
                await self.loop.run_in_executor(None, callback, list(tps))
            else:
                result = callback(list(tps))
                if inspect.isawaitable(result):
                    await result
        except Exception:
            log.exception("%s callback failed", name)

    async def _before_revoke(self, revoked: list[TopicPartition]) -> None:
        if not self.config.enable_auto_commit:
            return
        source = self.fetcher.positions() if self.closing else self.consumed
        await self._commit_quietly({tp: source[tp] for tp in revoked if tp in source})

    # --- positions ----------------------------------------------------------------------

    async def resolve_position(self, tp: TopicPartition) -> int:
        part = self.fetcher.partitions.get(tp)
        if part is None:
            raise ClientStateError(f"{tp} is not assigned to this consumer")
        if part.position is None:
            await self.fetcher._resolve(part)
        assert part.position is not None
        return part.position

    async def seek_to(self, tps: list[TopicPartition], timestamp: int) -> None:
        offsets = await asyncio.gather(*(self.fetcher.list_offset(tp, timestamp) for tp in tps))
        for tp, offset in zip(tps, offsets, strict=True):
            self.fetcher.seek(tp, offset)
            self.fetcher.restart(tp)

    def seek_on_loop(self, tp: TopicPartition, offset: int) -> None:
        self.fetcher.seek(tp, offset)
        self.fetcher.restart(tp)

    # --- offset lookups (any partition, assigned or not) --------------------------------

    async def list_offsets(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        """One ListOffsets per partition (-2 earliest, -1 latest, else a time in ms),
        all at once, each within the request timeout. Every lookup is waited for; the
        first failure, in the order given, is raised."""
        tps = list(timestamps)
        answers = await asyncio.gather(
            *(self.fetcher.list_offset_and_timestamp(tp, timestamps[tp]) for tp in tps),
            return_exceptions=True,
        )
        found: dict[TopicPartition, OffsetAndTimestamp] = {}
        for tp, answer in zip(tps, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            found[tp] = answer
        return found

    async def edge_offsets(self, tps: list[TopicPartition], edge: int) -> dict[TopicPartition, int]:
        """Each partition's log start offset (``EARLIEST``) or high watermark (``LATEST``)."""
        found = await self.list_offsets(dict.fromkeys(tps, edge))
        return {tp: answer.offset for tp, answer in found.items()}

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The first record at or after each time: its offset and timestamp (None: no
        such record below the high watermark), as kafka-python's ``offsets_for_times``."""
        found = await self.list_offsets(timestamps)
        return {tp: answer if answer.offset >= 0 else None for tp, answer in found.items()}

    # --- commits ------------------------------------------------------------------------

    def _group_id(self) -> str:
        if self.config.group_id is None:
            raise ClientStateError("committing offsets needs a group_id")
        return self.config.group_id

    async def commit(
        self, offsets: Mapping[TopicPartition, int] | None
    ) -> dict[TopicPartition, int]:
        group_id = self._group_id()
        chosen = dict(self.fetcher.positions() if offsets is None else offsets)
        if not chosen:
            return chosen
        member_id, generation, instance_id = "", -1, ""
        if self.group is not None and self.group.member_id:
            member_id, generation = self.group.member_id, self.group.generation
            instance_id = self.group.config.group_instance_id or ""
        request = pb.CommitOffsetsRequest(
            group_id=group_id,
            member_id=member_id,
            generation=generation,
            group_instance_id=instance_id,
            offsets=[
                pb.PartitionOffset(topic=tp.topic, partition=tp.partition, offset=offset)
                for tp, offset in sorted(chosen.items())
            ],
        )
        await self.metadata.coordinator_call(
            lambda stub: unary(stub.CommitOffsets(request, timeout=self._timeout)),
            timeout=self._timeout,
            backoff_s=self._backoff,
            what="CommitOffsets",
            group_id=group_id,
        )
        self._last_committed.update(chosen)
        return chosen

    async def _commit_quietly(self, offsets: Mapping[TopicPartition, int]) -> None:
        pending = {tp: o for tp, o in offsets.items() if self._last_committed.get(tp) != o}
        if not pending:
            return
        try:
            await self.commit(pending)
        except SentinelClientError as exc:
            log.warning("auto-commit of %d partitions failed: %s", len(pending), exc)

    async def _auto_commit_forever(self) -> None:
        interval = self.config.auto_commit_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            if self.group is not None and not self.group.joined.is_set():
                continue
            assigned = self.fetcher.partitions
            await self._commit_quietly({tp: o for tp, o in self.consumed.items() if tp in assigned})

    async def committed(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets of ``tps`` (absent: nothing committed)."""
        group_id = self._group_id()
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        request = pb.FetchOffsetsRequest(
            group_id=group_id,
            partitions=[pb.TopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()],
        )
        resp: pb.FetchOffsetsResponse = await self.metadata.coordinator_call(
            lambda stub: unary(stub.FetchOffsets(request, timeout=self._timeout)),
            timeout=self._timeout,
            backoff_s=self._backoff,
            what="FetchOffsets",
            group_id=group_id,
        )
        wanted = set(tps)
        return {
            tp: o.offset
            for o in resp.offsets
            if (tp := TopicPartition(o.topic, o.partition)) in wanted and o.offset >= 0
        }

    # --- for poll -----------------------------------------------------------------------

    def note_poll(self) -> None:
        """The application is back for more: what it got so far counts as consumed."""
        if self.config.enable_auto_commit:
            self.consumed = self.fetcher.positions()

    def raise_group_error(self) -> None:
        if self.group is not None and self.group.error is not None:
            error, self.group.error = self.group.error, None
            raise error
