"""The broker's journal: one fsync wave for the appends of every partition.

Each partition's engine keeps its own WAL, which is also the data file of its large
values (value separation points into it), so retention and deletion stay file
deletions. With a journal (``EngineOptions.journal``) an engine in sync ``always``
appends each WAL entry to its own WAL as before (buffered, handed to the OS later,
without fsync) and a copy of it to the journal, and an acknowledgement waits for the
journal's group commit instead of its own WAL's fsync: one ``fsync`` for every
partition that appended meanwhile, whatever their number, where per-partition WALs need
one each (a Kafka producer sends one partition per request: at 1,000 partitions that
was one fsync per request). The price is one more sequential write of the appended
bytes; the partition's WAL is then made durable in the background: by the flush of its
memtable (the roll fsyncs the segment, as before), by ``close``, or by a journal
checkpoint. This is a redo log in front of the partitions' files, the way a database's
doublewrite or log-structured journal covers the data files it syncs later.

Records (each one WAL entry of the journal, so each is CRC-checked, whole or cut as a
torn tail by ``wal_format``):

- ``E`` an engine's WAL entry: the engine's key (its directory, relative to the
  journal's root), the segment number and frame offset where the entry landed in that
  engine's WAL, then the entry's payload, byte for byte.
- ``D`` a dropped engine (its partition deleted): the entries before it for that key
  are never redone, so a partition created again under the same directory is not
  given the old one's data. A segment holding one is not checkpointed away while
  segments replayed at open are kept (their entries of that key would come back).

Retention: the journal's segments are numbered like a WAL's. For each segment the
journal keeps, in memory, the highest WAL LSN each engine appended in it (a *pin*). A
segment can go once every pin is covered: that engine's WAL synced past it, or the
engine was dropped. When more than ``retain_segments`` closed segments are kept, a
checkpoint job (on the broker's worker pool) asks the engines that pin the oldest
segments to sync their WALs (``JournalClient.make_durable``; one fsync per such engine,
off the acknowledgement path; most were synced by a flush already) and deletes those
segments.

Recovery: ``Journal.open`` replays every segment (a torn tail is cut, any other damage
raises ``CorruptionError``) and keeps, per engine key, where the entries to redo lie in
those segments (one segment's bytes in memory at a time; ``take_redo`` reads an
engine's entries back from the segments, which stay on disk until every redo is done),
so a start's memory does not grow with the journal's size. An engine
that opens after a crash (``Engine._recover``) replays its own WAL first, then takes
its entries (``take_redo``) and applies those its WAL does not hold: an entry is held
when its segment was flushed (below the engine's ``log_number``) or its position lies
before the end of what the engine's replay read (an engine's WAL is durable as a
prefix: a roll fsyncs the old segment before the new one exists). The recovered
memtable is then flushed, as every recovery does. An engine that closed cleanly has
every entry in its own files; its redo is dropped unused. ``finish_recovery`` (after
the broker opened every partition that needs recovery) deletes the old segments.

Threads: ``append`` is called under the appending engine's write lock (so an engine's
entries are in the journal in its own order); everything may be called from any thread.
"""

from __future__ import annotations

import concurrent.futures
import logging
import posixpath
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sentinel.clock import Clock, SystemClock
from sentinel.errors import CorruptionError, StorageUnavailableError
from sentinel.fs import FS, Buffer, File
from sentinel.storage.files import wal_name
from sentinel.storage.scrub import ScrubReport, scrub_segment
from sentinel.storage.sync_scheduler import SyncScheduler, Waiter
from sentinel.storage.wal import (
    SyncCallback,
    SyncMode,
    WalFailedError,
    WalOptions,
    WriteAheadLog,
)
from sentinel.storage.wal_format import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    list_segments,
    replay_each,
)

log = logging.getLogger(__name__)

_ENTRY = b"E"
_DROP = b"D"
_HEAD = struct.Struct(">cH")  # kind, key length
_POSITION = struct.Struct(">QQ")  # engine WAL segment, frame offset
MAX_KEY_BYTES = 4096

MiB = 1024 * 1024


