"""The write-ahead log's on-disk format: segment header, entry frames, and replay.

The writer (``wal.WriteAheadLog``) appends frames; this module encodes them, decodes them
and replays a directory of segments. Nothing here holds state: every function takes
bytes or a directory and returns what it found.

Segment files are named ``wal_name(n)`` (``00000000000000000007.wal``). All integers are
**little-endian**. A segment is a header followed by entries; entries never span segments::

    segment header (20 bytes)
    +--------+------------+---------+-------------+--------------------+
    | magic  | version    | flags   | segment no. | crc32c(bytes 0-15) |
    | "SWAL" | u16 = 1, 2 | u16 = 0 | u64         | u32                |
    +--------+------------+---------+-------------+--------------------+
     0        4            6         8             16                  20

    entry frame (9 bytes + payload)
    +------------+--------+---------------------------------+---------------+
    | length u32 | type u8| crc32c(length, type, payload) u32| payload bytes |
    +------------+--------+---------------------------------+---------------+
     0            4        5                                 9        9+length

``type`` is 1 (a full entry) or 2 (a link, below); 0 is never written, so a zero-filled
tail reads as bad.
The CRC covers the length and type bytes as well as the payload (computed as
``crc32c(payload, crc32c(bytes 0-4))``): a flipped length bit is then always caught by
the checksum instead of only when the new length happens to run past the end.
The header repeats the segment number so that a file copied or renamed onto the wrong
name is refused. ``flags`` are reserved (written 0, ignored on read).

Version 2 is a *linked* segment (a segment the writer prepared ahead of its roll, see
``wal``, "Prepared segments"): its first frame, at byte 20, is a link (type 2, 16-byte
payload: the previous segment's number u64, then that segment's size in bytes u64 when
the writer switched to this one), then entries as in version 1; a link anywhere else, or
a version-2 segment without one, is damage. A version-1 reader refuses version 2
(``UnsupportedFormatError``)::

    link frame (25 bytes)
    +-----------+--------+------+-----------------------+------------------------+
    | length=16 | type=2 | crc  | previous segment u64  | its size in bytes u64  |
    +-----------+--------+------+-----------------------+------------------------+
     0           4        5      9                       17                       25

A prepared segment is written under ``prepared_name(n)`` (``...07.wal.prepared``) and
renamed to ``wal_name(n)`` only once its predecessor is fsynced, so every segment under
its final name except the newest was whole on disk before the next one was named.
After a crash (``replay`` without a clean record), ``settle_prepared`` decides each
prepared file (``judge_prepared``, from the bytes: ``check_prepared``,
``check_predecessor``), and a damaged one is never dropped silently: its entries may
have been acknowledged to acks=1 producers. It is *adopted* (the predecessor and it
fsynced, renamed, the directory fsynced) if its link is whole and names the newest
segment, which holds exactly the size the link gives and verifies to its end (a
process kill, or a power cut after the predecessor's fsync); its own tail may be torn
(the replay cuts it, as in any newest segment). It is *removed* only for what a crash
leaves: a torn create or its header alone (never rolled into); a link torn at the tail
(cut short, or zeros, nothing valid after it); a predecessor that lost its end, shorter
than the link says or its last frames reading as unwritten (a power cut before its
fsync: neither its tail nor any entry after it was reported synced); a segment of that
number already under its final name (stale: only a rename gives that name). Anything
else is damage, refused with ``CorruptionError`` naming the file, before any prepared
file is touched: a bad header; a bad link or entry with a valid frame after it, or all
there with changed bytes; a link naming another segment than the one before; a
predecessor longer than the link says, or with a bad header or a changed or inner bad
frame. A predecessor that is gone is ``MissingFileError``.

Replay reads the segments numbered >= N (the manifest's log number) in ascending order.
The writer numbers its segments contiguously, so they must run N, N+1, ... without a gap:
a missing one is damage (``MissingFileError``), never skipped. The writer fsyncs a segment
before it creates the next, so only the newest segment can have a torn tail: bytes
written after the last fsync when the process or the machine died. Replay cuts such a
tail only if it looks like one (``changed_frame``): the first bad frame is cut short (its
header incomplete, or its length running past the end of the file), or reads as zeros
from a sector boundary on (blocks a crash left unwritten), and no valid frame follows
it. A frame that is all there but fails its checksum, or whose checksum verifies once
its length is taken as the bytes that remain, had its bytes changed after they were
written: that is corruption, and it is refused, as is a later frame whose CRC verifies
(an acknowledged entry under sync ``always`` is never cut for looking torn). After a clean
shutdown (``clean_marker``: the engine's close records every segment and its size) there
is no torn tail at all: every listed segment must be there with its recorded size and
every frame must verify. A bad entry or header anywhere else raises ``CorruptionError``.
``replay`` must not run against a directory a live WAL writes.

``value_log`` reads single frames in place, with ``FRAME_HEAD`` and ``FRAME_LEN_TYPE``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, MissingFileError, UnsupportedFormatError
from sentinel.fs import FS, Buffer
from sentinel.storage.files import WAL_SUFFIX, join, parse_number, wal_name
from sentinel.storage.torn import reads_unwritten, zeros_to_end

MAGIC = b"SWAL"
FORMAT_VERSION = 1
LINKED_VERSION = 2  # the first frame is a link (module doc)
HEADER_SIZE = 20
FRAME_HEADER_SIZE = 9
ENTRY_FULL = 1
ENTRY_LINK = 2
PREPARED_SUFFIX = ".wal.prepared"
ENTRY_FULL_BYTE = bytes([ENTRY_FULL])
MAX_PAYLOAD_LIMIT = 0xFFFF_FFFF  # the length field is a u32

_HEADER_BODY = struct.Struct("<4sHHQ")
_U32 = struct.Struct("<I")
_LINK = struct.Struct("<QQ")
LINK_FRAME_SIZE = FRAME_HEADER_SIZE + _LINK.size
#: The frame's first 5 bytes (length, type): its CRC is seeded with their checksum.
FRAME_LEN_TYPE = struct.Struct("<IB")
#: The whole frame header: length, type, CRC.
FRAME_HEAD = struct.Struct("<IBI")


@dataclass(frozen=True, slots=True)
class ReplayReport:
    entries: int
    segments: list[int]  # segment numbers read
    dropped_bytes: int  # bytes cut off a torn/corrupt tail (0 if clean)
    truncated_segment: int | None  # the segment cut (or removed, if its header was torn)
    #: The size of each segment read that is still there after the replay (a torn
    #: create is removed; a torn tail is cut): where appends could go on.
    sizes: dict[int, int] = field(default_factory=dict)


# ------------------------------------------------------------------------ format


def encode_header(number: int, *, linked: bool = False) -> bytes:
    version = LINKED_VERSION if linked else FORMAT_VERSION
    body = _HEADER_BODY.pack(MAGIC, version, 0, number)
    return body + _U32.pack(crc32c(body))


def encode_link(previous: int, previous_size: int) -> bytes:
    """The link frame of a linked segment (module doc)."""
    payload = _LINK.pack(previous, previous_size)
    crc = crc32c(payload, crc32c(FRAME_LEN_TYPE.pack(len(payload), ENTRY_LINK)))
    return FRAME_HEAD.pack(len(payload), ENTRY_LINK, crc) + payload


def prepared_name(number: int) -> str:
    return f"{number:020d}{PREPARED_SUFFIX}"


def is_linked(data: bytes) -> bool:
    """Whether ``data`` (a segment, from its start) has a version-2 header."""
    return len(data) >= 6 and data[4:6] == LINKED_VERSION.to_bytes(2, "little")


def read_link(data: bytes) -> tuple[int, int] | None:
    """(previous segment, its size) from the whole link frame of the linked segment
    ``data``, or None if the link is not all there or does not verify."""
    if not is_linked(data) or len(data) < HEADER_SIZE + LINK_FRAME_SIZE:
        return None
    length, kind, crc = FRAME_HEAD.unpack_from(data, HEADER_SIZE)
    body = HEADER_SIZE + FRAME_HEADER_SIZE
    if length != _LINK.size or kind != ENTRY_LINK:
        return None
    if crc32c(data[body : body + length], crc32c(data[HEADER_SIZE : HEADER_SIZE + 5])) != crc:
        return None
    previous, size = _LINK.unpack_from(data, body)
    return previous, size


def encode_frame(payload: bytes) -> bytes:
    """One entry as it is stored: frame header, then the payload."""
    length = len(payload)
    crc = crc32c(payload, crc32c(FRAME_LEN_TYPE.pack(length, ENTRY_FULL)))
    return FRAME_HEAD.pack(length, ENTRY_FULL, crc) + payload


def frame_parts(payload: Sequence[Buffer]) -> tuple[Buffer, ...]:
    """The frame of a payload given in parts: (frame header, *parts). Written with one
    ``writev``, a large value is never copied into a joined buffer."""
    length = sum(len(part) for part in payload)
    crc = crc32c(FRAME_LEN_TYPE.pack(length, ENTRY_FULL))
    for part in payload:
        crc = crc32c(part, crc)
    return (FRAME_HEAD.pack(length, ENTRY_FULL, crc), *payload)


def is_torn_create(data: bytes) -> bool:
    """Whether the newest segment of a log that crashed holds only a torn create: no
    more than a header's bytes, and either fewer than a header or a header of zeros
    (the file was made, its header not written whole). The start removes it."""
    return len(data) < HEADER_SIZE or (len(data) == HEADER_SIZE and not any(data))


def check_header(path: str, data: bytes, number: int) -> None:
    """Raise unless ``data`` starts with a valid header for segment ``number``."""
    if len(data) < HEADER_SIZE:
        raise CorruptionError(path, "segment header", f"only {len(data)} bytes")
    magic, version, _flags, stored_number = _HEADER_BODY.unpack_from(data)
    if magic != MAGIC:
        raise CorruptionError(path, "segment header", f"bad magic {magic!r}")
    if crc32c(data[:16]) != _U32.unpack_from(data, 16)[0]:
        raise CorruptionError(path, "segment header", "checksum mismatch")
    if version not in {FORMAT_VERSION, LINKED_VERSION}:
        raise UnsupportedFormatError(
            f"{path}: WAL format version {version}, this build reads {FORMAT_VERSION} "
            f"and {LINKED_VERSION}"
        )
    if stored_number != number:
        raise CorruptionError(
            path, "segment header", f"header names segment {stored_number}, not {number}"
        )


def scan_entries(data: bytes, start: int = HEADER_SIZE) -> tuple[list[bytes], int, str | None]:
    """Decode the entries from ``start``: (payloads, end of the last good entry, problem).

    ``problem`` is None when the data ends exactly after a whole entry. A linked
    segment's link (at ``HEADER_SIZE``, the only place it may be) is checked and
    skipped: it is no entry."""
    payloads: list[bytes] = []
    unpack = FRAME_HEAD.unpack_from
    end = len(data)
    offset = start
    if start == HEADER_SIZE and is_linked(data):
        if read_link(data) is None:
            return payloads, offset, "the link frame of a linked segment is missing or bad"
        offset += LINK_FRAME_SIZE
    while offset < end:
        if end - offset < FRAME_HEADER_SIZE:
            return payloads, offset, f"short frame header ({end - offset} bytes)"
        length, kind, crc = unpack(data, offset)
        body = offset + FRAME_HEADER_SIZE
        if body + length > end:
            return payloads, offset, f"length {length} runs past the end of the segment"
        if kind != ENTRY_FULL:
            return payloads, offset, f"unknown entry type {kind}"
        payload = data[body : body + length]
        if crc32c(payload, crc32c(data[offset : offset + 5])) != crc:
            return payloads, offset, "checksum mismatch"
        payloads.append(payload)
        offset = body + length
    return payloads, offset, None


# ------------------------------------------------------------------------ replay


def list_segments(fs: FS, directory: str) -> list[int]:
    """Numbers of the WAL segments in ``directory``, ascending."""
    numbers = (parse_number(name, WAL_SUFFIX) for name in fs.listdir(directory))
    return sorted(n for n in numbers if n is not None)


def list_prepared(fs: FS, directory: str) -> list[int]:
    """Numbers of the prepared segments (``prepared_name``) in ``directory``, ascending."""
    numbers = (parse_number(name, PREPARED_SUFFIX) for name in fs.listdir(directory))
    return sorted(n for n in numbers if n is not None)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the replay after a crash does with one prepared segment (``judge_prepared``):
    ``adopt`` it (it follows segment ``previous`` with nothing lost between them), or
    remove it; ``why`` says which crash left it so, for a removal, and ``unused`` that
    nothing was written into it after its header (a kill before a roll leaves one)."""

    adopt: bool
    previous: int | None = None
    why: str = ""
    unused: bool = False


