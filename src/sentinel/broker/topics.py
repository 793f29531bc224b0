"""The topics a broker hosts and their partition logs.

Layout under the data directory: ``topics/<topic>/<partition>/`` holds one partition's
engine. A topic exists once its definition is durable in the meta store; its partition
directories are created before that and removed after its definition is deleted, so a
crash in between leaves either a whole topic or an orphan directory that ``open`` removes.

Damage at start (``open``): a partition whose engine refuses to open (a damaged or
missing file) or whose directory is gone although the meta store lists the topic is
never re-created empty. A partition that closed cleanly is *not opened* at start: a
cheap check (``clean_marker.check``: ``CURRENT`` and the clean-shutdown record are
there, ``CURRENT`` names the manifest the record pins, with its recorded size and the
CRC of its last 4 KiB, every table and WAL segment it lists is there with its recorded
size, the WAL segments replay would read pass their checksums; reads only, no fsync,
no new file, no file kept open) and the offsets its record carries make it a deferred
``PartitionLog`` that its first produce, fetch, list-offsets or retention that may
delete opens. The
others (a crash: no clean record) recover in parallel (``recovery_threads``), each
opened and checked as before. ``open`` raises ``DamagedDataError`` naming the partition
and the file, unless the registry was built with ``skip_damaged``: the partition is then an
``OfflinePartition`` (produce, fetch and list-offsets on it raise
``StorageUnavailableError`` naming it, KAFKA_STORAGE_ERROR) and the others serve.
"""

from __future__ import annotations

import concurrent.futures
import logging
import posixpath
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from sentinel.broker import stray_partitions
from sentinel.broker.limits import TopicLimits
from sentinel.broker.meta_store import GROWING, MetaStore, TopicRecord
from sentinel.broker.recovery_report import recovery_line
from sentinel.clock import Clock
from sentinel.errors import (
    CallerError,
    DamagedDataError,
    DiskError,
    MissingFileError,
    NotLeaderError,
    SentinelError,
    StorageUnavailableError,
)
from sentinel.fs import FS
from sentinel.log.config import (
    InvalidConfigError,
    InvalidPartitionsError,
    TopicConfig,
    validate_partition_count,
    validate_topic_name,
)
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog
from sentinel.log.summary import LogSummary
from sentinel.log.summary import decode as decode_summary
from sentinel.log.types import LogOptions
from sentinel.long_lived import thaw
from sentinel.storage import clean_marker
from sentinel.storage.engine import NO_WORK, EngineStats, WorkFigures
from sentinel.storage.files import CURRENT_NAME
from sentinel.storage.options import EngineOptions

log = logging.getLogger(__name__)


class UnknownTopicOrPartitionError(CallerError):
    """The topic or the partition does not exist on this broker."""

    kafka_code = 3
    code_name = "UNKNOWN_TOPIC_OR_PARTITION"


class TopicAlreadyExistsError(CallerError):
    """A topic of that name exists."""

    kafka_code = 36
    code_name = "TOPIC_ALREADY_EXISTS"


class InvalidReplicationFactorError(CallerError):
    """The replication factor cannot be met by the brokers there are."""

    kafka_code = 38
    code_name = "INVALID_REPLICATION_FACTOR"


