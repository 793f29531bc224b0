"""How a broker's configuration becomes its storage: the meta store, the resources
every partition's engine shares, the engines' options, the topic registry and the
groups' settings.

Builders only: each returns a new object and opens nothing beyond it; the service
calls them in order at start, and owns what they return (and closes it on a failed
start or at stop).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable

from sentinel.broker.group_config import GroupConfig
from sentinel.broker.limits import (
    TopicLimits,
    active_partitions_for_open_files,
    current_open_files_limit,
    open_partitions_for_open_files,
)
from sentinel.broker.meta_store import MetaStore
from sentinel.broker.topics import TopicRegistry
from sentinel.clock import Clock
from sentinel.config import BrokerConfig
from sentinel.errors import DamagedDataError, DiskError
from sentinel.fs import FS
from sentinel.log.config import TopicConfig
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.types import LogOptions
from sentinel.storage.clean_marker import CLEAN_NAME
from sentinel.storage.journal import Journal
from sentinel.storage.options import EngineOptions
from sentinel.storage.resources import ResourceSizes, SharedResources
from sentinel.storage.wal import SyncMode, WalOptions

#: Partitions opened (recovered, checked) at once at start (threads gone once done).
#: The work is mostly Python under one interpreter lock, with an fsync a partition to
#: overlap: 10,000 partitions recovered after kill -9 were ready in 15.5 s with 1
#: thread, 13.4 with 2, 13.7 with 3, 15.2 with 4 and 18.8 with 8 (the threads' hand-offs
#: of the lock: 15 s of kernel CPU at 8, 6 at 2). Since a recovery makes ~30 system
#: calls and one fsync (it made ~140 and three), 2 threads beat 3 in each of five
#: alternated pairs (7.6-10.3 s against 8.4-11.2) and 4 and 6 were slower still.
RECOVERY_THREADS = 2
#: Partitions closed at once at stop: a close with a final flush makes several fsyncs
#: (a table, its manifest edit, the WAL's roll, the clean record), more to overlap: a
#: clean stop of 10,000 took 8.6 s with 3 threads against 10.4 with 8.
CLOSE_THREADS = 3
MIB = 1024 * 1024
JOURNAL_DIR = "journal"
LOG_VALUE_SEPARATION_BYTES = 128
"""A partition's record batches of at least this many bytes stay in its WAL, where the
append wrote them, and its tables hold 24-byte pointers to them (``value_log``): the
WAL segment is then the log's data file, as Kafka's segment is, and the LSM tree its
offset index. The engine's default (4 KiB) suits a key-value store. A log's batches are
written once and read in order; copying small ones into tables at each flush and
compaction made a flood of 1 KB batches write 3.1 bytes per byte produced (1.2 with
separation) at 20% less throughput, and consumers of 170-byte batches read 1.6x slower
(a frame read back whole beats table blocks decoded in Python). Below 128 bytes a
batch is little more than its 61-byte header and its pointer and key."""

log = logging.getLogger(__name__)


def open_meta(fs: FS, directory: str) -> MetaStore:
    """The meta store, or ``DamagedDataError``: the broker cannot run without it."""
    try:
        return MetaStore.open(fs, directory)
    except DiskError as exc:
        raise DamagedDataError(f"meta store: {exc}", quarantinable=False) from exc


def shared_resources(config: BrokerConfig) -> SharedResources:
    """The one worker pool, sync pipeline, block cache and memtable budget every
    partition's engine shares (``storage/resources``)."""
    return SharedResources(
        ResourceSizes(
            workers=config.storage_threads,
            sync_threads=config.sync_threads,
            block_cache_bytes=config.block_cache_mb * MIB,
            memtable_budget_bytes=config.memtable_budget_mb * MIB,
        )
    )


