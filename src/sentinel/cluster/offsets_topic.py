"""The internal topic ``__consumer_offsets`` (Kafka's name and design), sans-IO.

In a cluster, a consumer group's committed offsets live in one partition of this
replicated topic, and the group's coordinator is the leader of that partition:

    partition = abs(java_string_hashcode(group_id)) % partitions

as Kafka's ``GroupMetadataManager.partitionFor`` (``Utils.abs(groupId.hashCode) %
groupMetadataTopicPartitionCount``), so a Kafka client's group lands on the same
partition number as on a Kafka cluster with as many offsets partitions.

Each commit is one record batch appended through the partition's Raft group
(acks=all), one record per committed partition. The records (format 1, JSON, compact
separators, UTF-8)::

    key   {"v":1,"g":"<group id>","t":"<topic>","p":<partition>}
    value {"o":<offset>,"m":"<metadata>"}     an offset committed
    value null                                 a tombstone: the offset was deleted

Replaying a partition from its start, the last value of a key wins and a tombstone
removes it (what a compacted topic keeps). Control batches (each leader's no-op, a
DeleteRecords) are skipped; a record that is not of this format is skipped too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sentinel.broker.group_events import OffsetAndMetadata, TopicPartition
from sentinel.partitioning import OFFSETS_TOPIC, java_string_hashcode, offsets_partition
from sentinel.record import build_batch, decode_records, iter_batches, parse_header

__all__ = [
    "DEFAULT_PARTITIONS",
    "FORMAT",
    "OFFSETS_TOPIC",
    "OFFSETS_TOPIC_CONFIGS",
    "OffsetRecord",
    "commit_batch",
    "decode_offset_record",
    "java_string_hashcode",
    "partition_for",
    "replay",
    "tombstone_batch",
]

DEFAULT_PARTITIONS = 10  # Kafka's offsets.topic.num.partitions is 50; 2 cores here
FORMAT = 1
#: As Kafka's: a compacted topic (never emptied by time or size retention).
OFFSETS_TOPIC_CONFIGS = {"cleanup.policy": "compact"}

#: The group -> partition hash lives with the partitioners (the client computes it too).
partition_for = offsets_partition


@dataclass(frozen=True, slots=True)
class OffsetRecord:
    group_id: str
    topic: str
    partition: int
    offset: OffsetAndMetadata | None  # None: a tombstone


def _key(group_id: str, tp: TopicPartition) -> bytes:
    return json.dumps(
        {"v": FORMAT, "g": group_id, "t": tp[0], "p": tp[1]}, separators=(",", ":")
    ).encode()


def commit_batch(group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata],
                 timestamp_ms: int) -> bytes:
    """One batch committing ``offsets`` of ``group_id``."""
    return build_batch([
        (
            _key(group_id, tp),
            json.dumps({"o": om.offset, "m": om.metadata}, separators=(",", ":")).encode(),
            (),
            timestamp_ms,
        )
        for tp, om in offsets.items()
    ])


def tombstone_batch(group_id: str, partitions: Iterable[TopicPartition],
                    timestamp_ms: int) -> bytes:
    """One batch deleting ``group_id``'s offsets of ``partitions``."""
    return build_batch([(_key(group_id, tp), None, (), timestamp_ms) for tp in partitions])


def decode_offset_record(key: bytes | None, value: bytes | None) -> OffsetRecord | None:
    """The record's meaning, or None for a record not of this format."""
    try:
        k = json.loads(key or b"")
        if not isinstance(k, dict) or k.get("v") != FORMAT:
            return None
        group_id, topic, partition = k["g"], k["t"], k["p"]
        if not (isinstance(group_id, str) and isinstance(topic, str)
                and isinstance(partition, int)):
            return None
        if value is None:
            return OffsetRecord(group_id, topic, partition, None)
        v = json.loads(value)
        offset, metadata = v["o"], v["m"]
        if not (isinstance(offset, int) and isinstance(metadata, str)):
            return None
        return OffsetRecord(group_id, topic, partition, OffsetAndMetadata(offset, metadata))
    except (ValueError, KeyError, TypeError):
        return None


def replay(
    batches: Iterable[bytes | memoryview],
    into: dict[str, dict[TopicPartition, OffsetAndMetadata]],
) -> None:
    """Apply the records of ``batches`` (in log order) to ``into``: group -> offsets."""
    for blob in batches:
        for batch in iter_batches(blob):
            if parse_header(batch).is_control:
                continue
            for record in decode_records(bytes(batch)):
                found = decode_offset_record(record.key, record.value)
                if found is None:
                    continue
                tp = (found.topic, found.partition)
                if found.offset is None:
                    group = into.get(found.group_id)
                    if group is not None:
                        group.pop(tp, None)
                        if not group:
                            del into[found.group_id]
                else:
                    into.setdefault(found.group_id, {})[tp] = found.offset