@dataclass(eq=False)
class OfflinePartition:
    """A partition quarantined at start (``--skip-damaged``): it keeps its place in the
    topic, reports empty figures, and every request on it is refused."""

    name: str
    reason: str
    log_start_offset: int = 0
    log_end_offset: int = 0
    high_watermark: int = 0
    size_bytes: int = 0

    def error(self) -> SentinelError:
        return StorageUnavailableError(
            f"partition {self.name} is offline: its stored data is damaged ({self.reason}); "
            "restore the file or recreate the topic",
            self.name,
        )

    def engine_stats(self) -> EngineStats:
        return EngineStats((), (), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    def work_figures(self) -> WorkFigures:
        return NO_WORK

    def apply_retention(self) -> int:
        return 0

    def compact_keys(self) -> int:
        return 0

    def close(self, *, discard: bool = False) -> None:
        pass


@dataclass
class RemotePartition(OfflinePartition):
    """In a cluster, a partition this broker holds no replica of: it keeps its place in
    the topic and every request on it is NOT_LEADER_OR_FOLLOWER (the client asks the
    metadata for its leader)."""

    def error(self) -> SentinelError:
        return NotLeaderError(f"this broker holds no replica of partition {self.name}")


@dataclass(eq=False)
class Topic:
    name: str
    config: TopicConfig
    replication_factor: int
    partitions: list[PartitionLog | OfflinePartition]
    configs: Mapping[str, str]

    def check_partition(self, index: int) -> None:
        """Raise unless the topic has partition ``index`` (online or not)."""
        if not 0 <= index < len(self.partitions):
            raise UnknownTopicOrPartitionError(
                f"topic {self.name!r} has no partition {index} (it has {len(self.partitions)})"
            )

    def partition(self, index: int) -> PartitionLog:
        """The log of partition ``index``; ``StorageUnavailableError`` if it is offline."""
        self.check_partition(index)
        found = self.partitions[index]
        if isinstance(found, OfflinePartition):
            raise found.error()
        return found


def _done(
    value: PartitionLog | OfflinePartition,
) -> concurrent.futures.Future[PartitionLog | OfflinePartition]:
    """A future already holding ``value`` (a placeholder among partitions opening)."""
    future: concurrent.futures.Future[PartitionLog | OfflinePartition] = (
        concurrent.futures.Future()
    )
    future.set_result(value)
    return future


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
        skip_damaged: bool = False,
        limits: TopicLimits | None = None,
        open_limit: OpenLogLimit | None = None,
        recovery_threads: int = 1,
        log_options: LogOptions | None = None,
        close_threads: int | None = None,
    ) -> None:
        self._fs = fs
        self._log_options = log_options
        self._root = posixpath.join(data_dir, "topics")
        self._meta = meta
        self._clock = clock
        self._engine_options = engine_options
        self._default_config = default_config
        self._broker_count = broker_count
        self._skip_damaged = skip_damaged
        #: Directories holding data no definition names, kept by ``skip_damaged``.
        self._orphans: set[str] = set()
        #: Per topic, stray partition directories holding data, kept by ``skip_damaged``
        #: (``stray_partitions``): the topic cannot grow over them.
        self._stray: dict[str, set[int]] = {}
        self._topics: dict[str, Topic] = {}
        self.limits = limits
        self.open_limit = open_limit
        self._recovery_threads = recovery_threads
        self._close_threads = close_threads or recovery_threads

    @property
    def partition_total(self) -> int:
        """Partitions of every topic together."""
        return sum(len(t.partitions) for t in self._topics.values())

    def _check_limit(self, adding: int, what: str) -> None:
        if self.limits is not None:
            self.limits.check_partitions(self.partition_total, adding, what)

    def open(self) -> None:
        """Open every topic the meta store defines; remove orphan directories.

        A damaged or missing partition raises ``DamagedDataError`` (or, with
        ``skip_damaged``, is left offline and logged).
        The partition limit is not applied here: it bounds creation, never recovery."""
        self._fs.makedirs(self._root)
        records = list(self._meta.topics())
        log.info(
            "recovering %d partitions under %s",
            sum(record.partitions for record in records),
            self._root,
        )
        configs = [self._default_config.with_overrides(r.configs) for r in records]
        started = time.monotonic()
        # Every partition is checked at once on ``recovery_threads`` threads: a clean
        # one is deferred (nothing opened), the others recover; past the open-files
        # limit the idle ones close their files again at once (``OpenLogLimit``).
        with concurrent.futures.ThreadPoolExecutor(
            self._recovery_threads, "sentinel-recovery"
        ) as pool:
            opening = [
                [
                    pool.submit(self._open_partition, record.name, index, config, True)
                    if record.is_hosted(index)
                    else _done(RemotePartition(f"{record.name}-{index}", "not a replica"))
                    for index in range(record.partitions)
                ]
                for record, config in zip(records, configs, strict=True)
            ]
            concurrent.futures.wait([f for topic in opening for f in topic])
        errors = [f.exception() for topic in opening for f in topic if f.exception()]
        if errors:
            for topic in opening:
                for future in topic:
                    if future.exception() is None:
                        future.result().close()
            raise errors[0]  # type: ignore[misc]
        for record, config, futures in zip(records, configs, opening, strict=True):
            logs = [f.result() for f in futures]
            self._topics[record.name] = Topic(
                record.name, config, record.replication_factor, logs, record.configs
            )
        every = [p for t in self._topics.values() for p in t.partitions]
        deferred = sum(1 for p in every if isinstance(p, PartitionLog) and not p.opened)
        log.info(
            "%d partitions ready in %.2f s: %d closed cleanly (checked, opened on first "
            "use), %d recovered, %d offline",
            len(every),
            time.monotonic() - started,
            deferred,
            sum(1 for p in every if isinstance(p, PartitionLog) and p.opened),
            sum(1 for p in every if isinstance(p, OfflinePartition)),
        )
        self._sweep_orphans()

    def _sweep_orphans(self) -> None:
        """Directories under the root that no topic definition names. One a crash left
        mid-create or mid-delete (the meta store says so: ``MetaStore.pending``; a
        creation only while no partition holds records) is removed. Any other holds
        partition data whose definition the meta store lost (its WAL cut or deleted):
        removing it would drop acknowledged records, so the start is refused naming it,
        or (``skip_damaged``) it is kept, unserved, and a topic of that name cannot be
        created until an operator removes it."""
        pending = self._meta.pending()
        for name in sorted(self._fs.listdir(self._root)):
            if name in self._topics:
                self._sweep_stray_partitions(self._topics[name], pending.get(name) == GROWING)
                continue
            directory = posixpath.join(self._root, name)
            if not self._fs.is_dir(directory):
                continue  # not a topic's (the broker makes none here)
            if stray_partitions.removable_orphan(self._fs, directory, pending.get(name)):
                self._fs.remove_tree(directory)
                continue
            if not self._skip_damaged:
                meta_dir = posixpath.join(posixpath.dirname(self._root), "meta")
                raise DamagedDataError(
                    f"meta store {meta_dir}: {directory} holds partition data but the meta "
                    f"store defines no topic {name!r} (its records of the topic were lost)",
                    quarantinable=True,
                    advice="restore the meta store (the data directory's meta/) from a "
                    "backup; or start with --skip-damaged to serve the other topics and "
                    "keep that directory unserved; or remove the directory to give its "
                    "data up",
                )
            self._orphans.add(name)
            log.error("%s holds partition data the meta store does not define: kept, not "
                      "served (--skip-damaged)", directory)
        for name, state in pending.items():
            if state == GROWING and name in self._topics:
                self._meta.finish_delete(name)  # what the growth left is removed
            elif name not in self._topics and name not in self._orphans:
                self._meta.finish_delete(name)  # its directory is gone

    def _sweep_stray_partitions(self, topic: Topic, growing: bool) -> None:
        """Partition directories past the topic's record (``stray_partitions``): those a
        crashed growth left, or empty, are removed; any other refuses the start naming
        it, or (``skip_damaged``) is kept, unserved."""
        topic_dir = posixpath.join(self._root, topic.name)
        stray = stray_partitions.judge(
            self._fs, topic_dir, len(topic.partitions), growing=growing
        )
        for directory in stray.remove:
            self._fs.remove_tree(directory)
        for index, directory in stray.damaged:
            detail = stray_partitions.damage_detail(topic.name, len(topic.partitions))
            if not self._skip_damaged:
                meta_dir = posixpath.join(posixpath.dirname(self._root), "meta")
                raise DamagedDataError(
                    f"meta store {meta_dir}: {directory} {detail}",
                    quarantinable=True,
                    advice="restore the meta store (the data directory's meta/) from a "
                    "backup; or start with --skip-damaged to serve the rest and keep that "
                    "directory unserved; or remove the directory to give its data up",
                )
            self._stray.setdefault(topic.name, set()).add(index)
            log.error("%s %s: kept, not served (--skip-damaged)", directory, detail)

    def _open_topic(self, record: TopicRecord, *, recovering: bool = False) -> Topic:
        config = self._default_config.with_overrides(record.configs)
        with concurrent.futures.ThreadPoolExecutor(self._recovery_threads) as pool:
            opening = [
                pool.submit(self._open_partition, record.name, index, config, recovering)
                if record.is_hosted(index)
                else _done(RemotePartition(f"{record.name}-{index}", "not a replica"))
                for index in range(record.partitions)
            ]
            concurrent.futures.wait(opening)
        errors = [f.exception() for f in opening if f.exception() is not None]
        if errors:
            for future in opening:
                if future.exception() is None:
                    future.result().close()
            raise errors[0]  # type: ignore[misc]
        logs = [f.result() for f in opening]
        return Topic(record.name, config, record.replication_factor, logs, record.configs)

    def _open_partition(
        self, topic: str, index: int, config: TopicConfig, recovering: bool
    ) -> PartitionLog | OfflinePartition:
        """Open one partition's log. ``recovering``: the meta store lists it, so its
        directory must hold an engine; damage is refused or (``skip_damaged``) offline."""
        name = f"{topic}-{index}"
        directory = posixpath.join(self._root, topic, str(index))
        try:
            if recovering and not self._fs.exists(posixpath.join(directory, CURRENT_NAME)):
                raise MissingFileError(
                    directory if not self._fs.exists(directory) else
                    posixpath.join(directory, CURRENT_NAME),
                    f"partition {name} is listed in the meta store but its data is gone",
                )
            if recovering:
                summary = self._clean_summary(directory)
                if summary is not None:
                    return PartitionLog.deferred(
                        self._fs,
                        directory,
                        config,
                        self._clock,
                        summary=summary,
                        engine_options=self._engine_options,
                        options=self._log_options,
                        name=name,
                        open_limit=self.open_limit,
                    )
            started = time.monotonic()
            plog = PartitionLog.open(
                self._fs,
                directory,
                config,
                self._clock,
                self._engine_options,
                options=self._log_options,
                name=name,
                open_limit=self.open_limit,
            )
            if recovering:
                log.info("%s", recovery_line(name, plog, time.monotonic() - started))
            return plog
        except DiskError as exc:
            if not recovering:
                raise
            if not self._skip_damaged:
                raise DamagedDataError(f"partition {name}: {exc}", quarantinable=True) from exc
            log.error("partition %s is OFFLINE (quarantined by --skip-damaged): %s", name, exc)
            return OfflinePartition(name, str(exc))

    def _clean_summary(self, directory: str) -> LogSummary | None:
        """The summary a clean close left, once the cheap check passed; None if the
        partition must be opened (it crashed, or closed before summaries existed)."""
        record = clean_marker.check(self._fs, directory)
        if record is None:
            return None
        return decode_summary(record.payload, posixpath.join(directory, clean_marker.CLEAN_NAME))

    def create(
        self,
        name: str,
        partitions: int,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
        hosted: Collection[int] | None = None,
    ) -> Topic:
        """Create a topic. ``hosted`` (a cluster): the partitions this broker replicates;
        the others are ``RemotePartition`` placeholders."""
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
        record = TopicRecord(
            name, partitions, replication_factor, configs,
            None if hosted is None else tuple(sorted(hosted)),
        )
        topic_dir = posixpath.join(self._root, name)
        if name in self._orphans:
            raise StorageUnavailableError(
                f"{topic_dir} holds partition data the meta store does not define (kept "
                f"by --skip-damaged): restore the meta store, or remove the directory to "
                f"create topic {name!r} again"
            )
        self._meta.begin_create(name)  # a crash from here on leaves a directory to remove
        try:
            if self._fs.exists(topic_dir):
                self._fs.remove_tree(topic_dir)
            topic = self._open_topic(record)
        except BaseException as exc:
            self._abandon_create(name, topic_dir)
            if isinstance(exc, OSError):  # a full disk, say: the storage's refusal, typed
                raise _storage_refusal(f"creating topic {name!r}", exc) from exc
            raise
        self._meta.finish_create(record)
        self._topics[name] = topic
        log.info("topic %s created: %d partitions, configs %s", name, partitions, configs or {})
        return topic

    def _abandon_create(self, name: str, topic_dir: str) -> None:
        """A creation failed: remove what it made, and the pending record once that is
        done (a failure here leaves both to the next start)."""
        try:
            if self._fs.exists(topic_dir):
                self._fs.remove_tree(topic_dir)
            self._meta.finish_delete(name)
        except (OSError, SentinelError) as exc:
            log.warning("topic %s: a failed creation left %s (%s); the next start removes it",
                        name, topic_dir, exc)

    def add_partitions(
        self, name: str, total: int, hosted: Collection[int] | None = None
    ) -> Topic:
        """Grow ``name`` to ``total`` partitions (Kafka's CreatePartitions); ``hosted``
        (a cluster): which of the new ones this broker replicates."""
        topic = self.get(name)
        validate_partition_count(total)
        current = len(topic.partitions)
        if total <= current:
            raise InvalidPartitionsError(
                f"topic {name!r} has {current} partition{'' if current == 1 else 's'}; "
                "the new total must be larger"
            )
        self._check_limit(total - current, f"growing topic {name!r} to {total} partitions")
        kept = sorted(i for i in self._stray.get(name, ()) if i < total)
        if kept:
            directory = posixpath.join(self._root, name, str(kept[0]))
            raise StorageUnavailableError(
                f"{directory} holds partition data the meta store does not define (kept "
                f"by --skip-damaged): restore the meta store, or remove the directory to "
                f"grow topic {name!r} to {total} partitions"
            )
        self._meta.begin_grow(name)  # a crash from here on leaves directories to remove
        grown: list[PartitionLog | OfflinePartition] = []
        try:
            for index in range(current, total):
                if hosted is None or index in hosted:
                    directory = posixpath.join(self._root, name, str(index))
                    if self._fs.exists(directory):  # what a failed growth could not remove
                        self._fs.remove_tree(directory)
                    grown.append(self._open_partition(name, index, topic.config, False))
                else:
                    grown.append(RemotePartition(f"{name}-{index}", "not a replica"))
            self._meta.finish_grow(
                self._record_of(topic, topic.configs, [*topic.partitions, *grown])
            )
        except BaseException as exc:
            self._abandon_growth(name, current, total, grown)
            if isinstance(exc, OSError):
                what = f"growing topic {name!r} to {total} partitions"
                raise _storage_refusal(what, exc) from exc
            raise
        topic.partitions.extend(grown)
        return topic

    def _abandon_growth(
        self, name: str, current: int, total: int, grown: list[PartitionLog | OfflinePartition]
    ) -> None:
        """A growth failed: close and remove what it made (the directory of the partition
        whose open failed too), and the pending record once that is done (a failure here
        leaves both to the next start)."""
        try:
            for partition in grown:
                partition.close(discard=True)
            for index in range(current, total):
                directory = posixpath.join(self._root, name, str(index))
                if self._fs.exists(directory):
                    self._fs.remove_tree(directory)
            self._meta.finish_delete(name)
        except (OSError, SentinelError) as exc:
            log.warning("topic %s: a failed growth left directories (%s); the next start "
                        "removes them", name, exc)

    def alter_configs(
        self, name: str, set_: Mapping[str, str], delete: Collection[str] = ()
    ) -> Topic:
        """Kafka's IncrementalAlterConfigs: set ``set_``, remove ``delete`` (back to the
        broker's default). Validated as ``create`` validates, durable in the meta store,
        then applied to the live partitions (retention and size limits at once)."""
        topic = self.get(name)
        both = sorted(set(set_) & set(delete))
        if both:
            raise InvalidConfigError(f"topic config {both[0]!r} is both set and deleted")
        configs = {k: v for k, v in topic.configs.items() if k not in delete}
        configs.update(set_)
        defaults = TopicConfig().to_map()
        for key in delete:  # a key the broker does not know is refused, not ignored
            self._default_config.with_overrides({key: defaults.get(key, "")})
        config = self._default_config.with_overrides(configs)
        self._meta.put_topic(self._record_of(topic, configs))
        topic.config, topic.configs = config, configs
        for partition in topic.partitions:
            if isinstance(partition, PartitionLog):
                partition.update_config(config)
        return topic

    def host_partition(self, name: str, index: int) -> PartitionLog | OfflinePartition:
        """A cluster's reassignment gave this broker a replica of ``name``-``index``: its
        ``RemotePartition`` placeholder becomes an empty log (any stale directory a
        crash left is removed first), then the meta store records it as hosted. A
        partition already hosted is returned as it is."""
        topic = self.get(name)
        topic.check_partition(index)
        found = topic.partitions[index]
        if not isinstance(found, RemotePartition):
            return found
        directory = posixpath.join(self._root, name, str(index))
        if self._fs.exists(directory):
            self._fs.remove_tree(directory)
        plog = self._open_partition(name, index, topic.config, False)
        topic.partitions[index] = plog
        self._meta.put_topic(self._record_of(topic, topic.configs))
        log.info("partition %s-%d: a replica is created on this broker", name, index)
        return plog

    def unhost_partition(self, name: str, index: int) -> None:
        """The replica of ``name``-``index`` moved away from this broker: the meta store
        records it as not hosted, then its log is closed and its files removed (a crash
        in between leaves a directory ``host_partition`` removes)."""
        topic = self.get(name)
        topic.check_partition(index)
        found = topic.partitions[index]
        if isinstance(found, RemotePartition):
            return
        topic.partitions[index] = RemotePartition(f"{name}-{index}", "not a replica")
        self._meta.put_topic(self._record_of(topic, topic.configs))
        found.close(discard=True)
        thaw()  # as for a deleted topic: the closed log's cycles can be freed
        directory = posixpath.join(self._root, name, str(index))
        if self._fs.exists(directory):
            self._fs.remove_tree(directory)
        log.info("partition %s-%d: this broker's replica is removed", name, index)

    @staticmethod
    def _record_of(
        topic: Topic,
        configs: Mapping[str, str],
        partitions: Sequence[PartitionLog | OfflinePartition] | None = None,
    ) -> TopicRecord:
        """``topic``'s definition with ``configs`` (and ``partitions``, if given)."""
        partitions = topic.partitions if partitions is None else partitions
        hosted = None
        if any(isinstance(p, RemotePartition) for p in partitions):
            hosted = tuple(
                i for i, p in enumerate(partitions) if not isinstance(p, RemotePartition)
            )
        return TopicRecord(topic.name, len(partitions), topic.replication_factor, configs, hosted)

    def delete(self, name: str) -> None:
        """Forget the topic, then free its partition directories. On a full disk the
        meta store may fail to record the deletion: the topic's files are freed first
        and the deletion retried, so that deleting a topic is how space comes back (a
        crash right then brings the topic back, empty)."""
        topic = self.get(name)
        try:
            self._meta.delete_topic(name)
        except StorageUnavailableError:
            del self._topics[name]
            self._remove_files(topic)
            self._meta.resume()
            self._meta.delete_topic(name)
        else:
            del self._topics[name]
            self._remove_files(topic)
        self._meta.finish_delete(name)
        log.info("topic %s deleted (%d partitions)", name, len(topic.partitions))

    def _remove_files(self, topic: Topic) -> None:
        for log in topic.partitions:
            log.close(discard=True)
        thaw()  # frozen, the closed partitions' reference cycles would never be freed
        self._fs.remove_tree(posixpath.join(self._root, topic.name))

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

    def __len__(self) -> int:
        return len(self._topics)

    def close(self) -> None:
        """Close every partition, ``close_threads`` at a time."""
        logs = [log for topic in self._topics.values() for log in topic.partitions]
        with concurrent.futures.ThreadPoolExecutor(self._close_threads) as pool:
            closing = [pool.submit(log.close) for log in logs]
        self._topics.clear()
        for future in closing:
            future.result()


def _storage_refusal(what: str, exc: OSError) -> StorageUnavailableError:
    """What a request that needed new partition files gets when the disk refused them
    (Kafka's KAFKA_STORAGE_ERROR, retriable): the broker goes on, nothing was made."""
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageUnavailableError(
        f"{what} failed: {exc.strerror or exc}{where}; nothing was created, retry once "
        "the disk has room"
    )
