"""The LSM engine: the public face of ``storage/``.

Write path (durability order): encode the batch -> append it to the WAL -> apply it to
the active memtable -> (sync ``always``) wait for the WAL's group commit. When the active
memtable passes ``memtable_bytes`` it is frozen, the WAL rotates to a new segment (in
every sync mode the roll's fsyncs are deferred, off the appending thread, to the next
group commit, a sync thread or the flush: ``wal``, "Deferred rolls"), and a worker
flushes the frozen memtable to an L0 table (first finishing that roll); the manifest
edit that adds the table also advances ``log_number`` (the first WAL segment still
needed), and only then are the older segments deleted. "Passes ``memtable_bytes``"
counts the large values the memtable took, whether it still holds them or let them go:
a broker's memtable budget asks the engines with the largest memtables for memory, and
one that mostly holds large values (already in its WAL: value separation) syncs its WAL
and keeps a pointer to each in their place (``_relieve_memory``) rather than flushing.

Read path: active memtable, frozen memtables (newest first), L0 tables (newest first),
then one table per level L1..Ln. The newest entry for a key wins; a tombstone hides
everything older.

Threads: any number of threads may read and write. Writers are serialized by
``_write_lock`` (the memtable has one writer at a time); the state that readers snapshot
(memtables, version, table readers) is swapped under ``_state``. Flushes and compactions
run one at a time in a single worker thread (``background=True``) or inline in the call
that triggered them (``background=False``, deterministic for tests).

Recovery (``Engine.open``): refuse a directory that is not an engine's before writing
anything; take the LOCK; recover the version from the manifest; check that every file
the data needs is there (tables: footer, index and meta block; WAL segments from
``log_number``, and those live tables' value pointers need: present, valid header);
replay the WAL from ``log_number`` (a torn tail is cut, reported in ``replay_report``
and logged with its byte count); remove the clean-shutdown marker; keep a small replay
as the active memtable, its segments fsynced and the WAL going on at the end of the
last one, or flush a large one to L0 and start a new segment; delete files no version
references (tables written by a flush or compaction that crashed before its manifest
edit). The directory's names are read once for the whole open (``listed_fs``). A
damaged or missing file raises
``CorruptionError`` / ``MissingFileError`` naming it. ``close`` writes the clean-shutdown
marker last (see ``clean_marker``): after it, no damage is taken for a torn tail.

A failed write or fsync (a full disk) does not stop the engine for good. The WAL is
*failed* (``WriteAheadLog`` module doc): writes raise ``StorageUnavailableError``
(``WalFailedError``) and reads go on. Order WAL-then-memtable makes that safe: in sync
``always`` an append only buffers, so a batch reaches the memtable with its WAL entry
in the writer's memory; a failed fsync fails its ``sync_to`` (never acknowledged), and
the entry stays in the memtable and in the WAL's unsynced frames. At a later write,
after a backoff (``StorageHealth``), the engine calls ``WriteAheadLog.resume``: the
failed segment is cut back to its last synced length and the unsynced entries are
written again, into a fresh segment, and fsynced; so the memtable again holds exactly
what the WAL holds, nothing handed out is dropped or reused, and large-value pointers
into the moved frames are moved with them. Background flushes and compactions that fail
with an ``OSError`` are retried the same way (``Maintenance``). One log line when a
failed state is entered, one when it is left.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sentinel.clock import Clock, SystemClock
from sentinel.errors import (
    ClosedError,
    KeyTooLargeError,
    MissingFileError,
    StorageUnavailableError,
    ValueTooLargeError,
)
from sentinel.fs import FS, DirLock, OsFS
from sentinel.storage import clean_marker
from sentinel.storage import manifest as manifest_mod
from sentinel.storage.block_cache import BlockCache, ScopedBlockCache
from sentinel.storage.entry import ABSENT, Entry, EntrySource
from sentinel.storage.files import (
    LOCK_NAME,
    join,
    table_name,
    wal_name,
)
from sentinel.storage.iterators import live_entries, live_floor, merge_entries
from sentinel.storage.listed_fs import ListedFS
from sentinel.storage.maintenance import FrozenMemtable, Maintenance
from sentinel.storage.memtable import Memtable
from sentinel.storage.options import EngineOptions
from sentinel.storage.recovery import (
    RecoveredFiles,
    blame_torn_manifest,
    check_pointer_segments,
    inspect_directory,
    recover_files,
)
from sentinel.storage.storage_health import StorageHealth, is_disk_full
from sentinel.storage.sync_scheduler import Waiter, default_scheduler, resolve_waiter
from sentinel.storage.table_reader import TableReader
from sentinel.storage.value_log import ValueLog, ValuePointer, pack_pointer, pointer_fields
from sentinel.storage.version import Version, VersionEdit
from sentinel.storage.wal import Resumed, SyncMode, WalFailedError, WriteAheadLog
from sentinel.storage.wal_format import ReplayReport
from sentinel.storage.write_batch import (
    WriteBatch,
    decode_ops,
    encode_ops_parts,
    encode_put,
    value_positions,
)

log = logging.getLogger(__name__)


class _NoLock:
    """The lock of an engine whose owner holds its directory (``hold_lock=False``)."""

    def release(self) -> None:
        pass


_NO_LOCK = _NoLock()


@dataclass(frozen=True, slots=True)
class EngineStats:
    tables_per_level: tuple[int, ...]
    bytes_per_level: tuple[int, ...]
    memtable_bytes: int
    immutable_memtables: int
    user_bytes_written: int
    wal_bytes_written: int
    flush_bytes_written: int
    compaction_bytes_written: int
    flushes: int
    compactions: int
    trivial_moves: int
    block_cache_hits: int
    block_cache_misses: int

    @property
    def write_amplification(self) -> float:
        """Bytes the engine wrote to disk per byte the user wrote."""
        if self.user_bytes_written == 0:
            return 0.0
        written = self.wal_bytes_written + self.flush_bytes_written
        return (written + self.compaction_bytes_written) / self.user_bytes_written


class WorkFigures(NamedTuple):
    """An engine's background work so far and its live tables (``Engine.work_figures``)."""

    flushes: int
    compactions: int
    trivial_moves: int
    flush_bytes: int
    compaction_bytes: int
    tables: int


NO_WORK = WorkFigures(0, 0, 0, 0, 0, 0)


