"""The engine's options, in one frozen value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sentinel.storage.block_cache import BlockCache
from sentinel.storage.compaction import CompactionOptions
from sentinel.storage.journal import Journal
from sentinel.storage.sync_scheduler import SyncScheduler
from sentinel.storage.table_format import TableOptions
from sentinel.storage.wal import WalOptions
from sentinel.storage.workers import WorkerPool
from sentinel.storage.write_buffer import WriteBufferManager

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How an engine behaves. The defaults are what a broker runs with."""

    #: Freeze the memtable and flush it to an L0 table past this many (estimated) bytes.
    memtable_bytes: int = 64 * MiB
    #: Writers wait while this many frozen memtables are still being flushed.
    max_immutable_memtables: int = 1
    #: Largest key and value a put accepts.
    max_key_bytes: int = 64 * 1024
    max_value_bytes: int = 32 * MiB
    #: Bytes of decoded blocks kept by the LRU block cache shared by all tables.
    block_cache_bytes: int = 32 * MiB
    #: Run flushes and compactions in a worker thread (True) or inline in the writing
    #: call (False: deterministic, for tests).
    background: bool = True
    #: Values of at least this many bytes are not copied into tables: the table points
    #: at the WAL entry that holds them (value separation; 0 turns it off).
    value_separation_bytes: int = 4096
    #: Flush the memtable on close, so the next open replays no WAL.
    flush_on_close: bool = True
    #: Called after every WAL fsync with (seconds, entries it made durable): a metrics
    #: hook. It runs on the syncing thread and must be quick.
    on_wal_sync: Callable[[float, int], None] | None = field(default=None, compare=False)
    #: The pool that runs flushes and compactions (a broker shares one among all its
    #: engines); None: the engine makes a private pool of one thread.
    workers: WorkerPool | None = field(default=None, compare=False)
    #: The broker-wide durability pipeline that ``Engine.sync_future`` registers with
    #: (one fsync wave for every partition); None: the process's default scheduler.
    sync_scheduler: SyncScheduler | None = field(default=None, compare=False)
    #: A block cache shared with other engines (a broker's one cache, bounded in
    #: bytes); None: a cache of ``block_cache_bytes`` of the engine's own.
    block_cache: BlockCache | None = field(default=None, compare=False)
    #: A memtable budget shared with other engines: past it, the largest memtables
    #: are flushed (``write_buffer``); None: only ``memtable_bytes`` bounds this one.
    write_buffer: WriteBufferManager | None = field(default=None, compare=False)
    #: The broker's journal (``journal``): with sync ``always``, each WAL entry is
    #: copied to it and an acknowledgement waits for its fsync wave instead of this
    #: engine's own WAL's; None: the engine's WAL alone.
    journal: Journal | None = field(default=None, compare=False)
    #: False: the journal only redoes what a crash left (``--no-journal`` after a run
    #: with one); appends are not copied to it.
    journal_appends: bool = True
    #: Hold the directory's ``LOCK`` file (an exclusive ``flock``) while open, so that a
    #: second engine on the same directory is refused. False only when the owner
    #: already holds the directory exclusively (a broker holds its data directory's
    #: ``LOCK`` for its life): the engine then keeps no lock file open.
    hold_lock: bool = True
    wal: WalOptions = field(default_factory=WalOptions)
    table: TableOptions = field(default_factory=TableOptions)
    compaction: CompactionOptions = field(default_factory=CompactionOptions)

    def __post_init__(self) -> None:
        if self.memtable_bytes < 1024:
            raise ValueError("memtable_bytes must be at least 1 KiB")
        if self.max_immutable_memtables < 1:
            raise ValueError("max_immutable_memtables must be at least 1")
        if self.max_key_bytes < 1 or self.max_value_bytes < 0:
            raise ValueError("max_key_bytes and max_value_bytes must be positive")
