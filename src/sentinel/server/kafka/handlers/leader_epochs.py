"""OffsetForLeaderEpoch (23), v2-4: where a leader epoch ends in each partition.

Consumers that follow KIP-320 (kafka-python 3.0, librdkafka) ask it after a partition's
leader epoch moved, to check that the position they hold was not truncated away. One
``BrokerService.offset_for_leader_epoch`` per partition; a partition's refusal (not the
leader, an unknown partition, a fenced or unknown current epoch) is its error code. The
``replica_id`` of a follower's request is not used: our replicas follow through Raft.
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.errors import SentinelError
from sentinel.protocol.kafka.messages.offset_for_leader_epoch import (
    EpochEndOffset,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderPartition,
    OffsetForLeaderTopicResult,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

OFFSET_FOR_LEADER_EPOCH = 23


def _one(service: BrokerService, topic: str, p: OffsetForLeaderPartition) -> EpochEndOffset:
    try:
        epoch, end = service.offset_for_leader_epoch(
            topic, p.partition, p.leader_epoch, p.current_leader_epoch
        )
    except SentinelError as exc:
        return EpochEndOffset(error_code=exc.kafka_code, partition=p.partition)
    return EpochEndOffset(partition=p.partition, leader_epoch=epoch, end_offset=end)


@handles(OFFSET_FOR_LEADER_EPOCH)
async def offset_for_leader_epoch(
    service: BrokerService, ctx: KafkaRequestContext, request: OffsetForLeaderEpochRequest
) -> OffsetForLeaderEpochResponse:
    return OffsetForLeaderEpochResponse(
        topics=tuple(
            OffsetForLeaderTopicResult(
                topic=t.topic, partitions=tuple(_one(service, t.topic, p) for p in t.partitions)
            )
            for t in request.topics
        )
    )
