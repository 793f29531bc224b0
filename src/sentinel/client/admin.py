"""Administration: topics, offsets, consumer groups, cluster metadata.

``AsyncAdmin`` does the work on the caller's loop; ``Admin`` runs it on an IO thread
of its own and blocks. Every call is one RPC (to the bootstrap broker, or the
partition's leader for ``list_offsets``); refusals raise the typed errors of
``sentinel.client.errors``.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar

from sentinel.client._channel import Connections, LoopThread, parse_bootstrap, unary
from sentinel.client._common import AsyncClosingContext, ClosingContext
from sentinel.client._kafka_config import resolve
from sentinel.client._metadata import Metadata, cluster_from_proto, topic_from_proto
from sentinel.client.errors import ClientClosedError
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
        self._closed = False

    def _stub(self) -> Any:
        if self._closed:
            raise ClientClosedError("the admin client is closed")
        return self._connections.bootstrap()

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
        resp = await unary(self._stub().CreateTopic(request, timeout=self._timeout))
        return topic_from_proto(resp.topic)

    async def create_partitions(self, name: str, total: int) -> TopicDescription:
        """Grow ``name`` to ``total`` partitions."""
        request = pb.CreatePartitionsRequest(name=name, total=total)
        resp = await unary(self._stub().CreatePartitions(request, timeout=self._timeout))
        return topic_from_proto(resp.topic)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
        request = pb.DeleteTopicRequest(name=name)
        await unary(self._stub().DeleteTopic(request, timeout=self._timeout))
        self._metadata.forget(name)

    async def list_topics(self) -> dict[str, TopicDescription]:
        """Every topic, by name."""
        resp = await unary(self._stub().ListTopics(pb.ListTopicsRequest(), timeout=self._timeout))
        return {t.name: topic_from_proto(t) for t in resp.topics}

    async def describe_topic(self, name: str) -> TopicDescription:
        """One topic; ``UnknownTopicOrPartitionError`` if it does not exist."""
        request = pb.DescribeTopicRequest(name=name)
        resp = await unary(self._stub().DescribeTopic(request, timeout=self._timeout))
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
        """Every consumer group the cluster knows."""
        resp = await unary(self._stub().ListGroups(pb.ListGroupsRequest(), timeout=self._timeout))
        return [GroupSummary(g.group_id, g.state, g.members) for g in resp.groups]

    async def describe_group(self, group_id: str) -> GroupDescription:
        """A group's state, members and assignment, and its lag per committed partition."""
        request = pb.DescribeGroupRequest(group_id=group_id)
        resp = await unary(self._stub().DescribeGroup(request, timeout=self._timeout))
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
        await unary(self._stub().DeleteGroup(request, timeout=self._timeout))

    async def alter_topic_configs(
        self, name: str, set_: Mapping[str, str], delete: Sequence[str] = ()
    ) -> TopicDescription:
        """Set some topic configs and remove others (back to the broker's default)."""
        request = pb.AlterTopicConfigsRequest(name=name, set=dict(set_), delete=list(delete))
        resp = await unary(self._stub().AlterTopicConfigs(request, timeout=self._timeout))
        return topic_from_proto(resp.topic)

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """Delete the records below ``before_offset`` (-1: all); the new log start."""
        request = pb.DeleteRecordsRequest(
            topic=topic, partition=partition, before_offset=before_offset
        )
        resp = await unary(self._stub().DeleteRecords(request, timeout=self._timeout))
        return int(resp.log_start_offset)

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The offsets ``group_id`` committed, per partition."""
        request = pb.FetchOffsetsRequest(group_id=group_id)
        resp = await unary(self._stub().FetchOffsets(request, timeout=self._timeout))
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
        await unary(self._stub().AlterGroupOffsets(request, timeout=self._timeout))

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