def settle_prepared(fs: FS, directory: str) -> list[int]:
    """After a crash: adopt or remove each prepared segment (module doc); the numbers
    adopted. Before ``replay`` reads the segments (it calls this itself). Damage raises
    ``CorruptionError`` (or ``MissingFileError``) naming the file, before any prepared
    segment is touched, so the next start (or ``--verify``) finds it as it was."""
    numbers = list_prepared(fs, directory)
    settled = [(number, judge_prepared(fs, directory, number)) for number in numbers]
    adopted: list[int] = []
    for number, settlement in settled:
        path = join(directory, prepared_name(number))
        if not settlement.adopt:
            fs.remove(path)
            fs.sync_dir(directory)
            continue
        assert settlement.previous is not None
        for synced in (join(directory, wal_name(settlement.previous)), path):
            file = fs.open_append(synced)
            try:
                file.sync()
            finally:
                file.close()
        fs.rename(path, join(directory, wal_name(number)))
        fs.sync_dir(directory)
        adopted.append(number)
    return adopted


def judge_prepared(fs: FS, directory: str, number: int) -> Settlement:
    """How the replay after a crash settles the prepared segment ``number`` (module
    doc); reads, changes nothing. Raises on damage (``check_prepared``,
    ``check_predecessor``), or ``MissingFileError`` if the segment its link names is
    gone (it was whole on disk, under its final name, before the roll)."""
    path = join(directory, prepared_name(number))
    segments = list_segments(fs, directory)
    if segments and segments[-1] >= number:
        # Only a rename gives a prepared segment its final name: a file under the
        # prepared name beside it is stale (a ``resume`` rewrote its entries into a
        # fresh segment of that number and could not remove it).
        return Settlement(False, why=f"stale: segment {segments[-1]} is under its final name")
    link = check_prepared(path, number, fs.read_all(path))
    if isinstance(link, Settlement):
        return link
    previous, size = link
    before_path = join(directory, wal_name(previous))
    if previous not in segments:
        raise MissingFileError(
            before_path, f"the prepared segment {path} follows it (its link frame says so)"
        )
    why = check_predecessor(before_path, previous, size, fs.read_all(before_path))
    if why is not None:
        return Settlement(False, why=why)
    return Settlement(True, previous)


