"""DescribeConfigs (32) v1, AlterConfigs (33) v0-2, IncrementalAlterConfigs (44) v0-1.

Topic resources (type 2) read and change a topic's configs through ``BrokerService``
(validated as at creation, durable, applied at once). AlterConfigs replaces a topic's
whole set (what it does not name goes back to the broker's default), as in Kafka;
IncrementalAlterConfigs sets and deletes single keys. The broker (type 4) is described
from its settings and is not altered here: its settings are flags, read at start.
"""

from __future__ import annotations

from collections.abc import Mapping

from sentinel.broker.service import BrokerService
from sentinel.errors import InvalidArgumentError, SentinelError
from sentinel.protocol.kafka.messages import alter_configs as ac
from sentinel.protocol.kafka.messages import incremental_alter_configs as iac
from sentinel.protocol.kafka.messages.describe_configs import (
    DescribeConfigsRequest,
    DescribeConfigsResourceResult,
    DescribeConfigsResponse,
    DescribeConfigsResult,
)
from sentinel.server.kafka.handlers import KafkaRequestContext, handles

DESCRIBE_CONFIGS = 32
ALTER_CONFIGS = 33
INCREMENTAL_ALTER_CONFIGS = 44
TOPIC = 2
BROKER = 4
# Kafka's ConfigSource values.
TOPIC_CONFIG = 1
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5
SET, DELETE = 0, 1


def _broker_configs(service: BrokerService) -> dict[str, str]:
    config = service.config
    return {
        "broker.id": str(config.node_id),
        "auto.create.topics.enable": str(config.auto_create_topics).lower(),
        "num.partitions": str(config.default_partitions),
        "default.replication.factor": str(config.default_replication_factor),
        "socket.request.max.bytes": str(config.max_request_bytes),
    }


async def _describe_one(service: BrokerService, resource_type: int, name: str,
                  keys: tuple[str, ...] | None) -> DescribeConfigsResult:
    try:
        if resource_type == TOPIC:
            topic = await service.topic(name)
            values: Mapping[str, str] = topic.config.to_map()
            sources = {k: TOPIC_CONFIG if k in topic.configs else DEFAULT_CONFIG for k in values}
        elif resource_type == BROKER:
            values = _broker_configs(service)
            sources = dict.fromkeys(values, STATIC_BROKER_CONFIG)
        else:
            raise InvalidArgumentError(f"resource type {resource_type}: only topics (2) and "
                                       "brokers (4) have configs here")
    except SentinelError as exc:
        return DescribeConfigsResult(error_code=exc.kafka_code, error_message=str(exc),
                                     resource_type=resource_type, resource_name=name)
    return DescribeConfigsResult(
        error_message=None,
        resource_type=resource_type,
        resource_name=name,
        configs=tuple(
            DescribeConfigsResourceResult(
                name=key, value=value, read_only=resource_type == BROKER,
                config_source=sources[key],
            )
            for key, value in values.items()
            if keys is None or not keys or key in keys
        ),
    )


@handles(DESCRIBE_CONFIGS)
async def describe_configs(
    service: BrokerService, ctx: KafkaRequestContext, request: DescribeConfigsRequest
) -> DescribeConfigsResponse:
    return DescribeConfigsResponse(
        results=tuple(
            [
                await _describe_one(
                    service, r.resource_type, r.resource_name, r.configuration_keys
                )
                for r in request.resources
            ]
        )
    )


async def _alter_topic(service: BrokerService, resource_type: int, name: str,
                 set_: dict[str, str], delete: list[str] | None,
                 *, validate_only: bool) -> tuple[int, str | None]:
    """``delete`` None: replace the whole set (AlterConfigs). (code, message)."""
    try:
        if resource_type != TOPIC:
            raise InvalidArgumentError(
                f"resource type {resource_type}: only topic configs can be altered (the "
                "broker's settings are its flags, read at start)")
        topic = await service.topic(name)
        if delete is None:
            delete = [k for k in topic.configs if k not in set_]
        if not validate_only:
            await service.alter_topic_configs(name, set_, delete)
    except SentinelError as exc:
        return exc.kafka_code, str(exc)
    return 0, None


@handles(ALTER_CONFIGS)
async def alter_configs(
    service: BrokerService, ctx: KafkaRequestContext, request: ac.AlterConfigsRequest
) -> ac.AlterConfigsResponse:
    results = []
    for r in request.resources:
        set_ = {c.name: c.value for c in r.configs if c.value is not None}
        code, message = await _alter_topic(service, r.resource_type, r.resource_name, set_, None,
                                     validate_only=request.validate_only)
        results.append(ac.AlterConfigsResourceResponse(
            error_code=code, error_message=message, resource_type=r.resource_type,
            resource_name=r.resource_name))
    return ac.AlterConfigsResponse(responses=tuple(results))


@handles(INCREMENTAL_ALTER_CONFIGS)
async def incremental_alter_configs(
    service: BrokerService, ctx: KafkaRequestContext,
    request: iac.IncrementalAlterConfigsRequest,
) -> iac.IncrementalAlterConfigsResponse:
    results = []
    for r in request.resources:
        set_ = {c.name: c.value or "" for c in r.configs if c.config_operation == SET}
        delete = [c.name for c in r.configs if c.config_operation == DELETE]
        other = [c for c in r.configs if c.config_operation not in (SET, DELETE)]
        message: str | None
        if other:
            code, message = (InvalidArgumentError.kafka_code,
                             f"config {other[0].name!r}: APPEND and SUBTRACT are not supported")
        else:
            code, message = await _alter_topic(service, r.resource_type, r.resource_name, set_,
                                         delete, validate_only=request.validate_only)
        results.append(iac.AlterConfigsResourceResponse(
            error_code=code, error_message=message, resource_type=r.resource_type,
            resource_name=r.resource_name))
    return iac.IncrementalAlterConfigsResponse(responses=tuple(results))