class JournalClient(Protocol):
    """What the journal needs of an engine that appends to it."""

    def make_durable(self, lsn: int) -> None:
        """Sync the engine's own WAL up to ``lsn`` (nothing if closed or dropped)."""
        ...

    def journal_covers(self, lsn: int) -> bool:
        """Whether the engine's own WAL is durable up to ``lsn``."""
        ...


@dataclass(frozen=True, slots=True)
class RedoEntry:
    """One engine WAL entry the journal holds: where it landed in the engine's WAL."""

    segment: int
    offset: int
    payload: bytes


def encode_entry_head(key: bytes, segment: int, offset: int) -> bytes:
    return _HEAD.pack(_ENTRY, len(key)) + key + _POSITION.pack(segment, offset)


def encode_drop(key: bytes) -> bytes:
    return _HEAD.pack(_DROP, len(key)) + key


def decode_head(
    record: bytes, path: str, where: str
) -> tuple[bytes, str, tuple[int, int] | None, int]:
    """One journal record's head: (kind, key, the entry's (segment, offset) in its
    engine's WAL or None for a drop, where its payload starts in ``record``). A
    malformed record (its CRC passed, so it was written so) raises
    ``CorruptionError``."""
    if len(record) < _HEAD.size:
        raise CorruptionError(path, where, f"journal record of {len(record)} bytes is too short")
    kind, key_len = _HEAD.unpack_from(record)
    end = _HEAD.size + key_len
    if kind not in (_ENTRY, _DROP) or end > len(record):
        raise CorruptionError(path, where, f"journal record has kind {kind!r}, key of {key_len}")
    try:
        key = record[_HEAD.size : end].decode()
    except UnicodeDecodeError as exc:
        raise CorruptionError(path, where, "journal record's key is not UTF-8") from exc
    if kind == _DROP:
        if end != len(record):
            raise CorruptionError(path, where, "journal drop record has trailing bytes")
        return kind, key, None, end
    if end + _POSITION.size > len(record):
        raise CorruptionError(path, where, "journal entry record ends inside its position")
    segment, offset = _POSITION.unpack_from(record, end)
    return kind, key, (segment, offset), end + _POSITION.size


@dataclass(frozen=True, slots=True)
class _RedoRef:
    """Where a redo entry's payload lies in a journal segment kept on disk: only this
    is held in memory between the start and its engine's open."""

    segment: int  # the engine WAL's
    offset: int
    journal_segment: int
    start: int  # of the payload, in the journal segment's file
    length: int


@dataclass(frozen=True, slots=True)
class JournalOptions:
    #: Roll to a new journal segment past this size.
    segment_bytes: int = 64 * MiB
    #: Closed segments kept before a checkpoint syncs the engines that pin the oldest.
    retain_segments: int = 4
    #: Engines appending with no other joining them for this long skip the journal
    #: while they are at most ``skip_up_to`` (``Journal.skips``); None: never (tests of
    #: the journal's own paths).
    skip_window_s: float | None = 0.05
    #: The most engines appending at once whose entries skip the journal: 1, a
    #: partition alone; 4 measured (the broker-alone bench writes 4 partitions: their
    #: own fsyncs, in parallel on the sync threads, beat one journal fsync of the bytes
    #: written twice).
    skip_up_to: int = 4

    def __post_init__(self) -> None:
        if self.segment_bytes < 4096:
            raise ValueError("journal segment_bytes must be at least 4 KiB")
        if self.retain_segments < 0:
            raise ValueError("journal retain_segments must not be negative")
        if self.skip_up_to < 1:
            raise ValueError("journal skip_up_to must be at least 1")