def open_journal(
    config: BrokerConfig,
    fs: FS,
    resources: SharedResources,
    on_wal_sync: Callable[[float, int], None] | None,
) -> Journal | None:
    """The broker's journal under ``<data>/journal`` (``storage/journal``), replayed
    if a crash left one; None with ``--no-journal`` or a sync mode other than always
    (a journal left by an earlier run is then still replayed into its partitions: the
    journal is opened, and only appends skip it)."""
    directory = posixpath.join(config.data_dir, JOURNAL_DIR)
    if not (config.journal and config.wal_sync_mode is SyncMode.ALWAYS) and not (
        fs.is_dir(directory) and fs.listdir(directory)
    ):
        return None
    def journal() -> Journal:
        return Journal.open(
            fs,
            directory,
            root=config.data_dir,
            scheduler=resources.sync,
            submit=resources.pool.submit,
            on_sync=on_wal_sync,
        )

    try:
        return journal()
    except DiskError as exc:
        if not config.skip_damaged:
            raise DamagedDataError(
                f"journal: {exc}",
                quarantinable=False,
                advice="start with --skip-damaged to set the journal aside (the partitions "
                "then recover from their own WALs: appends acknowledged since their last "
                "sync may be missing), or restore the data directory from a backup",
            ) from exc
        aside = _aside_name(fs, directory)
        fs.rename(directory, aside)
        log.error(
            "the journal is damaged (%s): set aside as %s (--skip-damaged); the partitions "
            "recover from their own WALs, appends acknowledged since their last sync may "
            "be missing",
            exc,
            aside,
        )
        return journal()


def redo_needed(fs: FS, data_dir: str, key: str) -> bool:
    """Whether the engine of journal key ``key`` may still need its redo after the
    start: its directory is there and holds no clean-shutdown record (one that closed
    cleanly holds every entry; a deleted one needs none)."""
    directory = posixpath.join(data_dir, key)
    return fs.is_dir(directory) and not fs.exists(posixpath.join(directory, CLEAN_NAME))


def _aside_name(fs: FS, directory: str) -> str:
    for n in range(1, 1000):
        name = f"{directory}.damaged-{n}"
        if not fs.exists(name):
            return name
    raise DamagedDataError(f"{directory}: too many damaged journals set aside", quarantinable=False)


def engine_options(
    config: BrokerConfig,
    resources: SharedResources,
    on_wal_sync: Callable[[float, int], None] | None,
    journal: Journal | None = None,
) -> EngineOptions:
    """Every partition engine's options, over the shared ``resources``."""
    appends_journaled = config.journal and config.wal_sync_mode is SyncMode.ALWAYS
    return resources.engine_options(
        EngineOptions(
            memtable_bytes=config.memtable_mb * MIB,
            value_separation_bytes=LOG_VALUE_SEPARATION_BYTES,
            on_wal_sync=on_wal_sync,
            journal=journal,
            journal_appends=appends_journaled,
            # The broker holds its data directory's LOCK for its life: a
            # partition's engine keeps no lock file of its own open.
            hold_lock=False,
            wal=WalOptions(
                sync_mode=config.wal_sync_mode,
                sync_interval_ms=config.sync_interval_ms,
            ),
        )
    )


def topic_registry(
    config: BrokerConfig,
    fs: FS,
    meta: MetaStore,
    clock: Clock,
    *,
    options: EngineOptions,
    resources: SharedResources,
    limits: TopicLimits,
    broker_count: int,
) -> TopicRegistry:
    """The registry of the topics under ``config.data_dir`` (not opened yet). In a
    cluster (``--peers``) the high watermark is Raft's commit, set by the driver, not
    the log's own."""
    clustered = bool(config.peers)
    return TopicRegistry(
        fs,
        config.data_dir,
        meta,
        clock=clock,
        engine_options=options,
        default_config=TopicConfig(),
        skip_damaged=config.skip_damaged,
        limits=limits,
        open_limit=OpenLogLimit(
            config.max_open_partitions
            or open_partitions_for_open_files(current_open_files_limit()),
            resources.pool.submit,
            max_active=_max_active_partitions(config),
        ),
        recovery_threads=RECOVERY_THREADS,
        close_threads=CLOSE_THREADS,
        log_options=LogOptions(auto_high_watermark=False) if clustered else None,
        broker_count=broker_count,
    )


def _max_active_partitions(config: BrokerConfig) -> int:
    """``--max-active-partitions``, or by default: derived from RLIMIT_NOFILE when the
    open-partitions limit is derived too, and that limit when it was set (a strict
    bound, as set)."""
    if config.max_active_partitions:
        return config.max_active_partitions
    if config.max_open_partitions:
        return config.max_open_partitions
    return active_partitions_for_open_files(current_open_files_limit())


def group_config(config: BrokerConfig) -> GroupConfig:
    """The groups' session bounds and first-rebalance delay, in seconds."""
    return GroupConfig(
        min_session_timeout_s=config.group_min_session_timeout_ms / 1000.0,
        max_session_timeout_s=config.group_max_session_timeout_ms / 1000.0,
        initial_rebalance_delay_s=config.group_initial_rebalance_delay_ms / 1000.0,
    )
