"""What a broker alone says about itself and its topics (Kafka's Metadata and
DescribeCluster answers without ``--peers``).

Pure functions over the config and the registry's topics; a cluster answers from its
controller's image instead (``cluster/node``). ``describe_topics`` is shared by both:
it turns the names a request lists into one ``TopicMetadata`` each, an unknown name
carrying its error rather than failing the whole request.

``Placements`` keeps each topic's placement-only description (Kafka's Metadata answer:
leader, replicas, errors; no offsets) until the topic changes. A broker alone places
every partition on itself, so that description changes only when the topic is
recreated, grows, has its configs altered or a partition goes offline, and a full
Metadata request at 10,000 partitions reuses 100 values instead of building 10,000.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sentinel.broker.outcomes import (
    BrokerMetadata,
    ClusterMetadata,
    PartitionMetadata,
    TopicMetadata,
)
from sentinel.broker.topics import OfflinePartition, Topic, TopicRegistry
from sentinel.config import BrokerConfig
from sentinel.errors import SentinelError
from sentinel.log.partition_log import PartitionLog


def broker_alone(config: BrokerConfig) -> BrokerMetadata:
    """This broker, with its advertised gRPC and Kafka addresses."""
    return BrokerMetadata(
        config.node_id,
        config.advertised,
        config.port,
        config.kafka_advertised,
        config.kafka_port,
    )


def cluster_alone(config: BrokerConfig) -> ClusterMetadata:
    """A cluster of this one broker, which is its controller; no topics."""
    return ClusterMetadata((broker_alone(config),), config.node_id, ())


def topic_metadata_alone(node: int, topic: Topic, *, offsets: bool = True) -> TopicMetadata:
    """A topic's partitions, each led and replicated by broker ``node`` alone, with
    their offsets and size unless ``offsets`` is False (placement only: they are
    ``NOT_DESCRIBED``)."""
    replicas = (node,)

    def described(index: int, plog: PartitionLog | OfflinePartition) -> PartitionMetadata:
        error = plog.error() if isinstance(plog, OfflinePartition) else None
        if not offsets:
            return PartitionMetadata(index, node, replicas, replicas, error=error)
        return PartitionMetadata(
            index, node, replicas, replicas, plog.log_start_offset, plog.log_end_offset,
            plog.high_watermark, plog.size_bytes, error,
        )

    partitions = tuple(described(i, plog) for i, plog in enumerate(topic.partitions))
    return TopicMetadata(
        topic.name, partitions, topic.config.to_map(), topic.replication_factor
    )


def _offline(topic: Topic) -> tuple[OfflinePartition, ...]:
    return tuple(p for p in topic.partitions if isinstance(p, OfflinePartition))


@dataclass(frozen=True, slots=True)
class _Placed:
    """A topic's placement and what it was described from: it stands while the topic
    is the same object with the same partition count, configs and offline partitions."""

    topic: Topic
    count: int
    configs: Mapping[str, str]
    offline: tuple[OfflinePartition, ...]
    described: TopicMetadata


class Placements:
    """Each topic's placement (``topic_metadata_alone`` without offsets), kept until
    the topic changes (the module's docstring). Holds at most one entry per topic of
    the registry: entries of topics gone are dropped once the entries outnumber the
    registry's topics."""

    __slots__ = ("_node", "_placed", "_registry")

    def __init__(self, node: int, registry: TopicRegistry) -> None:
        self._node = node
        self._registry = registry
        self._placed: dict[str, _Placed] = {}

    def __call__(self, topic: Topic) -> TopicMetadata:
        """The placement of ``topic``: the same value as last time, unless the
        topic changed since."""
        placed = self._placed.get(topic.name)
        offline = _offline(topic)
        if (
            placed is not None
            and placed.topic is topic
            and placed.count == len(topic.partitions)
            and placed.configs is topic.configs
            and placed.offline == offline
        ):
            return placed.described
        described = topic_metadata_alone(self._node, topic, offsets=False)
        self._placed[topic.name] = _Placed(
            topic, len(topic.partitions), topic.configs, offline, described
        )
        if len(self._placed) > len(self._registry):
            self._placed = {
                name: kept for name, kept in self._placed.items()
                if self._registry.find(name) is not None
            }
        return described


def describe_topics(
    registry: TopicRegistry,
    names: Sequence[str],
    describe: Callable[[Topic], TopicMetadata],
) -> list[TopicMetadata]:
    """``describe`` of each named topic (none named: all); an unknown one is a
    ``TopicMetadata`` with its error."""
    if not names:
        return [describe(t) for t in registry]
    described = []
    for name in names:
        try:
            described.append(describe(registry.get(name)))
        except SentinelError as exc:
            described.append(TopicMetadata(name, (), {}, 0, exc))
    return described
