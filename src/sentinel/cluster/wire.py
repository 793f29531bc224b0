"""Frames between brokers (sans-IO): ``encode(frame)`` gives buffers to write,
``FrameDecoder.feed(bytes)`` gives the frames received.

Frame layout (little-endian):

    offset  size  field
    0       4     length   u32: bytes after this field (5 + body), <= max_frame_bytes
    4       1     type     1 Hello, 2 Envelope, 3 Call, 4 Reply
    5       4     crc      CRC32C of the type byte and the body
    9       ...   body

Bodies are fixed ``struct`` records, strings and byte strings as ``u16``/``u32`` length
+ bytes; every count is checked against the bytes left before anything is built, so a
forged count costs nothing:

    Hello     q src, q dst, H n, cluster_id[n] (utf-8)
    Call      Q call_id, H n, kind[n] (utf-8), I m, body[m]
    Reply     Q call_id, i error_code, I n, message[n] (utf-8), I m, body[m]
    Envelope  q src, q dst, I beats, I acks, I messages, then
              beats    (q group, q term, q commit) each
              acks     (q group, q term) each
              messages (q group, B kind, fields of the kind) each; a message's src/dst
                       are the envelope's and are not repeated:
      1 PreVote               q term, q last_end, q last_term
      2 PreVoteResponse       q term, B granted
      3 RequestVote           q term, q last_end, q last_term, B transfer
      4 RequestVoteResponse   q term, B granted
      5 AppendEntries         q term, q prev_offset, q prev_term, q commit,
                              B from_log_start, I entries, then per entry
                              q base, q term, q count, i voters (-1: none), I data,
                              voters x q, data bytes
      6 AppendEntriesResponse q term, B success, q match, q rejected, q log_end,
                              B has_conflict, q conflict_term, q conflict_first
      7 Heartbeat             q term, q commit
      8 HeartbeatResponse     q term
      9 TimeoutNow            q term

An entry's data is never copied on encode: ``encode`` returns it as its own buffer
(``transport.writelines`` hands the list to the socket). Booleans are 0 or 1 exactly.
Every malformed input raises ``WireError`` and nothing else; after one the decoder is
broken (the stream has lost its framing) and raises again on every call.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

import crc32c

from sentinel.errors import PeerError, SentinelError
from sentinel.raft.log import Entry
from sentinel.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    PreVote,
    PreVoteResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from sentinel.raft.multi import Beat, BeatAck, Envelope

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Call",
    "Frame",
    "FrameDecoder",
    "Hello",
    "Reply",
    "WireError",
    "encode",
    "frame_size",
]

DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
Buffer = bytes | memoryview


class WireError(PeerError):
    """Bytes from a peer broker are not a well-formed frame."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame on a connection: who dials whom, in which cluster."""

    cluster_id: str
    src: int
    dst: int


@dataclass(frozen=True, slots=True)
class Call:
    """A request ``kind`` (a name the receiver dispatches on) with an opaque body."""

    call_id: int
    kind: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to call ``call_id``: ``error_code`` 0 and ``body``, or the remote
    error's Kafka code and message."""

    call_id: int
    error_code: int
    message: str
    body: bytes


Frame = Hello | Envelope | Call | Reply

_HEAD = struct.Struct("<IBI")
_LEN = struct.Struct("<I")
_TYPE_CRC = struct.Struct("<BI")
_T_HELLO, _T_ENVELOPE, _T_CALL, _T_REPLY = 1, 2, 3, 4

_HELLO = struct.Struct("<qqH")
_CALL = struct.Struct("<QH")
_REPLY = struct.Struct("<QiI")
_U32 = struct.Struct("<I")
_ENV = struct.Struct("<qqIII")
_BEAT = struct.Struct("<qqq")
_ACK = struct.Struct("<qq")
_MSG = struct.Struct("<qB")
_Q = struct.Struct("<q")
_QB = struct.Struct("<qB")
_QQ = struct.Struct("<qq")
_QQQ = struct.Struct("<qqq")
_QQQB = struct.Struct("<qqqB")
_APPEND = struct.Struct("<qqqqBI")
_ENTRY = struct.Struct("<qqqiI")
_AER = struct.Struct("<qBqqqBqq")

