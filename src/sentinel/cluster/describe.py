"""What a broker of a cluster answers to Metadata, DescribeCluster and FindCoordinator.

Read from the controller's image (which brokers exist, where each partition's replicas
are, the leader each group last reported) and from this broker's own Raft groups (the
leader, term and in-sync replicas of the partitions it hosts, fresher than the image).
Pure functions: the cluster node passes what they read. A broker alone answers from
``broker/standalone_metadata`` instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from sentinel.broker.outcomes import (
    BrokerMetadata,
    ClusterMetadata,
    PartitionMetadata,
    TopicMetadata,
)
from sentinel.broker.replicated_partition import ReplicatedPartition
from sentinel.broker.standalone_metadata import broker_alone
from sentinel.broker.topics import OfflinePartition, Topic
from sentinel.cluster.metadata import BrokerAddresses, MetadataImage
from sentinel.config import BrokerConfig
from sentinel.errors import NotLeaderError, SentinelError
from sentinel.raft.multi_driver import MultiRaftDriver


class LeaderNotAvailableError(SentinelError):
    """The partition has no leader right now (an election is under way)."""

    kafka_code = 5
    code_name = "LEADER_NOT_AVAILABLE"


def broker_metadata(
    image: MetadataImage,
    node: int,
    config: BrokerConfig,
    logged: Mapping[int, BrokerAddresses] = MappingProxyType({}),
) -> BrokerMetadata | None:
    """Broker ``node`` as it registered with the controller; this broker (``config``)
    before its registration is applied; another as the controller's log stored here
    registered it (``logged``: a restarted broker whose image has not replayed that
    yet); None: a broker not known yet."""
    found = image.brokers.get(node)
    if found is None and node == config.node_id:
        return broker_alone(config)
    found = found or logged.get(node)
    if found is not None:
        return BrokerMetadata(node, found.host, found.grpc_port, found.host,
                              found.kafka_port)
    return None


def cluster_metadata(
    image: MetadataImage,
    nodes: Iterable[int],
    controller: int | None,
    cluster_id: str,
    config: BrokerConfig,
    *,
    logged: Mapping[int, BrokerAddresses] = MappingProxyType({}),
) -> ClusterMetadata:
    """The known brokers of ``nodes`` and the controller's leader (-1: none yet).

    Every broker the image or ``logged`` knows is listed: a Metadata answer that leaves
    out a live broker makes librdkafka drop its connections to it and fail the produce
    requests in flight there as not persisted, which it then sends again (records
    stored twice: ``tests/cluster/test_cluster_restart_metadata_e2e.py``)."""
    brokers = [b for b in (broker_metadata(image, n, config, logged) for n in sorted(nodes))
               if b is not None]
    return ClusterMetadata(
        tuple(brokers), -1 if controller is None else controller, (), cluster_id
    )


def topic_metadata(
    topic: Topic,
    *,
    image: MetadataImage,
    driver: MultiRaftDriver,
    hosted: Mapping[int, ReplicatedPartition],
    node_id: int,
    offsets: bool = True,
) -> TopicMetadata:
    """A topic's partitions: replicas as the controller placed them; leader, epoch and
    in-sync replicas from this broker's Raft group where it hosts one (``hosted``, by
    group), else as the leader last reported itself to the controller. ``offsets``
    False: placement only (Kafka's Metadata answer), offsets and size not read."""
    partitions = []
    for index, plog in enumerate(topic.partitions):
        assignment = image.assignment_at(topic.name, index)
        replicas = () if assignment is None else assignment.replicas
        part = None if assignment is None else hosted.get(assignment.group)
        leader, epoch, isr = -1, 0, replicas
        error: SentinelError | None = None
        if part is not None:
            core = driver.core(part.group)
            leader = -1 if core.leader is None else core.leader
            epoch = core.term
            reported = image.leader_of(part.group)
            if leader < 0 and reported is not None:
                # No leader known here (just started, or an election or a hand-over
                # to the preferred replica under way): the one the controller last
                # recorded, as Kafka's metadata cache names it until it learns the
                # next; that broker redirects. Not -1: librdkafka keeps a leader of
                # -1 and its watermark query fails until the metadata expires.
                leader, epoch = reported
            if core.lead is not None:
                isr = tuple(
                    r for r in replicas
                    if r == node_id or (
                        (pr := core.lead.progress.get(r)) is not None
                        and pr.recent_active and pr.match >= core.commit
                    )
                )
        elif assignment is not None and replicas:
            # Not a replica here: the leader as it reported itself to the controller,
            # else the preferred replica (a client told otherwise asks again).
            reported = image.leader_of(assignment.group)
            leader, epoch = reported if reported is not None else (replicas[0], 0)
        if leader < 0:
            error = LeaderNotAvailableError(f"partition {topic.name}-{index} has no leader")
        if isinstance(plog, OfflinePartition) and not isinstance(plog.error(), NotLeaderError):
            error = plog.error()
        if offsets:
            partitions.append(PartitionMetadata(
                partition=index, leader=leader, replicas=replicas, isr=isr,
                log_start_offset=plog.log_start_offset, log_end_offset=plog.log_end_offset,
                high_watermark=plog.high_watermark, size_bytes=plog.size_bytes,
                error=error, leader_epoch=epoch,
            ))
        else:
            partitions.append(PartitionMetadata(
                partition=index, leader=leader, replicas=replicas, isr=isr,
                error=error, leader_epoch=epoch,
            ))
    return TopicMetadata(
        topic.name, tuple(partitions), topic.config.to_map(), topic.replication_factor
    )
