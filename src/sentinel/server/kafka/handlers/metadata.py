"""Metadata (3), v1-12, and DescribeCluster (60), v0-1: this broker and its topics.

Both translate ``BrokerService.metadata``: the brokers with their Kafka address, the
controller, and each topic's partitions (leader, replicas, in-sync replicas, error).

Metadata asks the service for placement only (no offsets), and keeps each topic's
answer encoded at each version while the service answers the same value for it (a
broker alone does until the topic changes: ``standalone_metadata.Placements``). At
10,000 partitions a full answer was built, encoded and scanned for its error code in
~85 ms of the event loop, every request; it is now ~100 byte strings joined.
"""

from __future__ import annotations

from typing import cast

from sentinel.broker.outcomes import ClusterMetadata, TopicMetadata
from sentinel.broker.service import BrokerService
from sentinel.cluster.offsets_topic import OFFSETS_TOPIC
from sentinel.errors import SentinelError
from sentinel.protocol.kafka import serde
from sentinel.protocol.kafka.messages.describe_cluster import (
    DescribeClusterBroker,
    DescribeClusterRequest,
    DescribeClusterResponse,
)
from sentinel.protocol.kafka.messages.metadata import (
    RESPONSE,
    MetadataRequest,
    MetadataResponse,
    MetadataResponseBroker,
    MetadataResponsePartition,
    MetadataResponseTopic,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles
from sentinel.server.kafka.response_errors import first_error_code

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


KEPT_TOPIC_ANSWERS = 16_384
"""Encoded topic answers kept (one per topic and version asked); past it, all are
dropped and encoded anew as they are asked again."""


class EncodedTopics:
    """Each topic's answer encoded once per version, kept while the service describes
    the topic with the very same value (identity: a new value, in a cluster every
    request, is encoded anew). Only topics described without error are kept, so names
    that do not exist do not fill it."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], tuple[TopicMetadata, serde.EncodedStruct]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def encoded(self, topic: TopicMetadata, version: int) -> serde.EncodedStruct:
        key = (topic.name, version)
        kept = self._kept.get(key)
        if kept is not None and kept[0] is topic:
            return kept[1]
        answer = _topic(topic)
        encoded = serde.encode_nested(RESPONSE, version, answer, first_error_code(answer))
        if topic.error is None:
            if len(self._kept) >= KEPT_TOPIC_ANSWERS:
                self._kept.clear()
            self._kept[key] = (topic, encoded)
        return encoded


#: One per process: entries are checked by identity, so brokers sharing it (tests
#: running several in one process) only take each other's places.
_ENCODED_TOPICS = EncodedTopics()


async def _describe(service: BrokerService, names: list[str], auto_create: bool) -> ClusterMetadata:
    """``service.metadata`` for placement only; a refused auto-creation (a limit, an
    invalid name) is that refusal on each topic it would have created, the others
    described."""
    try:
        return await service.metadata(names, auto_create=auto_create, offsets=False)
    except SentinelError as exc:
        found = await service.metadata(names, offsets=False)
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
        # Each topic stands pre-encoded (``serde.EncodedStruct``) in its answer's place.
        topics=cast(
            "tuple[MetadataResponseTopic, ...]",
            tuple(_ENCODED_TOPICS.encoded(t, ctx.api_version) for t in cluster.topics),
        ),
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
