"""A partition's log on its own LSM engine: append, read, truncate, retention, compaction.

One ``Engine`` per partition directory; the key layout and the checkpoint format are in
``layout``. A batch is stored once, under ``"D" + base offset``, as the stamped
RecordBatch v2 bytes a fetch returns; everything is done per batch, never per record,
except key compaction (``key_compaction``) and ``offset_for_timestamp`` (one batch).

Offsets: ``log_start_offset <= high_watermark <= log_end_offset``. The log end is the
next offset of the newest batch, or where a truncation or DeleteRecords left it when
that is further (no batch left, or a gap). Batches are contiguous, except where key
compaction deleted a batch that became empty; a read from inside such a gap starts at
the next batch (or is empty, when the gap runs to the log end).

Durability and the high watermark (``LogOptions.auto_high_watermark``, the default,
for a single broker): the high watermark is the end of what has been acknowledged as
durable in the engine's sync mode. With sync ``always`` a batch counts once its WAL
entry is fsynced (``append(wait=True)`` returns after that; after ``wait=False`` the
watermark moves when ``sync_to(lsn)`` covers it); with ``interval`` or ``none`` it
counts once appended (written to the OS: that is all those modes promise). With
``auto_high_watermark=False`` (a replicated partition) only ``set_high_watermark``
moves it (Raft's commit index). Reads, ``offset_for_timestamp`` and retention stay
below the high watermark unless asked otherwise. After a restart it is the log end
(auto: everything recovered is on disk) or the log start (until replication sets it).

Idempotent producers (``producer_state``): the last five batches per producer id are
checked before the engine write and installed after it. They are persisted in
checkpoints (``layout``), not per append: open loads the newest checkpoint and replays
the headers of the batches after it (``recovery``); a truncation rolls the state back
from an older checkpoint. A retried duplicate is answered with the original offsets.

Changes: an append updates the ``LogState`` in place; every other change (truncation,
retention, DeleteRecords, a compaction chunk) is planned as a write batch plus a new
state (``edits``), written atomically with its checkpoint, then installed. What a
retention pass or DeleteRecords removes is read by ``retention_pass``, a compaction pass
is driven by ``compaction_pass``, and what a clean close leaves for the next start (the
summary a deferred log serves) is ``clean_shutdown``'s; this class holds the locks and
the state, and commits.

Threads: mutating calls (append*, truncate_suffix, apply_retention, delete_records,
compact_keys, close) are serialized by an internal lock; the broker should still keep
one writer, so that appends keep their order. ``compact_keys`` does its reading and
per-record work outside that lock and takes it only to install each chunk, so appends
proceed meanwhile. Reads (``read``, ``offset_for_timestamp``, the properties) may come
from any thread at any time; each read sees a consistent engine snapshot, but may see
offsets a concurrent truncation or retention is moving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from sentinel.clock import Clock
from sentinel.errors import ClosedError, DiskError, InvalidArgumentError, StorageUnavailableError
from sentinel.fs import FS
from sentinel.log.append import Buffer, Checked, stage, validate_produce
from sentinel.log.clean_shutdown import (
    open_recovered,
    summary_agrees,
    summary_payload,
    summary_state,
)
from sentinel.log.compaction_pass import cleanable_end, run_pass
from sentinel.log.config import TopicConfig
from sentinel.log.edits import plan_head_deletion, plan_rewrites, plan_truncation
from sentinel.log.errors import OffsetOutOfRangeError, naming_partition
from sentinel.log.high_watermark import HighWatermark
from sentinel.log.key_compaction import Rewrite
from sentinel.log.layout import (
    TABLE_FAMILIES,
    TIME_INDEX_END,
    TIME_INDEX_TAG,
    data_key,
    decode_i64,
    encode_i64,
    key_offset,
    time_index_key,
    time_index_start,
)
from sentinel.log.open_files import EngineSlot, OpenLogLimit
from sentinel.log.producer_state import ProducerEntry
from sentinel.log.recovery import recover
from sentinel.log.retention import BatchInfo, RetentionMemo
from sentinel.log.retention_pass import batches_below, idle_memo, memo_now, retention_head
from sentinel.log.scanning import batches_from, find_timestamp, next_offset, scanning
from sentinel.log.state import LogState, add_checkpoint
from sentinel.log.summary import LogSummary
from sentinel.log.types import AppendResult, LogOptions, ReadResult
from sentinel.record import validate_batch
from sentinel.storage.engine import NO_WORK, Engine, EngineStats, WorkFigures
from sentinel.storage.options import EngineOptions
from sentinel.storage.sync_scheduler import Waiter, resolve_waiter
from sentinel.storage.wal import SyncMode
from sentinel.storage.write_batch import WriteBatch

#: How long a worker's reopen waits for releases under way in other threads
#: (``OpenLogLimit.make_room``; then it opens anyway: a limit that cannot release must
#: not stop the broker).
ROOM_WAIT_S = 5.0
_log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def with_log_layout(options: EngineOptions | None) -> EngineOptions:
    """``options`` (default: ``EngineOptions()``) with the log's table families."""
    options = options if options is not None else EngineOptions()
    if options.compaction.table_families == TABLE_FAMILIES:
        return options
    compaction = dataclasses.replace(options.compaction, table_families=TABLE_FAMILIES)
    return dataclasses.replace(options, compaction=compaction)


