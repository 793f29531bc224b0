"""The broker's keyed state on its own engine: topic definitions and committed offsets.

Keys (the engine sorts them bytewise, so each kind is one contiguous range)::

    b"t/" + topic name                                  -> JSON topic definition
    b"o/" + u16 len + group + u16 len + topic + u32 partition
                                                        -> i64 offset + UTF-8 metadata
    b"p/" + topic name                                  -> b"create" | b"delete"

A ``p/`` key is a topic whose directory is being made or removed: written before the
directory is created (``begin_create``; ``finish_create`` replaces it with the topic's
definition in one write) or with the deletion of the definition (``delete_topic``;
``finish_delete`` clears it once the files are gone). It is what lets a start tell the
directory a crash left mid-create or mid-delete (removed) from partition data whose
definition the meta store lost (refused: removing it would drop acknowledged records).

Every write is durable before it returns (the engine's WAL sync is ``always`` here,
whatever the partitions use): an acknowledged commit or topic creation survives a crash.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from sentinel.broker.group_events import OffsetAndMetadata, TopicPartition
from sentinel.errors import CorruptionError
from sentinel.fs import FS
from sentinel.storage.engine import Engine
from sentinel.storage.options import EngineOptions
from sentinel.storage.wal import SyncMode, WalOptions
from sentinel.storage.write_batch import WriteBatch

_TOPIC = b"t/"
_OFFSET = b"o/"
_PENDING = b"p/"
CREATING = "create"
DELETING = "delete"
GROWING = "grow"
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")


@dataclass(frozen=True, slots=True)
class TopicRecord:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)
    #: In a cluster: the partitions this broker holds a replica of (None: all of them).
    hosted: tuple[int, ...] | None = None

    def is_hosted(self, index: int) -> bool:
        return self.hosted is None or index in self.hosted

    def encode(self) -> bytes:
        raw: dict[str, object] = {
            "name": self.name,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": dict(self.configs),
        }
        if self.hosted is not None:
            raw["hosted"] = list(self.hosted)
        return json.dumps(raw, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> TopicRecord:
        try:
            raw = json.loads(data)
            return cls(
                name=str(raw["name"]),
                partitions=int(raw["partitions"]),
                replication_factor=int(raw.get("replication_factor", 1)),
                configs={str(k): str(v) for k, v in raw.get("configs", {}).items()},
                hosted=None if raw.get("hosted") is None
                else tuple(int(i) for i in raw["hosted"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptionError("meta store", "topic record", str(exc)) from None


def _offset_key(group: str, topic: str, partition: int) -> bytes:
    g, t = group.encode(), topic.encode()
    return b"".join((_OFFSET, _U16.pack(len(g)), g, _U16.pack(len(t)), t, _U32.pack(partition)))


def _parse_offset_key(key: bytes) -> tuple[str, str, int]:
    pos = len(_OFFSET)
    (glen,) = _U16.unpack_from(key, pos)
    pos += 2
    group = key[pos : pos + glen].decode()
    pos += glen
    (tlen,) = _U16.unpack_from(key, pos)
    pos += 2
    topic = key[pos : pos + tlen].decode()
    pos += tlen
    (partition,) = _U32.unpack_from(key, pos)
    return group, topic, partition


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class MetaStore:
    """Topic definitions and committed offsets, durable on every write."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, fs: FS, directory: str) -> MetaStore:
        """The meta store in ``directory``. Every entry is read once here (the store is
        small and a start reads it all anyway): damage in any table block refuses this
        open, which the broker reports as the meta store's, not a later read."""
        options = EngineOptions(
            memtable_bytes=4 * 1024 * 1024,
            block_cache_bytes=4 * 1024 * 1024,
            wal=WalOptions(sync_mode=SyncMode.ALWAYS),
        )
        engine = Engine.open(directory, options, fs=fs)
        try:
            for _entry in engine.scan():
                pass
        except BaseException:
            engine.close(durable=False)  # writes nothing more
            raise
        return cls(engine)

    # -- topics

    def topics(self) -> Iterator[TopicRecord]:
        for _key, value in self._engine.scan(_TOPIC, _prefix_end(_TOPIC)):
            yield TopicRecord.decode(value)

    def put_topic(self, record: TopicRecord) -> None:
        self._engine.put(_TOPIC + record.name.encode(), record.encode())

    def begin_create(self, name: str) -> None:
        """Record that ``name``'s directory is about to be created (before it is)."""
        self._engine.put(_PENDING + name.encode(), CREATING.encode())

    def finish_create(self, record: TopicRecord) -> None:
        """The topic's definition, and its creation no longer pending, in one write."""
        key = record.name.encode()
        batch = WriteBatch().put(_TOPIC + key, record.encode()).delete(_PENDING + key)
        self._engine.write(batch)

    def begin_grow(self, name: str) -> None:
        """Record that partition directories of ``name`` past its record's count are
        about to be made (before they are): a start removes any it finds then."""
        self._engine.put(_PENDING + name.encode(), GROWING.encode())

    def finish_grow(self, record: TopicRecord) -> None:
        """The grown topic's definition, and its growth no longer pending, in one write."""
        self.finish_create(record)

    def finish_delete(self, name: str) -> None:
        """``name``'s directory is gone (or its creation or growth was abandoned, or
        what a crashed growth left was removed): not pending."""
        self._engine.delete(_PENDING + name.encode())

    def pending(self) -> dict[str, str]:
        """Topics whose directory is being created or removed, or that are growing:
        name -> ``CREATING``, ``DELETING`` or ``GROWING``."""
        return {
            key[len(_PENDING) :].decode(errors="replace"): value.decode(errors="replace")
            for key, value in self._engine.scan(_PENDING, _prefix_end(_PENDING))
        }

    def delete_topic(self, name: str) -> None:
        """Forget the topic and every offset committed for it; its directory is pending
        removal (``finish_delete`` once the files are gone)."""
        key = name.encode()
        batch = WriteBatch().delete(_TOPIC + key).put(_PENDING + key, DELETING.encode())
        for key, _value in self._engine.scan(_OFFSET, _prefix_end(_OFFSET)):
            if _parse_offset_key(key)[1] == name:
                batch.delete(key)
        self._engine.write(batch)

    # -- offsets

    def commit_offsets(
        self, group: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        batch = WriteBatch()
        for (topic, partition), committed in offsets.items():
            value = _I64.pack(committed.offset) + committed.metadata.encode()
            batch.put(_offset_key(group, topic, partition), value)
        self._engine.write(batch)

    def delete_group_offsets(self, group: str) -> None:
        """Forget every offset ``group`` committed (the group was deleted)."""
        g = group.encode()
        prefix = _OFFSET + _U16.pack(len(g)) + g
        batch = WriteBatch()
        for key, _value in self._engine.scan(prefix, _prefix_end(prefix)):
            batch.delete(key)
        self._engine.write(batch)

    def delete_offsets(self, group: str, partitions: Iterable[TopicPartition]) -> None:
        """Forget ``group``'s offsets of ``partitions`` (OffsetDelete), in one write."""
        batch = WriteBatch()
        for topic, partition in partitions:
            batch.delete(_offset_key(group, topic, partition))
        self._engine.write(batch)

    def all_offsets(self) -> dict[str, dict[TopicPartition, OffsetAndMetadata]]:
        result: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        for key, value in self._engine.scan(_OFFSET, _prefix_end(_OFFSET)):
            group, topic, partition = _parse_offset_key(key)
            (offset,) = _I64.unpack_from(value, 0)
            result.setdefault(group, {})[(topic, partition)] = OffsetAndMetadata(
                offset, value[8:].decode(errors="replace")
            )
        return result

    def resume(self) -> None:
        """Retry a failed write path now (space was just freed); see ``Engine.resume``."""
        self._engine.resume()

    def close(self) -> None:
        self._engine.close()
