"""What a client knows of the cluster: topics' partition counts, partitions' leaders
and brokers' addresses, from ``FetchMetadata``.

Lives on the client's event loop; ``partitions`` is also read (never written) from the
caller's thread by ``Producer.send``, which is safe under the GIL: a dict lookup.
Refreshes are coalesced: callers that ask while one is running share its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sentinel.client._channel import Connections, unary
from sentinel.client.errors import UnknownTopicOrPartitionError
from sentinel.client.types import (
    BrokerInfo,
    ClusterMetadata,
    PartitionDescription,
    TopicDescription,
    TopicPartition,
)
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

__all__ = ["Metadata", "cluster_from_proto", "topic_from_proto"]

_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def topic_from_proto(info: pb.TopicInfo) -> TopicDescription:
    partitions = tuple(
        PartitionDescription(
            partition=p.partition,
            leader=p.leader,
            replicas=tuple(p.replicas),
            isr=tuple(p.isr),
            log_start_offset=p.log_start_offset,
            log_end_offset=p.log_end_offset,
            high_watermark=p.high_watermark,
            size_bytes=p.size_bytes,
        )
        for p in sorted(info.partitions, key=lambda p: p.partition)
    )
    return TopicDescription(
        name=info.name,
        partitions=partitions,
        configs=dict(info.configs),
        replication_factor=info.replication_factor,
    )


def cluster_from_proto(resp: pb.MetadataResponse) -> ClusterMetadata:
    return ClusterMetadata(
        brokers=tuple(BrokerInfo(b.node_id, b.host, b.port) for b in resp.brokers),
        controller_id=resp.controller_id,
        topics={t.name: topic_from_proto(t) for t in resp.topics},
    )


class Metadata:
    """Partition counts, leaders and broker addresses, refreshed on demand."""

    def __init__(self, connections: Connections, bootstrap: list[str]) -> None:
        self._connections = connections
        self._bootstrap_host = bootstrap[0].rpartition(":")[0]
        self.partitions: dict[str, int] = {}
        self._leaders: dict[TopicPartition, int] = {}
        self._brokers: dict[int, str] = {}
        self._single_broker = True
        self._pending: dict[tuple[tuple[str, ...], bool], asyncio.Future[pb.MetadataResponse]] = {}

    def update(self, resp: pb.MetadataResponse) -> None:
        """Take what a metadata answer says about its brokers and topics."""
        brokers: dict[int, str] = {}
        for broker in resp.brokers:
            host = broker.host
            if host in _UNSPECIFIED_HOSTS:
                host = self._bootstrap_host
            brokers[broker.node_id] = f"{host}:{broker.port}"
        if brokers:
            self._brokers = brokers
            self._single_broker = len(brokers) == 1
        for topic in resp.topics:
            self.partitions[topic.name] = len(topic.partitions)
            for p in topic.partitions:
                self._leaders[TopicPartition(topic.name, p.partition)] = p.leader

    def forget(self, topic: str) -> None:
        """Drop what is known of ``topic`` (it was deleted, or looked up in vain)."""
        self.partitions.pop(topic, None)
        for tp in [tp for tp in self._leaders if tp.topic == topic]:
            del self._leaders[tp]

    def leader_address(self, tp: TopicPartition) -> str | None:
        """The leader's host:port, or None to use the bootstrap broker."""
        if self._single_broker:
            return None
        leader = self._leaders.get(tp)
        return None if leader is None else self._brokers.get(leader)

    def note_leader(self, tp: TopicPartition, address: str | None) -> None:
        """A broker said who leads ``tp`` (NOT_LEADER_OR_FOLLOWER's hint)."""
        if not address:
            return
        for node, known in self._brokers.items():
            if known == address:
                self._leaders[tp] = node
                return

    def stub_for(self, tp: TopicPartition) -> pb_grpc.SentinelStub:
        return self._connections.stub(self.leader_address(tp))

    async def fetch(
        self, topics: Iterable[str] = (), *, auto_create: bool = False, timeout: float = 30.0
    ) -> pb.MetadataResponse:
        """Ask the cluster (all topics when ``topics`` is empty), sharing a running ask."""
        key = (tuple(sorted(set(topics))), auto_create)
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[pb.MetadataResponse] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            request = pb.MetadataRequest(topics=list(key[0]), allow_auto_topic_creation=auto_create)
            call = self._connections.bootstrap().FetchMetadata(request, timeout=timeout)
            resp: pb.MetadataResponse = await unary(call)
            self.update(resp)
            future.set_result(resp)
            return resp
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody shared
            raise
        finally:
            del self._pending[key]

    async def partition_count(
        self, topic: str, *, auto_create: bool, refresh: bool = False, timeout: float = 30.0
    ) -> int:
        """``topic``'s partition count, asking the cluster if unknown or ``refresh``."""
        count = self.partitions.get(topic)
        if count is not None and not refresh:
            return count
        await self.fetch([topic], auto_create=auto_create, timeout=timeout)
        count = self.partitions.get(topic)
        if not count:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} does not exist", reason="UNKNOWN_TOPIC_OR_PARTITION"
            )
        return count
