"""Metadata (3), v1-12, and DescribeCluster (60), v0-1: this broker and its topics.

Both translate ``BrokerService.metadata``: the brokers with their Kafka address, the
controller, and each topic's partitions (leader, replicas, in-sync replicas, error).
"""

from __future__ import annotations

from sentinel.broker.outcomes import ClusterMetadata, TopicMetadata
from sentinel.broker.service import BrokerService
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC
from sentinel.errors import SentinelError
from sentinel.protocol.kafka.messages.describe_cluster import (
    DescribeClusterBroker,
    DescribeClusterRequest,
    DescribeClusterResponse,
)
from sentinel.protocol.kafka.messages.metadata import (
    MetadataRequest,
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

METADATA = 3
DESCRIBE_CLUSTER = 60

def _topic(topic: TopicMetadata) -> MetadataResponseTopic:
    return MetadataResponseTopic(
        error_code=topic.error_code,
        name=topic.name,
        is_internal=topic.name == OFFSETS_TOPIC,
        partitions=tuple(
            MetadataResponsePartition(
                error_code=p.error_code,
                partition_index=p.partition,
                leader_id=p.leader,
                leader_epoch=p.leader_epoch,
                replica_nodes=p.replicas,
                isr_nodes=p.isr,
            )
            for p in topic.partitions
        ),
    )


async def _describe(service: BrokerService, names: list[str], auto_create: bool) -> ClusterMetadata:
    """``service.metadata``; a refused auto-creation (a limit, an invalid name) is
    that refusal on each topic it would have created, the others described."""
    try:
        return await service.metadata(names, auto_create=auto_create)
    except SentinelError as exc:
        found = await service.metadata(names)
        return ClusterMetadata(
            found.brokers,
            found.controller_id,
            tuple(
                TopicMetadata(t.name, (), {}, 0, exc) if t.error is not None else t
                for t in found.topics
            ),
            found.cluster_id,
        )


@handles(METADATA)
async def metadata(
    service: BrokerService, ctx: KafkaRequestContext, request: MetadataRequest
) -> MetadataResponse:
    # null topics: every topic; an empty list: none (only the brokers).
    names = None if request.topics is None else [t.name or "" for t in request.topics]
    if names == []:
        cluster = service.cluster()
    else:
        cluster = await _describe(service, names or [], request.allow_auto_topic_creation)
    return MetadataResponse(
        brokers=tuple(
            MetadataResponseBroker(node_id=b.node_id, host=b.kafka_host, port=b.kafka_port)
            for b in cluster.brokers
        ),
        cluster_id=cluster.cluster_id,
        controller_id=cluster.controller_id,
        topics=tuple(_topic(t) for t in cluster.topics),
    )


@handles(DESCRIBE_CLUSTER)
async def describe_cluster(
    service: BrokerService, ctx: KafkaRequestContext, request: DescribeClusterRequest
) -> DescribeClusterResponse:
    cluster = service.cluster()
    return DescribeClusterResponse(
        cluster_id=cluster.cluster_id,
        controller_id=cluster.controller_id,
        brokers=tuple(
            DescribeClusterBroker(broker_id=b.node_id, host=b.kafka_host, port=b.kafka_port)
            for b in cluster.brokers
        ),
    )