def check_prepared(path: str, number: int, data: bytes) -> tuple[int, int] | Settlement:
    """The link (previous segment, its size) of the prepared segment ``number``
    (``data``, at ``path``) whose frames are whole up to, at most, a torn tail; or its
    removal, if a crash left it with nothing to adopt. Raises ``CorruptionError``
    naming ``path`` for any other shape (bytes changed after they were written)::

        fewer than a header's bytes, or a header of zeros     -> unused (torn create)
        a bad header (magic, checksum, not linked, number)    -> damage
        the header alone                                      -> unused (never rolled into)
        a bad link, a valid entry after it                    -> damage
        a bad link cut short, or its bytes zeros              -> unused (torn link)
        a bad link all there, other bytes                     -> damage
        a bad entry, a valid one after it, or changed         -> damage
        a bad last entry cut short or zeros (a torn tail)     -> the link (the replay cuts it)
        a link naming any segment but ``number - 1``          -> damage
    """
    if is_torn_create(data):
        return Settlement(False, why=f"a torn create of {len(data)} bytes", unused=True)
    check_header(path, data, number)
    if not is_linked(data):
        raise CorruptionError(path, "segment header", "a prepared segment without a link")
    if len(data) == HEADER_SIZE:
        return Settlement(False, why="never rolled into (its header alone)", unused=True)
    link = read_link(data)
    where = f"the link frame at offset {HEADER_SIZE}"
    if link is None:
        valid = later_frame(data, HEADER_SIZE + 1)
        if valid is not None:
            raise CorruptionError(
                path, where, f"bad, and a valid entry follows at offset {valid}: not a torn link"
            )
        if len(data) < HEADER_SIZE + LINK_FRAME_SIZE or zeros_to_end(
            data[: HEADER_SIZE + LINK_FRAME_SIZE], HEADER_SIZE
        ):
            return Settlement(False, why="its link frame torn (a crash before it was whole)")
        raise CorruptionError(
            path, where, "the whole frame is there but its bytes changed after they were written"
        )
    previous, _size = link
    if previous != number - 1:
        raise CorruptionError(path, where, f"it names segment {previous}, not {number - 1}")
    payloads, good_end, problem = scan_entries(data)
    if problem is not None:
        entry_at = f"entry {len(payloads)} at offset {good_end}"
        valid = later_frame(data, good_end + 1)
        if valid is not None:
            raise CorruptionError(
                path, entry_at, f"{problem}, and a valid entry follows at offset {valid}"
            )
        changed = changed_frame(data, good_end)
        if changed is not None:
            raise CorruptionError(path, entry_at, f"{problem}: {changed}")
    return link


