"""What a broker alone says about itself and its topics (Kafka's Metadata and
DescribeCluster answers without ``--peers``).

Pure functions over the config and the registry's topics; a cluster answers from its
controller's image instead (``cluster/node``). ``describe_topics`` is shared by both:
it turns the names a request lists into one ``TopicMetadata`` each, an unknown name
carrying its error rather than failing the whole request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sentinel.broker.outcomes import (
    BrokerMetadata,
    ClusterMetadata,
    PartitionMetadata,
    TopicMetadata,
)
from sentinel.broker.topics import OfflinePartition, Topic, TopicRegistry
from sentinel.config import BrokerConfig
from sentinel.errors import SentinelError


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


def topic_metadata_alone(node: int, topic: Topic) -> TopicMetadata:
    """A topic's partitions, each led and replicated by broker ``node`` alone."""
    partitions = tuple(
        PartitionMetadata(
            partition=index,
            leader=node,
            replicas=(node,),
            isr=(node,),
            log_start_offset=plog.log_start_offset,
            log_end_offset=plog.log_end_offset,
            high_watermark=plog.high_watermark,
            size_bytes=plog.size_bytes,
            error=plog.error() if isinstance(plog, OfflinePartition) else None,
        )
        for index, plog in enumerate(topic.partitions)
    )
    return TopicMetadata(
        topic.name, partitions, topic.config.to_map(), topic.replication_factor
    )


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
