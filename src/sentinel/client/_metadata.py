"""What a client knows of the cluster: topics' partition counts, partitions' leaders
and brokers' addresses, from ``FetchMetadata``.

Lives on the client's event loop; ``partitions`` is also read (never written) from the
caller's thread by ``Producer.send``, which is safe under the GIL: a dict lookup.
Refreshes are coalesced: callers that ask while one is running share its answer.

Against a cluster a refresh asks the current bootstrap broker, then every other
bootstrap broker and every broker the metadata named, in turn (each gets at most
``ATTEMPT_TIMEOUT_S``), round after round until the refresh's timeout: any live broker
answers. A group's coordinator is the leader of its partition of ``__consumer_offsets``
(``abs(java_string_hashcode(group_id)) % partitions``, as Kafka; a broker alone, or a
cluster without that topic: the controller), the brokers' list gives its address;
``coordinator_call`` sends a group request there and, on NOT_COORDINATOR,
COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS or a broker that cannot be
reached, looks the coordinator up again and retries until its deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from sentinel.client._channel import Connections, unary
from sentinel.client.errors import (
    BrokerUnavailableError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    LeaderNotAvailableError,
    NotControllerError,
    NotCoordinatorError,
    NotLeaderError,
    RequestTimedOutError,
    SentinelClientError,
    UnknownTopicOrPartitionError,
    UnresolvableBrokerError,
)
from sentinel.client.types import (
    BrokerInfo,
    ClusterMetadata,
    PartitionDescription,
    TopicDescription,
    TopicPartition,
)
from sentinel.partitioning import OFFSETS_TOPIC
from sentinel.partitioning import offsets_partition as partition_for
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

__all__ = [
    "COORDINATOR_MOVED",
    "LEADER_MOVED",
    "Metadata",
    "cluster_from_proto",
    "topic_from_proto",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPT_TIMEOUT_S = 2.0
"""The longest one broker may take to answer a metadata refresh while others could."""
MAX_ROUND_BACKOFF_S = 0.5

LEADER_MOVED: tuple[type[SentinelClientError], ...] = (
    NotLeaderError,
    LeaderNotAvailableError,
    UnknownTopicOrPartitionError,
    BrokerUnavailableError,
    RequestTimedOutError,
)
"""Failures of a partition's request after which its leader is looked up again."""

