"""Produce (0), v3-9: record batches stored as received, a result per partition.

``BrokerService.produce_many`` appends every partition concurrently (their fsync waits
overlap) and answers each with its base offset or its refusal; the log stamps only
the base offset and the leader epoch (and LogAppendTime where the topic asks), so
compressed batches pass through as they came. Idempotent producers' duplicates are
answered with the original offsets and out-of-order sequences refused, by the
partition's producer state, as for the gRPC door. Transactions are not served.
"""

from __future__ import annotations

from sentinel.broker.outcomes import ProduceEntry, ProduceOutcome
from sentinel.broker.service import BrokerService
from sentinel.errors import InvalidArgumentError, SentinelError
from sentinel.protocol.kafka.messages.produce import (
    PartitionProduceResponse,
    ProduceRequest,
    ProduceResponse,
    TopicProduceResponse,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

PRODUCE = 0


def _refused(entries: list[ProduceEntry], error: SentinelError) -> tuple[ProduceOutcome, ...]:
    return tuple(
        ProduceOutcome(e.topic, e.partition, -1, -1, -1, False, 0, 0, error) for e in entries
    )


@handles(PRODUCE)
async def produce(
    service: BrokerService, ctx: KafkaRequestContext, request: ProduceRequest
) -> ProduceResponse:
    entries = [
        ProduceEntry(topic.name, part.index, part.records or b"")
        for topic in request.topic_data
        for part in topic.partition_data
    ]
    outcomes: tuple[ProduceOutcome, ...]
    if request.transactional_id is not None:
        outcomes = _refused(entries, InvalidArgumentError(
            "transactions are not supported: produce without transactional.id"))
    else:
        try:
            outcomes = await service.produce_many(entries, request.acks)
        except SentinelError as exc:  # the request as a whole (acks out of range)
            outcomes = _refused(entries, exc)
    by_topic: dict[str, list[PartitionProduceResponse]] = {}
    for o in outcomes:
        by_topic.setdefault(o.topic, []).append(
            PartitionProduceResponse(
                index=o.partition,
                error_code=o.error_code,
                base_offset=o.base_offset,
                log_append_time_ms=o.log_append_time_ms,
                log_start_offset=o.log_start_offset,
                error_message=None if o.error is None else str(o.error),
            )
        )
    return ProduceResponse(
        responses=tuple(
            TopicProduceResponse(name=name, partition_responses=tuple(parts))
            for name, parts in by_topic.items()
        )
    )
