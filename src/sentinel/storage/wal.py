"""The write-ahead log: a directory of segment files holding opaque, checksummed entries.

The WAL does not know what it stores: the engine encodes a write batch into one payload,
and one payload is one atomic entry (it is replayed whole or not at all). The segment
header and entry frame are drawn in ``wal_format``, which also replays a directory;
this module is the writer.

Numbering: segment numbers are the WAL's own sequence. ``WriteAheadLog`` starts at the
``first_segment_number`` it is given, and every roll (automatic past ``segment_bytes``,
or ``rotate``) takes ``current + 1``, unless the engine passes ``next_number`` to draw
numbers from a space it owns (a shared file-number counter). Replay needs every segment
from N on and refuses a gap (a missing segment is damage), unless told the numbers were
drawn (``replay(..., contiguous=False)``); the engine uses the WAL's own numbering.

Sync modes and what an ack from ``append`` means:

- ``ALWAYS``: ``append`` buffers in memory; ``sync_to(lsn)`` writes and fsyncs. Concurrent
  ``sync_to`` callers form a group commit: one of them becomes the leader, writes all
  that is buffered, fsyncs once and wakes every caller whose LSN that covered.
- ``INTERVAL``: ``append`` writes to the OS (survives a process kill); a daemon thread
  fsyncs every ``sync_interval_ms`` when there is unsynced data.
- ``NONE``: ``append`` writes to the OS; fsync only on roll, ``rotate``, ``sync`` and
  ``close``, and to bound the memory the unsynced entries take (``_RETAIN_AT``, below).

(Either: while a roll is pending, an entry reaches the OS once the roll's IO is done,
which starts at once on a sync thread: "Deferred rolls".)

A roll always fsyncs the old segment before the new one is created, so only the last
segment can ever have a torn tail. A new segment is created, its header written and
fsynced, then the directory fsynced.

Deferred rolls: the appending thread (a broker's event loop) must not wait for those
three fsyncs, in any sync mode. A roll (``rotate_deferred``, or an ``append`` past
``segment_bytes``) only marks a *pending roll*: the entries appended from then on
belong to the next segment (their LSNs, segment number and offsets are final at once)
but stay in memory, and the IO of the roll, in the order above, is done later by
whoever holds ``_io_lock`` next: the next group commit (``sync_to``, on the sync
pipeline's thread), the *background IO* (NONE/INTERVAL: a job handed to ``run_io``, a
sync thread, as soon as the roll is marked), ``finish_rolls`` (the engine's flush job,
before it flushes the memtable that the roll closed) or ``close``/``suspend``. So what
is on disk, and in which order, is exactly what an immediate roll leaves; only the
moment moves, and no entry after the roll is acknowledged before it (an ack needs a
``sync_to``, which finishes the roll first). In NONE/INTERVAL mode the entries
appended while a roll is pending reach the OS when its IO is done (it writes them
into the new segment, which must exist first), a few milliseconds later, not at
``append``: a process killed in that window loses them (as a power cut loses an
unsynced tail). At most one roll is pending: a second one waits for the background
IO to do the first. The same job keeps NONE/INTERVAL's unsynced bytes down: it syncs
once ``_SYNC_AT`` are unsynced, and an appender that reaches ``_RETAIN_AT`` waits for
a sync (the memory bound). A WAL without ``run_io`` (alone, or an engine without
background threads: deterministic tests) does that IO at once on the calling thread.

LSNs number the entries of one ``WriteAheadLog`` instance from 1; they are handles for
``sync_to`` and are not stored on disk.

Failure model: if a write or fsync fails, the WAL is *failed*: every waiting and later
caller gets ``WalFailedError`` (a ``StorageUnavailableError``), and entries up to
``synced_lsn`` stay durable. The segment's tail past its last successful fsync is then
unknown (after a failed fsync the kernel may have dropped dirty pages, so retrying the
fsync could claim durability that does not exist). ``resume`` is the way out, once the
cause is gone (space freed): it truncates the failed segment back to its last synced
length (if that fails, replay's torn-tail rule handles the damage), starts a FRESH
segment and writes into it again every entry appended since the last successful fsync,
then fsyncs. To make that possible the writer keeps, in every mode, the frames appended
to the current segment since its last fsync (``_unsynced``); NONE mode fsyncs once that
passes ``_RETAIN_AT`` bytes, which bounds the memory. They are kept as references to
the frames' parts (frame header, payload parts), never copied: an ALWAYS-mode sync
hands them to the OS with one ``writev``, so a payload's bytes are not copied in user
space between the caller and the kernel. So an entry that was appended (and
maybe put in the engine's memtable, and given an offset by the log) is either durable
after ``resume`` or was refused at ``append``: no LSN is lost or reused, and a caller
whose ``sync_to`` failed was not acknowledged but may find its entry durable later
(as a Kafka producer whose request failed may find its records written).

Thread safety: every method of ``WriteAheadLog`` may be called from any thread. Two locks:
``_io_lock`` serialises the file IO of syncs, flushes and rolls; ``_lock`` guards the
state (and, in NONE/INTERVAL mode, the ordered ``write`` of each append). Lock order is
``_io_lock`` then ``_lock``. ``replay`` must not run against a directory a live WAL writes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from sentinel.clock import Clock, SystemClock
from sentinel.errors import (
    ClosedError,
    InvalidArgumentError,
    StorageUnavailableError,
    ValueTooLargeError,
)
from sentinel.fs import FS, Buffer, File
from sentinel.storage.files import join, wal_name
from sentinel.storage.wal_format import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    MAX_PAYLOAD_LIMIT,
    ReplayReport,
    encode_frame,
    encode_header,
    frame_parts,
    list_segments,
    replay,
)

# The format names are re-exported: ``from sentinel.storage.wal import replay`` still works.
__all__ = [
    "FRAME_HEADER_SIZE",
    "HEADER_SIZE",
    "ReplayReport",
    "Resumed",
    "SyncCallback",
    "SyncMode",
    "WalFailedError",
    "WalOptions",
    "WriteAheadLog",
    "encode_frame",
    "list_segments",
    "replay",
]

# ALWAYS mode: once this much is buffered, an appender hands it to the OS (if no sync
# is already doing so) so that a caller who never syncs cannot grow memory without bound.
_FLUSH_AT = 1 << 20
# NONE/INTERVAL mode: at most this much is unsynced (kept in memory for ``resume``):
# an appender past it waits for a sync (does one, if the WAL has no ``run_io``).
_RETAIN_AT = 8 << 20
# NONE/INTERVAL mode with a ``run_io``: past this much unsynced, a sync is started on
# the runner's thread, so that appenders rarely reach ``_RETAIN_AT``.
_SYNC_AT = _RETAIN_AT // 2

SyncCallback = Callable[[float, int], None]


class SyncMode(Enum):
    ALWAYS = "always"
    INTERVAL = "interval"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class WalOptions:
    sync_mode: SyncMode = SyncMode.ALWAYS
    sync_interval_ms: int = 100
    segment_bytes: int = 64 * 1024 * 1024  # roll to a new segment past this size
    max_entry_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.sync_interval_ms <= 0:
            raise InvalidArgumentError(f"sync_interval_ms must be > 0, not {self.sync_interval_ms}")
        if self.segment_bytes <= HEADER_SIZE:
            raise InvalidArgumentError(f"segment_bytes must be > {HEADER_SIZE}")
        if not 0 <= self.max_entry_bytes <= MAX_PAYLOAD_LIMIT:
            raise InvalidArgumentError(f"max_entry_bytes must be in [0, {MAX_PAYLOAD_LIMIT}]")


@dataclass(frozen=True, slots=True)
class Resumed:
    """Where ``resume`` moved the unsynced entries: the frames of segment ``old_segment``
    from byte ``old_from`` on now start at byte ``new_from`` of ``new_segment``."""

    old_segment: int
    old_from: int
    new_segment: int
    new_from: int
    #: A roll to ``new_segment`` was pending: its own frames moved up by this much.
    new_shift: int = 0

    def moved(self, segment: int, offset: int) -> tuple[int, int]:
        """The new place of the frame that was at ``(segment, offset)``."""
        if segment == self.old_segment and offset >= self.old_from:
            return self.new_segment, offset - self.old_from + self.new_from
        if segment == self.new_segment:
            return segment, offset + self.new_shift
        return segment, offset


@dataclass(slots=True)
class _Roll:
    """A pending roll: the unsynced parts from index ``parts`` on (``nbytes`` unsynced
    bytes before them; LSNs above ``lsn``) belong to segment ``number``; the segment
    on disk ends, once written, at ``old_size`` bytes."""

    number: int
    parts: int
    nbytes: int
    lsn: int
    old_size: int


class WalFailedError(StorageUnavailableError):
    """A write or fsync of the WAL failed; it accepts nothing more (see the module doc)."""


log = logging.getLogger(__name__)

# ------------------------------------------------------------------------ writer


class WriteAheadLog:
    """Appends entries to the current segment; rolls, syncs (group commit) and closes.

    ``on_sync(seconds, entries)`` is called after every successful fsync with its latency
    and the number of entries it made durable (for metrics). It runs on the syncing
    thread, sometimes with the WAL's locks held: it must be quick and must not call the
    WAL. ``next_number()``, if given, supplies the number of every new segment (it must
    return more than ``current_segment``); it too runs under the WAL's locks.
    ``run_io(job)``, if given, runs ``job`` once on another thread (the engine: its
    sync scheduler's ``submit``): the background IO of the module doc.
    """

    def __init__(
        self,
        fs: FS,
        directory: str,
        first_segment_number: int,
        options: WalOptions,
        clock: Clock | None = None,
        *,
        on_sync: SyncCallback | None = None,
        next_number: Callable[[], int] | None = None,
        interval_thread: bool = True,
        run_io: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        if first_segment_number < 0:
            raise InvalidArgumentError(f"segment number {first_segment_number} is negative")
        self._fs = fs
        self._dir = directory
        self._options = options
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._on_sync = on_sync
        self._next_number = next_number
        self._always = options.sync_mode is SyncMode.ALWAYS
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._io_lock = threading.Lock()
        self._delete_lock = threading.Lock()
        # The parts of the frames appended to the current segment since its last fsync
        # (references, not copies); the first ``_handed`` parts (``_handed_bytes``) were
        # given to the OS (``write``), the rest not yet.
        self._unsynced: list[Buffer] = []
        self._unsynced_bytes = 0
        self._handed = 0
        self._handed_bytes = 0
        self._last_lsn = 0
        self._synced_lsn = 0
        self._syncing = False
        self._closed = False
        self._error: Exception | None = None
        # The background IO (module doc, "Deferred rolls"): how it is run, whether a
        # job is queued and not started, and the jobs queued or running.
        self._run_io = run_io
        self._io_queued = False
        self._io_jobs = 0
        if not fs.is_dir(directory):
            fs.makedirs(directory)
        clash = [n for n in list_segments(fs, directory) if n >= first_segment_number]
        if clash:
            raise InvalidArgumentError(
                f"{directory} already holds WAL segment {clash[-1]} >= {first_segment_number}"
            )
        self._number = first_segment_number  # where appends go (maybe a pending roll's)
        self._disk_number = first_segment_number  # the segment ``_file`` is
        self._roll: _Roll | None = None
        self._file: File | None = self._create_segment(first_segment_number)
        self._segment_size = HEADER_SIZE
        self._segment_entries = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if options.sync_mode is SyncMode.INTERVAL and interval_thread:
            self._thread = threading.Thread(
                target=self._interval_loop, name=f"wal-sync:{directory}", daemon=True
            )
            self._thread.start()

    # -- properties

    @property
    def current_segment(self) -> int:
        return self._number

    @property
    def synced_lsn(self) -> int:
        return self._synced_lsn

    @property
    def last_lsn(self) -> int:
        return self._last_lsn

    @property
    def options(self) -> WalOptions:
        return self._options

    @property
    def failed(self) -> Exception | None:
        """The write or fsync error that failed the WAL, until ``resume`` succeeds."""
        return self._error

    # -- appending

    def append(self, payload: bytes | tuple[Buffer, ...]) -> int:
        """Add one entry; return its LSN. See the module doc for what each mode promises."""
        return self.append_located(payload)[0]

    def append_located(self, payload: bytes | tuple[Buffer, ...]) -> tuple[int, int, int]:
        """``append``, also saying where the entry's frame landed: (LSN, segment, offset
        of the frame in the segment). Value separation points into it. The payload may
        come in parts (one entry all the same), so a large value is not copied to join it.
        The parts are kept by reference until written and synced: an immutable part
        (``bytes``, a read-only view of ``bytes``) as it is, any other copied once here,
        so that a caller reusing its buffer cannot change an entry after its CRC."""
        if isinstance(payload, bytes):
            size = len(payload)
            frame: tuple[Buffer, ...] = frame_parts((payload,))
        else:
            payload = tuple(map(_immutable, payload))
            size = sum(len(part) for part in payload)
            frame = frame_parts(payload)
        if size > self._options.max_entry_bytes:
            raise ValueTooLargeError(
                f"WAL entry of {size} bytes exceeds max_entry_bytes="
                f"{self._options.max_entry_bytes}"
            )
        frame_size = FRAME_HEADER_SIZE + size
        rolled = False
        while True:
            with self._lock:
                if self._closed or self._error is not None:
                    self._check_usable()
                # No IO here (module doc, "Deferred rolls"): a roll is only marked; at
                # most one is pending, and a second waits for the first to be done.
                if self._roll is None or not self._must_roll(frame_size):
                    if self._must_roll(frame_size):
                        self._defer_roll_locked(self._allocate())
                        rolled = True
                    segment, offset = self._number, self._segment_size
                    lsn = self._add_locked(frame, frame_size)
                    backlog = self._unsynced_bytes - self._handed_bytes
                    unsynced = self._unsynced_bytes
                    break
            self._await_roll()
        # The entry is appended (and kept for ``resume``) whatever these do: a failure
        # here is recorded and fails the next call, so that the caller's memtable and
        # the WAL never disagree about an entry.
        with contextlib.suppress(WalFailedError):
            if self._always:
                if backlog >= _FLUSH_AT:
                    self._try_flush()
            else:
                if rolled or (unsynced >= _SYNC_AT and self._run_io is not None):
                    self._start_background_io()
                if unsynced >= _RETAIN_AT:
                    self._make_room(lsn)
        return lsn, segment, offset

    def append_sync(self, payload: bytes) -> int:
        """``append``, then (in ALWAYS mode) wait until the entry is durable."""
        lsn = self.append(payload)
        if self._always:
            self.sync_to(lsn)
        return lsn

    def _must_roll(self, frame_size: int) -> bool:
        over = self._segment_size + frame_size > self._options.segment_bytes
        return over and self._segment_entries > 0

    def _add_locked(self, frame: tuple[Buffer, ...], frame_size: int) -> int:
        # NONE/INTERVAL: written at once, unless a roll is pending (then its IO writes it).
        if not self._always and self._roll is None:
            file = self._file
            if file is None:
                raise ClosedError(f"WAL {self._dir} has no open segment")
            try:
                _write_parts(file, frame)
            except Exception as exc:
                self._fail(exc)
                raise self._failed_error() from exc
        self._unsynced.extend(frame)
        self._unsynced_bytes += frame_size
        if not self._always and self._roll is None:
            self._handed = len(self._unsynced)
            self._handed_bytes = self._unsynced_bytes
        self._segment_size += frame_size
        self._segment_entries += 1
        self._last_lsn += 1
        return self._last_lsn

    def hand_to_os(self) -> None:
        """Hand what is buffered to the OS now (a ``writev``, no fsync), unless a sync
        or roll is doing IO (it takes the buffer itself): with a broker journal, so that
        an entry the journal acknowledged is in the WAL's file at once, and a process
        killed then (not a power cut) leaves it there. A failure is recorded, as an
        append's (the next call raises it)."""
        with contextlib.suppress(WalFailedError):
            self._try_flush()

    def _try_flush(self) -> None:
        """Hand the ALWAYS-mode buffer to the OS, unless a sync or roll is doing IO now
        (it will take the buffer itself)."""
        if not self._io_lock.acquire(blocking=False):
            return
        try:
            with self._lock:
                file = self._file
                if file is None or self._error is not None:
                    return
                data, _mark = self._take_buffer()
            try:
                _write_parts(file, data)
            except Exception as exc:
                self._fail(exc)
                raise self._failed_error() from exc
        finally:
            self._io_lock.release()

    # -- syncing

    def sync_to(self, lsn: int) -> None:
        """Block until every entry <= ``lsn`` is fsynced (group commit)."""
        with self._lock:
            self._check_usable()
            if lsn > self._last_lsn:
                raise InvalidArgumentError(f"LSN {lsn} was never appended (last {self._last_lsn})")
        while self._await_turn(lsn):
            self._lead_sync()

    def sync(self) -> None:
        """Make everything appended so far durable."""
        self.sync_to(self._last_lsn)

    def _await_turn(self, lsn: int) -> bool:
        """Wait until ``lsn`` is durable (False) or this thread must lead a sync (True)."""
        with self._lock:
            while self._synced_lsn < lsn:
                if self._error is not None:
                    raise self._failed_error() from self._error
                if self._file is None:
                    raise ClosedError(f"WAL {self._dir} closed before LSN {lsn} was synced")
                if not self._syncing:
                    self._syncing = True
                    return True
                self._cond.wait()
            return False

    def _lead_sync(self) -> None:
        """One group-commit round; the caller has set ``_syncing``."""
        reports: list[tuple[float, int]] = []
        try:
            with self._io_lock:
                with self._lock:
                    if self._file is None or self._error is not None:
                        return
                reports = self._finish_rolls_locked()
                with self._lock:
                    file = self._file
                    if file is None or self._error is not None:
                        return
                    data, mark = self._take_buffer()
                    # (a roll deferred since: up to it; the waiter leads again)
                    base = self._synced_lsn
                    target = self._roll.lsn if self._roll is not None else self._last_lsn
                if target > base:
                    reports.append(self._write_and_sync(file, data, base, target, mark))
        finally:
            with self._lock:
                self._syncing = False
                self._cond.notify_all()
        self._report(reports)

    def _write_and_sync(
        self, file: File, data: list[Buffer], base: int, target: int, mark: tuple[int, int]
    ) -> tuple[float, int]:
        """Write the parts ``data``, fsync, mark ``target`` durable and forget the first
        ``mark`` = (parts, bytes) unsynced; (seconds, entries). The caller holds
        ``_io_lock``."""
        start = self._clock.monotonic()
        try:
            if data and len(data) == mark[0] and len(data) <= _IOV_MAX:
                # Every unsynced part is in ``data`` (none was handed to the OS before
                # and left unsynced): one call writes and syncs them.
                _write_parts_synced(file, data)
            else:
                if data:
                    _write_parts(file, data)
                file.sync()
        except Exception as exc:
            self._fail(exc)
            raise self._failed_error() from exc
        parts, nbytes = mark
        with self._lock:
            self._synced_lsn = max(self._synced_lsn, target)
            del self._unsynced[:parts]
            self._unsynced_bytes -= nbytes
            self._handed -= parts
            self._handed_bytes -= nbytes
            if self._roll is not None:
                self._roll.parts -= parts
                self._roll.nbytes -= nbytes
            self._cond.notify_all()
        return self._clock.monotonic() - start, target - base

    def _interval_loop(self) -> None:
        period = self._options.sync_interval_ms / 1000
        while not self._stop.wait(period):
            self.sync_unsynced()

    def sync_unsynced(self) -> None:
        """One tick of ``INTERVAL`` mode: fsync what is unsynced, unless the WAL failed,
        is closed or suspended, or a sync is in progress. Run by the WAL's own thread,
        or (``interval_thread=False``) by a broker-wide ``SyncScheduler``."""
        with self._lock:
            if self._error is not None or self._file is None:
                return  # failed: until ``resume``
            if self._syncing or (self._synced_lsn >= self._last_lsn and self._roll is None):
                return
            self._syncing = True
        # A failure is recorded in self._error: every call raises it until ``resume``.
        with contextlib.suppress(WalFailedError):
            self._lead_sync()

    # -- segments

    def rotate(self) -> int:
        """Fsync and finish the current segment, start the next; return its number."""
        with self._io_lock:
            reports = self._finish_rolls_locked()
            with self._lock:
                self._check_usable()
                self._defer_roll_locked(self._allocate())
                number = self._number
            reports += self._finish_rolls_locked()
        self._report(reports)
        return number

    def rotate_deferred(self) -> int:
        """``rotate`` without its IO (module doc, "Deferred rolls"): the entries
        appended from now on go to the returned segment number; the old segment is
        fsynced and the new one created later, off this thread. If a roll is pending
        already, it is done first (``_await_roll``)."""
        while True:
            with self._lock:
                self._check_usable()
                if self._roll is None:
                    self._defer_roll_locked(self._allocate())
                    number = self._number
                    break
            self._await_roll()
        if not self._always:
            self._start_background_io()
        return number

    def finish_rolls(self, upto: int | None = None) -> None:
        """Do the IO of a pending roll to a segment numbered ``<= upto`` (any, if None):
        the old segment is then durable and the new one exists. Raises
        ``WalFailedError`` if the WAL failed (now or before) with a roll pending."""
        with self._lock:
            roll = self._roll
            if roll is None or (upto is not None and roll.number > upto):
                return
        self._finish_rolls()

    @property
    def roll_pending(self) -> bool:
        return self._roll is not None

    def _finish_rolls(self) -> None:
        with self._io_lock:
            reports = self._finish_rolls_locked()
        self._report(reports)

    # -- the background IO: a pending roll, and the sync that bounds ``_unsynced``

    def _start_background_io(self) -> None:
        """Have ``_background_io`` run: by ``run_io`` (a sync thread), unless a job is
        queued already; at once on this thread if the WAL has no ``run_io`` (a WAL
        alone, or an engine without background threads: tests) or it refuses (shut
        down: a broker stopping)."""
        with self._lock:
            if self._io_queued:
                return
            self._io_queued = True
            self._io_jobs += 1
        if self._run_io is not None:
            try:
                self._run_io(self._background_io)
                return
            except RuntimeError as exc:
                log.warning("WAL %s: its IO runs on the appending thread (%s)", self._dir, exc)
        self._background_io()

    def _background_io(self) -> None:
        """A job of ``run_io``: do the pending roll's IO; NONE/INTERVAL: then sync, if
        ``_SYNC_AT`` bytes are unsynced and no sync runs. A failure is recorded (the
        WAL's next call raises it)."""
        with self._lock:
            self._io_queued = False
        try:
            with contextlib.suppress(WalFailedError, ClosedError):
                self._finish_rolls()
                if self._always:
                    return
                bound = _SYNC_AT if self._run_io is not None else _RETAIN_AT
                with self._lock:
                    due = (
                        self._unsynced_bytes >= bound
                        and not self._syncing
                        and self._error is None
                        and self._file is not None
                    )
                    if due:
                        self._syncing = True
                if due:
                    self._lead_sync()
        finally:
            with self._lock:
                self._io_jobs -= 1
                self._cond.notify_all()

    def _await_roll(self) -> None:
        """A roll is due with one pending: wait until the background IO has done the
        pending one (or the WAL failed or closed: the caller's check raises)."""
        self._start_background_io()
        with self._lock:
            while (
                self._roll is not None
                and self._io_jobs
                and self._error is None
                and not self._closed
            ):
                self._cond.wait()

    def _make_room(self, lsn: int) -> None:
        """NONE/INTERVAL, ``_RETAIN_AT`` bytes unsynced: wait until a sync (the
        background IO's, or an interval tick's) brings them below it."""
        if self._run_io is None:
            self.sync_to(lsn)
            return
        while True:
            with self._lock:
                if self._unsynced_bytes < _RETAIN_AT or self._error is not None:
                    return
                if self._closed or self._file is None:
                    return
                if self._io_jobs or self._syncing:
                    self._cond.wait()
                    continue
            self._start_background_io()

    def _report(self, reports: list[tuple[float, int]]) -> None:
        if self._on_sync is not None:
            for report in reports:
                self._on_sync(*report)

    def _defer_roll_locked(self, number: int) -> None:
        """``_lock`` held, no roll pending: appends go to segment ``number`` from now."""
        assert self._roll is None
        self._roll = _Roll(
            number, len(self._unsynced), self._unsynced_bytes, self._last_lsn, self._segment_size
        )
        self._number = number
        self._segment_size = HEADER_SIZE
        self._segment_entries = 0

    def _finish_rolls_locked(self) -> list[tuple[float, int]]:
        """``_io_lock`` held: the pending roll's IO, if any: write and fsync the old
        segment's rest, close it, create the new segment (header, fsync, directory
        fsync); NONE/INTERVAL: then write the entries appended to it meanwhile. The
        fsync reports, for ``on_sync`` (called by the caller without the locks)."""
        with self._lock:
            roll = self._roll
            if roll is None:
                return []
            if self._error is not None:
                raise self._failed_error() from self._error
            old = self._live_file()
            data, mark = self._take_buffer()
            base = self._synced_lsn
        report = self._write_and_sync(old, data, base, roll.lsn, mark)
        # ``_file`` stays the old one meanwhile: waiters read it as "not closed", and
        # nobody writes it (``_io_lock`` held; NONE/INTERVAL appends hold back).
        try:
            old.close()
            new = self._create_segment(roll.number)
        except Exception as exc:
            with self._lock:
                self._file = None
            self._fail(exc)
            raise self._failed_error() from exc
        with self._lock:
            self._file, self._disk_number, self._roll = new, roll.number, None
            self._cond.notify_all()  # (``_await_roll``)
            if not self._always and self._handed < len(self._unsynced):
                try:
                    _write_parts(new, self._unsynced[self._handed :])
                except Exception as exc:
                    self._fail(exc)
                    raise self._failed_error() from exc
                self._handed, self._handed_bytes = len(self._unsynced), self._unsynced_bytes
        return [report]

    def delete_segments_before(self, number: int) -> None:
        """Remove every segment numbered below ``number``, then sync the directory."""
        with self._lock:  # a failed WAL may still drop old segments: that frees space
            if self._closed:
                raise ClosedError(f"WAL {self._dir} is closed")
            if number > self._number:
                raise InvalidArgumentError(
                    f"cannot delete below {number}: segment {self._number} is live"
                )
        with self._delete_lock:
            doomed = [n for n in list_segments(self._fs, self._dir) if n < number]
            for old in doomed:
                self._fs.remove(join(self._dir, wal_name(old)))
            if doomed:
                self._fs.sync_dir(self._dir)

    def delete_segments(self, numbers: set[int]) -> None:
        """Remove the given finished segments (value separation's garbage collection),
        then sync the directory."""
        with self._lock:
            if self._closed:
                raise ClosedError(f"WAL {self._dir} is closed")
            if any(n >= self._number for n in numbers):
                raise InvalidArgumentError(
                    f"cannot delete segment {max(numbers)}: segment {self._number} is live"
                )
        with self._delete_lock:
            present = set(list_segments(self._fs, self._dir))
            doomed = sorted(numbers & present)
            for old in doomed:
                self._fs.remove(join(self._dir, wal_name(old)))
            if doomed:
                self._fs.sync_dir(self._dir)

    def _allocate(self) -> int:
        if self._next_number is None:
            return self._number + 1
        number = self._next_number()
        if number <= self._number:
            raise InvalidArgumentError(
                f"next_number() gave {number}, not above the current segment {self._number}"
            )
        return number

    def _create_segment(self, number: int) -> File:
        path = join(self._dir, wal_name(number))
        file = self._fs.create(path)
        try:
            file.write(encode_header(number))
            file.sync()
            self._fs.sync_dir(self._dir)
        except Exception:
            file.close()
            raise
        return file

    # -- resuming after a failure

    def resume(self) -> Resumed | None:
        """Leave the failed state (see the module doc): seal the failed segment at its
        last synced length, write the entries since then into a fresh segment, fsync.
        None if the WAL is not failed; ``WalFailedError`` (still failed) if that IO
        fails too, after removing the fresh segment's partial file."""
        with self._io_lock, self._lock:
            if self._closed:
                raise ClosedError(f"WAL {self._dir} is closed")
            if self._error is None:
                return None
            old_number, roll = self._disk_number, self._roll
            if roll is not None:  # the disk segment ends where the pending roll began
                synced_size = roll.old_size - roll.nbytes
                # Its unsynced frames go first into the segment the roll names (so no
                # number is skipped), then the frames appended to that segment.
                number, shift = roll.number, roll.nbytes
            else:
                synced_size = self._segment_size - self._unsynced_bytes
                number, shift = self._allocate(), 0
            old, self._file = self._file, None
            if old is not None:
                try:  # best effort: else replay's torn-tail rule cuts the damage
                    old.truncate(synced_size)
                    old.sync()
                except OSError:
                    pass
                with contextlib.suppress(OSError):
                    old.close()
            path = join(self._dir, wal_name(number))
            data, size = list(self._unsynced), self._unsynced_bytes
            file: File | None = None
            try:
                if self._fs.exists(path):  # left by an earlier attempt
                    self._fs.remove(path)
                file = self._create_segment(number)
                if data:
                    _write_parts(file, data)
                    file.sync()
            except Exception as exc:
                if file is not None:
                    with contextlib.suppress(OSError):
                        file.close()
                with contextlib.suppress(OSError):
                    if self._fs.exists(path):
                        self._fs.remove(path)
                raise WalFailedError(
                    f"WAL {self._dir} cannot resume in segment {number} ({exc!r}); entries "
                    f"after LSN {self._synced_lsn} are not durable"
                ) from exc
            self._file, self._number, self._disk_number = file, number, number
            self._roll = None
            self._segment_size = HEADER_SIZE + size
            self._segment_entries = self._last_lsn - self._synced_lsn
            self._unsynced, self._unsynced_bytes = [], 0
            self._handed = self._handed_bytes = 0
            self._synced_lsn = self._last_lsn
            self._error = None
            self._cond.notify_all()
            return Resumed(old_number, synced_size, number, HEADER_SIZE, shift)

    # -- an idle engine's files

    def suspend(self, *, durable: bool = True) -> None:
        """Make everything durable, then close the segment's file (the WAL keeps its
        place: segment, size, LSNs); ``reopen`` reopens it for appending. Only while
        nobody appends or syncs (``Engine.suspend_files`` holds the write lock).
        ``durable=False`` (a broker journal holds the unsynced entries): hand them to
        the OS without an fsync; they stay unsynced (and kept for ``resume``) until a
        later sync, which ``reopen`` allows."""
        if durable:
            self.sync()
        self._finish_rolls()
        with self._io_lock, self._lock:
            if self._file is not None and not durable:
                self._hand_buffer_locked(self._file)  # a failure leaves the file open
            file, self._file = self._file, None
            if file is not None:
                file.close()

    def _hand_buffer_locked(self, file: File) -> None:
        """(both locks held, no roll pending) Write what is buffered, without fsync."""
        if self._error is not None:
            raise self._failed_error() from self._error
        data, _mark = self._take_buffer()
        if data:
            try:
                _write_parts(file, data)
            except Exception as exc:
                self._fail(exc)
                raise self._failed_error() from exc

    @property
    def fully_synced(self) -> bool:
        """Every entry appended is durable and no roll is pending."""
        with self._lock:
            return self._roll is None and not self._unsynced and (
                self._synced_lsn >= self._last_lsn
            )

    def suspend_now(self, *, durable: bool = True) -> bool:
        """``suspend`` if it costs one ``close`` and waits for no lock: everything
        synced, no sync running, no roll pending. False (nothing done) otherwise: the
        caller (the event loop) leaves the suspend to a worker. ``durable=False``: the
        entries need not be synced; what is buffered is written first (one ``writev``
        to the page cache, no fsync)."""
        if not self._io_lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._error is not None or self._syncing or self._roll is not None:
                    return False
                if durable and (self._unsynced or self._synced_lsn < self._last_lsn):
                    return False
                if self._file is not None and not durable:
                    try:
                        self._hand_buffer_locked(self._file)
                    except WalFailedError:
                        return False  # recorded: the next append resumes the WAL
                file, self._file = self._file, None
            if file is not None:
                file.close()
            return True
        finally:
            self._io_lock.release()

    def reopen(self) -> None:
        with self._io_lock, self._lock:
            if self._file is None and not self._closed:
                self._file = self._fs.open_append(join(self._dir, wal_name(self._disk_number)))

    # -- closing and failure

    def close(self) -> None:
        """Sync, stop the interval thread, close the file. Closing twice does nothing;
        closing a failed WAL releases it and raises ``WalFailedError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        reports: list[tuple[float, int]] = []
        with self._io_lock:
            if self._error is None and self._file is not None:
                with contextlib.suppress(WalFailedError):  # recorded: raised below
                    reports = self._finish_rolls_locked()
            with self._lock:
                file, self._file = self._file, None
                try:
                    pending = self._unsynced or self._synced_lsn < self._last_lsn
                    if file is not None and self._error is None and pending:
                        data, mark = self._take_buffer()
                        reports.append(
                            self._write_and_sync(
                                file, data, self._synced_lsn, self._last_lsn, mark
                            )
                        )
                finally:
                    if file is not None:
                        file.close()
                    self._cond.notify_all()
        self._report(reports)
        if self._error is not None:
            raise self._failed_error() from self._error

    def _check_usable(self) -> None:
        if self._closed:
            raise ClosedError(f"WAL {self._dir} is closed")
        if self._error is not None:
            raise self._failed_error() from self._error

    def _live_file(self) -> File:
        if self._file is None:
            raise ClosedError(f"WAL {self._dir} has no open segment")
        return self._file

    def _take_buffer(self) -> tuple[list[Buffer], tuple[int, int]]:
        """The unsynced parts not yet given to the OS (a list of references), and the
        (parts, bytes) of the unsynced region they complete (what an fsync after writing
        them makes durable)."""
        roll = self._roll
        end, nbytes = (
            (roll.parts, roll.nbytes) if roll is not None
            else (len(self._unsynced), self._unsynced_bytes)
        )  # fmt: skip
        data = self._unsynced[self._handed : end]
        self._handed, self._handed_bytes = end, nbytes
        return data, (end, nbytes)

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
            self._cond.notify_all()

    def _failed_error(self) -> WalFailedError:
        return WalFailedError(
            f"WAL {self._dir} failed ({self._error!r}); entries after LSN "
            f"{self._synced_lsn} are not durable"
        )


def _immutable(part: Buffer) -> Buffer:
    """``part`` if its bytes can never change, else a ``bytes`` copy of it."""
    if type(part) is bytes:
        return part
    if isinstance(part, memoryview) and part.readonly and isinstance(part.obj, bytes):
        return part
    return bytes(part)


# The most parts one ``writev`` takes (Linux's IOV_MAX is 1024).
_IOV_MAX = 1024


def _write_parts_synced(file: File, parts: Sequence[Buffer]) -> None:
    """``_write_parts`` then ``file.sync()``, in one call where the OS allows
    (``File.write_synced``); at most ``_IOV_MAX`` parts."""
    file.write_synced(parts)


def _write_parts(file: File, parts: Sequence[Buffer]) -> None:
    """Hand ``parts`` to the OS in order, without joining them: one ``write`` for one
    part, else ``writev`` calls of at most ``_IOV_MAX`` parts."""
    if len(parts) == 1:
        file.write(parts[0])
        return
    for start in range(0, len(parts), _IOV_MAX):
        file.writev(parts[start : start + _IOV_MAX])