def check_predecessor(path: str, number: int, size: int, data: bytes) -> str | None:
    """None if the segment ``number`` (``data``, at ``path``) holds exactly the
    ``size`` bytes a prepared segment's link gives and verifies to its end (the
    prepared segment is adopted); else why a power cut before its fsync left it so (a
    string: the prepared segment is removed, none of its entries, nor the
    predecessor's tail, having been reported synced). Raises ``CorruptionError``
    naming ``path`` for any other shape::

        shorter than the link says                            -> lost its end
        longer than the link says                             -> damage (never written after)
        a bad header                                          -> damage (fsynced when made)
        a bad entry, a valid one after it, or changed         -> damage
        a bad last frame reading as zeros from a sector       -> lost its end (unwritten)
    """
    if len(data) < size:
        return f"its predecessor {path} holds {len(data)} bytes, not {size} (lost its end)"
    if len(data) > size:
        raise CorruptionError(
            path,
            f"offset {size}",
            f"{len(data)} bytes, but the segment that follows it was linked at {size}",
        )
    check_header(path, data, number)
    payloads, good_end, problem = scan_entries(data)
    if problem is None:
        return None
    where = f"entry {len(payloads)} at offset {good_end}"
    valid = later_frame(data, good_end + 1)
    if valid is not None:
        raise CorruptionError(
            path, where, f"{problem}, and a valid entry follows at offset {valid}"
        )
    if zeros_to_end(data, good_end) or reads_unwritten(data, good_end, len(data)):
        return f"its predecessor {path} reads as unwritten from offset {good_end} (lost its end)"
    raise CorruptionError(
        path, where, f"{problem}: its bytes changed after they were written, not a torn tail"
    )


