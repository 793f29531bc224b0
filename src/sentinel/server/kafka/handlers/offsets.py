"""ListOffsets (2), v1-7, and DeleteRecords (21), v0-2: a partition's offsets.

ListOffsets: -2 the log start offset, -1 the high watermark (the last stable offset
too: no transactions), any other timestamp the first offset whose record is at or
after it (-1 if none), each with the partition's leader epoch now (``leader_epoch``).
DeleteRecords: the records below an offset (-1: the high
watermark) go; the answer is the new log start offset. Errors per partition.
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.errors import SentinelError
from sentinel.protocol.kafka.messages.delete_records import (
    DeleteRecordsPartitionResult,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
    DeleteRecordsTopicResult,
)
from sentinel.protocol.kafka.messages.list_offsets import (
    ListOffsetsPartitionResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

LIST_OFFSETS = 2
DELETE_RECORDS = 21


def _list_one(service: BrokerService, topic: str, partition: int,
              timestamp: int) -> ListOffsetsPartitionResponse:
    try:
        offset, found_ts = service.list_offset(topic, partition, timestamp)
        epoch = service.leader_epoch(topic, partition)
    except SentinelError as exc:
        return ListOffsetsPartitionResponse(partition_index=partition, error_code=exc.kafka_code)
    return ListOffsetsPartitionResponse(
        partition_index=partition,
        timestamp=found_ts,
        offset=offset,
        leader_epoch=epoch if offset >= 0 else -1,
    )


@handles(LIST_OFFSETS)
async def list_offsets(
    service: BrokerService, ctx: KafkaRequestContext, request: ListOffsetsRequest
) -> ListOffsetsResponse:
    return ListOffsetsResponse(
        topics=tuple(
            ListOffsetsTopicResponse(
                name=topic.name,
                partitions=tuple(
                    _list_one(service, topic.name, p.partition_index, p.timestamp)
                    for p in topic.partitions
                ),
            )
            for topic in request.topics
        )
    )


async def _delete_one(service: BrokerService, topic: str, partition: int,
                      offset: int) -> DeleteRecordsPartitionResult:
    try:
        low = await service.delete_records(topic, partition, offset)
    except SentinelError as exc:
        return DeleteRecordsPartitionResult(
            partition_index=partition, low_watermark=-1, error_code=exc.kafka_code
        )
    return DeleteRecordsPartitionResult(partition_index=partition, low_watermark=low)


@handles(DELETE_RECORDS)
async def delete_records(
    service: BrokerService, ctx: KafkaRequestContext, request: DeleteRecordsRequest
) -> DeleteRecordsResponse:
    results = []
    for topic in request.topics:
        partitions = [
            await _delete_one(service, topic.name, p.partition_index, p.offset)
            for p in topic.partitions
        ]
        results.append(DeleteRecordsTopicResult(name=topic.name, partitions=tuple(partitions)))
    return DeleteRecordsResponse(topics=tuple(results))
