"""Administration: topics, offsets, consumer groups, cluster metadata.

``AsyncAdmin`` does the work on the caller's loop; ``Admin`` runs it on an IO thread
of its own and blocks. Every call is one RPC (to a bootstrap broker, the partition's
leader for ``list_offsets``, the group coordinator for group calls); refusals raise
the typed errors of ``sentinel.client.errors``. In a cluster a call is retried within
its timeout while the controller or coordinator is being elected, and moves to the
next bootstrap broker when one cannot be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar

from sentinel.client._channel import Connections, LoopThread, parse_bootstrap, unary
from sentinel.client._common import AsyncClosingContext, ClosingContext
from sentinel.client._kafka_config import resolve
from sentinel.client._metadata import Metadata, cluster_from_proto, topic_from_proto
from sentinel.client.errors import (
    BrokerUnavailableError,
    ClientClosedError,
    LeaderNotAvailableError,
    NotControllerError,
    RequestTimedOutError,
    SentinelClientError,
    UnresolvableBrokerError,
    never_sent,
)
from sentinel.client.types import (
    ClusterMetadata,
    GroupDescription,
    GroupSummary,
    MemberDescription,
    OffsetAndTimestamp,
    PartitionLag,
    TopicDescription,
    TopicPartition,
)
from sentinel.errors import InvalidArgumentError
from sentinel.proto_gen import sentinel_pb2 as pb

__all__ = ["Admin", "AsyncAdmin", "offset_spec"]

T = TypeVar("T")
EARLIEST = -2
LATEST = -1
OffsetSpec = Literal["earliest", "latest"] | int

_ADMIN_RETRY: tuple[type[SentinelClientError], ...] = (
    NotControllerError,
    RequestTimedOutError,
    LeaderNotAvailableError,
    BrokerUnavailableError,
)
"""Refusals of an admin call that a moment later (or another broker) may not give."""


def offset_spec(spec: OffsetSpec) -> int:
    """``"earliest"`` -> -2, ``"latest"`` -> -1, a timestamp in ms as it is."""
    if spec == "earliest":
        return EARLIEST
    if spec == "latest":
        return LATEST
    if isinstance(spec, int) and spec >= 0:
        return spec
    raise InvalidArgumentError(
        f"an offset spec is 'earliest', 'latest' or a timestamp >= 0, got {spec!r}"
    )


def _group_from_proto(resp: pb.DescribeGroupResponse) -> GroupDescription:
    return GroupDescription(
        group_id=resp.group_id,
        state=resp.state,
        protocol=resp.protocol,
        generation=resp.generation,
        members=tuple(
            MemberDescription(
                member_id=m.member_id,
                client_id=m.client_id,
                assignment=tuple(
                    TopicPartition(tps.topic, p) for tps in m.assignment for p in tps.partitions
                ),
                group_instance_id=m.group_instance_id or None,
            )
            for m in resp.members
        ),
        lag=tuple(
            PartitionLag(
                topic=lag.topic,
                partition=lag.partition,
                committed_offset=lag.committed_offset,
                log_end_offset=lag.log_end_offset,
                lag=lag.lag,
            )
            for lag in resp.lag
        ),
    )


def _admin_options(
    bootstrap: str | Sequence[str] | Mapping[str, object] | None,
    bootstrap_servers: str | Sequence[str] | None,
    request_timeout_ms: int,
    client_id: str,
) -> tuple[str | Sequence[str], dict[str, Any]]:
    given = {"request_timeout_ms": request_timeout_ms, "client_id": client_id}
    defaults = {"request_timeout_ms": 30_000, "client_id": "sentinel-python"}
    return resolve("admin", bootstrap, bootstrap_servers, given, defaults)


class AsyncAdmin(AsyncClosingContext):
    """Cluster administration on the caller's asyncio loop."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] | Mapping[str, object] | None = None,
        *,
        bootstrap_servers: str | Sequence[str] | None = None,
        request_timeout_ms: int = 30_000,
        client_id: str = "sentinel-python",
    ) -> None:
        """``bootstrap``: ``"host:port,..."``, a list, or a confluent-style config dict
        (``bootstrap.servers``, ``client.id``, ``request.timeout.ms``);
        ``bootstrap_servers=`` is the same as the address."""
        address, options = _admin_options(
            bootstrap, bootstrap_servers, request_timeout_ms, client_id
        )
        request_timeout_ms = options["request_timeout_ms"]
        self.client_id: str = options["client_id"]
        addresses = parse_bootstrap(address)
        self._connections = Connections(addresses)
        self._metadata = Metadata(self._connections, addresses)
        self._timeout = request_timeout_ms / 1000.0
        self._backoff_s = 0.05
        self._closed = False

    def _stub(self) -> Any:
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        return self._connections.bootstrap()

    async def _call(self, rpc: Callable[[Any, float], Awaitable[T]], *, read_only: bool) -> T:
        """``rpc`` on a bootstrap broker, within the request timeout, retried while the
        cluster is electing (NOT_CONTROLLER, REQUEST_TIMED_OUT, LEADER_NOT_AVAILABLE,
        BROKER_NOT_AVAILABLE) and on the next bootstrap broker when one cannot be
        reached. A change whose broker went away mid-call is not repeated (it may have
        been made); a read is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempt = 0
        while True:
            stub = self._stub()
            try:
                return await rpc(stub, max(0.05, deadline - loop.time()))
            except _ADMIN_RETRY as exc:
                unreached = isinstance(exc, BrokerUnavailableError) and exc.reason is None
                if isinstance(exc, UnresolvableBrokerError) or (
                    unreached and not read_only and not never_sent(exc)
                ):
                    raise
                if unreached:
                    self._connections.rotate()
                attempt += 1
                pause = min(self._backoff_s * attempt, 0.5)
                if loop.time() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)

    async def _group_call(
        self, rpc: Callable[[Any], Awaitable[T]], what: str, group_id: str = ""
    ) -> T:
        """``rpc`` on ``group_id``'s coordinator, found again when it moves."""
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        return await self._metadata.coordinator_call(
            rpc, timeout=self._timeout, backoff_s=self._backoff_s, what=what,
            group_id=group_id,
        )

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
    ) -> TopicDescription:
        """Create a topic; ``TopicAlreadyExistsError`` if it exists."""
        request = pb.CreateTopicRequest(
            name=name,
            partitions=partitions,
            replication_factor=replication_factor,
            configs=dict(configs or {}),
        )
        resp = await self._call(
            lambda stub, t: unary(stub.CreateTopic(request, timeout=t)),
            read_only=False,
        )
        return topic_from_proto(resp.topic)

    async def create_partitions(self, name: str, total: int) -> TopicDescription:
        """Grow ``name`` to ``total`` partitions."""
        request = pb.CreatePartitionsRequest(name=name, total=total)
        resp = await self._call(
            lambda stub, t: unary(stub.CreatePartitions(request, timeout=t)),
            read_only=False,
        )
        return topic_from_proto(resp.topic)

    async def reassign_partition(
        self, topic: str, partition: int, replicas: Sequence[int]
    ) -> None:
        """Move ``topic``-``partition`` to the brokers ``replicas`` (a cluster; the first
        is the preferred leader). Returns once the move is recorded; it is done when
        ``list_partition_reassignments`` no longer lists it."""
        request = pb.ReassignPartitionRequest(
            topic=topic, partition=partition, replicas=list(replicas)
        )
        await self._call(
            lambda stub, t: unary(stub.ReassignPartition(request, timeout=t)),
            read_only=False,
        )
        self._metadata.forget(topic)

    async def list_partition_reassignments(
        self,
    ) -> dict[tuple[str, int], tuple[tuple[int, ...], tuple[int, ...]]]:
        """Every move under way: (topic, partition) -> (its replicas now, the target)."""
        request = pb.ListPartitionReassignmentsRequest()
        resp = await self._call(
            lambda stub, t: unary(stub.ListPartitionReassignments(request, timeout=t)),
            read_only=True,
        )
        return {
            (m.topic, m.partition): (tuple(m.replicas), tuple(m.target))
            for m in resp.reassignments
        }

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
        request = pb.DeleteTopicRequest(name=name)
        await self._call(
            lambda stub, t: unary(stub.DeleteTopic(request, timeout=t)),
            read_only=False,
        )
        self._metadata.forget(name)

    async def list_topics(self) -> dict[str, TopicDescription]:
        """Every topic, by name."""
        resp = await self._call(
            lambda stub, t: unary(stub.ListTopics(pb.ListTopicsRequest(), timeout=t)),
            read_only=True,
        )
        return {t.name: topic_from_proto(t) for t in resp.topics}

    async def describe_topic(self, name: str) -> TopicDescription:
        """One topic; ``UnknownTopicOrPartitionError`` if it does not exist."""
        request = pb.DescribeTopicRequest(name=name)
        resp = await self._call(
            lambda stub, t: unary(stub.DescribeTopic(request, timeout=t)),
            read_only=True,
        )
        return topic_from_proto(resp.topic)

    async def list_offsets(
        self, topic: str, partition: int, spec: OffsetSpec = "latest"
    ) -> OffsetAndTimestamp:
        """The earliest offset, the latest (the next to be written), or the first
        whose timestamp is >= ``spec`` ms (offset -1 when there is none)."""
        request = pb.ListOffsetsRequest(
            topic=topic, partition=partition, timestamp_ms=offset_spec(spec)
        )
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        stub = self._metadata.stub_for(TopicPartition(topic, partition))
        resp = await unary(stub.ListOffsets(request, timeout=self._timeout))
        return OffsetAndTimestamp(resp.offset, resp.timestamp_ms)

    async def list_groups(self) -> list[GroupSummary]:
        """Every consumer group the cluster knows. Each broker of a cluster lists the
        groups it coordinates (Kafka's ListGroups), so every broker is asked; one that
        cannot answer is left out unless none can."""
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        await self._metadata.fetch(timeout=self._timeout)
        addresses = self._metadata.broker_addresses()
        if len(addresses) <= 1:
            resp = await self._group_call(
                lambda stub: unary(
                    stub.ListGroups(pb.ListGroupsRequest(), timeout=self._timeout)
                ),
                "ListGroups",
            )
            return [GroupSummary(g.group_id, g.state, g.members) for g in resp.groups]

        async def ask(address: str) -> pb.ListGroupsResponse:
            stub = self._connections.stub(address)
            resp: pb.ListGroupsResponse = await unary(
                stub.ListGroups(pb.ListGroupsRequest(), timeout=self._timeout)
            )
            return resp

        answers = await asyncio.gather(*(ask(a) for a in addresses), return_exceptions=True)
        found: dict[str, GroupSummary] = {}
        failures: list[SentinelClientError] = []
        for answer in answers:
            if isinstance(answer, SentinelClientError):
                failures.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                for g in answer.groups:
                    found[g.group_id] = GroupSummary(g.group_id, g.state, g.members)
        if failures and len(failures) == len(answers):
            raise failures[0]
        return [found[g] for g in sorted(found)]

    async def describe_group(self, group_id: str) -> GroupDescription:
        """A group's state, members and assignment, and its lag per committed partition."""
        request = pb.DescribeGroupRequest(group_id=group_id)
        resp = await self._group_call(
            lambda stub: unary(stub.DescribeGroup(request, timeout=self._timeout)),
            "DescribeGroup",
            group_id,
        )
        return _group_from_proto(resp)

    async def metadata(self, topics: Sequence[str] = ()) -> ClusterMetadata:
        """Brokers, controller and topics (all of them when ``topics`` is empty)."""
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        resp = await self._metadata.fetch(topics, timeout=self._timeout)
        return cluster_from_proto(resp)

    async def delete_group(self, group_id: str) -> None:
        """Delete a group without members and its committed offsets
        (``NonEmptyGroupError`` while it has members)."""
        request = pb.DeleteGroupRequest(group_id=group_id)
        await self._group_call(
            lambda stub: unary(stub.DeleteGroup(request, timeout=self._timeout)),
            "DeleteGroup",
            group_id,
        )

    async def alter_topic_configs(
        self, name: str, set_: Mapping[str, str], delete: Sequence[str] = ()
    ) -> TopicDescription:
        """Set some topic configs and remove others (back to the broker's default)."""
        request = pb.AlterTopicConfigsRequest(name=name, set=dict(set_), delete=list(delete))
        resp = await self._call(
            lambda stub, t: unary(stub.AlterTopicConfigs(request, timeout=t)),
            read_only=False,
        )
        return topic_from_proto(resp.topic)

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Delete the records below ``before_offset`` (-1: all); the new log start."""
        request = pb.DeleteRecordsRequest(
            topic=topic, partition=partition, before_offset=before_offset
        )
        resp = await self._call(
            lambda stub, t: unary(stub.DeleteRecords(request, timeout=t)),
            read_only=False,
        )
        return int(resp.log_start_offset)

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The offsets ``group_id`` committed, per partition."""
        request = pb.FetchOffsetsRequest(group_id=group_id)
        resp = await self._group_call(
            lambda stub: unary(stub.FetchOffsets(request, timeout=self._timeout)),
            "FetchOffsets",
            group_id,
        )
        return {TopicPartition(o.topic, o.partition): o.offset for o in resp.offsets}

    async def alter_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, int]
    ) -> None:
        """Commit ``offsets`` for a group without members (``NonEmptyGroupError``
        while it has some), as kafka-consumer-groups --reset-offsets does."""
        request = pb.AlterGroupOffsetsRequest(
            group_id=group_id,
            offsets=[
                pb.PartitionOffset(topic=tp.topic, partition=tp.partition, offset=offset)
                for tp, offset in offsets.items()
            ],
        )
        await self._group_call(
            lambda stub: unary(stub.AlterGroupOffsets(request, timeout=self._timeout)),
            "AlterGroupOffsets",
            group_id,
        )

    async def close(self) -> None:
        """Release the connections. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._connections.close()

    async def __aenter__(self) -> AsyncAdmin:
        return self


class Admin(ClosingContext):
    """Cluster administration, blocking; thread-safe. Same methods as ``AsyncAdmin``."""

    def __init__(
        self,
        bootstrap: str | Sequence[str] | Mapping[str, object] | None = None,
        *,
        bootstrap_servers: str | Sequence[str] | None = None,
        request_timeout_ms: int = 30_000,
        client_id: str = "sentinel-python",
    ) -> None:
        address, options = _admin_options(
            bootstrap, bootstrap_servers, request_timeout_ms, client_id
        )
        parse_bootstrap(address)  # fail here, not on the IO thread
        self.client_id: str = options["client_id"]
        self._io = LoopThread("sentinel-admin-io")
        self._closed = False
        self._close_at_exit()
        self._async = self._run(self._make(address, options["request_timeout_ms"]))

    @staticmethod
    async def _make(bootstrap: str | Sequence[str], request_timeout_ms: int) -> AsyncAdmin:
        return AsyncAdmin(bootstrap, request_timeout_ms=request_timeout_ms)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClientClosedError("the admin client is closed")
        return self._io.run(coro)

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
    ) -> TopicDescription:
        """Create a topic; ``TopicAlreadyExistsError`` if it exists."""
        return self._run(self._async.create_topic(name, partitions, replication_factor, configs))

    def create_partitions(self, name: str, total: int) -> TopicDescription:
        """Grow ``name`` to ``total`` partitions."""
        return self._run(self._async.create_partitions(name, total))

    def reassign_partition(self, topic: str, partition: int, replicas: Sequence[int]) -> None:
        """Move ``topic``-``partition`` to the brokers ``replicas`` (see the async one)."""
        self._run(self._async.reassign_partition(topic, partition, replicas))

    def list_partition_reassignments(
        self,
    ) -> dict[tuple[str, int], tuple[tuple[int, ...], tuple[int, ...]]]:
        """Every move under way: (topic, partition) -> (its replicas now, the target)."""
        return self._run(self._async.list_partition_reassignments())

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
        self._run(self._async.delete_topic(name))

    def list_topics(self) -> dict[str, TopicDescription]:
        """Every topic, by name."""
        return self._run(self._async.list_topics())

    def describe_topic(self, name: str) -> TopicDescription:
        """One topic; ``UnknownTopicOrPartitionError`` if it does not exist."""
        return self._run(self._async.describe_topic(name))

    def list_offsets(
        self, topic: str, partition: int, spec: OffsetSpec = "latest"
    ) -> OffsetAndTimestamp:
        """See ``AsyncAdmin.list_offsets``."""
        return self._run(self._async.list_offsets(topic, partition, spec))

    def list_groups(self) -> list[GroupSummary]:
        """Every consumer group the cluster knows."""
        return self._run(self._async.list_groups())

    def describe_group(self, group_id: str) -> GroupDescription:
        """A group's state, members, assignment and lag."""
        return self._run(self._async.describe_group(group_id))

    def metadata(self, topics: Sequence[str] = ()) -> ClusterMetadata:
        """Brokers, controller and topics (all of them when ``topics`` is empty)."""
        return self._run(self._async.metadata(topics))

    def close(self) -> None:
        """Release the connections and the IO thread. Idempotent."""
        if self._closed:
            return
        try:
            self._io.run(self._async.close(), 10.0)
        finally:
            self._closed = True
            self._closed_now()
            self._io.stop()

    def delete_group(self, group_id: str) -> None:
        """See ``AsyncAdmin.delete_group``."""
        self._run(self._async.delete_group(group_id))

    def alter_topic_configs(
        self, name: str, set_: Mapping[str, str], delete: Sequence[str] = ()
    ) -> TopicDescription:
        """See ``AsyncAdmin.alter_topic_configs``."""
        return self._run(self._async.alter_topic_configs(name, set_, delete))

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """See ``AsyncAdmin.delete_records``."""
        return self._run(self._async.delete_records(topic, partition, before_offset))

    def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """See ``AsyncAdmin.list_group_offsets``."""
        return self._run(self._async.list_group_offsets(group_id))

    def alter_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        """See ``AsyncAdmin.alter_group_offsets``."""
        self._run(self._async.alter_group_offsets(group_id, offsets))