class Journal:
    """The broker-wide journal (module doc). Use ``Journal.open``."""

    def __init__(
        self,
        fs: FS,
        directory: str,
        root: str,
        options: JournalOptions,
        *,
        scheduler: SyncScheduler,
        submit: Callable[[Callable[[], None]], None] | None,
        on_sync: SyncCallback | None,
        redo: dict[str, list[_RedoRef]],
        first_segment: int,
        old_segments: list[int],
        clock: Clock,
    ) -> None:
        self._fs = fs
        self._dir = directory
        self._root = root
        self._options = options
        self._scheduler = scheduler
        self._submit = submit
        self._lock = threading.Lock()
        self._redo = redo
        self._old_segments = old_segments  # replayed at open, gone once redone
        self._redoing: set[str] = set()  # keys taken whose engine has not flushed yet
        # journal segment -> id(client) -> (client, highest engine LSN appended there)
        self._pins: dict[int, dict[int, tuple[JournalClient, int]]] = {}
        self._checkpointing = False
        self._closed = False
        self._drop_segments: set[int] = set()  # segments holding drop records
        self._clock = clock
        # id() of each engine appending lately -> when it last appended (``skips``):
        # at most ``skip_up_to`` of them, cleared when one more joins.
        self._recent: dict[int, float] = {}
        self._joined_at = clock.monotonic()  # when an engine last joined them
        self.skipped_appends = 0  # entries that skipped the journal (for tests, metrics)
        self.entries = 0  # entries journaled (metrics)
        self._health = _Health(f"the journal {directory}", clock)
        self._wal = WriteAheadLog(
            fs,
            directory,
            first_segment,
            WalOptions(sync_mode=SyncMode.ALWAYS, segment_bytes=options.segment_bytes),
            on_sync=on_sync,
        )
        if self._wal.failed is not None:  # a start on a full disk
            log.warning(
                "the journal %s cannot make its segment (%r): partitions make their appends "
                "durable in their own WALs until it resumes",
                directory,
                self._wal.failed,
            )

    @classmethod
    def open(
        cls,
        fs: FS,
        directory: str,
        *,
        root: str,
        scheduler: SyncScheduler,
        options: JournalOptions | None = None,
        submit: Callable[[Callable[[], None]], None] | None = None,
        on_sync: SyncCallback | None = None,
        clock: Clock | None = None,
    ) -> Journal:
        """Open (or create) the journal in ``directory``; replay what a crash left.
        Engine keys are their directories relative to ``root`` (the data directory);
        ``clock`` times ``skips`` and a failed journal's resumes (the system's by
        default)."""
        fs.makedirs(directory)
        numbers = list_segments(fs, directory)
        redo: dict[str, list[_RedoRef]] = {}
        # One segment's payloads in memory at a time; the redo keeps where each entry
        # lies (``take_redo`` reads them back). Checkpoints delete segments out of
        # order (one kept for a redo not taken yet stays below later ones deleted):
        # gaps are expected.
        for number, records, cut in replay_each(fs, directory, numbers):
            path = posixpath.join(directory, wal_name(number))
            if cut is not None:
                log.warning("journal %s: cut a torn tail of %d bytes", directory, cut)
            frame = HEADER_SIZE
            for index, record in enumerate(records):
                body = frame + FRAME_HEADER_SIZE
                frame = body + len(record)
                _kind, key, position, start = decode_head(record, path, f"record {index}")
                if position is None:
                    redo.pop(key, None)
                else:
                    ref = _RedoRef(*position, number, body + start, len(record) - start)
                    redo.setdefault(key, []).append(ref)
        numbers = list_segments(fs, directory)  # a torn create may be gone
        first = numbers[-1] + 1 if numbers else 1
        if redo:
            log.info(
                "journal %s: %d entries of %d partitions to check against their WALs",
                directory,
                sum(len(v) for v in redo.values()),
                len(redo),
            )
        return cls(
            fs,
            directory,
            root,
            options or JournalOptions(),
            scheduler=scheduler,
            submit=submit,
            on_sync=on_sync,
            redo=redo,
            first_segment=first,
            old_segments=numbers,
            clock=clock or SystemClock(),
        )

    # ----------------------------------------------------------------- keys

    def key_of(self, engine_directory: str) -> str:
        root = posixpath.normpath(self._root)
        key = posixpath.relpath(posixpath.normpath(engine_directory), root)
        if len(key.encode()) > MAX_KEY_BYTES:
            raise ValueError(f"engine directory {engine_directory!r} is too long for the journal")
        return key

    # ------------------------------------------------------------- recovery

    def take_redo(self, key: str) -> list[RedoEntry]:
        """The entries a crash left for the engine of ``key`` (once; empty if none).
        The engine calls ``redo_done`` once they are durable in its own files."""
        with self._lock:
            refs = self._redo.pop(key, None)
            if refs is not None:
                self._redoing.add(key)
        return self._read(refs) if refs else []

    def _read(self, refs: list[_RedoRef]) -> list[RedoEntry]:
        """The payloads of ``refs``, read from the segments replayed at open (kept on
        disk while a redo needs them). Read errors raise, naming the file: the engine
        that asked is refused as for any damage in its data."""
        entries: list[RedoEntry] = []
        handle: File | None = None
        number = -1
        try:
            for ref in refs:
                if ref.journal_segment != number:
                    if handle is not None:
                        handle.close()
                    number = ref.journal_segment
                    path = posixpath.join(self._dir, wal_name(number))
                    handle = self._fs.open_read(path)
                assert handle is not None
                payload = handle.pread(ref.start, ref.length)
                if len(payload) != ref.length:
                    raise CorruptionError(
                        handle.path, f"offset {ref.start}", "journal segment shorter than at open"
                    )
                entries.append(RedoEntry(ref.segment, ref.offset, payload))
        finally:
            if handle is not None:
                handle.close()
        return entries

    def forget_for_new_engine(self, key: bytes) -> None:
        """A new engine (no manifest) is created under ``key``: whatever the journal
        holds for that key belongs to an engine that is gone (a partition deleted while
        offline or unopened). Its redo is dropped and, if segments replayed at open are
        still kept (they would be replayed again after another crash), a drop record is
        written, durably, before the new engine's first entry."""
        with self._lock:
            had = self._redo.pop(key.decode(), None) is not None
            kept = bool(self._old_segments)
        if had or kept:
            self._append_drop(key)

    def redo_done(self, key: str) -> None:
        """The engine of ``key`` flushed what it took: once no engine's redo is left,
        the segments replayed at open are deleted."""
        with self._lock:
            self._redoing.discard(key)
        self._delete_replayed_if_done()

    @property
    def pending_redo(self) -> int:
        """Engines whose redo nobody took (or finished) yet."""
        with self._lock:
            return len(self._redo) + len(self._redoing)

    def finish_recovery(self, needed: Callable[[str], bool] = lambda key: False) -> None:
        """The broker opened every partition that recovers at start: forget the redo of
        every key ``needed`` says no engine will take (a partition that closed cleanly
        holds its entries; a deleted one needs none); keep the others (a partition left
        offline, a replica a cluster hosts later) until their engine takes them. The
        segments replayed at open are deleted once no redo is left."""
        with self._lock:
            left = [key for key in self._redo if not needed(key)]
            for key in left:
                del self._redo[key]
            kept = len(self._redo)
        if left:
            log.info("journal %s: %d partitions needed no redo", self._dir, len(left))
        if kept:
            log.warning(
                "journal %s: %d partitions have not taken their redo yet: its segments "
                "are kept until they open",
                self._dir,
                kept,
            )
        self._delete_replayed_if_done()

    def _delete_replayed_if_done(self) -> None:
        with self._lock:
            if self._redo or self._redoing or not self._old_segments:
                return
            old, self._old_segments = self._old_segments, []
        self._wal.delete_segments(set(old))

    # -------------------------------------------------------------- appends

    def skips(self, client: object) -> bool:
        """Whether the entry ``client`` appends now skips the journal (called at each
        of its appends, journaled or not): at most ``skip_up_to`` engines are appending,
        and none joined them for ``skip_window_s``. Their entries then wait for their
        own WALs' fsyncs (in parallel on the sync threads) and the bytes are written
        once, not twice: a wave shared by so few saves little. An engine that joins
        (a first append, or one after a silence of a window) is journaled, and when it
        makes them one too many, the others go back to the journal at once (each once
        its own WAL has synced what it holds, ``Engine``'s ordering rule). Unlocked: a
        race only moves the choice by an append, and either choice is durable."""
        window = self._options.skip_window_s
        if window is None:
            return False
        key = id(client)
        now = self._clock.monotonic()
        recent = self._recent
        last = recent.get(key)
        if last is None or now - last > window:
            if last is None and len(recent) >= self._options.skip_up_to:
                # One more: forget those silent for a window; still too many, and the
                # count starts afresh from this one (the set stays small, a spread over
                # thousands of partitions costs one check per join).
                cutoff = now - window
                for gone in [k for k, t in recent.items() if t < cutoff]:
                    del recent[gone]
                if len(recent) >= self._options.skip_up_to:
                    recent.clear()
            recent[key] = now
            self._joined_at = now
            return False
        recent[key] = now
        if now - self._joined_at < window:
            return False
        self.skipped_appends += 1
        return True

    def append(
        self,
        key: bytes,
        client: JournalClient,
        lsn: int,
        position: tuple[int, int],
        payload: bytes | Sequence[Buffer],
    ) -> int:
        """Journal one engine WAL entry (``lsn`` in the engine's WAL, landed at
        ``position`` = (segment, frame offset)); return its journal LSN for
        ``sync_future``."""
        head = encode_entry_head(key, *position)
        parts = (head, payload) if isinstance(payload, bytes) else (head, *payload)
        if self._wal.failed is not None:
            self._health.check_resume(self._wal)
        # Under the lock with its pin: a checkpoint never sees the entry's segment closed
        # without the pin that keeps it.
        with self._lock:
            jlsn, jsegment, _offset = self._wal.append_located(parts)
            self.entries += 1
            pins = self._pins.get(jsegment)
            if pins is None:
                pins = self._pins[jsegment] = {}
                due = self._checkpoint_due_locked()
            else:
                due = False
            pins[id(client)] = (client, lsn)
        if due:
            self._start_checkpoint()
        return jlsn

    @property
    def last_lsn(self) -> int:
        return self._wal.last_lsn

    @property
    def wal(self) -> WriteAheadLog:
        return self._wal

    def sync_future(self, jlsn: int) -> concurrent.futures.Future[None]:
        """Resolved once the journal is durable up to ``jlsn`` (one fsync serves every
        engine that appended meanwhile)."""
        return self._scheduler.request(self._wal, jlsn, self._wal.sync_to)

    def when_synced(self, jlsn: int, waiter: Waiter) -> bool:
        """``sync_future`` without a future (``SyncScheduler.notify``): False if the
        journal is durable up to ``jlsn`` already."""
        return self._scheduler.notify(self._wal, jlsn, waiter, self._wal.sync_to)

    def sync_to(self, jlsn: int) -> None:
        self._wal.sync_to(jlsn)

    def drop(self, key: bytes, client: JournalClient) -> None:
        """The engine of ``key`` is gone (its files are about to be removed): forget its
        pins, and record durably that its entries so far are never redone."""
        with self._lock:
            self._redo.pop(key.decode(), None)
            for pins in self._pins.values():
                found = pins.get(id(client))
                if found is not None and found[0] is client:
                    del pins[id(client)]
        self._append_drop(key)

    def _append_drop(self, key: bytes) -> None:
        """Write a drop record of ``key``, durably. Its segment is remembered: while
        segments replayed at open are kept (a redo not taken yet), it must outlive them
        (``checkpoint``), since it is what cancels their entries of ``key`` at the
        next start."""
        due = False
        with self._lock:  # as ``append``: no checkpoint between the write and the note
            jlsn, segment, _offset = self._wal.append_located(encode_drop(key))
            self._drop_segments.add(segment)
            if segment not in self._pins:
                # No entry there yet: a segment without pins is checkpointed too.
                self._pins[segment] = {}
                due = self._checkpoint_due_locked()
        self._wal.sync_to(jlsn)
        if due:
            self._start_checkpoint()

    # ----------------------------------------------------------- checkpoints

    def _checkpoint_due_locked(self) -> bool:
        closed = len(self._pins) - 1  # the newest holds the segment appends go to
        return not self._checkpointing and closed > self._options.retain_segments

    def _start_checkpoint(self) -> None:
        with self._lock:
            if self._checkpointing or self._closed:
                return
            self._checkpointing = True
        if self._submit is None:
            self._run_checkpoint()
            return
        try:
            self._submit(self._run_checkpoint)
        except Exception as exc:  # (the pool shut down) the next roll tries again
            log.warning("journal %s: no checkpoint: %r", self._dir, exc)
            with self._lock:
                self._checkpointing = False

    def _run_checkpoint(self) -> None:
        try:
            self.checkpoint(keep=self._options.retain_segments)
        except Exception as exc:  # tried again at the next roll
            log.warning("journal %s: checkpoint failed: %r", self._dir, exc)
        finally:
            with self._lock:
                self._checkpointing = False

    def checkpoint(self, keep: int = 0) -> int:
        """Make the engines that pin the oldest closed segments durable and delete
        those segments, keeping ``keep`` closed ones; return how many were deleted."""
        current = self._wal.current_segment
        with self._lock:
            closed = sorted(n for n in self._pins if n < current)
            doomed = closed[: max(0, len(closed) - keep)]
            work = [(n, list(self._pins[n].values())) for n in doomed]
        deleted = 0
        for number, pins in work:
            with self._lock:
                if number in self._drop_segments and self._old_segments:
                    continue  # its drop records cancel entries of those: kept with them
            try:
                for client, lsn in pins:
                    client.make_durable(lsn)
            except (OSError, StorageUnavailableError) as exc:
                # (a full disk, an engine closed with entries not durable) kept: its
                # entries are needed at the next start; later segments go on.
                log.warning("journal %s: segment %d kept: %r", self._dir, number, exc)
                continue
            with self._lock:
                self._pins.pop(number, None)
                self._drop_segments.discard(number)
            # This one only: older ones replayed at open wait for their redo.
            self._wal.delete_segments({number})
            deleted += 1
        return deleted

    @property
    def segments(self) -> list[int]:
        """The journal's segment files now (for tests and metrics)."""
        return list_segments(self._fs, self._dir)

    def close(self) -> None:
        """After every engine closed: sync, and delete every segment whose pins are
        all covered (after a clean stop, all of them: the next start redoes nothing)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._wal.close()
        except WalFailedError as exc:  # (a full disk) what it synced stays, all kept
            log.warning("journal %s closed failed: %s; its segments are kept", self._dir, exc)
            return
        with self._lock:
            pins = dict(self._pins)
        needed = [
            number
            for number, clients in pins.items()
            if any(not client.journal_covers(lsn) for client, lsn in clients.values())
        ]
        if self._redo or self._old_segments:
            return  # recovery never finished: keep everything for the next start
        keep_from = min(needed) if needed else None
        for number in self.segments:
            if keep_from is not None and number >= keep_from:
                break
            self._fs.remove(posixpath.join(self._dir, wal_name(number)))
        self._fs.sync_dir(self._dir)




def scrub_journal(fs: FS, directory: str, report: ScrubReport) -> None:
    """``--verify`` of the broker's journal: every segment read, every record's CRC and
    shape checked, as ``Journal.open`` would (a torn tail of the newest segment is a
    note: the start cuts it); nothing changed."""
    if not fs.is_dir(directory):
        return
    numbers = list_segments(fs, directory)
    for number in numbers:
        path = posixpath.join(directory, wal_name(number))
        report.files += 1
        records = scrub_segment(fs, path, number, report, torn_ok=number == numbers[-1])
        for index, record in enumerate(records or ()):
            try:
                decode_head(record, path, f"record {index}")
            except CorruptionError as exc:
                report.damage(path, str(exc))
                break


class _Health:
    """A failed journal (a full disk) is resumed at an append at most once a second;
    until then appends raise, and engines fall back to their own WAL's fsync."""

    def __init__(self, what: str, clock: Clock) -> None:
        self._what = what
        self._clock = clock
        self._next_try = 0.0

    def check_resume(self, wal: WriteAheadLog) -> None:
        now = self._clock.monotonic()
        if now < self._next_try:
            raise StorageUnavailableError(f"{self._what} failed ({wal.failed!r})")
        self._next_try = now + 1.0
        try:
            wal.resume()
        except WalFailedError:
            log.warning("%s: still failing", self._what)
            raise
        log.warning("%s: resumed", self._what)