_M_PREVOTE, _M_PREVOTE_RESP, _M_VOTE, _M_VOTE_RESP = 1, 2, 3, 4
_M_APPEND, _M_APPEND_RESP, _M_BEAT, _M_BEAT_RESP, _M_TIMEOUT = 5, 6, 7, 8, 9


# -- encoding


def _encode_message(group: int, m: Message, out: list[Buffer]) -> None:
    if isinstance(m, AppendEntries):
        out.append(_MSG.pack(group, _M_APPEND))
        out.append(
            _APPEND.pack(
                m.term, m.prev_offset, m.prev_term, m.commit, m.from_log_start, len(m.entries)
            )
        )
        for e in m.entries:
            voters = () if e.voters is None else sorted(e.voters)
            nv = -1 if e.voters is None else len(voters)
            head = _ENTRY.pack(e.base, e.term, e.count, nv, len(e.data))
            if voters:
                head += struct.pack(f"<{len(voters)}q", *voters)
            out.append(head)
            if e.data:
                out.append(e.data)
    elif isinstance(m, AppendEntriesResponse):
        conflict = m.conflict_term is not None
        out.append(_MSG.pack(group, _M_APPEND_RESP))
        out.append(
            _AER.pack(
                m.term, m.success, m.match, m.rejected, m.log_end, conflict,
                m.conflict_term or 0, m.conflict_first,
            )
        )
    elif isinstance(m, PreVote):
        out.append(_MSG.pack(group, _M_PREVOTE) + _QQQ.pack(m.term, m.last_end, m.last_term))
    elif isinstance(m, PreVoteResponse):
        out.append(_MSG.pack(group, _M_PREVOTE_RESP) + _QB.pack(m.term, m.granted))
    elif isinstance(m, RequestVote):
        body = _QQQB.pack(m.term, m.last_end, m.last_term, m.transfer)
        out.append(_MSG.pack(group, _M_VOTE) + body)
    elif isinstance(m, RequestVoteResponse):
        out.append(_MSG.pack(group, _M_VOTE_RESP) + _QB.pack(m.term, m.granted))
    elif isinstance(m, Heartbeat):
        out.append(_MSG.pack(group, _M_BEAT) + _QQ.pack(m.term, m.commit))
    elif isinstance(m, HeartbeatResponse):
        out.append(_MSG.pack(group, _M_BEAT_RESP) + _Q.pack(m.term))
    elif isinstance(m, TimeoutNow):
        out.append(_MSG.pack(group, _M_TIMEOUT) + _Q.pack(m.term))
    else:
        raise TypeError(f"no wire encoding for {type(m).__name__}")


def _encode_body(frame: Frame) -> tuple[int, list[Buffer]]:
    if isinstance(frame, Envelope):
        parts: list[Buffer] = [
            _ENV.pack(frame.src, frame.dst, len(frame.beats), len(frame.acks), len(frame.messages))
        ]
        if frame.beats:  # (group, term, commit) named tuples: packed in one call
            beats = frame.beats
            parts.append(struct.pack(f"<{3 * len(beats)}q", *chain.from_iterable(beats)))
        if frame.acks:
            acks = frame.acks
            parts.append(struct.pack(f"<{2 * len(acks)}q", *chain.from_iterable(acks)))
        for group, m in frame.messages:
            _encode_message(group, m, parts)
        return _T_ENVELOPE, parts
    if isinstance(frame, Hello):
        cid = frame.cluster_id.encode()
        return _T_HELLO, [_HELLO.pack(frame.src, frame.dst, len(cid)) + cid]
    if isinstance(frame, Call):
        kind = frame.kind.encode()
        head = _CALL.pack(frame.call_id, len(kind)) + kind + _U32.pack(len(frame.body))
        return _T_CALL, [head, frame.body] if frame.body else [head]
    if isinstance(frame, Reply):
        msg = frame.message.encode()
        head = _REPLY.pack(frame.call_id, frame.error_code, len(msg)) + msg
        head += _U32.pack(len(frame.body))
        return _T_REPLY, [head, frame.body] if frame.body else [head]
    raise TypeError(f"no wire encoding for {type(frame).__name__}")


def encode(frame: Frame) -> list[Buffer]:
    """The buffers of one frame, to write in order. Entry data and call bodies are
    the caller's own objects, not copies. A value out of its field's range (a
    negative call id, a string longer than 65,535 bytes) raises ``struct.error``."""
    kind, parts = _encode_body(frame)
    crc = crc32c.crc32c(bytes((kind,)))
    size = 0
    for p in parts:
        crc = crc32c.crc32c(p, crc)
        size += len(p)
    if size + 5 > 0xFFFFFFFF:
        raise ValueError(f"frame of {size} bytes is too large for the wire")
    return [_HEAD.pack(size + 5, kind, crc), *parts]


