"""The request and response schemas of every API we speak, by API key.

One module per API, generated from Kafka's JSON message definitions by
``tools/gen_kafka_messages.py``: each holds the value classes (frozen dataclasses,
the union of every version's fields) and the ``REQUEST`` / ``RESPONSE`` messages.
"""

from __future__ import annotations

from types import ModuleType

from sentinel.protocol.kafka.messages import (
    alter_configs,
    alter_partition_reassignments,
    api_versions,
    create_partitions,
    create_topics,
    delete_groups,
    delete_records,
    delete_topics,
    describe_cluster,
    describe_configs,
    describe_groups,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    list_partition_reassignments,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    offset_for_leader_epoch,
    produce,
    sync_group,
)
from sentinel.protocol.kafka.schema import Message

__all__ = ["API_NAMES", "MODULES", "REQUESTS", "RESPONSES"]

MODULES: tuple[ModuleType, ...] = (
    produce, fetch, list_offsets, metadata, offset_commit, offset_fetch, find_coordinator,
    join_group, heartbeat, leave_group, sync_group, describe_groups, list_groups,
    api_versions, create_topics, delete_topics, init_producer_id, describe_configs,
    create_partitions, delete_records, alter_configs, incremental_alter_configs,
    describe_cluster, alter_partition_reassignments, list_partition_reassignments,
    offset_for_leader_epoch, delete_groups, offset_delete,
)

REQUESTS: dict[int, Message] = {m.REQUEST.api_key: m.REQUEST for m in MODULES}
RESPONSES: dict[int, Message] = {m.RESPONSE.api_key: m.RESPONSE for m in MODULES}
API_NAMES: dict[int, str] = {m.REQUEST.api_key: m.__name__.rsplit(".", 1)[1] for m in MODULES}
