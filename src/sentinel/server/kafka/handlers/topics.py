"""CreateTopics (19) v2-4, DeleteTopics (20) v1-4, CreatePartitions (37) v0-1.

Each translates one ``BrokerService`` call per topic; a refusal is that topic's error
code and message. ``validate_only`` checks what can be checked without creating (the
topic's existence) and changes nothing.
"""

from __future__ import annotations

from sentinel.broker.service import BrokerService
from sentinel.errors import SentinelError
from sentinel.protocol.kafka.messages.create_partitions import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreatePartitionsTopicResult,
)
from sentinel.protocol.kafka.messages.create_topics import (
    CreatableTopic,
    CreatableTopicResult,
    CreateTopicsRequest,
    CreateTopicsResponse,
)
from sentinel.protocol.kafka.messages.delete_topics import (
    DeletableTopicResult,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

CREATE_TOPICS = 19
DELETE_TOPICS = 20
CREATE_PARTITIONS = 37
TOPIC_ALREADY_EXISTS = 36


async def _create_one(service: BrokerService, topic: CreatableTopic,
                validate_only: bool) -> CreatableTopicResult:
    configs = {c.name: c.value for c in topic.configs if c.value is not None}
    partitions = topic.num_partitions
    if topic.assignments:  # manual assignment: one partition per entry (one broker)
        partitions = len(topic.assignments)
    try:
        if validate_only:
            if topic.name in {t.name for t in await service.topics()}:
                return CreatableTopicResult(
                    name=topic.name, error_code=TOPIC_ALREADY_EXISTS,
                    error_message=f"topic {topic.name!r} already exists")
        else:
            await service.create_topic(topic.name, partitions, topic.replication_factor, configs)
    except SentinelError as exc:
        return CreatableTopicResult(
            name=topic.name, error_code=exc.kafka_code, error_message=str(exc)
        )
    return CreatableTopicResult(name=topic.name, error_message=None)


@handles(CREATE_TOPICS)
async def create_topics(
    service: BrokerService, ctx: KafkaRequestContext, request: CreateTopicsRequest
) -> CreateTopicsResponse:
    return CreateTopicsResponse(
        topics=tuple([await _create_one(service, t, request.validate_only) for t in request.topics])
    )


async def _delete_one(service: BrokerService, name: str) -> DeletableTopicResult:
    try:
        await service.delete_topic(name)
    except SentinelError as exc:
        return DeletableTopicResult(name=name, error_code=exc.kafka_code)
    return DeletableTopicResult(name=name)


@handles(DELETE_TOPICS)
async def delete_topics(
    service: BrokerService, ctx: KafkaRequestContext, request: DeleteTopicsRequest
) -> DeleteTopicsResponse:
    return DeleteTopicsResponse(
        responses=tuple([await _delete_one(service, name) for name in request.topic_names])
    )


async def _grow_one(service: BrokerService, name: str, count: int,
              validate_only: bool) -> CreatePartitionsTopicResult:
    try:
        if validate_only:
            await service.topic(name)
        else:
            await service.add_partitions(name, count)
    except SentinelError as exc:
        return CreatePartitionsTopicResult(
            name=name, error_code=exc.kafka_code, error_message=str(exc)
        )
    return CreatePartitionsTopicResult(name=name)


@handles(CREATE_PARTITIONS)
async def create_partitions(
    service: BrokerService, ctx: KafkaRequestContext, request: CreatePartitionsRequest
) -> CreatePartitionsResponse:
    return CreatePartitionsResponse(
        results=tuple(
            [await _grow_one(service, t.name, t.count, request.validate_only)
             for t in request.topics]
        )
    )