def replay(
    fs: FS,
    directory: str,
    first_segment: int,
    clean: Mapping[int, int] | None = None,
    *,
    contiguous: bool = True,
) -> tuple[list[bytes], ReplayReport]:
    """Every payload in the segments numbered >= ``first_segment``, in order.

    ``clean`` is the clean-shutdown record (segment number -> size), or None after a
    crash. After a crash, a bad entry in the last segment with no valid entry after it
    is a torn tail: the segment is truncated at the last whole entry and synced (a last
    segment shorter than a header, or a header-sized run of zeros, is a torn create: it
    is removed). Anything else, a gap in the numbering, or (after a clean shutdown) any
    difference from the record raises ``CorruptionError`` or ``MissingFileError``: that
    data was acknowledged and is never skipped silently. ``contiguous=False`` is for a
    WAL whose numbers a ``next_number`` hook drew (gaps expected; none is checked).
    After a crash, prepared segments are settled first (``settle_prepared``).
    """
    if clean is None:
        settle_prepared(fs, directory)
    numbers = [n for n in list_segments(fs, directory) if n >= first_segment]
    if contiguous:
        _check_needed(directory, first_segment, numbers, clean)
    payloads: list[bytes] = []
    dropped = 0
    truncated: int | None = None
    sizes: dict[int, int] = {}
    for number, entries, cut, size in _replay_sized(fs, directory, numbers, clean):
        payloads.extend(entries)
        if cut is not None:
            dropped, truncated = cut, number
        if size is not None:
            sizes[number] = size
    return payloads, ReplayReport(len(payloads), numbers, dropped, truncated, sizes)


