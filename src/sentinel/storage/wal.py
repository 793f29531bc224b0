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

(Either, with a ``run_io``: an entry appended after a roll reaches the OS at once too,
into a prepared segment: "Prepared segments". Without one, or in the rare roll that
finds none, it reaches the OS once the roll's IO is done: "Deferred rolls".)

A roll fsyncs the old segment before the new one gets its final name, so only the
last segment can ever have a torn tail. A new segment is created, its header written
and fsynced, then the directory fsynced.

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
``sync_to``, which finishes the roll first). In NONE/INTERVAL mode without a
prepared segment, the entries appended while a roll is pending reach the OS when its
IO is done (it writes them into the new segment, which must exist first), a few
milliseconds later, not at ``append``: a process killed in that window would lose
them, which is why NONE/INTERVAL with a ``run_io`` roll into prepared segments
(below). At most one roll is pending: a second one waits for the background
IO to do the first. The same job keeps NONE/INTERVAL's unsynced bytes down: it syncs
once ``_SYNC_AT`` are unsynced, and an appender that reaches ``_RETAIN_AT`` waits for
a sync (the memory bound). A WAL without ``run_io`` (alone, or an engine without
background threads: deterministic tests) does that IO at once on the calling thread.

Prepared segments (NONE/INTERVAL with a ``run_io`` and the WAL's own numbering): a
sync thread makes the next segment ahead (``_prepare``: created under
``prepared_name(n)``, a version-2 "linked" header written, fsynced; at open, after
each roll, ``reopen`` and ``resume``). A roll on the appending thread then only
switches to that open file (a *linked* roll, ``_Roll.old``): it writes a link frame
(the old segment's number and size, ``wal_format``) and every entry after it into the
new file at once, as before a roll, so acks=1 under none/interval (the entry is in the
OS) holds across rolls. The roll's IO on the sync thread (``_finish_linked``): fsync
the old segment (all of it is in the OS already), fsync the new one (its link), rename
it to ``wal_name(n)``, fsync the directory, prepare the next. A roll that finds the
preparation under way waits for it (as a second roll waits for the first); one that
finds none (it failed, or ``run_io`` is shut down) is a deferred roll as above.

Why this keeps the WAL a durable prefix: an entry in the new segment is reported
synced only once the roll is finished (every sync, ``sync_to`` and interval tick
alike, finishes a pending roll before it fsyncs ``_file``), so a power cut may lose
the old segment's tail while the OS wrote back the new one's pages, but never an
entry reported synced. The final name marks "the predecessor was whole on disk"; a
prepared name does not, and ``wal_format.settle_prepared`` (the replay after a crash)
decides it from the link: the predecessor holds exactly the size the link gives and
verifies to its end (a process kill, or a power cut after its fsync): the prepared
segment is adopted (both fsynced, renamed, directory fsynced), so an entry appended
after the roll survives a kill -9; a power cut that cut the predecessor, or the
link at its tail: it is removed, which drops only entries never reported synced;
any other shape (bytes changed in it or in its predecessor) is damage, refused
naming the file, never dropped (``wal_format``, the module doc). A crash while
preparing leaves a prepared file without entries: removed (the writer's open also
removes any left). Numbering: a removed prepared segment's number
is the next one the recovered WAL takes, so the numbers stay contiguous and the
manifest's log number (which reaches a segment only after its roll is finished, by
``finish_rolls``) never names a prepared file. ALWAYS mode does not use them: nothing
is written before its group commit, which finishes the roll first, so an ack never
covers an entry whose predecessor is not durable. Cost: one more open file per WAL
(``suspend`` closes it; ``suspend_now`` leaves the file for the next open to remove).

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
from sentinel.storage.storage_health import is_disk_full
from sentinel.storage.wal_format import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    LINK_FRAME_SIZE,
    MAX_PAYLOAD_LIMIT,
    ReplayReport,
    encode_frame,
    encode_header,
    encode_link,
    frame_parts,
    list_prepared,
    list_segments,
    prepared_name,
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

# ALWAYS mode: once this much is buffered, it is handed to the OS (if no sync is already
# doing so; on a sync thread, ``_flush_backlog``) so that a caller who never syncs cannot
# grow memory without bound.
_FLUSH_AT = 1 << 20
# How long that job waits for a sync or roll doing IO on the WAL (they take the buffer
# themselves; what was appended meanwhile is the job's).
_FLUSH_JOB_WAIT_S = 1.0
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
    on disk ends, once written, at ``old_size`` bytes. ``old``: a *linked* roll (module
    doc, "Prepared segments"): ``_file`` is the prepared segment already, entries are
    written to it at once, and ``old`` is the old segment's file, still to fsync."""

    number: int
    parts: int
    nbytes: int
    lsn: int
    old_size: int
    old: File | None = None


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
    ``continue_size``, if given: segment ``first_segment_number`` is there, the last
    one, ``continue_size`` bytes long and whole to its end (a replay read it and cut
    any torn tail), and appends go on at its end instead of into a new segment. An
    engine's open after a crash does so: a new segment cost a creation, two fsyncs
    and the directory's, for each of thousands of partitions.
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
        continue_size: int | None = None,
        make_segment: bool = True,
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
        self._flush_queued = False  # a ``_flush_job`` is queued on ``run_io``
        self._io_queued = False
        self._io_jobs = 0
        # Prepared segments (module doc): the next segment, made ahead on a sync thread
        # ((number, file) or None); a job to make it is queued or running; running.
        self._may_prepare = not self._always and run_io is not None and next_number is None
        self._prepared: tuple[int, File] | None = None
        self._preparing = False
        self._prepare_running = False
        if not fs.is_dir(directory):
            fs.makedirs(directory)
        # A segment continued (``continue_size``) is the last one there; a new one is
        # above every one there.
        last_kept = first_segment_number - (continue_size is None)
        clash = [n for n in list_segments(fs, directory) if n > last_kept]
        if clash:
            raise InvalidArgumentError(
                f"{directory} already holds WAL segment {clash[-1]}, past {last_kept}"
            )
        for stale in list_prepared(fs, directory):  # a replay settled what counted
            fs.remove(join(directory, prepared_name(stale)))
        self._number = first_segment_number  # where appends go (maybe a pending roll's)
        self._disk_number = first_segment_number  # the segment ``_file`` is
        self._roll: _Roll | None = None
        self._file: File | None
        # The first segment is not made (``make_segment=False``, or a start on a full
        # disk): the WAL begins failed, appends are refused, and ``resume`` makes it.
        self._unborn = False
        if continue_size is None:
            self._segment_size = HEADER_SIZE
            self._segment_entries = 0
            if not make_segment:
                self._file, self._unborn = None, True
                self._error = StorageUnavailableError(
                    f"WAL {directory}: segment {first_segment_number} is not made yet"
                )
            else:
                try:
                    self._file = self._create_segment(first_segment_number)
                except OSError as exc:
                    if not is_disk_full(exc):
                        raise
                    self._file, self._error, self._unborn = None, exc, True
                    with contextlib.suppress(OSError):  # best effort: a replay drops it too
                        fs.remove(join(directory, wal_name(first_segment_number)))
        else:
            # Appends go on at its end, as after ``reopen``. Only its having entries
            # counts (``_must_roll``), and a frame is longer than a link.
            self._file = fs.open_append(join(directory, wal_name(first_segment_number)))
            self._segment_size = continue_size
            self._segment_entries = int(continue_size > HEADER_SIZE + LINK_FRAME_SIZE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if options.sync_mode is SyncMode.INTERVAL and interval_thread:
            self._thread = threading.Thread(
                target=self._interval_loop, name=f"wal-sync:{directory}", daemon=True
            )
            self._thread.start()
        self._start_prepare()

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
                if not self._must_roll(frame_size) or self._may_roll_locked():
                    if self._must_roll(frame_size):
                        self._roll_locked()
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
                    self._flush_backlog(backlog)
            else:
                if rolled or (unsynced >= _SYNC_AT and self._run_io is not None):
                    self._start_background_io()
                if unsynced >= _RETAIN_AT:
                    self._make_room(lsn)
        return lsn, segment, offset

    @property
    def unhanded_bytes(self) -> int:
        """Bytes appended and not yet handed to the OS (sync ``always``'s buffer)."""
        with self._lock:
            return self._unsynced_bytes - self._handed_bytes

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
        # NONE/INTERVAL: written at once, unless a roll is pending that is not linked
        # (then its IO writes it).
        at_once = not self._always and (self._roll is None or self._roll.old is not None)
        if at_once:
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
        if at_once:
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

    def _flush_backlog(self, backlog: int) -> None:
        """ALWAYS mode, ``_FLUSH_AT`` bytes buffered and not handed to the OS: hand them
        over on ``run_io``'s thread (a sync thread), not the appender's. That ``writev``
        is IO too: on a broker's event loop it waited for the page cache behind the
        sync's own writes to the same file (p99 10 ms, max 22 ms in a flood of 64 KB
        produces). Inline without a ``run_io``, if it refuses (shut down), or past
        ``_RETAIN_AT`` (the job lags: the memory bound wins)."""
        if self._run_io is not None and backlog < _RETAIN_AT:
            with self._lock:
                if self._flush_queued:
                    return
                self._flush_queued = True
            try:
                self._run_io(self._flush_job)
                return
            except RuntimeError:
                with self._lock:
                    self._flush_queued = False
        self._try_flush()

    def _flush_job(self) -> None:
        """A job of ``run_io``: ``_try_flush``, waiting (a sync thread may) for IO under
        way, so that what was appended meanwhile is not left buffered once the appends
        stop (a failure is recorded: the WAL's next call raises it; a WAL closed
        meanwhile has nothing to write)."""
        with self._lock:
            self._flush_queued = False
        with contextlib.suppress(WalFailedError, ClosedError):
            self._try_flush(wait_s=_FLUSH_JOB_WAIT_S)

    def _try_flush(self, wait_s: float = 0.0) -> None:
        """Hand the ALWAYS-mode buffer to the OS, unless a sync or roll is doing IO now
        (it takes the buffer itself) and does not end within ``wait_s``; what was
        appended after it took the buffer is handed over then."""
        acquired = (
            self._io_lock.acquire(timeout=wait_s)
            if wait_s > 0
            else self._io_lock.acquire(blocking=False)
        )
        if not acquired:
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
        """Block until every entry <= ``lsn`` is fsynced (group commit). Entries synced
        before a failure stay durable: asking for them does not raise."""
        with self._lock:
            if self._error is not None and not self._closed and lsn <= self._synced_lsn:
                return
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
                while self._linked_roll_pending():  # linked since: finish it too
                    reports += self._finish_rolls_locked()
                with self._lock:
                    file = self._file
                    if file is None or self._error is not None:
                        return
                    if self._roll is not None and self._roll.old is not None:
                        return  # linked again meanwhile: the waiter leads again
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

    def _linked_roll_pending(self) -> bool:
        with self._lock:
            return (
                self._roll is not None and self._roll.old is not None and self._error is None
            )

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
                self._roll_locked()
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
                if self._may_roll_locked():
                    self._roll_locked()
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
        """A job of ``run_io``: do the pending roll's IO (then the next segment is
        prepared, ``_finish_rolls_locked``); NONE/INTERVAL: then sync, if ``_SYNC_AT``
        bytes are unsynced and no sync runs. A failure is recorded (the WAL's next
        call raises it)."""
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
        """A roll is due with one pending, or with the next segment being prepared:
        wait until the background IO has done the pending one and the preparation is
        done (or the WAL failed or closed: the caller's check raises)."""
        self._start_background_io()
        with self._lock:
            while (
                ((self._roll is not None and self._io_jobs) or self._preparing)
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

    def _may_roll_locked(self) -> bool:
        """(``_lock`` held) Whether a roll may be marked now: none is pending, and no
        preparation of the next segment is under way (a roll waits for it, so that
        the entries after it reach the OS at once)."""
        return self._roll is None and not self._preparing

    def _roll_locked(self) -> None:
        """(``_lock`` held, ``_may_roll_locked``) Mark a roll: a linked one into the
        prepared segment if there is one, else a deferred one."""
        number = self._allocate()
        prepared = self._prepared
        if prepared is None or prepared[0] != number or self._always:
            self._defer_roll_locked(number)
            return
        self._prepared = None
        new = prepared[1]
        old = self._live_file()
        try:  # all of the old segment is in the OS (NONE/INTERVAL, no roll pending)
            new.write(encode_link(self._number, self._segment_size))
        except Exception as exc:
            with contextlib.suppress(OSError):
                new.close()
            self._fail(exc)
            raise self._failed_error() from exc
        self._roll = _Roll(
            number,
            len(self._unsynced),
            self._unsynced_bytes,
            self._last_lsn,
            self._segment_size,
            old,
        )
        self._file = new
        self._number = number
        self._segment_size = HEADER_SIZE + LINK_FRAME_SIZE
        self._segment_entries = 0

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
            if roll.old is not None:
                linked, base = self._live_file(), self._synced_lsn
        if roll.old is not None:
            return self._finish_linked(roll, roll.old, linked, base)
        with self._lock:
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
        self._start_prepare()
        return [report]

    def _finish_linked(
        self, roll: _Roll, old: File, new: File, base: int
    ) -> list[tuple[float, int]]:
        """(``_io_lock`` held) A linked roll's IO: fsync the old segment (all of it is
        in the OS already), then the new one (its link), rename it to its final
        name, fsync the directory; then prepare the next."""
        report = self._write_and_sync(old, [], base, roll.lsn, (roll.parts, roll.nbytes))
        try:
            old.close()
            new.sync()
            self._fs.rename(
                join(self._dir, prepared_name(roll.number)),
                join(self._dir, wal_name(roll.number)),
            )
            self._fs.sync_dir(self._dir)
        except Exception as exc:
            self._fail(exc)
            raise self._failed_error() from exc
        with self._lock:
            self._disk_number, self._roll = roll.number, None
            self._cond.notify_all()  # (``_await_roll``)
        self._start_prepare()
        return [report]

    # -- prepared segments

    def _start_prepare(self) -> None:
        """Have ``_prepare`` make the next segment, by ``run_io``, unless one is made
        or being made, or the WAL cannot use one (module doc, "Prepared segments")."""
        with self._lock:
            if (
                not self._may_prepare
                or self._prepared is not None
                or self._preparing
                or self._closed
                or self._error is not None
                or self._file is None
            ):
                return
            self._preparing = True
        assert self._run_io is not None
        try:
            self._run_io(self._prepare)
        except RuntimeError:  # shut down (a broker stopping): rolls are deferred ones
            with self._lock:
                self._preparing = False
                self._cond.notify_all()

    def _prepare(self) -> None:
        """A job of ``run_io``: create the next segment under its prepared name, write
        its (linked) header, fsync it. A failure only leaves the next roll a deferred
        one (logged): nothing appended depends on it."""
        with self._lock:
            number = self._number + 1
            if self._closed or self._error is not None or self._file is None:
                self._preparing = False
                self._cond.notify_all()
                return
            self._prepare_running = True
        path = join(self._dir, prepared_name(number))
        file: File | None = None
        try:
            file = self._fs.create(path)
            file.write(encode_header(number, linked=True))
            file.sync()
        except Exception as exc:
            log.warning("WAL %s: cannot prepare segment %d (%r)", self._dir, number, exc)
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
            file = None
        with self._lock:
            self._prepare_running = self._preparing = False
            stale = number != self._number + 1  # a ``rotate`` or ``resume`` meanwhile
            usable = not (
                self._closed or self._error is not None or self._file is None or stale
            )
            if file is not None and usable:
                self._prepared, file = (number, file), None
            self._cond.notify_all()
        if file is not None:  # closed, failed, suspended or rolled meanwhile
            self._drop_prepared((number, file), remove=True)
        if stale:
            self._start_prepare()

    def _take_prepared(self) -> tuple[int, File] | None:
        """(``_lock`` not held) Wait for a running preparation, then take the prepared
        segment away from the WAL."""
        with self._lock:
            while self._prepare_running:
                self._cond.wait()
            prepared, self._prepared = self._prepared, None
            return prepared

    def _drop_prepared(self, prepared: tuple[int, File] | None, *, remove: bool) -> None:
        """Close a prepared segment; ``remove``: remove its file too (best effort:
        a leftover is removed by the next open, or settled by the replay)."""
        if prepared is None:
            return
        number, file = prepared
        with contextlib.suppress(OSError):
            file.close()
        if remove:
            with contextlib.suppress(OSError):
                self._fs.remove(join(self._dir, prepared_name(number)))

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
                number, shift = (self._number if self._unborn else self._allocate()), 0
            old, self._file = self._file, None
            if roll is not None and roll.old is not None:
                # Linked: ``_file`` was the prepared segment (its frames follow the
                # link, which the fresh segment does not have); it is made afresh.
                shift -= LINK_FRAME_SIZE
                if old is not None:
                    with contextlib.suppress(OSError):
                        old.close()
                with contextlib.suppress(OSError):
                    prepared_path = join(self._dir, prepared_name(number))
                    if self._fs.exists(prepared_path):
                        self._fs.remove(prepared_path)
                old = roll.old
            stale, self._prepared = self._prepared, None  # numbered for the old place
            self._drop_prepared(stale, remove=True)
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
            self._roll, self._unborn = None, False
            self._segment_size = HEADER_SIZE + size
            self._segment_entries = self._last_lsn - self._synced_lsn
            self._unsynced, self._unsynced_bytes = [], 0
            self._handed = self._handed_bytes = 0
            self._synced_lsn = self._last_lsn
            self._error = None
            self._cond.notify_all()
        self._start_prepare()
        return Resumed(old_number, synced_size, number, HEADER_SIZE, shift)

    def sync_segment_file(self) -> None:
        """fsync the open segment's file as it is: a segment the WAL went on in after a
        replay (``continue_size``) holds bytes an earlier process wrote and may never
        have synced, which are served from now on."""
        with self._io_lock:
            if self._file is not None:
                self._file.sync()

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
        # (``reopen`` prepares the next segment again)
        self._drop_prepared(self._take_prepared(), remove=True)

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
                if self._prepare_running:
                    return False
                if durable and (self._unsynced or self._synced_lsn < self._last_lsn):
                    return False
                if self._file is not None and not durable:
                    try:
                        self._hand_buffer_locked(self._file)
                    except WalFailedError:
                        return False  # recorded: the next append resumes the WAL
                file, self._file = self._file, None
                prepared, self._prepared = self._prepared, None
            if file is not None:
                file.close()
            # Its file stays (no IO here): the next preparation or open replaces it.
            self._drop_prepared(prepared, remove=False)
            return True
        finally:
            self._io_lock.release()

    def reopen(self) -> None:
        with self._io_lock, self._lock:
            if self._file is None and not self._closed and not self._unborn:
                self._file = self._fs.open_append(join(self._dir, wal_name(self._disk_number)))
        self._start_prepare()

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
        self._drop_prepared(self._take_prepared(), remove=True)
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
            (roll.parts, roll.nbytes) if roll is not None and roll.old is None
            else (len(self._unsynced), self._unsynced_bytes)
        )  # fmt: skip
        # (A linked roll: every part is in the OS already, and what an fsync of
        # ``_file`` makes durable is not a prefix: its syncs finish the roll first.)
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