class Engine:
    """An open LSM engine over one directory. Use ``Engine.open``."""

    def __init__(
        self,
        fs: FS,
        directory: str,
        options: EngineOptions,
        *,
        lock: DirLock,
        recovered: manifest_mod.RecoveredState | None,
        clock: Clock,
    ) -> None:
        self._fs = fs
        self._dir = directory
        self._options = options
        self._lock = lock
        self._clock = clock
        self._write_lock = threading.Lock()
        self._state = threading.Condition()
        self._closed = False
        self._suspended = False  # files closed while idle (``suspend_files``)
        self._marked_clean = False  # suspended, with a clean-shutdown record (``mark_clean``)
        self._interval_tick: int | None = None  # sync ``interval`` on the shared scheduler
        # The broker's journal (sync ``always`` only): acknowledgements wait for its
        # fsync wave; this engine's WAL is synced in the background (``journal``).
        journal = options.journal
        self._journal_key = journal.key_of(directory).encode() if journal is not None else b""
        always = options.wal.sync_mode is SyncMode.ALWAYS
        self._journal = journal if always and options.journal_appends else None
        self._jlsn = 0  # the journal LSN of this engine's newest journaled entry
        self._took_redo = False  # the journal had entries of this engine at open
        self._redone = False  # some of them were not in its WAL: applied from the journal
        # The replay holding them, while its flush at open waits for disk space.
        self._unflushed_redo: Memtable | None = None
        self.replay_kept_bytes = 0  # replayed entries kept in the active memtable at open
        self.replay_unflushed_bytes = 0  # replayed entries whose flush at open failed
        # The newest entry the journal did not take (few engines were appending, or the
        # journal had failed): entries up to it are made durable by this engine's own
        # WAL, as without a journal.
        self._own_upto = 0
        self._journal_refused = False  # logged once until the journal takes one again
        shared = options.block_cache
        self._cache = (
            ScopedBlockCache(shared)
            if shared is not None
            else BlockCache(options.block_cache_bytes)
        )
        self._readers: dict[int, TableReader] = {}
        self._memtable = Memtable()
        self._immutables: list[FrozenMemtable] = []
        # Value separation: for each key of the active memtable whose value is large,
        # where that value sits in the WAL (the flush stores the pointer, not the value).
        self._pointers: dict[bytes, bytes] = {}  # key -> pack_pointer(...) (GC-untracked)
        # The large values of the active memtable still held in memory, in append order,
        # with their pointers and bytes together: what ``_relieve_memory`` can let go.
        self._held: list[tuple[bytes, bytes]] = []
        self._held_bytes = 0
        # Bytes of large values the active memtable let go (now pointers): they count
        # towards ``memtable_bytes``, so its WAL segment still rolls at that size.
        self._released_bytes = 0
        self.values_released = 0  # large values let go under the memtable budget
        self._values = ValueLog(fs, directory, self._cache)
        self._user_bytes = 0
        self._wal_bytes = 0
        self.replay_report: ReplayReport | None = None
        self._wal_health = StorageHealth(f"the WAL of {directory}", clock)
        self._maintenance = Maintenance(self, fs, directory, options, self._cache)
        self._recover(recovered)

    # ------------------------------------------------------------------ open

    @classmethod
    def open(
        cls,
        directory: str,
        options: EngineOptions | None = None,
        *,
        fs: FS | None = None,
        clock: Clock | None = None,
    ) -> Engine:
        """Open (or create) the engine in ``directory``."""
        # The directory's names are read once for the whole open (``listed_fs``).
        listed = ListedFS(fs if fs is not None else OsFS(), directory)
        options = options if options is not None else EngineOptions()
        try:
            # Reads only: a foreign directory or a newer format leaves the disk untouched.
            recovered = inspect_directory(listed, directory)
            listed.makedirs(directory)
            lock: DirLock = (
                listed.lock(join(directory, LOCK_NAME)) if options.hold_lock else _NO_LOCK
            )
            try:
                return cls(
                    listed,
                    directory,
                    options,
                    lock=lock,
                    recovered=recovered,
                    clock=clock or SystemClock(),
                )
            except BaseException:
                lock.release()
                raise
        finally:
            listed.settle()

    def _recover(self, recovered: manifest_mod.RecoveredState | None) -> None:
        fs, directory = self._fs, self._dir
        found = recover_files(fs, directory, recovered)
        self.replay_report = report = found.replay_report
        if self._options.journal is not None:
            if recovered is None:  # a new engine: nothing the journal holds is its own
                self._options.journal.forget_for_new_engine(self._journal_key)
            else:
                self._redo_from_journal(found, report)
        version, log_number, first_segment = found.version, found.log_number, found.first_segment
        try:
            for number in version.all_file_numbers():
                self._readers[number] = TableReader.open(
                    fs, join(directory, table_name(number)), number, self._cache
                )
            check_pointer_segments(fs, directory, self.pointer_segment_numbers(), found.clean)
        except BaseException as exc:
            for reader in self._readers.values():
                reader.close()
            if isinstance(exc, MissingFileError) and recovered is not None and recovered.torn:
                raise blame_torn_manifest(directory, recovered, exc.path) from exc
            raise
        if report is not None and report.truncated_segment is not None:
            log.warning(
                "recovered %s: cut a torn tail of %d bytes from %s",
                directory,
                report.dropped_bytes,
                wal_name(report.truncated_segment),
            )
        # Before the first write: from here on a crash must be recovered as one.
        clean_marker.remove(fs, directory)
        self._version = version
        self._next_file_number = found.next_file_number
        replayed = found.replayed
        # The manifest first: a directory with a WAL but no CURRENT is not an engine's.
        resumed = (
            manifest_mod.Manifest.resume(fs, directory, recovered, self._next_file_number)
            if recovered is not None
            else None
        )
        if resumed is None:
            manifest_number = self._allocate_file_number()
            try:
                resumed = manifest_mod.Manifest.create(
                    fs, directory, manifest_number, version, log_number, self._next_file_number
                )
            except OSError as exc:
                if recovered is None or not is_disk_full(exc):
                    raise
                # A torn (or large) manifest on a full disk: kept until the next edit,
                # which writes a new one whole first.
                resumed = manifest_mod.Manifest.resume(
                    fs, directory, recovered, self._next_file_number, broken=exc
                )
                assert resumed is not None
        self._manifest = resumed
        scheduler = self._options.sync_scheduler
        interval = self._options.wal.sync_mode is SyncMode.INTERVAL and scheduler is not None
        # A roll's IO runs on a sync thread, never on the appending one (``wal``,
        # "Deferred rolls"); inline without background threads (deterministic tests).
        io_runner = (scheduler or default_scheduler()) if self._options.background else None
        keep = len(replayed) > 0 and self._keeps_replayed(replayed)
        flushed_at_open = len(replayed) > 0 and not keep
        # Entries kept in the active memtable: the WAL goes on in the last segment they
        # came from (its torn tail cut), as if the crash had not happened. A new segment
        # cost a creation, two fsyncs and the directory's, for every partition a start
        # after kill -9 recovers (a third of that start at 10,000 partitions). Not when the
        # replay is flushed below: the manifest's log number then moves past it.
        continued = self._wal_end(report) if keep else None
        if continued is not None and continued[0] != first_segment - 1:
            continued = None  # (never: the last segment there is the last replayed)
        self._wal = WriteAheadLog(
            fs,
            directory,
            first_segment if continued is None else continued[0],
            self._options.wal,
            self._clock,
            on_sync=self._options.on_wal_sync,
            interval_thread=not interval,  # the broker's scheduler ticks it instead
            run_io=io_runner.submit if io_runner is not None else None,
            continue_size=None if continued is None else continued[1],
            # A replay flushed at open: its segment once the flush is done (below).
            make_segment=not flushed_at_open,
        )
        if interval and scheduler is not None:
            self._interval_tick = scheduler.every(
                self._options.wal.sync_interval_ms / 1000, self._wal.sync_unsynced
            )
        if keep:
            # The replayed entries stay in the active memtable, and the WAL segments
            # holding them stay on disk (the manifest's log number does not move) until
            # that memtable is flushed as any other (RocksDB's avoid_flush_during_
            # recovery). A start after kill -9 recovering 10,000 partitions written in
            # the last minute wrote a table, a manifest edit and a segment deletion for
            # each, four fsyncs of its ten, for a few hundred bytes apiece. The segments
            # are synced instead (one fsync each): the replay may have read bytes a
            # killed process wrote and never synced, which are served from now on.
            self._sync_replayed_segments(report, None if continued is None else continued[0])
            self._memtable = replayed
            self.replay_kept_bytes = replayed.approximate_size
            if self._options.write_buffer is not None:
                self._options.write_buffer.report(
                    id(self), replayed.approximate_size, self._relieve_memory
                )
        elif flushed_at_open:
            replayed.freeze()
            self._immutables.append(FrozenMemtable(replayed, first_segment, {}))
            try:
                self._maintenance.flush_all()
            except (OSError, StorageUnavailableError) as exc:
                if not is_disk_full(exc):
                    raise
                # A start on a full disk: the replay is served from memory, its WAL
                # segments (and the journal's entries) kept, and its flush retried
                # in the background as any failing flush.
                self._maintenance.retry_flush(exc)
                self.replay_unflushed_bytes = replayed.approximate_size
                self._unflushed_redo = replayed if self._took_redo else None
            # The WAL's new segment only after the flush: the journal's redo skips an
            # entry whose place comes before the WAL's replayed end, so no segment may
            # follow while entries it gave back are in memory alone (a crash then
            # would lose them). Until then appends are refused (``_resume_wal``).
            if self._unflushed_redo is None:
                self._make_first_segment()
        elif log_number < first_segment:
            try:
                self._manifest.append(
                    VersionEdit(log_number=first_segment, next_file_number=self._next_file_number)
                )
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                # (The segments below stay, replayed empty; the next flush's edit
                # moves the log number past them.)
        if self._wal.failed is not None and self._wal_health.error is None:
            self._wal_health.failed(self._wal.failed)  # a full disk: appends refused
        self._maintenance.collect_segments()
        if self._took_redo and self._unflushed_redo is None:
            self._redo_durable()
        self._maintenance.start()

    def _make_first_segment(self) -> None:
        """Make the WAL segment a replay flushed at open put off; a full disk leaves
        the WAL failed (the first append after space is back makes it)."""
        try:
            self._wal.resume()
        except WalFailedError as exc:
            if not is_disk_full(exc):
                raise
            self._wal_health.failed(exc.__cause__ or exc)

    def _redo_durable(self) -> None:
        """What the journal held of this engine is durable in its own files now: its
        WAL (synced at open, or by the replay) or a table (the flush of the replay)."""
        if self._options.journal is not None:
            self._options.journal.redo_done(self._journal_key.decode())

    def _redo_from_journal(self, found: RecoveredFiles, report: ReplayReport | None) -> None:
        """After a crash: apply the journal's entries of this engine that its own WAL
        does not hold (``journal`` module doc), on top of what the WAL replayed."""
        assert self._options.journal is not None
        entries = self._options.journal.take_redo(self._journal_key.decode())
        if not entries:
            return
        self._took_redo = True
        end = self._wal_end(report)
        redone = 0
        for index, entry in enumerate(entries):
            if entry.segment < found.log_number:
                continue  # flushed to a table before the crash
            if end is not None and (entry.segment, entry.offset) < end:
                continue  # the WAL's replay read it
            where = f"journal entry {index} of {self._dir}"
            for key, value in decode_ops(entry.payload, where):
                found.replayed.put(key, value)
            redone += 1
        self._redone = redone > 0
        if redone:
            log.warning(
                "recovered %s: %d entries from the journal its WAL had lost", self._dir, redone
            )

    def _wal_end(self, report: ReplayReport | None) -> tuple[int, int] | None:
        """(segment, size) of the last segment the replay read that is still there (a
        torn create is removed), None if none is: from the replay, with no IO."""
        if report is None or not report.sizes:
            return None
        number = max(report.sizes)
        return number, report.sizes[number]

    def _keeps_replayed(self, replayed: Memtable) -> bool:
        """Whether the entries a replay put in ``replayed`` stay in the active memtable
        (their WAL segments kept) rather than being flushed to a table at open: not
        when the journal supplied some (the journal drops them once they are in this
        engine's own files, and its WAL does not hold them), nor when they are over a
        quarter of a memtable (a replay reads large values in full, which the memtable
        before the crash held as pointers into the WAL: all of them in memory, for
        every partition opening at once, is what a flush at open avoids)."""
        if self._redone:
            return False
        return replayed.approximate_size <= self._options.memtable_bytes // 4

    def _sync_replayed_segments(self, report: ReplayReport | None, continued: int | None) -> None:
        """fsync each WAL segment the replay read that is still on disk: the one the WAL
        goes on in (``continued``) through the WAL's own handle."""
        for number in sorted(report.sizes) if report is not None else []:
            if number == continued:
                self._wal.sync_segment_file()
                continue
            path = join(self._dir, wal_name(number))
            handle = self._fs.open_read(path)
            try:
                handle.sync()
            finally:
                handle.close()

    # ------------------------------------------------------- used by Maintenance

    def _allocate_file_number(self) -> int:
        with self._state:
            # A manifest rotation takes a number of its own and moves the counter past it.
            if hasattr(self, "_manifest"):
                self._next_file_number = max(
                    self._next_file_number, self._manifest.next_file_number
                )
            number = self._next_file_number
            self._next_file_number += 1
            return number

    @property
    def next_file_number(self) -> int:
        return self._next_file_number

    @property
    def manifest(self) -> manifest_mod.Manifest:
        return self._manifest

    @property
    def wal(self) -> WriteAheadLog:
        return self._wal

    @property
    def version(self) -> Version:
        return self._version

    @property
    def state_lock(self) -> threading.Condition:
        return self._state

    def oldest_immutable(self) -> FrozenMemtable | None:
        with self._state:
            return self._immutables[0] if self._immutables else None

    @property
    def value_log(self) -> ValueLog:
        return self._values

    def pointer_segment_numbers(self) -> set[int]:
        """The WAL segments live tables point into (value separation)."""
        with self._state:
            return set().union(*(r.pointer_segment_numbers for r in self._readers.values()))

    def readers_for(self, file_numbers: list[int]) -> list[TableReader]:
        with self._state:
            return [self._readers[n] for n in file_numbers]

    def install(
        self,
        edit: VersionEdit,
        opened: dict[int, TableReader],
        flushed: Memtable | None = None,
    ) -> list[TableReader]:
        """Swap in the version after ``edit`` (already durable); return retired readers."""
        with self._state:
            self._version = self._version.apply(edit)
            self._readers.update(opened)
            live = self._version.all_file_numbers()
            retired = [r for n, r in self._readers.items() if n not in live]
            for reader in retired:
                del self._readers[reader.meta.file_number]
            if flushed is not None:
                self._immutables = [f for f in self._immutables if f.memtable is not flushed]
            self._state.notify_all()
        if flushed is not None and flushed is self._unflushed_redo:
            self._unflushed_redo = None
            self._redo_durable()
        return retired

    # ----------------------------------------------------------------- writes

    def put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key``; durable on return with sync ``always``."""
        self._check_sizes(key, value)
        large = 0 < self._options.value_separation_bytes <= len(value)
        lsn = self._append(encode_put(key, value), ((key, value),), len(key) + len(value), large)
        self._sync_if_always(lsn)

    def delete(self, key: bytes) -> None:
        self.write(WriteBatch().delete(key))

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` atomically; durable on return with sync ``always``."""
        self._sync_if_always(self.write_nowait(batch))

    def write_nowait(self, batch: WriteBatch) -> int:
        """Apply ``batch`` atomically and return its LSN without waiting for durability;
        an asyncio driver then waits for ``sync_to(lsn)`` in a worker thread."""
        if not len(batch):
            return self._wal.last_lsn
        threshold = self._options.value_separation_bytes
        large = False
        for key, value in batch.ops:
            self._check_sizes(key, value)
            large = large or (value is not None and 0 < threshold <= len(value))
        # In parts: a large value (a produced batch) goes to the WAL's writev uncopied.
        return self._append(encode_ops_parts(batch.ops), batch.ops, batch.byte_size, large)

    def sync_to(self, lsn: int) -> None:
        """Block until every write up to ``lsn`` is fsynced (group commit): in the
        broker's journal, or in this engine's WAL."""
        if self._via_journal(lsn):
            assert self._journal is not None
            self._journal.sync_to(self._jlsn)
            return
        try:
            self._wal.sync_to(lsn)
        except WalFailedError as exc:
            self._wal_health.failed(exc.__cause__ or exc)
            raise

    def sync_future(self, lsn: int) -> concurrent.futures.Future[None]:
        """A future resolved once every write up to ``lsn`` is fsynced: the writer
        registers with the broker-wide ``SyncScheduler`` (``EngineOptions
        .sync_scheduler``), which syncs this engine's WAL once for every waiter that
        came meanwhile, beside the other engines'. It fails with what ``sync_to``
        would raise."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if not self.when_durable(lsn, functools.partial(resolve_waiter, future)):
            future.set_result(None)
        return future

    def when_durable(self, lsn: int, waiter: Waiter) -> bool:
        """``sync_future`` without a future: ``waiter(error)`` is called once, from a
        sync thread, when the sync covering ``lsn`` ends (the journal's wave, or this
        engine's WAL's). False if ``lsn`` is durable already (``waiter`` not called)."""
        if self._via_journal(lsn):
            assert self._journal is not None
            return self._journal.when_synced(self._jlsn, waiter)
        scheduler = self._options.sync_scheduler or default_scheduler()
        return scheduler.notify(self._wal, lsn, waiter, self.sync_to)

    def sync(self) -> None:
        """Make every write so far durable, whatever the sync mode."""
        self.sync_to(self._wal.last_lsn)

    def resume(self) -> None:
        """Try now (whatever the backoff) to resume a failed WAL: after space was freed
        on purpose. ``StorageUnavailableError`` if it still fails."""
        with self._write_lock:
            self._check_open()
            self._resume_wal(now=True)

    @property
    def unavailable(self) -> BaseException | None:
        """Why writes are refused now (a failed WAL, flushes failing), or None."""
        return self._wal.failed or self._maintenance.retrying

    def _resume_wal(self, *, now: bool = False) -> None:
        """Write lock held, the WAL failed: resume it if the backoff allows (or ``now``),
        else raise ``StorageUnavailableError``."""
        error = self._wal.failed
        if error is None:
            return
        if self._wal_health.error is None:
            self._wal_health.failed(error)
        if self._unflushed_redo is not None:  # no segment before its flush (``_recover``)
            raise StorageUnavailableError(
                f"the WAL of {self._dir} waits for the flush of the entries the journal "
                "gave back at open; writes are refused until it succeeds"
            ) from error
        if not now and not self._wal_health.due():
            raise StorageUnavailableError(
                f"the WAL of {self._dir} failed ({error!r}); writes are refused until it "
                "recovers"
            ) from error
        # Under the state lock: a flush reads a frozen memtable's pointers under it, after
        # its roll is done, so it never sees one that the resume is about to move.
        with self._state:
            try:
                resumed = self._wal.resume()
            except WalFailedError as exc:
                self._wal_health.failed(exc.__cause__ or exc)
                raise
            if resumed is not None:
                self._move_pointers(resumed)
        if resumed is not None:
            self._wal_health.recovered(f"writing to WAL segment {resumed.new_segment}")

    def _move_pointers(self, resumed: Resumed) -> None:
        """Large values moved with their frames (``resume``): the active memtable's, and
        a frozen one's whose roll was still pending (its frames were unsynced)."""
        for pointers in [self._pointers, *(f.pointers for f in self._immutables)]:
            for key, raw in list(pointers.items()):
                segment, offset, start, length = pointer_fields(raw)
                moved = resumed.moved(segment, offset)
                if moved != (segment, offset):
                    pointers[key] = pack_pointer(*moved, start, length)

    def delete_range(self, start: bytes, end: bytes | None) -> int:
        """Delete every key in ``[start, end)`` atomically; return how many were live.

        Written as point tombstones: the log truncates short suffixes and prefixes of
        whole batches, where the count of keys is small."""
        batch = WriteBatch()
        for key, _value in self.scan(start, end):
            batch.delete(key)
        self.write(batch)
        return len(batch)

    def drop_tables_below(self, key: bytes) -> int:
        """Remove every table whose keys are all ``< key``; return the bytes freed.

        The caller promises that every key below ``key`` is garbage (the log's retention
        and its log start offset): whole tables are dropped by one manifest edit, as
        Kafka deletes whole segments, and nothing is rewritten or tombstoned. Entries
        below ``key`` still in memtables or in tables that straddle ``key`` stay until the
        caller deletes them or they fall into a wholly obsolete table."""
        self._check_open()
        return self._maintenance.drop_tables_below(key)

    def _check_sizes(self, key: bytes, value: bytes | None) -> None:
        if len(key) > self._options.max_key_bytes:
            raise KeyTooLargeError(
                f"key of {len(key)} bytes exceeds max_key_bytes={self._options.max_key_bytes}"
            )
        if value is not None and len(value) > self._options.max_value_bytes:
            raise ValueTooLargeError(
                f"value of {len(value)} bytes exceeds "
                f"max_value_bytes={self._options.max_value_bytes}"
            )

    def _append(
        self,
        payload: bytes | tuple[bytes, ...],
        ops: tuple[tuple[bytes, bytes | None], ...] | list[tuple[bytes, bytes | None]],
        nbytes: int,
        large: bool,
    ) -> int:
        with self._write_lock:
            self._check_open()
            if self._wal.failed is not None:
                self._resume_wal()
            try:
                memtable_size = self._memtable.approximate_size + self._released_bytes
                if memtable_size >= self._options.memtable_bytes:
                    self._rotate_memtable()
                if large or self._pointers or self._journal is not None:
                    # (a small value may replace a pointed-to one)
                    lsn, segment, frame_offset = self._wal.append_located(payload)
                    if large or self._pointers:
                        self._note_pointers(
                            ops, self._options.value_separation_bytes, segment, frame_offset
                        )
                    if self._journal is not None and self._journal_append(
                        lsn, segment, frame_offset, payload
                    ):
                        self._wal.hand_to_os()
                else:
                    lsn = self._wal.append(payload)
            except WalFailedError as exc:
                self._wal_health.failed(exc.__cause__ or exc)
                raise
            memtable = self._memtable
            for key, value in ops:
                memtable.put(key, value)
            if self._options.write_buffer is not None:
                self._options.write_buffer.report(
                    id(self), memtable.approximate_size, self._relieve_memory
                )
            self._user_bytes += nbytes
            self._wal_bytes += (
                len(payload) if isinstance(payload, bytes) else sum(map(len, payload))
            )
            return lsn

    def _journal_append(
        self, lsn: int, segment: int, offset: int, payload: bytes | tuple[bytes, ...]
    ) -> bool:
        """(write lock held, the entry in this engine's WAL) Copy it to the journal;
        whether it did. Not copied, the entry is left to this engine's own WAL's fsync,
        as without a journal: when few engines are appending (``Journal.skips``: a
        wave would serve few, and the copy would write the bytes twice), or the
        journal has failed (a full disk: the append itself never fails here, so the
        memtable and the WAL agree about it, ``wal``'s failure model)."""
        assert self._journal is not None
        if self._own_upto and self._wal.synced_lsn < self._own_upto:
            # An earlier entry waits for this WAL's own fsync: this one must too, or a
            # crash could keep it (from the journal) without the earlier one.
            self._own_upto = lsn
            return False
        if self._journal.skips(self):
            self._own_upto = lsn
            return False
        try:
            self._jlsn = self._journal.append(
                self._journal_key, self, lsn, (segment, offset), payload
            )
        except (OSError, StorageUnavailableError) as exc:
            if not self._journal_refused:
                log.warning("%s: the journal refused an entry (%r): own WAL", self._dir, exc)
                self._journal_refused = True
            self._own_upto = lsn
            return False
        if self._journal_refused:
            log.warning("%s: the journal takes entries again", self._dir)
            self._journal_refused = False
        return True

    def _via_journal(self, lsn: int) -> bool:
        """Whether the durability of entries up to ``lsn`` is the journal's."""
        if self._journal is None:
            return False
        # An entry the journal did not take and not synced yet: the WAL's fsync then
        # covers every entry up to ``lsn``.
        own = self._own_upto
        return not (own and self._wal.synced_lsn < own)

    def make_durable(self, lsn: int) -> None:
        """(journal checkpoint, a worker) Sync this engine's own WAL up to ``lsn``."""
        if self._wal.synced_lsn >= lsn:
            return
        if self._closed:
            # Closed with entries not durable (its WAL failed): the journal keeps them.
            raise StorageUnavailableError(f"{self._dir} closed with WAL entries not durable")
        if not self._suspended:
            try:
                self._wal.sync_to(lsn)
                return
            except ClosedError:
                pass  # suspended (or closed) meanwhile: again under the write lock
        with self._write_lock:
            if self._wal.synced_lsn >= lsn:
                return
            if self._closed:
                raise StorageUnavailableError(f"{self._dir} closed with WAL entries not durable")
            if not self._suspended:
                self._wal.sync_to(lsn)
                return
            self._sync_suspended_wal_locked(lsn)

    def _sync_suspended_wal_locked(self, lsn: int) -> None:
        """(write lock held, suspended) Sync the WAL up to ``lsn``: its file reopened
        for the fsync and closed again."""
        self._wal.reopen()
        try:
            self._wal.sync_to(lsn)
        finally:
            self._wal.suspend(durable=False)

    def durable_upto(self, lsn: int) -> bool:
        """Whether every entry up to ``lsn`` is durable now, without IO: in this WAL,
        or (the entries it has not synced) in the journal. With a journal every entry
        past this WAL's synced LSN was journaled, unless it waits for this WAL's own
        fsync (``_own_upto``), and the newest journaled one is ``_jlsn``."""
        if self._wal.synced_lsn >= lsn:
            return True
        if not self._via_journal(lsn):
            return False
        assert self._journal is not None
        return self._journal.wal.synced_lsn >= self._jlsn

    def journal_covers(self, lsn: int) -> bool:
        return self._wal.synced_lsn >= lsn

    def _note_pointers(
        self,
        ops: Sequence[tuple[bytes, bytes | None]],
        threshold: int,
        segment: int,
        frame_offset: int,
    ) -> None:
        """Record where each large value of ``ops`` sits in its WAL entry."""
        pointers = self._pointers
        held = self._held
        for key, start, length in value_positions(ops):
            if length >= threshold:
                raw = pointers[key] = pack_pointer(segment, frame_offset, start, length)
                held.append((key, raw))
                self._held_bytes += length
            else:
                pointers.pop(key, None)

    def _resolve(self, value: bytes) -> bytes:
        if type(value) is ValuePointer:
            return self._values.read(value)
        return value

    def _sync_if_always(self, lsn: int) -> None:
        if self._options.wal.sync_mode is SyncMode.ALWAYS:
            self.sync_to(lsn)

    def _rotate_memtable(self, *, request_flush: bool = True) -> None:
        """Freeze the active memtable and hand it to the flusher (write lock held);
        ``request_flush=False``: the caller flushes it."""
        with self._state:
            while (
                len(self._immutables) >= self._options.max_immutable_memtables
                and self._options.background
            ):
                self._maintenance.raise_if_unavailable()
                self._state.wait(0.5)
        # No IO here (the appending thread may be an event loop): the roll's fsyncs are
        # done by the next group commit (sync ``always``), a sync thread at once
        # (``none``/``interval``) or the flush of this memtable, whichever comes first
        # (``wal``, "Deferred rolls").
        segment = self._wal.rotate_deferred()
        with self._state:
            self._memtable.freeze()
            self._immutables.append(FrozenMemtable(self._memtable, segment, self._pointers))
            self._memtable = Memtable()
            self._pointers = {}
            self._held = []
            self._held_bytes = self._released_bytes = 0
        if self._options.write_buffer is not None:
            self._options.write_buffer.report(id(self), 0, self._relieve_memory)
        if request_flush:
            self._maintenance.flush_requested()

    def _relieve_memory(self) -> None:
        """The broker's memtable budget asks this engine for memory (on a pool thread).

        When most of the active memtable is large values, whose bytes its WAL holds
        already (value separation), they are let go instead of flushed: the WAL is
        synced up to them (one fsync, outside the write lock, so appends go on), then
        each is replaced in the memtable by its pointer and read back from the WAL, as a
        flushed table's would be. No table, manifest edit or WAL roll: at 1,000 busy
        partitions the budget's flushes of small memtables cost more CPU than the
        appends. Otherwise (small values) the memtable is flushed (``_flush_soon``)."""
        with self._write_lock:
            # (A released engine too: ``make_durable`` reopens its WAL for the fsync.)
            if self._closed or self._wal.failed is not None:
                return
            if self._held_bytes * 2 < self._memtable.approximate_size:
                held = None
            else:
                memtable, held, lsn = self._memtable, self._held, self._wal.last_lsn
                held_bytes = self._held_bytes
                self._held, self._held_bytes = [], 0
        if held is None:
            self._flush_soon()
            return
        try:
            # The WAL keeps an unsynced frame in memory (``resume`` rewrites it after a
            # failure), and a frame synced is never moved: a pointer to it stays true.
            self.make_durable(lsn)
        except (OSError, StorageUnavailableError) as exc:
            log.warning("%s: syncing the WAL to release memory failed: %r", self._dir, exc)
            with self._write_lock:  # held still: a later request tries them again
                if self._memtable is memtable:
                    self._held[:0] = held
                    self._held_bytes += held_bytes
            return
        with self._write_lock:
            if self._memtable is not memtable or self._closed:
                return  # frozen meanwhile: its flush lets the values go
            pointers = self._pointers
            released = count = 0
            for key, raw in held:
                if pointers.get(key) is raw:  # not overwritten or moved since
                    memtable.put(key, ValuePointer(raw))
                    released += pointer_fields(raw)[3]
                    count += 1
            self._released_bytes += released
            self.values_released += count
            if self._options.write_buffer is not None:
                self._options.write_buffer.report(
                    id(self), memtable.approximate_size, self._relieve_memory
                )

    def _flush_soon(self) -> None:
        """The broker's memtable budget asks for a flush (on a pool thread): freeze the
        active memtable and hand it to the flusher, without waiting for the flush, and
        only if no frozen one is waiting (a pool job never waits for another)."""
        with self._write_lock:
            if self._closed or self._suspended or self._wal.failed is not None:
                return
            if not len(self._memtable):
                return
            with self._state:
                if len(self._immutables) >= self._options.max_immutable_memtables:
                    return
            try:
                self._rotate_memtable()
            except (OSError, StorageUnavailableError) as exc:
                log.warning("%s: a flush for the memtable budget failed: %r", self._dir, exc)

    def flush(self) -> None:
        """Flush the active memtable to a table and wait for every pending flush."""
        with self._write_lock:
            self._check_open()
            if self._wal.failed is not None:
                self._resume_wal()
            if len(self._memtable):
                try:
                    self._rotate_memtable()
                except WalFailedError as exc:
                    self._wal_health.failed(exc.__cause__ or exc)
                    raise
        self._maintenance.wait_flushed()

    def compact(self) -> None:
        """Flush, then run compactions until the policy picks none."""
        self.flush()
        self._maintenance.compact_until_idle()

    # ------------------------------------------------------------------ reads

    def _sources(self, key: bytes | None = None) -> list[EntrySource]:
        with self._state:
            sources: list[EntrySource] = [self._memtable]
            sources.extend(f.memtable for f in reversed(self._immutables))
            version, readers = self._version, self._readers
            tables = version.tables_for_key(key) if key is not None else version.all_tables()
            sources.extend(readers[t.file_number] for t in tables)
            return sources

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""
        self._check_open()
        with self._maintenance.reading():
            for source in self._sources(key):
                found = source.get(key)
                if found is not ABSENT:
                    return None if found is None else self._resolve(found)
            return None

    def scan(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Live entries with ``start <= key < end`` in key order, from a consistent view."""
        self._check_open()
        with self._maintenance.reading():
            iterators = [source.entries(start, end) for source in self._sources()]
            resolve = self._values.read
            for key, value in live_entries(merge_entries(iterators)):
                yield key, resolve(value) if type(value) is ValuePointer else value

    def scan_views(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes | memoryview]]:
        """``scan``, but a value-separated (large) value comes as a view of its WAL
        entry rather than a copy; a memtable or table value is the stored ``bytes``
        itself. A fetch joins what it reads once, for its response."""
        self._check_open()
        with self._maintenance.reading():
            iterators = [source.entries(start, end) for source in self._sources()]
            resolve = self._values.read_view
            for key, value in live_entries(merge_entries(iterators)):
                yield key, resolve(value) if type(value) is ValuePointer else value

    def seek_floor(self, key: bytes) -> tuple[bytes, bytes] | None:
        """The live entry with the greatest key ``<= key``, or None."""
        self._check_open()
        with self._maintenance.reading():
            found: Entry | None = live_floor(self._sources(), key)
            if found is None or found[1] is None:
                return None
            return found[0], self._resolve(found[1])

    # ------------------------------------------------------------- lifecycle

    def stats(self) -> EngineStats:
        with self._state:
            version = self._version
            memtable_bytes = self._memtable.approximate_size
            immutables = len(self._immutables)
        maint = self._maintenance
        return EngineStats(
            tables_per_level=tuple(len(level) for level in version.levels),
            bytes_per_level=tuple(version.level_bytes(i) for i in range(len(version.levels))),
            memtable_bytes=memtable_bytes,
            immutable_memtables=immutables,
            user_bytes_written=self._user_bytes,
            wal_bytes_written=self._wal_bytes,
            flush_bytes_written=maint.flush_bytes,
            compaction_bytes_written=maint.compaction_bytes,
            flushes=maint.flushes,
            compactions=maint.compactions,
            trivial_moves=maint.trivial_moves,
            block_cache_hits=self._cache.hits,
            block_cache_misses=self._cache.misses,
        )

    def work_figures(self) -> WorkFigures:
        """``stats``' counts of background work and live tables, without the rest: a
        broker's metrics sum them over every partition at each scrape, and ``stats``
        (each level's bytes summed anew) took 108 ms of it at 10,000 partitions. The
        version is read without the state lock: the reference is replaced whole, never
        changed in place."""
        maint = self._maintenance
        return WorkFigures(
            maint.flushes,
            maint.compactions,
            maint.trivial_moves,
            maint.flush_bytes,
            maint.compaction_bytes,
            sum(map(len, self._version.levels)),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the engine is closed")

    def close(self, *, durable: bool = True, clean_payload: bytes = b"") -> None:
        """Stop background work and make everything written durable. With failed
        storage (a full disk) it does what it can, says so in one log line, releases
        everything and does not raise: what the WAL made durable is replayed at open.
        ``durable=False`` (the files are about to be removed) skips the final flush.
        ``clean_payload``: the owner's bytes kept in the clean-shutdown record, read back
        without opening the engine (``clean_marker.check``). An engine suspended and
        marked clean (``mark_clean``) closes with no IO: its files and its record stay as
        they are, the record's payload included."""
        if self._suspended and self._marked_clean and durable:
            self._close_marked()
            return
        if self._suspended:
            self.resume_files()
        with self._write_lock:
            if self._closed:
                return
            self._maintenance.stop()
            # The clean-shutdown marker claims every segment is whole: only when the
            # final flush ran and the WAL closed with nothing unsynced.
            clean = durable
            try:
                flush = durable and self._options.flush_on_close and not self._maintenance.failed
                if flush and self._unflushed_redo is not None:
                    self._maintenance.flush_all()  # first: the WAL waits for it (``_recover``)
                if durable and self._wal.failed is not None:
                    # One last try, backoff or not: it makes the unsynced entries durable.
                    self._resume_wal(now=True)
                if flush:  # failing flushes too: one last try, space may be back
                    self._maintenance.flush_all()  # a frozen one a stopped job left
                    if len(self._memtable):
                        self._rotate_memtable()
                    self._maintenance.flush_all()
            except (OSError, StorageUnavailableError) as exc:
                log.warning("closing %s without a final flush: %r", self._dir, exc)
                clean = False
            if self._unflushed_redo is not None:
                # What the journal gave back at open is in no file of this engine: a
                # clean-shutdown record would tell the next start to drop that redo.
                clean = False
            self._closed = True
            self._leave_shared_resources()
            try:
                self._wal.close()
            except WalFailedError:  # said above; synced entries are durable
                clean = False
            if not durable and self._options.journal is not None:
                self._drop_from_journal()
            log_number = self._manifest.log_number
            self._manifest.close()
            self._close_readers()
            self._maintenance.close_retired()
            self._values.close()
            if clean and self._maintenance.failed is None and self._wal.failed is None:
                # Last: everything written is synced and no segment is deleted after it.
                try:
                    clean_marker.write(
                        self._fs, self._dir, log_number=log_number, payload=clean_payload
                    )
                except OSError as exc:  # the next open replays as after a crash: safe
                    log.warning("%s: no clean-shutdown record written: %r", self._dir, exc)
            self._lock.release()

    def _drop_from_journal(self) -> None:
        """(closing with ``durable=False``: the files go) The journal never redoes this
        engine's entries so far, into a new engine in the same directory."""
        assert self._options.journal is not None
        try:
            self._options.journal.drop(self._journal_key, self)
        except (OSError, StorageUnavailableError) as exc:
            log.warning("%s: the journal did not record the drop: %r", self._dir, exc)

    def _close_marked(self) -> None:
        """``close`` of an engine suspended and marked clean: what ``suspend_files``
        closed stays closed and nothing is written or deleted (a retired file the
        record lists stays until the next open collects it), so the record stays true."""
        with self._write_lock:
            if self._closed:
                return
            self._maintenance.stop()
            self._closed = True
            self._leave_shared_resources()
            self._wal.close()  # suspended: synced, its file closed: no IO
            self._manifest.close()
            self._close_readers()

    def _leave_shared_resources(self) -> None:
        """(closing) The broker's sync ticks and memtable budget forget this engine."""
        if self._interval_tick is not None and self._options.sync_scheduler is not None:
            self._options.sync_scheduler.cancel(self._interval_tick)
        if self._options.write_buffer is not None:
            self._options.write_buffer.forget(id(self))

    def _close_readers(self) -> None:
        """(closing) Close every table reader and drop this engine's cached blocks."""
        with self._state:
            readers = list(self._readers.values())
            self._readers.clear()
        for reader in readers:
            reader.close()
        self._cache.clear()

    # ----------------------------------------------------------- idle files

    @property
    def marked_clean(self) -> bool:
        return self._marked_clean

    def mark_clean(self, payload: bytes) -> bool:
        """Write the clean-shutdown record of a suspended engine, as its ``close``
        would, with ``payload`` (the owner's summary): were the process killed now, the
        next start would check the engine and defer its opening instead of recovering
        it (Kafka's recovery point, for an idle partition). ``suspend_files`` synced
        the WAL and closed every file; nothing changes a suspended engine's files
        until ``resume_files``, which removes the record first. False (nothing
        written) unless suspended, healthy and not marked yet."""
        with self._write_lock:
            if not self._suspended or self._marked_clean or self._closed:
                return False
            if self.unavailable is not None or self._wal.failed is not None:
                return False
            if not self._quiescent_locked():
                return False
            if not self._wal.fully_synced:
                # With a journal a suspend does not fsync: the record must not claim
                # what is not durable, so the WAL is synced first (the files reopened).
                if self._journal is None:
                    return False
                self._sync_suspended_wal_locked(self._wal.last_lsn)
            # Marked before the record is written: a write that fails after its rename
            # leaves a record behind, and ``resume_files`` must then remove it too.
            self._marked_clean = True
            try:
                clean_marker.write(
                    self._fs, self._dir, log_number=self._manifest.log_number, payload=payload
                )
            except BaseException:
                self._marked_clean = self._fs.exists(join(self._dir, clean_marker.CLEAN_NAME))
                raise
            return True

    def _quiescent_locked(self) -> bool:
        """(write lock held) No frozen memtable, no job running or wanted: what
        suspending or marking an engine needs."""
        with self._state:
            if self._immutables:
                return False
        return self._maintenance.idle

    @property
    def files_suspended(self) -> bool:
        return self._suspended

    def suspend_files(self) -> bool:
        """Close every file the engine holds open (WAL segment, tables, value segments,
        and the LOCK with ``hold_lock``; the manifest is open only while an edit is
        appended) while it is idle, keeping everything else in memory; ``resume_files``
        reopens the WAL segment (and the LOCK), with no replay, no new file and no
        fsync; a table is reopened by its first read. False (nothing done) unless the
        engine is healthy and idle: no frozen memtable, no job running or wanted. A
        synced idle engine's suspend is its files' ``close`` calls, no fsync. The caller
        guarantees that no read or write comes before ``resume_files`` (the partition
        log's pins, ``log/open_files``)."""
        with self._write_lock:
            if self._closed or self._suspended or self.unavailable is not None:
                return False
            if not self._quiescent_locked():
                return False
            if self._memtable.approximate_size >= self._options.memtable_bytes // 4:
                # A large memtable is flushed first, here (the caller is a worker, and a
                # job never waits for another), so that idle partitions do not hold
                # the broker's memtable budget.
                try:
                    self._rotate_memtable(request_flush=False)
                    self._maintenance.flush_all()
                except (OSError, StorageUnavailableError):
                    return False
            try:
                self._wal.suspend(durable=self._journal is None)
            except (OSError, StorageUnavailableError):
                self._wal.reopen()
                return False
            self._close_suspended_locked()
            return True

    def suspend_files_now(self) -> bool:
        """``suspend_files`` on the event loop: only if it costs nothing but ``close``
        calls and waits for no lock (the WAL synced, no roll pending, the memtable under
        the size a suspend flushes, no job); False otherwise, with nothing done (a
        worker's ``suspend_files`` does it then)."""
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            if self._closed or self._suspended or self.unavailable is not None:
                return False
            if not self._quiescent_locked():
                return False
            if self._memtable.approximate_size >= self._options.memtable_bytes // 4:
                return False
            if not self._wal.suspend_now(durable=self._journal is None):
                return False
            self._close_suspended_locked()
            return True
        finally:
            self._write_lock.release()

    def _close_suspended_locked(self) -> None:
        """(write lock held, the WAL's file closed) Close the rest: tables, value
        segments, the LOCK."""
        with self._state:
            readers = list(self._readers.values())
        for reader in readers:
            reader.detach(self._fs)
        self._values.close()
        self._lock.release()
        self._suspended = True

    def resume_files(self) -> None:
        """Reopen what ``suspend_files`` closed and the next write needs: the LOCK (with
        ``hold_lock``) and the WAL segment, for appending. Tables reopen on their first
        read (``TableReader.detach``)."""
        with self._write_lock:
            if not self._suspended:
                return
            if self._marked_clean:
                # Before the first write: from here on a crash must be recovered as one.
                clean_marker.remove(self._fs, self._dir)
                self._marked_clean = False
            hold = self._options.hold_lock
            lock: DirLock = self._fs.lock(join(self._dir, LOCK_NAME)) if hold else _NO_LOCK
            try:
                self._wal.reopen()
            except BaseException:
                lock.release()
                raise
            self._lock = lock
            self._suspended = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped background work, if any (writes then fail with it)."""
        return self._maintenance.failed