def replay_each(
    fs: FS, directory: str, numbers: list[int], clean: Mapping[int, int] | None = None
) -> Iterator[tuple[int, list[bytes], int | None]]:
    """``replay`` of the segments ``numbers`` one at a time (a caller that keeps less
    than every payload holds one segment's at once): (number, payloads, bytes cut off
    or None). Each payload's frame follows the previous one's (``HEADER_SIZE``, plus
    ``LINK_FRAME_SIZE`` in a linked segment, then ``FRAME_HEADER_SIZE`` and the
    payload, for each entry), so its offset in the segment is known from the lengths.
    No numbering check, no prepared segment settled (``replay`` does those)."""
    for number, entries, cut, _size in _replay_sized(fs, directory, numbers, clean):
        yield number, entries, cut


def _replay_sized(
    fs: FS, directory: str, numbers: list[int], clean: Mapping[int, int] | None
) -> Iterator[tuple[int, list[bytes], int | None, int | None]]:
    """``replay_each``, with each segment's size after the replay (None: removed)."""
    for index, number in enumerate(numbers):
        torn_ok = clean is None and index == len(numbers) - 1
        recorded = None if clean is None else clean[number]
        yield number, *_replay_segment(fs, directory, number, torn_ok, recorded)


def _check_needed(
    directory: str, first: int, numbers: list[int], clean: Mapping[int, int] | None
) -> None:
    """Refuse a gap in ``first..last`` (and, after a clean shutdown, any segment added
    or removed since)."""
    present = set(numbers)
    if clean is not None:
        listed = sorted(n for n in clean if n >= first)
        extra = sorted(present - set(listed))
        if extra:
            raise CorruptionError(
                join(directory, wal_name(extra[0])),
                "segment",
                "not in the clean-shutdown record (a file from elsewhere?)",
            )
        last = listed[-1] if listed else None
    else:
        last = numbers[-1] if numbers else None
    if last is None:
        return
    for number in range(first, last + 1):
        if number not in present:
            raise MissingFileError(
                join(directory, wal_name(number)),
                f"WAL segment {number} is missing (segments {first} to {last} are needed)",
            )