def _on_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop (which must never wait)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _pinned(
    method: Callable[Concatenate[PartitionLog, _P], _R],
) -> Callable[Concatenate[PartitionLog, _P], _R]:
    """The call needs the engine: reopen it if its files were released, and keep it
    from being released until the call returns (``open_files``)."""

    def pinned(self: PartitionLog, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        self._pin()
        try:
            return method(self, *args, **kwargs)
        finally:
            self._unpin()

    functools.update_wrapper(pinned, method)
    return pinned


class PartitionLog:
    """The log of one partition. Use ``PartitionLog.open`` (or ``deferred``)."""

    def __init__(
        self,
        engine: Engine | None,
        directory: str,
        config: TopicConfig,
        clock: Clock,
        *,
        engine_options: EngineOptions,
        options: LogOptions,
        name: str | None = None,
        open_limit: OpenLogLimit | None = None,
        opener: Callable[[], Engine] | None = None,
        summary: LogSummary | None = None,
    ) -> None:
        self._opener = opener
        self._summary = summary
        self._slot = EngineSlot(engine, self._open_deferred if engine is None else None)
        self._open_limit = open_limit
        self._dir = directory
        #: How errors name this partition (``topic-N``); the directory by default.
        self.name = name or directory
        self._config = config
        self._clock = clock
        self._options = options
        self._max_value = engine_options.max_value_bytes
        self._sync_always = engine_options.wal.sync_mode is SyncMode.ALWAYS
        self._lock = threading.RLock()
        self._compaction_lock = threading.Lock()
        self._closed = False
        self._reopen_error = ""  # the last cause of a failed reopen, logged once
        self._generation = 0  # bumped by every change to stored batches but appends
        self._tombstones_pending = True
        #: (generation, log end, high watermark) when a compaction pass last found
        #: nothing to do: the next is skipped in memory while they stay (``compact_keys``).
        self._compacted: tuple[int, int, int] | None = None
        #: What the last retention pass that deleted nothing saw (skips the next scans).
        self._retention_memo: RetentionMemo | None = None
        if engine is not None:
            self._state, replayed = recover(engine, directory)
        elif summary is not None:  # until opened: the figures the clean close recorded
            self._state, replayed = summary_state(summary), 0
        else:
            raise ValueError("a deferred partition log needs the summary of its clean close")
        self._hw = HighWatermark(
            self._state.log_end if options.auto_high_watermark else self._state.log_start,
            auto=options.auto_high_watermark,
            sync_always=self._sync_always,
        )
        self._since_checkpoint = 0
        self._since_time_index = 0
        self._dirty = replayed > 0
        # When the last release closed the files (state fixed until the next pin).
        self._released_at: float | None = None
        if open_limit is not None and engine is not None:
            open_limit.used(self)

    def _open_deferred(self) -> Engine:
        """Open a deferred log's engine (the first call that needs it, slot lock held)
        and load its state; the summary's figures are checked against it."""
        assert self._opener is not None
        engine, state, replayed = open_recovered(self._opener, self._dir)
        if not summary_agrees(self.name, self._state, state):  # the stored data wins
            self._hw.set(state.log_end if self._options.auto_high_watermark else state.log_start)
        self._state, self._dirty = state, replayed > 0
        return engine

    @property
    def directory(self) -> str:
        """Where this log's files are (errors name it)."""
        return self._dir

    @property
    def _engine(self) -> Engine:
        return self._slot.engine

    def _pin(self) -> None:
        limit = self._open_limit
        on_loop = False
        if limit is not None and self._slot.released:
            on_loop = _on_event_loop()
            if not on_loop:
                limit.make_room(ROOM_WAIT_S)
        try:
            self._slot.pin()
        except (DiskError, OSError) as exc:  # its files went bad while closed: named
            raise self._reopen_failed(exc) from exc
        if on_loop and limit is not None:
            # The loop cannot wait for room: it releases, in this call, the idle logs
            # this reopen pushes past the limit (``close`` calls; one that needs a sync
            # is left to a worker). A Fetch naming 2,000 released partitions read them
            # all here, each reopening its files faster than the workers' drain closed
            # others, until the broker hit RLIMIT_NOFILE.
            limit.used(self, inline=True)
            limit.release_now()

    def _reopen_failed(self, exc: BaseException) -> StorageUnavailableError:
        """The error a call on a log whose files cannot be (re)opened raises; logged the
        first time each cause is seen (damage found on first use, after a start that
        only checked the partition cheaply, is otherwise seen only by clients)."""
        error = StorageUnavailableError(
            f"partition {self.name} cannot reopen its files: {exc}", self.name
        )
        if str(exc) != self._reopen_error:
            self._reopen_error = str(exc)
            _log.warning("%s", error)
        return error

    def _unpin(self) -> None:
        self._slot.unpin()
        if self._open_limit is not None:
            self._open_limit.used(self)

    def release_files(self) -> bool:
        """Close the engine's files if no call uses them (``open_files``); the next call
        reopens them. True if it closed them."""
        return self._slot.release(self._before_release)

    def release_files_now(self) -> bool:
        """``release_files`` in this call, on the event loop, if it costs nothing but
        ``close`` calls: its WAL synced, no lock held elsewhere; False otherwise."""
        return self._slot.release_now(self._before_release_now)

    def _before_release_now(self, engine: Engine) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        try:
            last = engine.wal.last_lsn
            if self._closed or not engine.durable_upto(last):
                return False  # closing, or a sync (IO) first: for a worker
            self._hw.synced(last)
            self._released_at = self._clock.monotonic()
            return True
        finally:
            self._lock.release()

    def _before_release(self, engine: Engine) -> None:
        # The state stays in memory; what a sync wave has not covered yet is made
        # durable by the suspend, so the high watermark moves over it now.
        with self._lock:
            if self._closed:
                return
            engine.sync()
            self._hw.synced(engine.wal.last_lsn)
            self._released_at = self._clock.monotonic()

    def mark_idle_clean(self, idle_s: float) -> bool:
        """Give a log whose files were released ``idle_s`` seconds ago or more a
        clean-shutdown record (``Engine.mark_clean``, with its summary), so that a
        crash now costs it nothing at the next start: it is checked and opened on first
        use, as after a clean stop, instead of recovered (Kafka's recovery-point
        checkpoint). Its next use removes the record before it writes. A worker's call:
        the files reopened for the summary's read of the head batch and closed again,
        the record written (two fsyncs); True if it marked the log."""

        def mark(engine: Engine) -> bool:
            # Under the slot's lock (no pin, reopen or close meanwhile).
            released = self._released_at
            if released is None or engine.marked_clean:
                return False
            if self._clock.monotonic() - released < idle_s:
                return False
            return self._mark_released(engine)

        if self._closed or self.files_open:
            return False
        try:
            return self._slot.while_released(mark)
        except (DiskError, OSError, StorageUnavailableError) as exc:
            # Only an optimisation: a full disk, say, leaves the log unmarked (a crash
            # then recovers it, as before); the next pass tries again, one line each.
            _log.debug("partition %s: not marked clean: %r", self.name, exc)
            return False
        finally:
            if self._open_limit is not None and self.files_open:
                # Released before, open now: the files reopened for the summary stayed
                # open (their suspend failed), or a use reopened them since. Counted by
                # the limit again, which releases them when they are idle.
                self._open_limit.used(self)

    def _mark_released(self, engine: Engine) -> bool:
        """``Engine.mark_clean`` of a released engine with the log's summary: the files
        reopened for the summary's read of the head batch, closed again, the record
        written. No pin may come meanwhile (the slot's lock, or the slot closed)."""
        engine.resume_files()
        try:
            with self._lock:
                payload = summary_payload(engine, self._state)
        finally:
            suspended = engine.suspend_files()
        return suspended and bool(payload) and engine.mark_clean(payload)

    @property
    def files_open(self) -> bool:
        """The engine is opened and its files are open: a call needs no file IO first."""
        return not self._slot.released

    def open_files(self) -> None:
        """Open the engine of a deferred log (its first use: replay, fsyncs) or reopen
        the files of a released one, now, and mark the log used. Blocking IO: an
        asyncio caller runs it in a worker thread before a call that needs the engine,
        so that the call does not do it on the event loop. While the logs holding
        files are at the limit's hard cap (releases lag behind reopens), it first makes
        room (``OpenLogLimit.make_room``), as every pin of a released log does."""
        self._pin()
        self._unpin()

    def reopen_files_now(self) -> bool:
        """Reopen a released log's files in this call if that is cheap (one ``open``:
        ``EngineSlot.reopen_now``) and mark the log used; True if its files are open
        now. False: a deferred log's first opening (a replay, fsyncs) or a release in
        progress, or the logs holding files past the limit's hard cap: the caller uses
        ``open_files`` in a worker thread."""
        if self._open_limit is not None and self._open_limit.crowded():
            return False
        try:
            reopened = self._slot.reopen_now()
        except (DiskError, OSError) as exc:  # its files went bad while closed: named
            raise self._reopen_failed(exc) from exc
        if reopened and self._open_limit is not None:
            # The loop releases the idle logs this reopen pushes past the limit itself
            # when that is only ``close`` calls: a worker's batch of releases would
            # take the GIL from the loop once per release.
            self._open_limit.used(self, inline=True)
            self._open_limit.release_now()
        return reopened

    @property
    def closed(self) -> bool:
        return self._closed

    @classmethod
    def deferred(
        cls,
        fs: FS,
        directory: str,
        config: TopicConfig,
        clock: Clock,
        *,
        summary: LogSummary,
        engine_options: EngineOptions | None = None,
        options: LogOptions | None = None,
        name: str | None = None,
        open_limit: OpenLogLimit | None = None,
    ) -> PartitionLog:
        """The log of a partition that closed cleanly (``clean_marker.check`` passed and
        gave ``summary``), not opened: it holds no file and serves its offsets from the
        summary; the first call that needs the engine opens it (inline, in that call)."""
        engine_options = with_log_layout(engine_options)
        opts = engine_options
        return cls(
            None,
            directory,
            config,
            clock,
            engine_options=engine_options,
            options=options or LogOptions(),
            name=name,
            open_limit=open_limit,
            opener=lambda: Engine.open(directory, opts, fs=fs, clock=clock),
            summary=summary,
        )

    @property
    def opened(self) -> bool:
        """False for a deferred log that no call has needed yet."""
        return self._slot.opened

    @classmethod
    def open(
        cls,
        fs: FS,
        directory: str,
        config: TopicConfig,
        clock: Clock,
        engine_options: EngineOptions | None = None,
        *,
        options: LogOptions | None = None,
        name: str | None = None,
        open_limit: OpenLogLimit | None = None,
    ) -> PartitionLog:
        """Open (or create) the partition log in ``directory``; ``name`` (``topic-N``)
        is how read errors name it. With ``open_limit``, it first makes room while the
        logs holding files are at the limit's hard cap (``OpenLogLimit.make_room``): a
        topic of many partitions is created (or recovered) by several threads at once,
        faster than the releases of the idle ones, and the open files went past the
        limit (855-1,015 of a 1,024 RLIMIT_NOFILE at 2,000 partitions, EMFILE under
        load)."""
        if open_limit is not None:
            open_limit.make_room(ROOM_WAIT_S)
        engine_options = with_log_layout(engine_options)
        engine = Engine.open(directory, engine_options, fs=fs, clock=clock)
        try:
            return cls(
                engine,
                directory,
                config,
                clock,
                engine_options=engine_options,
                options=options or LogOptions(),
                name=name,
                open_limit=open_limit,
            )
        except BaseException:
            engine.close()
            raise

    # ------------------------------------------------------------------ state

    @property
    def log_end_offset(self) -> int:
        return self._state.log_end

    @property
    def high_watermark(self) -> int:
        return self._hw.value

    @property
    def log_start_offset(self) -> int:
        return self._state.log_start

    @property
    def size_bytes(self) -> int:
        """Bytes of the stored batches (exact; the engine's own overhead not counted)."""
        return self._state.size

    @property
    def clean_offset(self) -> int:
        """Key compaction has cleaned every batch below this offset."""
        return self._state.clean_offset

    @property
    def config(self) -> TopicConfig:
        return self._config

    @property
    def engine(self) -> Engine:
        """The engine, its files reopened if they were released. Not pinned: a direct
        user (a test, a tool, the Raft adapter's sync) keeps the log busy or its
        open-files limit high; the log's own calls pin it. A reopen here is counted by
        the open-files limit, as a pin's is (it went uncounted, its files open until the
        log's next use)."""
        if self._open_limit is None or not self._slot.released:
            return self._slot.wake()
        self._open_limit.make_room(ROOM_WAIT_S)
        engine = self._slot.wake()
        self._open_limit.used(self)
        return engine

    def engine_stats(self) -> EngineStats:
        """The partition engine's figures (flushes, compactions, tables, cache); zeros
        for a deferred log not opened yet."""
        if not self._slot.opened:
            return EngineStats((), (), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return self._engine.stats()

    def work_figures(self) -> WorkFigures:
        """The engine's background work and live tables (``Engine.work_figures``); none
        for a deferred log not opened yet."""
        if not self._slot.opened:
            return NO_WORK
        return self._engine.work_figures()

    def update_config(self, config: TopicConfig) -> None:
        """Apply an altered topic config (retention and size limits take effect at once)."""
        self._config = config

    def producer_state(self, producer_id: int) -> ProducerEntry | None:
        if not self._slot.opened:
            self._pin()  # a deferred log: its producers are in its engine
            self._unpin()
        return self._state.producers.get(producer_id)

    def _now_ms(self) -> int:
        return int(self._clock.wall() * 1000)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the partition log in {self._dir} is closed")

    @contextlib.contextmanager
    def _naming_storage_errors(self) -> Iterator[None]:
        """Damaged or missing stored data met by a read reaches the client as
        CORRUPT_MESSAGE / KAFKA_STORAGE_ERROR naming this partition, never INTERNAL."""
        try:
            yield
        except (DiskError, FileNotFoundError) as exc:
            raise naming_partition(exc, self.name) from exc

    # ----------------------------------------------------------------- append

    def append(
        self, batch: Buffer, *, leader_epoch: int = 0, wait: bool = True
    ) -> AppendResult:
        """Validate, stamp and store one producer batch at the log end.

        Raises the record codec's ``CorruptRecordError`` / ``RecordBatchTooLargeError``
        / ``InvalidRecordError`` for a batch that is not acceptable, and
        ``OutOfOrderSequenceError`` / ``InvalidProducerEpochError`` for an idempotent
        producer's batch out of turn; nothing is stored then."""
        return self.append_many((batch,), leader_epoch=leader_epoch, wait=wait)[0]

    @_pinned
    def append_many(
        self, batches: Sequence[Buffer], *, leader_epoch: int = 0, wait: bool = True
    ) -> list[AppendResult]:
        """Append several batches in one engine write (one WAL entry): all or none."""
        config, max_value = self._config, self._max_value
        checked = [validate_produce(b, config, max_value) for b in batches]
        return self._append(checked, leader_epoch, wait, replicated=False)

    def check_produce(self, batch: Buffer) -> Checked:
        """Validate a producer's batch as ``append`` does (CRC, format, size, keys of a
        compacted topic), storing nothing: a caller that must refuse a whole request
        before any of it is stored checks every batch first (``append_checked``)."""
        return validate_produce(batch, self._config, self._max_value)

    @_pinned
    def append_checked(
        self, checked: Sequence[Checked], *, leader_epoch: int = 0, wait: bool = True
    ) -> list[AppendResult]:
        """``append_many`` of batches ``check_produce`` already validated (each
        checked once, not twice)."""
        return self._append(list(checked), leader_epoch, wait, replicated=False)

    @_pinned
    def append_replicated(self, batch: Buffer, *, wait: bool = True) -> AppendResult:
        """Store a batch already stamped by a leader, as is (a follower's append): its
        base offset must be the log end; producer state follows it without checks."""
        data = batch if isinstance(batch, bytes) else memoryview(batch).cast("B")
        header = validate_batch(data, max_batch_bytes=self._max_value, from_producer=False)
        return self._append([(data, header)], header.leader_epoch, wait, replicated=True)[0]

    def _append(
        self, checked: list[Checked], leader_epoch: int, wait: bool, replicated: bool
    ) -> list[AppendResult]:
        with self._lock:
            self._check_open()
            state = self._state
            now = self._now_ms() if self._config.log_append_time and not replicated else None
            staged = stage(
                checked,
                state.producers,
                state.log_end,
                leader_epoch=leader_epoch,
                append_time_ms=now,
                replicated=replicated,
            )
            wb = WriteBatch()
            leo, max_ts, since_ti = state.log_end, state.max_timestamp, self._since_time_index
            last_base, written = state.last_base, 0
            for item in staged:
                if item.value is None:
                    continue
                if since_ti >= self._options.time_index_interval_bytes:
                    wb.put(time_index_key(item.base_offset), encode_i64(max_ts))
                    since_ti = 0
                wb.put(data_key(item.base_offset), item.value)
                since_ti += len(item.value)
                written += len(item.value)
                max_ts = max(max_ts, item.max_timestamp)
                leo, last_base = item.last_offset + 1, item.base_offset
            lsn = self._engine.write_nowait(wb)
            if written:
                for item in staged:
                    if item.entry is not None:
                        state.producers.put(item.entry)
                state.last_base, state.max_timestamp = last_base, max_ts
                state.size += written
                state.log_end = leo
                self._since_time_index = since_ti
                self._since_checkpoint += written
                self._dirty = True
                self._hw.appended(lsn, leo)
                if self._since_checkpoint >= self._options.checkpoint_interval_bytes:
                    self._write_checkpoint(wait=False)
        if self._open_limit is not None:
            self._open_limit.appended(self)  # appended again soon: kept open (active)
        if wait and self._sync_always:
            self.sync_to(lsn)
        return [
            AppendResult(s.base_offset, s.last_offset, s.log_append_time_ms, lsn, s.value is None)
            for s in staged
        ]

    @_pinned
    def sync_to(self, lsn: int) -> None:
        """Wait until every write up to ``lsn`` is durable (group commit), then move the
        high watermark over the batches that covers. Safe from a worker thread."""
        self._engine.sync_to(lsn)
        self._hw.synced(lsn)

    def sync_future(self, lsn: int) -> concurrent.futures.Future[None]:
        """``sync_to`` without a thread of the caller's: a future resolved by the
        broker-wide sync pipeline (``Engine.sync_future``) once ``lsn`` is durable,
        after the high watermark moved over it. An asyncio caller awaits
        ``asyncio.wrap_future(log.sync_future(lsn))``, or uses ``when_durable``."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        if not self.when_durable(lsn, functools.partial(resolve_waiter, done)):
            done.set_result(None)
        return done

    def when_durable(self, lsn: int, waiter: Waiter, *, finish: bool = True) -> bool:
        """``sync_future`` without a future (``SyncScheduler.notify``): ``waiter(error)``
        is called once, from a sync thread, after the high watermark moved over ``lsn``
        (or with the sync's error). False if ``lsn`` is durable already: the high
        watermark moved here, and ``waiter`` is not called. ``finish=False``: ``waiter``
        is called before that, with the log still pinned, and its owner calls
        ``finish_durable(lsn, error)`` once, on its own thread (the event loop's driver:
        the sync thread then runs none of this log's code)."""

        def synced(error: BaseException | None) -> None:
            # Pinned until the fsync ends, not until the caller stops waiting: a
            # caller that goes away (a request cancelled) must not let the files be
            # released under the fsync.
            try:
                if error is None:
                    self._hw.synced(lsn)
                waiter(error)
            finally:
                self._unpin()

        self._pin()  # until the wave is done: the engine stays open for it
        try:
            pending = self._engine.when_durable(lsn, synced if finish else waiter)
        except BaseException:
            self._unpin()
            raise
        if not pending:
            self.finish_durable(lsn, None)
        return pending

    def finish_durable(self, lsn: int, error: BaseException | None) -> None:
        """The end of a ``when_durable(finish=False)`` wait: the high watermark moves
        over ``lsn`` (unless the sync failed) and the log is unpinned."""
        try:
            if error is None:
                self._hw.synced(lsn)
        finally:
            self._unpin()

    def sync_all_future(self) -> concurrent.futures.Future[None]:
        """``sync_future`` up to the last write so far (every append and truncation
        made before this call): a driver persisting a Raft Ready awaits it."""
        self._pin()
        try:
            lsn = self._engine.wal.last_lsn
        finally:
            self._unpin()
        return self.sync_future(lsn)

    def set_high_watermark(self, offset: int) -> None:
        """Set the high watermark (replication's commit point); at most the log end."""
        log_end = self._state.log_end
        if not 0 <= offset <= log_end:
            raise InvalidArgumentError(f"high watermark {offset} is outside [0, {log_end}]")
        self._hw.set(offset)

    # ------------------------------------------------------------------ reads

    def read(
        self, offset: int, max_bytes: int, *, include_uncommitted: bool = False
    ) -> ReadResult:
        """Whole batches from the one holding ``offset``, up to ``max_bytes`` but always
        at least one when there is one; below the high watermark unless
        ``include_uncommitted`` (a replica's fetch). ``OffsetOutOfRangeError`` outside
        ``[log_start_offset, log_end_offset]``; at the end (or the watermark) an empty
        result, answered from the offsets alone: a consumer following an idle partition
        asks at its end on every fetch, and a log whose files were released
        (``open_files``) stays released (before, each such read reopened it, and past
        the open-files limit released another: py-spy put ~70 % of a broker's samples
        in file opens and closes with one consumer of 2,000 idle partitions)."""
        self._check_open()
        state = self._state
        log_start, leo, hw = state.log_start, state.log_end, self._hw.value
        if offset < log_start or offset > leo:
            raise OffsetOutOfRangeError(offset, log_start, leo)
        if offset >= (leo if include_uncommitted else hw):
            return ReadResult((), hw, log_start, leo, offset)
        return self._read_batches(offset, max_bytes, include_uncommitted=include_uncommitted)

    @_pinned
    def _read_batches(
        self, offset: int, max_bytes: int, *, include_uncommitted: bool
    ) -> ReadResult:
        """``read`` once there may be batches to read: the engine is needed."""
        self._check_open()
        state = self._state
        log_start, leo, hw = state.log_start, state.log_end, self._hw.value
        if offset < log_start or offset > leo:
            raise OffsetOutOfRangeError(offset, log_start, leo)
        limit = leo if include_uncommitted else hw
        batches: list[bytes | memoryview] = []
        total = 0
        after = offset
        if offset < limit:
            with (
                self._naming_storage_errors(),
                scanning(batches_from(self._engine, offset, limit)) as found,
            ):
                for _key, value in found:
                    if batches and total + len(value) > max_bytes:
                        break
                    batches.append(value)
                    total += len(value)
                    after = next_offset(value)
        return ReadResult(tuple(batches), hw, log_start, leo, after)

    @_pinned
    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``timestamp_ms`` below
        the high watermark, or None (Kafka's ListOffsets by time; the special
        timestamps -1 / -2 are the caller's to map to the end / start). The time index
        skips the batches that cannot hold it; one batch is decoded."""
        self._check_open()
        if timestamp_ms < 0:
            raise InvalidArgumentError(f"timestamp {timestamp_ms} is negative")
        log_start, hw = self._state.log_start, self._hw.value
        with (
            self._naming_storage_errors(),
            scanning(self._engine.scan(TIME_INDEX_TAG, TIME_INDEX_END)) as index,
        ):
            entries = ((key_offset(k), decode_i64(v)) for k, v in index)
            start = time_index_start(entries, timestamp_ms)
        start = log_start if start is None else max(start, log_start)
        if start >= hw:
            return None
        with self._naming_storage_errors():
            return find_timestamp(self._engine, start, hw, log_start, timestamp_ms)

    # ------------------------------------------------------- removing batches

    @_pinned
    def truncate_suffix(self, offset: int) -> None:
        """Remove every batch with base offset >= ``offset``; the log end becomes
        ``offset``. It must be a batch boundary, the log end, or at most the log start
        (then the log is emptied and restarts at ``offset``, as Kafka's
        truncateFullyAndStartAt). Producer state rolls back with it.

        Replication truncates only above the high watermark (uncommitted entries);
        key compaction relies on that, as it lets records below the watermark
        supersede older ones: truncating below it on a compacted topic can lose the
        latest surviving value of a key."""
        with self._lock:
            self._check_open()
            log_end = self._state.log_end
            if not 0 <= offset <= log_end:
                raise InvalidArgumentError(f"cannot truncate to {offset}: log end {log_end}")
            if offset == log_end:
                return
            wb, new = plan_truncation(
                self._engine, self._state, offset, self._options.checkpoints_kept, self._dir
            )
            self._commit(wb, new)
            self._hw.truncated(offset)

    def apply_retention(self) -> int:
        """Delete head batches past ``retention.ms`` / ``retention.bytes`` (see
        ``retention``), never the newest one nor any at or above the high watermark;
        also forget expired producers. Returns the number of batches deleted. A deferred
        log not opened yet is opened only if its summary says the rules may delete."""
        if not self._retention_may_delete() or self._retention_known_idle():
            return 0
        return self._apply_retention(delete=True)[0]

    def retention_point(self) -> int | None:
        """Where ``apply_retention`` would move the log start (None: nowhere), without
        deleting anything (expired producers are forgotten): a replicated log moves its
        start through its Raft group (``PartitionRaftLog.advance_start``)."""
        if not self._retention_may_delete() or self._retention_known_idle():
            return None
        return self._apply_retention(delete=False)[1]

    def _retention_known_idle(self) -> bool:
        """Whether this pass deletes nothing, known in memory before the log is pinned:
        an opened log that stores nothing (a new partition) or does not delete, or the
        last pass's memo says so. An idle log whose files were released is then not
        reopened by every retention pass, nor a new topic's partitions by the first
        (expired producers are forgotten here too: they are state in memory)."""
        with self._lock:
            if self._closed:
                return False
            if self._slot.opened and (self._state.last_base < 0 or not self._config.cleanup_delete):
                self._retention_now(self._now_ms())
                return True
            if self._retention_memo is None:
                return False
            return self._retention_now(self._now_ms())[1]

    def _retention_now(self, now: int) -> tuple[RetentionMemo, bool]:
        """(lock held) Forget expired producers; what a pass sees now, and whether the
        last pass's memo says it deletes nothing."""
        if self._state.producers.expire(now, self._options.producer_expiration_ms):
            self._dirty = True
        return memo_now(
            self._state, self._config, generation=self._generation,
            high_watermark=self._hw.value, seen=self._retention_memo, now_ms=now,
        )  # fmt: skip

    def _retention_may_delete(self) -> bool:
        summary, config = self._summary, self._config
        return not (
            summary is not None
            and not self._slot.opened
            and not self._closed
            and not (
                config.cleanup_delete
                and summary.retention_may_delete(
                    self._now_ms(), config.retention_ms, config.retention_bytes
                )
            )
        )

    @_pinned
    def _apply_retention(self, *, delete: bool) -> tuple[int, int | None]:
        with self._lock:
            self._check_open()
            state, config, now = self._state, self._config, self._now_ms()
            memo, remembered = self._retention_now(now)
            if not config.cleanup_delete or state.last_base < 0:
                return 0, None
            if remembered:
                return 0, None  # the head batch seen last time still stays
            hw = memo.high_watermark
            doomed, first = retention_head(self._engine, state, config, hw, now)
            if not doomed:
                self._retention_memo = idle_memo(memo, first)
                return 0, None
            start = max(state.log_start, doomed[-1].next_offset)
            if delete:
                self._delete_head(doomed, start)
            return len(doomed), start

    @_pinned
    def delete_records(self, before_offset: int) -> None:
        """Advance the log start to ``before_offset`` (Kafka's DeleteRecords; -1 means
        the high watermark), deleting the batches wholly below it. Beyond the high
        watermark: ``OffsetOutOfRangeError`` (its ``log_end_offset`` is the watermark)."""
        with self._lock:
            self._check_open()
            hw, log_start = self._hw.value, self._state.log_start
            if before_offset == -1:
                before_offset = hw
            if not 0 <= before_offset <= hw:
                raise OffsetOutOfRangeError(before_offset, log_start, hw)
            if before_offset <= log_start:
                return
            self._delete_head(batches_below(self._engine, before_offset), before_offset)

    @_pinned
    def restart_at(self, offset: int) -> None:
        """Start the log over, empty, at ``offset`` (any offset, typically past its
        end): every batch goes, log start = log end = high watermark = ``offset``,
        producer state is cleared (Kafka's truncateFullyAndStartAt, for a follower whose
        leader's log starts past what it holds). One atomic write: after a crash the
        log is the old one or the new one (durable at the next sync)."""
        with self._lock:
            self._check_open()
            if offset < 0:
                raise InvalidArgumentError(f"cannot restart at {offset}")
            wb, new = plan_truncation(
                self._engine, self._state, offset, self._options.checkpoints_kept, self._dir,
                restart=True,
            )
            self._commit(wb, new)
            self._hw.restart(offset)

    def _delete_head(self, doomed: list[BatchInfo], log_start: int) -> None:
        kept = self._options.checkpoints_kept
        self._commit(*plan_head_deletion(self._engine, self._state, doomed, log_start, kept))

    def _commit(self, wb: WriteBatch, new: LogState, *, compaction: bool = False) -> None:
        """Write a planned change (it carries its checkpoint), then install its state.
        Any change but a compaction's own invalidates a compaction pass in progress."""
        self._engine.write(wb)
        self._state = new
        self._retention_memo = None
        self._dirty = False
        self._since_checkpoint = 0
        if not compaction:
            self._generation += 1

    # ---------------------------------------------------------- key compaction

    def compact_keys(self) -> int:
        """One key-compaction pass (``key_compaction``) over every batch but the newest
        and below the high watermark, for ``cleanup.policy=compact`` topics (else a
        no-op). Returns the number of records removed.

        Reads and rewrites outside the write lock; each chunk is installed under it,
        unless a truncation, retention or DeleteRecords came in between (the pass then
        stops; the next one starts over). A log whose last pass found nothing to do,
        with no tombstone waiting and nothing stored or changed since (or one that
        stores nothing), is skipped in memory: the passes over thousands of idle
        compacted partitions do not reopen their files (nor remove their clean marks,
        ``mark_idle_clean``)."""
        if not self._config.cleanup_compact:
            return 0
        with self._lock:
            if self._slot.opened and self._state.last_base < 0:
                return 0  # nothing stored (a new partition): its files stay as they are
            now = (self._generation, self._state.log_end, self._hw.value)
            if now == self._compacted and not self._tombstones_pending:
                return 0
        return self._compact_pass()

    @_pinned
    def _compact_pass(self) -> int:
        with self._compaction_lock:
            with self._lock:
                self._check_open()
                generation = self._generation
                seen = (generation, self._state.log_end, self._hw.value)
                end = cleanable_end(self._engine, self._state.last_base, self._hw.value)
                clean = self._state.clean_offset
            if end <= 0:
                self._compacted = seen
                return 0
            outcome = run_pass(
                self._engine, clean, end,
                options=self._options, tombstones_pending=self._tombstones_pending,
                now_ms=self._now_ms,
                install=lambda chunk, cleaned: self._install(chunk, generation, cleaned),
            )  # fmt: skip
            self._tombstones_pending = outcome.tombstones_pending
            with self._lock:
                done = self._state.clean_offset >= end  # not stopped by the key budget
                if done and not outcome.removed and self._generation == generation:
                    self._compacted = seen  # all clean, nothing changed meanwhile
            return outcome.removed

    def _install(self, chunk: list[Rewrite], generation: int, clean: int | None) -> bool:
        """(``compaction_pass.Install``) Commit one chunk under the write lock, unless
        the stored batches changed since the pass read them (``generation``)."""
        with self._lock:
            if self._closed or self._generation != generation:
                return False
            wb, new = plan_rewrites(self._state, chunk, clean, self._options.checkpoints_kept)
            self._commit(wb, new, compaction=True)
            return True

    # --------------------------------------------------------------- lifecycle

    def _write_checkpoint(self, *, wait: bool) -> None:
        """Checkpoint the current state (lock held)."""
        wb = WriteBatch()
        add_checkpoint(wb, self._state, self._options.checkpoints_kept)
        if wait:
            self._engine.write(wb)
        else:
            self._engine.write_nowait(wb)
        self._since_checkpoint, self._dirty = 0, False

    def close(self, *, discard: bool = False) -> None:
        """Checkpoint, then close the engine (which makes everything durable). With
        storage that cannot take writes (a full disk) the checkpoint is skipped: open
        replays the batch headers since the last one. ``discard``: the files are about
        to be removed (a deleted topic): no checkpoint, no final flush."""
        self._slot.close()  # no release from here on (before the lock: lock order)
        with self._lock:
            if self._closed:
                return
            if self._open_limit is not None:
                self._open_limit.forget(self)
            if not self._slot.opened:  # deferred, never needed: its files are as they were
                self._closed = True
                return
            if not discard and self._engine.files_suspended and not self._engine.marked_clean:
                # Released since its last use: marked as it is (a record, two fsyncs; its
                # memtable stays in its synced WAL, replayed at its first use after the
                # restart) rather than reopened, flushed and closed (a table, a WAL
                # segment, a manifest edit, a record: ~9 fsyncs). A stop of thousands of
                # partitions written a little each, beyond the open-files limit.
                with contextlib.suppress(DiskError, OSError, StorageUnavailableError):
                    self._mark_released(self._engine)  # if not, closed as below
            if self._engine.marked_clean and not discard:
                # Released and marked since its last use: its files and its record are
                # those of a clean close already (``Engine.close`` writes nothing).
                self._closed = True
                self._engine.close()
                return
            try:
                if self._engine.files_suspended:
                    self._engine.resume_files()
                if (
                    self._dirty
                    and self._engine.failed is None
                    and not discard
                    and self._since_checkpoint >= self._options.close_checkpoint_min_bytes
                ):
                    with contextlib.suppress(StorageUnavailableError):
                        self._write_checkpoint(wait=True)
            finally:
                self._closed = True
                payload = b"" if discard else summary_payload(self._engine, self._state)
                self._engine.close(durable=not discard, clean_payload=payload)

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["AppendResult", "LogOptions", "PartitionLog", "ReadResult"]
