"""Flushes and compactions: the engine's background work, executed one job at a time.

Jobs run on a ``WorkerPool`` (``EngineOptions.workers``: the broker's shared pool; by
default a private pool of one thread), through this engine's ``Strand``: never two jobs
of one engine at once, and a job does one flush or one compaction, then reschedules
itself, so that the engines sharing a pool take turns.

The *policy* (what to compact) is ``compaction.pick_compaction``, a pure function of the
version. This module only executes: it writes tables, makes the manifest edit durable,
swaps in the new version, and only then deletes the files the edit dropped. A crash at
any step leaves either the old version (and orphan tables the next open deletes) or the
new one.

Table readers that a version drops may still be in use by a scan or a get that began
before the swap; they are closed when the last such read ends (``reading()``).

A job that fails with an ``OSError`` (a full disk) is retried with a backoff
(``StorageHealth``: one log line when the failures start, one when a job succeeds
again); the worker thread never dies of it. Meanwhile ``retrying`` is set and a writer
that would have to wait for a flush gets ``StorageUnavailableError`` instead. The tables
a failed job wrote are removed: at once when no manifest record can name them, else
(the manifest append failed: its record may be on disk) after the next manifest append
succeeds, which first rotates the manifest away from the broken one. Any other error is
a bug or damage: the engine stops taking writes (``failed``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sentinel.clock import SystemClock
from sentinel.errors import ClosedError, StateError, StorageUnavailableError
from sentinel.fs import FS
from sentinel.storage.block_cache import BlockCache
from sentinel.storage.compaction import (
    MergeTask,
    TrivialMove,
    apply_task,
    family_of,
    pick_compaction,
)
from sentinel.storage.entry import Entry
from sentinel.storage.files import TableMeta, join, table_name
from sentinel.storage.iterators import concat_entries, merge_entries
from sentinel.storage.manifest import Manifest
from sentinel.storage.memtable import Memtable
from sentinel.storage.options import EngineOptions
from sentinel.storage.storage_health import StorageHealth
from sentinel.storage.table_reader import TableReader
from sentinel.storage.table_writer import TableWriter
from sentinel.storage.value_log import ValueLog, ValuePointer
from sentinel.storage.version import Version, VersionEdit
from sentinel.storage.wal import WriteAheadLog
from sentinel.storage.wal_format import list_segments
from sentinel.storage.workers import Strand, WorkerPool


@dataclass(frozen=True, slots=True)
class FrozenMemtable:
    """A memtable waiting to be flushed: its data is in WAL segments ``< log_number``,
    and ``pointers`` say where its large values sit in them (value separation)."""

    memtable: Memtable
    log_number: int
    pointers: dict[bytes, bytes]
    """Key -> ``value_log.pack_pointer`` bytes."""


class EngineInternals(Protocol):
    """What maintenance needs from the engine."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def wal(self) -> WriteAheadLog: ...

    @property
    def version(self) -> Version: ...

    @property
    def next_file_number(self) -> int: ...

    @property
    def state_lock(self) -> threading.Condition: ...

    def _allocate_file_number(self) -> int: ...

    def oldest_immutable(self) -> FrozenMemtable | None: ...

    @property
    def value_log(self) -> ValueLog: ...

    def pointer_segment_numbers(self) -> set[int]: ...

    def readers_for(self, file_numbers: list[int]) -> list[TableReader]: ...

    def install(
        self, edit: VersionEdit, opened: dict[int, TableReader], flushed: Memtable | None = None
    ) -> list[TableReader]: ...


def _with_pointers(entries: Iterator[Entry], pointers: dict[bytes, bytes]) -> Iterator[Entry]:
    """The memtable's entries with each large value replaced by its WAL pointer."""
    get = pointers.get
    for key, value in entries:
        raw = get(key) if value is not None else None
        yield (key, value) if raw is None else (key, ValuePointer(raw))