COORDINATOR_MOVED: tuple[type[SentinelClientError], ...] = (
    NotCoordinatorError,
    CoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotControllerError,
    LeaderNotAvailableError,
    BrokerUnavailableError,
    RequestTimedOutError,
)
"""Failures of a group request after which the coordinator is looked up again."""

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
        brokers=tuple(
            BrokerInfo(b.node_id, b.host, b.port, b.kafka_host, b.kafka_port or -1)
            for b in resp.brokers
        ),
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
        self._single_broker = len(bootstrap) == 1
        self.controller_id = -1
        self._coordinator_stale = True
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
            self._connections.single = self._single_broker
        self.controller_id = resp.controller_id
        self._coordinator_stale = resp.controller_id not in self._brokers
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
        """A broker said who leads ``tp`` (NOT_LEADER_OR_FOLLOWER's hint: host:port,
        or a bare node id); without a hint the leader is unknown until a refresh."""
        if not address:
            self._leaders.pop(tp, None)
            return
        if address.isdigit() and int(address) in self._brokers:
            self._leaders[tp] = int(address)
            return
        for node, known in self._brokers.items():
            if known == address:
                self._leaders[tp] = node
                return
        self._leaders.pop(tp, None)

    # --- the group coordinator ---------------------------------------------------------

    def coordinator_address(self, group_id: str = "") -> str | None:
        """The host:port of ``group_id``'s coordinator (the leader of its partition of
        ``__consumer_offsets``; no group, or no such topic known: the controller), or
        None for the bootstrap broker."""
        if self._single_broker:
            return None
        count = self.partitions.get(OFFSETS_TOPIC, 0)
        if group_id and count > 0:
            leader = self._leaders.get(
                TopicPartition(OFFSETS_TOPIC, partition_for(group_id, count))
            )
            if leader is not None and leader in self._brokers:
                return self._brokers[leader]
        return self._brokers.get(self.controller_id)

    def broker_addresses(self) -> list[str]:
        """Every broker's host:port the last metadata named (in node id order)."""
        return [self._brokers[n] for n in sorted(self._brokers)]

    def coordinator_moved(self) -> None:
        """The coordinator refused or did not answer: look it up before the next call."""
        self._coordinator_stale = True

    async def coordinator_call(
        self,
        call: Callable[[pb_grpc.SentinelStub], Awaitable[T]],
        *,
        timeout: float,
        backoff_s: float,
        what: str,
        group_id: str = "",
    ) -> T:
        """``call`` on ``group_id``'s coordinator's stub, finding the coordinator again and
        retrying on ``COORDINATOR_MOVED`` failures until ``timeout`` seconds pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        attempt = 0
        while True:
            if self._coordinator_stale and not self._single_broker:
                try:
                    await self.fetch(timeout=max(0.1, deadline - loop.time()))
                except SentinelClientError as exc:
                    log.debug("%s: no metadata for the coordinator: %s", what, exc)
            try:
                return await call(self._connections.stub(self.coordinator_address(group_id)))
            except COORDINATOR_MOVED as exc:
                if isinstance(exc, UnresolvableBrokerError):
                    raise
                self._coordinator_stale = True
                attempt += 1
                pause = min(backoff_s * attempt, MAX_ROUND_BACKOFF_S)
                if loop.time() + pause >= deadline:
                    raise
                log.debug("%s: %s; finding the coordinator again", what, exc)
                await asyncio.sleep(pause)

    # --- routing ---------------------------------------------------------------------

    def stub_for(self, tp: TopicPartition) -> pb_grpc.SentinelStub:
        return self._connections.stub(self.leader_address(tp))

    def stub_at(self, address: str | None) -> pb_grpc.SentinelStub:
        """A broker's stub (as ``leader_address`` names it; None: the bootstrap broker)."""
        return self._connections.stub(address)

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
            resp = await self._ask(request, timeout)
            self.update(resp)
            future.set_result(resp)
            return resp
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody shared
            raise
        finally:
            del self._pending[key]

    def _candidates(self) -> list[str]:
        """Who may answer a metadata request: the bootstrap brokers (the current one
        first), then the other brokers the cluster named."""
        order = self._connections.bootstrap_order()
        return order + [a for a in self._brokers.values() if a not in order]

    async def _ask(self, request: pb.MetadataRequest, timeout: float) -> pb.MetadataResponse:
        """FetchMetadata from the first broker that answers, within ``timeout``."""
        candidates = self._candidates()
        if len(candidates) == 1:  # one broker: connecting is retried within the call
            resp: pb.MetadataResponse = await unary(
                self._connections.stub(candidates[0]).FetchMetadata(request, timeout=timeout)
            )
            return resp
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: SentinelClientError | None = None
        rounds = 0
        while True:
            for address in candidates:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                stub = self._connections.stub(address)
                try:
                    resp = await unary(
                        stub.FetchMetadata(request, timeout=min(remaining, ATTEMPT_TIMEOUT_S))
                    )
                except SentinelClientError as exc:
                    if not (exc.retriable or isinstance(exc, UnresolvableBrokerError)):
                        raise
                    if isinstance(exc, UnknownTopicOrPartitionError):
                        raise
                    log.debug("metadata from %s failed: %s", address, exc)
                    last = exc
                    continue
                self._connections.prefer(address)
                return resp
            rounds += 1
            pause = min(0.05 * rounds, MAX_ROUND_BACKOFF_S)
            if last is None or loop.time() + pause >= deadline:
                raise last or RequestTimedOutError(
                    f"no broker answered a metadata request within {timeout} s"
                )
            await asyncio.sleep(pause)
            candidates = self._candidates()

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
