"""Fetch (1), v4-11: whole stored batches from many partitions, long-polling.

``BrokerService.fetch_many`` answers once ``min_bytes`` are there, a partition fails,
or ``max_wait_ms`` passes, with each partition up to its ``partition_max_bytes`` and the
response up to ``max_bytes``. No transactions: the last stable offset is the high
watermark. Fetch sessions (v7+) are not kept: the answer's session id is 0, which tells
the client to send full requests. The stored batches go into the answer as
``wire.Pieces``, by reference: the listener writes them to the socket without joining
or copying them.
"""

from __future__ import annotations

from sentinel.broker.outcomes import FetchPosition
from sentinel.broker.service import BrokerService
from sentinel.protocol.kafka.messages.fetch import (
    FetchableTopicResponse,
    FetchRequest,
    FetchResponse,
    PartitionData,
)
from sentinel.protocol.kafka.wire import Pieces
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

FETCH = 1


@handles(FETCH)
async def fetch(
    service: BrokerService, ctx: KafkaRequestContext, request: FetchRequest
) -> FetchResponse:
    positions = [
        FetchPosition(topic.topic, part.partition, part.fetch_offset, part.partition_max_bytes)
        for topic in request.topics
        for part in topic.partitions
    ]
    outcomes = await service.fetch_many(
        positions,
        max_wait_ms=max(0, request.max_wait_ms),
        min_bytes=max(0, request.min_bytes),
        max_bytes=max(0, request.max_bytes),
    )
    by_topic: dict[str, list[PartitionData]] = {}
    for o in outcomes:
        by_topic.setdefault(o.topic, []).append(
            PartitionData(
                partition_index=o.partition,
                error_code=o.error_code,
                high_watermark=o.high_watermark,
                last_stable_offset=o.high_watermark,
                log_start_offset=o.log_start_offset,
                records=Pieces(o.chunks),
            )
        )
    return FetchResponse(
        responses=tuple(
            FetchableTopicResponse(topic=name, partitions=tuple(parts))
            for name, parts in by_topic.items()
        )
    )