def frame_size(buffers: list[Buffer]) -> int:
    """Bytes of an encoded frame."""
    return sum(len(b) for b in buffers)


# -- decoding


class _Reader:
    """A cursor over one frame's body; every read checks the bytes left."""

    __slots__ = ("data", "end", "pos", "view")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.view = memoryview(data)
        self.pos = pos
        self.end = len(data)

    def take(self, st: struct.Struct, what: str) -> tuple[int, ...]:
        if self.end - self.pos < st.size:
            raise WireError(f"frame truncated in {what}")
        values = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return values

    def raw(self, n: int, what: str) -> bytes:
        if n < 0 or self.end - self.pos < n:
            raise WireError(f"frame truncated in {what}: {n} bytes announced")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def text(self, n: int, what: str) -> str:
        try:
            return self.raw(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError(f"{what} is not UTF-8") from None

    def many(self, st: struct.Struct, n: int, what: str) -> Iterator[tuple[int, ...]]:
        """``n`` records of ``st`` in a row (in one call, not ``n``)."""
        size = self.count(n, st.size, what) * st.size
        start = self.pos
        self.pos += size
        return st.iter_unpack(self.view[start : start + size])

    def count(self, n: int, item_size: int, what: str) -> int:
        if n < 0 or n * item_size > self.end - self.pos:
            raise WireError(f"{n} {what} cannot fit in the {self.end - self.pos} bytes left")
        return n


def _flag(v: int, what: str) -> bool:
    if v not in (0, 1):
        raise WireError(f"{what} is {v}, not 0 or 1")
    return v == 1


def _decode_entry(r: _Reader) -> Entry:
    base, term, count, nv, size = r.take(_ENTRY, "an entry")
    voters: frozenset[int] | None = None
    if nv >= 0:
        r.count(nv, 8, "voters")
        ids = struct.unpack_from(f"<{nv}q", r.data, r.pos)
        r.pos += 8 * nv
        if len(set(ids)) != nv:
            raise WireError("an entry names a voter twice")
        voters = frozenset(ids)
    elif nv != -1:
        raise WireError(f"voter count {nv}")
    return Entry(base, term, count, r.raw(size, "entry data"), voters)


def _decode_message(r: _Reader, src: int, dst: int) -> tuple[int, Message]:
    group, kind = r.take(_MSG, "a message header")
    m: Message
    if kind == _M_APPEND:
        term, prev, prev_term, commit, fls, n = r.take(_APPEND, "AppendEntries")
        r.count(n, _ENTRY.size, "entries")
        entries = tuple(_decode_entry(r) for _ in range(n))
        m = AppendEntries(term, src, dst, prev, prev_term, entries, commit, _flag(fls, "flag"))
    elif kind == _M_APPEND_RESP:
        term, ok, match, rejected, log_end, has_c, c_term, c_first = r.take(_AER, "response")
        conflict = c_term if _flag(has_c, "has_conflict") else None
        if conflict is None and c_term != 0:
            raise WireError("a conflict term without the has_conflict flag")
        m = AppendEntriesResponse(
            term, src, dst, _flag(ok, "success"), match, rejected, log_end, conflict, c_first
        )
    elif kind == _M_PREVOTE:
        term, last_end, last_term = r.take(_QQQ, "PreVote")
        m = PreVote(term, src, dst, last_end, last_term)
    elif kind == _M_PREVOTE_RESP:
        term, granted = r.take(_QB, "PreVoteResponse")
        m = PreVoteResponse(term, src, dst, _flag(granted, "granted"))
    elif kind == _M_VOTE:
        term, last_end, last_term, transfer = r.take(_QQQB, "RequestVote")
        m = RequestVote(term, src, dst, last_end, last_term, _flag(transfer, "transfer"))
    elif kind == _M_VOTE_RESP:
        term, granted = r.take(_QB, "RequestVoteResponse")
        m = RequestVoteResponse(term, src, dst, _flag(granted, "granted"))
    elif kind == _M_BEAT:
        term, commit = r.take(_QQ, "Heartbeat")
        m = Heartbeat(term, src, dst, commit)
    elif kind == _M_BEAT_RESP:
        (term,) = r.take(_Q, "HeartbeatResponse")
        m = HeartbeatResponse(term, src, dst)
    elif kind == _M_TIMEOUT:
        (term,) = r.take(_Q, "TimeoutNow")
        m = TimeoutNow(term, src, dst)
    else:
        raise WireError(f"unknown Raft message kind {kind}")
    return group, m


def _decode_envelope(r: _Reader) -> Envelope:
    src, dst, nb, na, nm = r.take(_ENV, "an envelope header")
    beats = tuple(map(Beat._make, r.many(_BEAT, nb, "beats")))
    acks = tuple(map(BeatAck._make, r.many(_ACK, na, "acks")))
    r.count(nm, _MSG.size + 8, "messages")
    messages = tuple(_decode_message(r, src, dst) for _ in range(nm))
    return Envelope(src, dst, beats, acks, messages)


def _decode_frame(kind: int, r: _Reader) -> Frame:
    frame: Frame
    if kind == _T_ENVELOPE:
        frame = _decode_envelope(r)
    elif kind == _T_HELLO:
        src, dst, n = r.take(_HELLO, "Hello")
        frame = Hello(r.text(n, "the cluster id"), src, dst)
    elif kind == _T_CALL:
        call_id, n = r.take(_CALL, "Call")
        call_kind = r.text(n, "the call kind")
        (m,) = r.take(_U32, "the call body length")
        frame = Call(call_id, call_kind, r.raw(m, "the call body"))
    elif kind == _T_REPLY:
        call_id, code, n = r.take(_REPLY, "Reply")
        message = r.text(n, "the reply message")
        (m,) = r.take(_U32, "the reply body length")
        frame = Reply(call_id, code, message, r.raw(m, "the reply body"))
    else:
        raise WireError(f"unknown frame type {kind}")
    if r.pos != r.end:
        raise WireError(f"{r.end - r.pos} trailing bytes after a frame of type {kind}")
    return frame


class FrameDecoder:
    """Incremental decoding of a byte stream into frames. Holds at most one frame
    being received (a length above ``max_frame_bytes`` is refused from its 4 bytes)
    plus the rest of the last chunk fed."""

    def __init__(
        self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, *, first_frame_bytes: int = 0
    ) -> None:
        """``first_frame_bytes`` (> 0): a tighter bound for the first frame only (an
        acceptor's: the Hello, before anything of the peer is known)."""
        self.max_frame_bytes = max_frame_bytes
        self._first_limit = first_frame_bytes
        self._buf = bytearray()
        self._broken: WireError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """The frames completed by ``data`` (possibly none)."""
        if self._broken is not None:
            raise WireError(f"stream already broken: {self._broken}")
        try:
            return self._feed(data)
        except WireError as e:
            self._broken = e
            self._buf = bytearray()
            raise

    def _feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        n = len(buf)
        while n - pos >= _LEN.size:
            (length,) = _LEN.unpack_from(buf, pos)
            if length < _TYPE_CRC.size:
                raise WireError(f"frame length {length} is below the 5-byte minimum")
            limit = self._first_limit or self.max_frame_bytes
            if length > limit:
                first = "first " if self._first_limit else ""
                raise WireError(f"{first}frame length {length} exceeds {limit} bytes")
            if n - pos - _LEN.size < length:
                break
            start = pos + _LEN.size
            frame_bytes = bytes(buf[start : start + length])
            pos = start + length
            self._first_limit = 0
            kind, crc = _TYPE_CRC.unpack_from(frame_bytes, 0)
            actual = crc32c.crc32c(memoryview(frame_bytes)[_TYPE_CRC.size :],
                                   crc32c.crc32c(frame_bytes[:1]))
            if actual != crc:
                raise WireError(f"frame CRC mismatch (type {kind}, {length} bytes)")
            try:
                frames.append(_decode_frame(kind, _Reader(frame_bytes, _TYPE_CRC.size)))
            except WireError:
                raise
            except (SentinelError, struct.error, ValueError, OverflowError) as e:
                # A field combination the Raft types refuse (MalformedMessageError,
                # an Entry's SafetyViolationError) is the peer's fault like any other.
                raise WireError(f"frame of type {kind} does not build: {e}") from None
        if pos:
            del buf[:pos]
        return frames
