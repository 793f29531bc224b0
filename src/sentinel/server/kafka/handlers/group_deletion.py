"""The Kafka door's group deletions: DeleteGroups (42) and OffsetDelete (47).

DeleteGroups answers per group: only a group without members goes, with its committed
offsets (NON_EMPTY_GROUP otherwise, GROUP_ID_NOT_FOUND for an unknown one). OffsetDelete
(KIP-496, ``kafka-consumer-groups --delete-offsets``) removes a group's committed
offsets of some partitions: a refusal of the whole request (GROUP_ID_NOT_FOUND, ...) is
the top-level code with no topics, as Kafka answers it; otherwise a code per partition
(GROUP_SUBSCRIBED_TO_TOPIC while a member reads the topic, UNKNOWN_TOPIC_OR_PARTITION).
The broker (``BrokerService.delete_group`` / ``delete_offsets``) decides; these handlers
only translate values and errors.
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.errors import SentinelError, kafka_code_of
from sentinel.protocol.kafka.messages.delete_groups import (
    DeletableGroupResult,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
)
from sentinel.protocol.kafka.messages.offset_delete import (
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles
from sentinel.server.kafka.handlers.partition_codes import by_topic


@handles(42)
async def delete_groups(
    service: BrokerService, ctx: KafkaRequestContext, request: DeleteGroupsRequest
) -> DeleteGroupsResponse:
    results = []
    for group_id in request.groups_names:
        try:
            await service.delete_group(group_id)
        except SentinelError as exc:
            code = kafka_code_of(exc)
        else:
            code = 0
        results.append(DeletableGroupResult(group_id=group_id, error_code=code))
    return DeleteGroupsResponse(results=tuple(results))


@handles(47)
async def offset_delete(
    service: BrokerService, ctx: KafkaRequestContext, request: OffsetDeleteRequest
) -> OffsetDeleteResponse:
    partitions = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
    try:
        outcomes = await service.delete_offsets(request.group_id, partitions)
    except SentinelError as exc:
        return OffsetDeleteResponse(error_code=kafka_code_of(exc))
    codes = {(o.topic, o.partition): o.error_code for o in outcomes}
    return OffsetDeleteResponse(
        topics=by_topic(
            request.topics, codes, OffsetDeleteResponseTopic, OffsetDeleteResponsePartition
        )
    )
