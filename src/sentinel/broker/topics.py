"""The topics a broker hosts and their partition logs.

Layout under the data directory: ``topics/<topic>/<partition>/`` holds one partition's
engine. A topic exists once its definition is durable in the meta store; its partition
directories are created before that and removed after its definition is deleted, so a
crash in between leaves either a whole topic or an orphan directory that ``open`` removes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sentinel.broker.limits import TopicLimits
from sentinel.broker.meta_store import MetaStore, TopicRecord
from sentinel.broker.topic_config import (
    InvalidPartitionsError,
    TopicConfig,
    validate_partition_count,
    validate_topic_name,
)
from sentinel.clock import Clock
from sentinel.errors import CallerError
from sentinel.fs import FS
from sentinel.log.partition_log import PartitionLog
from sentinel.storage.options import EngineOptions


class UnknownTopicOrPartitionError(CallerError):
    """The topic or the partition does not exist on this broker."""


class TopicAlreadyExistsError(CallerError):
    """A topic of that name exists."""


class InvalidReplicationFactorError(CallerError):
    """The replication factor cannot be met by the brokers there are."""


@dataclass(eq=False)
class Topic:
    name: str
    config: TopicConfig
    replication_factor: int
    partitions: list[PartitionLog]
    configs: Mapping[str, str]

    def partition(self, index: int) -> PartitionLog:
        if not 0 <= index < len(self.partitions):
            raise UnknownTopicOrPartitionError(
                f"topic {self.name!r} has no partition {index} (it has {len(self.partitions)})"
            )
        return self.partitions[index]


class TopicRegistry:
    def __init__(
        self,
        fs: FS,
        data_dir: str,
        meta: MetaStore,
        *,
        clock: Clock,
        engine_options: EngineOptions,
        default_config: TopicConfig,
        broker_count: int = 1,
        limits: TopicLimits | None = None,
    ) -> None:
        self._fs = fs
        self._root = posixpath.join(data_dir, "topics")
        self._meta = meta
        self._clock = clock
        self._engine_options = engine_options
        self._default_config = default_config
        self._broker_count = broker_count
        self._topics: dict[str, Topic] = {}
        self.limits = limits

    @property
    def partition_total(self) -> int:
        """Partitions of every topic together."""
        return sum(len(t.partitions) for t in self._topics.values())

    def _check_limit(self, adding: int, what: str) -> None:
        if self.limits is not None:
            self.limits.check_partitions(self.partition_total, adding, what)

    def open(self) -> None:
        """Open every topic the meta store defines; remove orphan directories.

        The partition limit is not applied here: it bounds creation, never recovery."""
        self._fs.makedirs(self._root)
        for record in self._meta.topics():
            self._topics[record.name] = self._open_topic(record)
        for name in self._fs.listdir(self._root):
            if name not in self._topics:
                self._fs.remove_tree(posixpath.join(self._root, name))

    def _open_topic(self, record: TopicRecord) -> Topic:
        config = self._default_config.with_overrides(record.configs)
        logs = [
            PartitionLog.open(
                self._fs,
                posixpath.join(self._root, record.name, str(index)),
                config,
                self._clock,
                self._engine_options,
            )
            for index in range(record.partitions)
        ]
        return Topic(record.name, config, record.replication_factor, logs, record.configs)

    def create(
        self,
        name: str,
        partitions: int,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
    ) -> Topic:
        validate_topic_name(name)
        validate_partition_count(partitions)
        if not 1 <= replication_factor <= self._broker_count:
            raise InvalidReplicationFactorError(
                f"replication factor {replication_factor} needs that many brokers; "
                f"there are {self._broker_count}"
            )
        configs = dict(configs or {})
        self._default_config.with_overrides(configs)  # validate before anything is written
        if name in self._topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        self._check_limit(partitions, f"creating topic {name!r} with {partitions} partitions")
        record = TopicRecord(name, partitions, replication_factor, configs)
        topic_dir = posixpath.join(self._root, name)
        if self._fs.exists(topic_dir):
            self._fs.remove_tree(topic_dir)
        topic = self._open_topic(record)
        self._meta.put_topic(record)
        self._topics[name] = topic
        return topic

    def add_partitions(self, name: str, total: int) -> Topic:
        """Grow ``name`` to ``total`` partitions (Kafka's CreatePartitions)."""
        topic = self.get(name)
        validate_partition_count(total)
        current = len(topic.partitions)
        if total <= current:
            raise InvalidPartitionsError(
                f"topic {name!r} has {current} partitions; the new total must be larger"
            )
        self._check_limit(total - current, f"growing topic {name!r} to {total} partitions")
        for index in range(current, total):
            topic.partitions.append(
                PartitionLog.open(
                    self._fs,
                    posixpath.join(self._root, name, str(index)),
                    topic.config,
                    self._clock,
                    self._engine_options,
                )
            )
        self._meta.put_topic(TopicRecord(name, total, topic.replication_factor, topic.configs))
        return topic

    def delete(self, name: str) -> None:
        topic = self.get(name)
        del self._topics[name]
        self._meta.delete_topic(name)
        for log in topic.partitions:
            log.close()
        self._fs.remove_tree(posixpath.join(self._root, name))

    def get(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        return topic

    def find(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def partition_count(self, name: str) -> int | None:
        topic = self._topics.get(name)
        return len(topic.partitions) if topic else None

    def __iter__(self) -> Iterator[Topic]:
        return iter(sorted(self._topics.values(), key=lambda t: t.name))

    def close(self) -> None:
        for topic in self._topics.values():
            for log in topic.partitions:
                log.close()
        self._topics.clear()