class Maintenance:
    def __init__(
        self,
        engine: EngineInternals,
        fs: FS,
        directory: str,
        options: EngineOptions,
        cache: BlockCache,
    ) -> None:
        self._engine = engine
        self._fs = fs
        self._dir = directory
        self._options = options
        self._cache = cache
        self._cond = threading.Condition()
        self._strand: Strand | None = None
        self._private_pool: WorkerPool | None = None
        self._stopping = False
        self._flush_wanted = False
        self._compaction_wanted = False
        self._failed: BaseException | None = None
        self._health = StorageHealth(f"flushes and compactions in {directory}", SystemClock())
        self._orphans: list[int] = []  # tables of failed jobs a manifest record may name
        self._job_lock = threading.Lock()  # one flush or compaction at a time
        self._active_reads = 0
        self._retired: list[TableReader] = []
        self._doomed_segments: set[int] = set()
        self.flushes = 0
        self.compactions = 0
        self.trivial_moves = 0
        self.flush_bytes = 0
        self.compaction_bytes = 0

    # ------------------------------------------------------------ scheduling

    def start(self) -> None:
        if self._options.background:
            pool = self._options.workers
            if pool is None:  # an engine alone: a private pool of one thread
                pool = self._private_pool = WorkerPool(1, "sentinel-maintenance")
            self._strand = Strand(pool, self._step)
            with self._cond:
                wanted = self._flush_wanted or self._compaction_wanted
            if wanted:
                self._strand.schedule()

    def flush_requested(self) -> None:
        if not self._options.background:
            self.flush_all()
            self.compact_until_idle()
            return
        with self._cond:
            self._flush_wanted = True
        if self._strand is not None:
            self._strand.schedule()

    def retry_flush(self, exc: BaseException) -> None:
        """A flush failed on ``exc`` (at open, before ``start``): retry it as ``_step``
        retries a failed one, with the backoff, refusing writes meanwhile. (Without
        background work, the next ``flush_requested`` flushes it with the others.)"""
        if not self._options.background:
            return
        self._health.failed(exc)
        with self._cond:
            self._flush_wanted = True

    def _step(self) -> None:
        """One job on the pool: one flush of every frozen memtable, or one compaction;
        then it reschedules itself while work is wanted (so that engines take turns)."""
        with self._cond:
            if self._stopping or self._failed is not None:
                return
            if not (self._flush_wanted or self._compaction_wanted):
                return
            flush, self._flush_wanted = self._flush_wanted, False
        try:
            if flush:
                self.flush_all()
                self._compaction_wanted = True
            elif not self.compact_once():
                self._compaction_wanted = False
            self._health.recovered()
        except (OSError, StorageUnavailableError) as exc:  # a full disk: retry later
            self._health.failed(exc)
            with self._cond:
                if flush:
                    self._flush_wanted = True
                else:
                    self._compaction_wanted = True
            with self._engine.state_lock:
                self._engine.state_lock.notify_all()
            if self._strand is not None:
                self._strand.schedule(max(0.01, self._health.seconds_until_due()))
            return
        except BaseException as exc:  # the engine stops taking writes, and says why
            with self._cond:
                self._failed = exc
                self._cond.notify_all()
            with self._engine.state_lock:
                self._engine.state_lock.notify_all()
            return
        with self._cond:
            more = not self._stopping and (self._flush_wanted or self._compaction_wanted)
        if more and self._strand is not None:
            self._strand.schedule()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._strand is not None:
            self._strand.close()
        if self._private_pool is not None:
            self._private_pool.shutdown()
            self._private_pool = None

    @property
    def idle(self) -> bool:
        """No job runs, is queued or is wanted (an engine may suspend its files)."""
        with self._cond:
            if self._flush_wanted or self._compaction_wanted or self._failed is not None:
                return False
        return self._strand is None or not self._strand.busy

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    @property
    def retrying(self) -> BaseException | None:
        """The IO error the last job failed with, while jobs are being retried."""
        return self._health.error

    def raise_if_unavailable(self) -> None:
        """``raise_if_failed``, and ``StorageUnavailableError`` while jobs are retried."""
        self.raise_if_failed()
        error = self._health.error
        if error is not None:
            raise StorageUnavailableError(
                f"flushes in {self._dir} are failing ({error!r}); writes are refused until "
                "they succeed"
            ) from error

    def raise_if_failed(self) -> None:
        if self._failed is not None:
            raise StateError(f"background flush or compaction failed: {self._failed!r}") from (
                self._failed
            )

    def wait_flushed(self) -> None:
        if self._options.background:
            with self._engine.state_lock:
                while self._engine.oldest_immutable() is not None:
                    self.raise_if_unavailable()
                    if self._stopping:
                        raise ClosedError("the engine is closing")
                    self._engine.state_lock.wait(0.1)
        else:
            self.flush_all()

    # ----------------------------------------------------------------- flush

    def flush_all(self) -> None:
        while (oldest := self._engine.oldest_immutable()) is not None:
            self._flush(oldest)

    def _flush(self, frozen: FrozenMemtable) -> None:
        with self._job_lock:
            engine = self._engine
            memtable, log_number = frozen.memtable, frozen.log_number
            # The rotation that froze it deferred its WAL roll (``rotate_deferred``): do
            # it first, so that its segments are durable before the edit that lets them
            # go, and its large values' frames have stopped moving (``resume``).
            engine.wal.finish_rolls(upto=log_number)
            with engine.state_lock:
                pointers = dict(frozen.pointers)
            added: tuple[tuple[int, TableMeta], ...] = ()
            opened: dict[int, TableReader] = {}
            if len(memtable):
                number = engine._allocate_file_number()
                entries: Iterator[Entry] = memtable.entries()
                if pointers:
                    entries = _with_pointers(entries, pointers)
                (meta,) = self._write_tables(entries, number, cut=False)
                added = ((0, meta),)
                opened[meta.file_number] = self._open(meta.file_number)
                self.flush_bytes += meta.size
            edit = VersionEdit(
                added=added, log_number=log_number, next_file_number=engine.next_file_number
            )
            self._append_edit(edit, opened)
            self._retire(engine.install(edit, opened, flushed=memtable))
            self.collect_segments()
            self.flushes += 1

    # ------------------------------------------------------------ compaction

    def compact_until_idle(self) -> None:
        for _ in range(10_000):
            if not self.compact_once():
                return

    def compact_once(self) -> bool:
        """Run the task the policy picks; False when it picks none."""
        with self._job_lock:
            engine = self._engine
            version = engine.version
            task = pick_compaction(version, self._options.compaction)
            if task is None:
                return False
            opened: dict[int, TableReader] = {}
            outputs: list[TableMeta] = []
            if isinstance(task, TrivialMove):
                self.trivial_moves += 1
            else:
                outputs = self._merge(task, engine)
                opened = {meta.file_number: self._open(meta.file_number) for meta in outputs}
                self.compaction_bytes += sum(meta.size for meta in outputs)
                self.compactions += 1
            edit = apply_task(version, task, outputs, next_file_number=engine.next_file_number)
            self._append_edit(edit, opened)
            retired = engine.install(edit, opened)
            self._retire(retired)
            for reader in retired:
                self._fs.remove(join(self._dir, table_name(reader.meta.file_number)))
            if retired:
                self._fs.sync_dir(self._dir)
                self.collect_segments()
            return True

    def drop_tables_below(self, key: bytes) -> int:
        with self._job_lock:
            engine = self._engine
            doomed = [(level, t) for level, t in engine.version if t.max_key < key]
            if not doomed:
                return 0
            edit = VersionEdit(
                removed=tuple((level, t.file_number) for level, t in doomed),
                next_file_number=engine.next_file_number,
            )
            engine.manifest.append(edit)
            retired = engine.install(edit, {})
            self._retire(retired)
            for _level, table in doomed:
                self._fs.remove(join(self._dir, table_name(table.file_number)))
            self._fs.sync_dir(self._dir)
            self.collect_segments()
            return sum(t.size for _level, t in doomed)

    def _append_edit(self, edit: VersionEdit, opened: dict[int, TableReader]) -> None:
        """Make ``edit`` durable. If that fails, the tables it adds (``opened``) are
        orphans a manifest record may name: removed after the next append succeeds."""
        try:
            self._engine.manifest.append(edit)
        except BaseException:
            for number, reader in opened.items():
                reader.close()
                self._cache.evict_file(number)
                self._orphans.append(number)
            raise
        if self._orphans:
            orphans, self._orphans = self._orphans, []
            for number in orphans:
                with contextlib.suppress(OSError):
                    self._fs.remove(join(self._dir, table_name(number)))

    def _merge(self, task: MergeTask, engine: EngineInternals) -> list[TableMeta]:
        with self.reading():
            upper, lower = self._readers_for(task)
            sources: list[Iterator[Entry]] = [r.entries() for r in upper]
            if lower:
                sources.append(concat_entries([r.entries for r in lower]))
            merged = merge_entries(sources)
            if task.drop_tombstones:
                merged = (entry for entry in merged if entry[1] is not None)
            return self._write_tables(
                merged, None, self._options.compaction.table_families, cut=True
            )

    def _readers_for(self, task: MergeTask) -> tuple[list[TableReader], list[TableReader]]:
        upper = self._engine.readers_for([t.file_number for t in task.inputs])
        lower = self._engine.readers_for([t.file_number for t in task.next_level_inputs])
        return upper, lower

    # ------------------------------------------------------------------ io

    def _write_tables(
        self,
        entries: Iterator[Entry],
        first_number: int | None,
        families: tuple[bytes, ...] = (),
        *,
        cut: bool,
    ) -> list[TableMeta]:
        """Write ``entries`` into tables; sync the directory. With ``cut`` (merges), a
        table is cut at the compaction policy's ``target_file_bytes`` and, with
        ``families``, where a key's family differs from the one before it. A flush
        writes one table whatever its size, so that its files stay one per flush, and
        its edit names every table it wrote: a flush cut at ``target_file_bytes``
        recorded only its first table, and the entries past it were lost once their
        WAL segment went (a memtable over that size: ``--memtable-mb`` above 64, or a
        replay after a crash flushed at open with its large values held in full)."""
        target_bytes = self._options.compaction.target_file_bytes if cut else None
        outputs: list[TableMeta] = []
        writer: TableWriter | None = None
        number = first_number
        family: bytes | None = None
        try:
            for key, value in entries:
                if families and (not family or not key.startswith(family)):
                    # (b"", keys under no family, starts every key: look each one up.)
                    found = family_of(key, families)
                    if found != family:
                        if writer is not None:
                            outputs.append(writer.finish())
                            writer = None
                        family = found
                if writer is None:
                    if number is None:
                        number = self._engine._allocate_file_number()
                    writer = TableWriter(
                        self._fs, join(self._dir, table_name(number)), number, self._options.table
                    )
                    number = None
                writer.add(key, value)
                if target_bytes is not None and writer.estimated_size >= target_bytes:
                    outputs.append(writer.finish())
                    writer = None
            if writer is not None:
                outputs.append(writer.finish())
                writer = None
        except BaseException:
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.abandon()
            for meta in outputs:  # no manifest record names them yet
                with contextlib.suppress(OSError):
                    self._fs.remove(join(self._dir, table_name(meta.file_number)))
            raise
        if outputs:
            self._fs.sync_dir(self._dir)
        return outputs

    def _open(self, number: int) -> TableReader:
        return TableReader.open(self._fs, join(self._dir, table_name(number)), number, self._cache)

    # ------------------------------------------------- WAL segment lifetimes

    def collect_segments(self) -> None:
        """Delete the WAL segments nothing needs: below the manifest's log number (no
        replay needs them) and pointed into by no live table. Deleted once no read is in
        flight, since a scan may still hold a pointer into one."""
        engine = self._engine
        log_number = engine.manifest.log_number
        pointed = engine.pointer_segment_numbers()
        doomed = {
            number
            for number in list_segments(self._fs, self._dir)
            if number < log_number and number not in pointed
        }
        if not doomed:
            return
        with self._cond:
            self._doomed_segments |= doomed
            if self._active_reads == 0:
                self._close_retired_locked()

    # ----------------------------------------------------- reader lifetimes

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._active_reads += 1
        try:
            yield
        finally:
            with self._cond:
                self._active_reads -= 1
                if self._active_reads == 0 and self._retired:
                    self._close_retired_locked()

    def _retire(self, readers: list[TableReader]) -> None:
        for reader in readers:
            self._cache.evict_file(reader.meta.file_number)
        with self._cond:
            self._retired.extend(readers)
            if self._active_reads == 0:
                self._close_retired_locked()

    def _close_retired_locked(self) -> None:
        for reader in self._retired:
            reader.close()
        self._retired.clear()
        if self._doomed_segments:
            doomed, self._doomed_segments = self._doomed_segments, set()
            self._engine.value_log.forget(doomed)
            self._engine.wal.delete_segments(doomed)

    def close_retired(self) -> None:
        with self._cond:
            self._close_retired_locked()