def check_segment_size(path: str, size: int, recorded: int) -> None:
    """After a clean shutdown a segment has exactly the size the record gives."""
    if size != recorded:
        raise CorruptionError(
            path, "end of segment", f"{size} bytes, but {recorded} at the clean shutdown"
        )


def later_frame(data: bytes, start: int) -> int | None:
    """The offset of the first frame at or after ``start`` whose CRC verifies, or None.

    Used to tell a torn tail (nothing valid after the damage) from corruption."""
    end = len(data)
    unpack = FRAME_HEAD.unpack_from
    # The type byte sits at frame offset 4: jump from one candidate 0x01 byte to the next.
    position = data.find(ENTRY_FULL_BYTE, start + 4)
    while position != -1:
        offset = position - 4
        if offset + FRAME_HEADER_SIZE <= end:
            length, _kind, crc = unpack(data, offset)
            body = offset + FRAME_HEADER_SIZE
            if body + length <= end and crc == crc32c(
                data[body : body + length], crc32c(data[offset : offset + 5])
            ):
                return offset
        position = data.find(ENTRY_FULL_BYTE, position + 1)
    return None


def changed_frame(data: bytes, start: int) -> str | None:
    """Why the bad frame at ``start`` (the first of the newest segment's tail, with no
    valid frame after it) cannot be a torn write, or None if it can be one.

    A crash leaves a prefix of what was written (the file ends inside the frame), or
    whole sectors unwritten, which read as zeros. Damage of any other shape means the
    bytes changed after they were written: a flipped bit in the payload, the checksum or
    the type, or in the length (then the checksum verifies over the bytes that do remain,
    whether the changed length runs past the end or stops short of it)."""
    end = len(data)
    if end - start < FRAME_HEADER_SIZE or zeros_to_end(data, start):
        return None
    length, _kind, crc = FRAME_HEAD.unpack_from(data, start)
    body = start + FRAME_HEADER_SIZE
    fitted = end - body
    if fitted != length:
        head = FRAME_LEN_TYPE.pack(fitted, ENTRY_FULL)
        if crc == crc32c(data[body:end], crc32c(head)):
            return f"its length field reads {length}, yet the {fitted} bytes that remain verify"
    if body + length > end:
        return None  # the file ends inside the frame: a prefix of a write
    if reads_unwritten(data, start, body + length):
        return None  # zeros from a sector boundary to its end: sectors never written
    return "the whole frame is there but its bytes changed after they were written"


def _replay_segment(
    fs: FS, directory: str, number: int, torn_ok: bool, recorded: int | None
) -> tuple[list[bytes], int | None, int | None]:
    """(payloads, bytes cut off or None if the segment is whole, its size after the
    replay or None if it was removed)."""
    path = join(directory, wal_name(number))
    data = fs.read_all(path)
    if recorded is not None:
        check_segment_size(path, len(data), recorded)
    if torn_ok and is_torn_create(data):
        fs.remove(path)
        fs.sync_dir(directory)
        return [], len(data), None
    check_header(path, data, number)
    payloads, good_end, problem = scan_entries(data)
    if problem is None:
        return payloads, None, len(data)
    where = f"entry {len(payloads)} at offset {good_end}"
    if not torn_ok:
        raise CorruptionError(path, where, problem)
    valid = later_frame(data, good_end + 1)
    if valid is not None:
        raise CorruptionError(
            path, where, f"{problem}, and a valid entry follows at offset {valid}: not a torn tail"
        )
    changed = changed_frame(data, good_end)
    if changed is not None:
        raise CorruptionError(path, where, f"{problem}: {changed}, not a torn tail")
    file = fs.open_append(path)
    try:
        file.truncate(good_end)
        file.sync()
    finally:
        file.close()
    return payloads, len(data) - good_end, good_end
