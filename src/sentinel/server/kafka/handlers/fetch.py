"""Fetch (1), v4-11: whole stored batches from many partitions, long-polling.

``BrokerService.fetch_many`` answers once ``min_bytes`` are there, a partition fails,
or ``max_wait_ms`` passes, with each partition up to its ``partition_max_bytes`` and the
response up to ``max_bytes``. No transactions: the last stable offset is the high
watermark. Fetch sessions (v7+, KIP-227) are kept by the listener (``fetch_sessions``):
a session's request names only what changed, and its answer only the partitions with
something new. The stored batches go into the answer as
``wire.Pieces``, by reference: the listener writes them to the socket without joining
or copying them.
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.protocol.kafka.messages.fetch import (
    FetchableTopicResponse,
    FetchRequest,
    FetchResponse,
    PartitionData,
)
from sentinel.protocol.kafka.wire import Pieces
from sentinel.server.kafka.fetch_sessions import FetchStart, positions_of
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

FETCH = 1


@handles(FETCH)
async def fetch(
    service: BrokerService, ctx: KafkaRequestContext, request: FetchRequest
) -> FetchResponse:
    sessions = ctx.fetch_sessions
    if sessions is None or ctx.api_version < 7:
        start = FetchStart(positions_of(request))
    else:
        start = sessions.begin(request)
        if start.error_code:
            return FetchResponse(error_code=start.error_code)
    outcomes = await service.fetch_many(
        start.positions,
        max_wait_ms=max(0, request.max_wait_ms),
        min_bytes=max(0, request.min_bytes),
        max_bytes=max(0, request.max_bytes),
    )
    session_id = start.session_id
    if sessions is not None and session_id:
        answered, session_id = sessions.finish(start, outcomes)
        outcomes = tuple(answered)
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
        session_id=session_id,
        responses=tuple(
            FetchableTopicResponse(topic=name, partitions=tuple(parts))
            for name, parts in by_topic.items()
        ),
    )
