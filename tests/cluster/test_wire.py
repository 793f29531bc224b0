"""The broker-to-broker codec: every frame round-trips, any split decodes the same,
and any malformed input raises ``WireError`` and nothing else."""

from __future__ import annotations

import contextlib
import struct

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.cluster.wire import (
    Call,
    Frame,
    FrameDecoder,
    Hello,
    Reply,
    WireError,
    encode,
)
from sentinel.errors import PeerError
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

I63 = st.integers(0, 2**63 - 1)
SMALL = st.integers(0, 2**40)


def _join(bufs: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(b) for b in bufs)


@st.composite
def append_entries(draw: st.DrawFn, term: int, src: int, dst: int) -> AppendEntries:
    prev = draw(SMALL)
    at = prev
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        count = draw(st.integers(1, 1000))
        voters = draw(st.none() | st.frozensets(st.integers(0, 2**31), max_size=5))
        data = draw(st.binary(max_size=64))
        entries.append(Entry(at, draw(st.integers(0, term)), count, data, voters))
        at += count
    return AppendEntries(
        term, src, dst, prev, draw(SMALL), tuple(entries), draw(SMALL), draw(st.booleans())
    )


@st.composite
def messages(draw: st.DrawFn, src: int, dst: int) -> Message:
    term = draw(SMALL)
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return PreVote(term, src, dst, draw(SMALL), draw(SMALL))
    if kind == 1:
        return PreVoteResponse(term, src, dst, draw(st.booleans()))
    if kind == 2:
        return RequestVote(term, src, dst, draw(SMALL), draw(SMALL), draw(st.booleans()))
    if kind == 3:
        return RequestVoteResponse(term, src, dst, draw(st.booleans()))
    if kind == 4:
        return draw(append_entries(term, src, dst))
    if kind == 5:
        return AppendEntriesResponse(
            term, src, dst, draw(st.booleans()), draw(SMALL), draw(SMALL), draw(SMALL),
            draw(st.none() | SMALL), draw(SMALL),
        )
    if kind == 6:
        return Heartbeat(term, src, dst, draw(SMALL))
    if kind == 7:
        return HeartbeatResponse(term, src, dst)
    return TimeoutNow(term, src, dst)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    src = draw(st.integers(0, 2**31))
    dst = draw(st.integers(0, 2**31).filter(lambda d: d != src))
    beats = draw(st.lists(st.builds(Beat, I63, I63, I63), max_size=4))
    acks = draw(st.lists(st.builds(BeatAck, I63, I63), max_size=4))
    msgs = draw(st.lists(st.tuples(I63, messages(src, dst)), max_size=5))
    return Envelope(src, dst, tuple(beats), tuple(acks), tuple(msgs))


frames: st.SearchStrategy[Frame] = st.one_of(
    envelopes(),
    st.builds(Hello, st.text(max_size=20), I63, I63),
    st.builds(Call, st.integers(0, 2**64 - 1), st.text(max_size=20), st.binary(max_size=100)),
    st.builds(
        Reply, st.integers(0, 2**64 - 1), st.integers(-(2**31), 2**31 - 1),
        st.text(max_size=40), st.binary(max_size=100),
    ),
)


@given(st.lists(frames, min_size=1, max_size=4))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip(batch: list[Frame]) -> None:
    data = b"".join(_join(encode(f)) for f in batch)
    assert FrameDecoder().feed(data) == batch


def test_every_message_type_round_trips() -> None:
    msgs: list[Message] = [
        PreVote(3, 1, 2, 10, 2),
        PreVoteResponse(3, 1, 2, True),
        RequestVote(3, 1, 2, 10, 2, transfer=True),
        RequestVoteResponse(3, 1, 2, False),
        AppendEntries(
            3, 1, 2, 10, 2,
            (Entry(10, 3, 5, b"batch"), Entry(15, 3, 1, b"", frozenset({1, 2, 3}))), 9, True,
        ),
        AppendEntriesResponse(3, 1, 2, False, 0, 10, 8, 2, 4),
        AppendEntriesResponse(3, 1, 2, True, 12),
        Heartbeat(3, 1, 2, 9),
        HeartbeatResponse(3, 1, 2),
        TimeoutNow(3, 1, 2),
    ]
    env = Envelope(
        1, 2, (Beat(7, 3, 4),), (BeatAck(8, 3),), tuple((g, m) for g, m in enumerate(msgs))
    )
    assert FrameDecoder().feed(_join(encode(env))) == [env]
    assert {type(m) for _, m in env.messages} == {
        PreVote, PreVoteResponse, RequestVote, RequestVoteResponse, AppendEntries,
        AppendEntriesResponse, Heartbeat, HeartbeatResponse, TimeoutNow,
    }


def test_entry_data_is_not_copied_on_encode() -> None:
    data = b"x" * 100_000
    env = Envelope(1, 2, messages=((5, AppendEntries(1, 1, 2, 0, 0, (Entry(0, 1, 3, data),), 0)),))
    assert any(b is data for b in encode(env))
    call = Call(1, "k", data)
    assert any(b is data for b in encode(call))


SAMPLE: list[Frame] = [
    Hello("abcdef0123456789", 1, 2),
    Envelope(
        1, 2, (Beat(1, 2, 3),), (BeatAck(4, 5),),
        ((9, AppendEntries(4, 1, 2, 0, 0, (Entry(0, 4, 2, b"hello", frozenset({1, 2})),), 0)),),
    ),
    Call(7, "create_topic", b"{}"),
    Reply(7, 36, "exists", b""),
]
STREAM = b"".join(_join(encode(f)) for f in SAMPLE)


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        d = FrameDecoder()
        assert d.feed(STREAM[:cut]) + d.feed(STREAM[cut:]) == SAMPLE
        assert d.buffered == 0


def test_byte_by_byte() -> None:
    d = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(STREAM)):
        out += d.feed(STREAM[i : i + 1])
    assert out == SAMPLE


def _frame(kind: int, body: bytes) -> bytes:
    crc = crc32c.crc32c(body, crc32c.crc32c(bytes((kind,))))
    return struct.pack("<IBI", len(body) + 5, kind, crc) + body


def test_length_over_max_refused_from_its_header() -> None:
    d = FrameDecoder(max_frame_bytes=1000)
    with pytest.raises(WireError, match="exceeds"):
        d.feed(struct.pack("<I", 1001))
    with pytest.raises(WireError):  # broken for good
        d.feed(STREAM)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_frame(99, b""), "unknown frame type"),
        (struct.pack("<I", 3) + b"abc", "minimum"),
        (_frame(1, struct.pack("<qqH", 1, 2, 5) + b"ab"), "truncated"),
        (_frame(1, struct.pack("<qqH", 1, 2, 2) + b"ab" + b"x"), "trailing"),
        (_frame(1, struct.pack("<qqH", 1, 2, 2) + b"\xff\xfe"), "UTF-8"),
        (_frame(2, struct.pack("<qqIII", 1, 2, 2**32 - 1, 0, 0)), "cannot fit"),
        (_frame(2, struct.pack("<qqIII", 1, 1, 0, 0, 0)), "itself"),
        (_frame(2, struct.pack("<qqIII", 1, 2, 0, 0, 1) + struct.pack("<qB", 0, 77) + b"\0" * 8),
         "kind 77"),
        # a negative term: MalformedMessageError from the message, as WireError
        (_frame(2, struct.pack("<qqIII", 1, 2, 0, 0, 1) + struct.pack("<qBq", 0, 8, -1)),
         "negative term"),
        # an entry with count 0: the Entry refuses it (SafetyViolationError), as WireError
        (_frame(2, struct.pack("<qqIII", 1, 2, 0, 0, 1) + struct.pack("<qB", 0, 5)
                + struct.pack("<qqqqBI", 1, 0, 0, 0, 0, 1) + struct.pack("<qqqiI", 0, 1, 0, -1, 0)),
         "does not build"),
        (_frame(2, struct.pack("<qqIII", 1, 2, 0, 0, 1) + struct.pack("<qB", 0, 4)
                + struct.pack("<qB", 1, 2)), "not 0 or 1"),
    ],
)
def test_malformed_frames(data: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        FrameDecoder().feed(data)


def test_bad_crc() -> None:
    data = bytearray(STREAM)
    data[-1] ^= 1
    d = FrameDecoder()
    with pytest.raises(WireError, match="CRC"):
        d.feed(bytes(data))


def _feed_all(data: bytes, chunk: int) -> None:
    d = FrameDecoder(max_frame_bytes=1 << 16)
    try:
        for i in range(0, len(data), chunk):
            d.feed(data[i : i + chunk])
    except WireError:
        pass


@given(st.binary(max_size=300), st.integers(1, 64))
@settings(max_examples=500)
def test_random_bytes_only_wire_error(data: bytes, chunk: int) -> None:
    _feed_all(data, chunk)


def _resealed(data: bytearray) -> bytes:
    """Recompute length and CRC so a mutation reaches the field decoders."""
    body = bytes(data[9:])
    return _frame(data[4] if len(data) > 4 else 2, body)


@given(
    st.sampled_from([_join(encode(f)) for f in SAMPLE]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.integers(0, 10_000),
    st.binary(max_size=20),
    st.booleans(),
)
@settings(max_examples=1000)
def test_mutated_frames_only_wire_error(
    frame: bytes, flips: list[tuple[int, int]], cut: int, extra: bytes, reseal: bool
) -> None:
    data = bytearray(frame)
    for at, value in flips:
        data[at % len(data)] = value
    data = data[: max(9, len(data) - cut % 40)] + extra if cut % 3 else data + extra
    raw = _resealed(data) if reseal else bytes(data)
    with contextlib.suppress(WireError):
        FrameDecoder(max_frame_bytes=1 << 16).feed(raw)


def test_wire_error_is_a_peer_error() -> None:
    assert issubclass(WireError, PeerError)


def test_the_first_frame_bound_applies_to_the_first_frame_only() -> None:
    """An acceptor bounds the Hello tightly (a huge first length is refused from its 4
    bytes); the frames after it, sent in the same chunk, get the normal bound."""
    hello = b"".join(bytes(b) for b in encode(Hello("c", 1, 2)))
    call = b"".join(bytes(b) for b in encode(Call(1, "k", b"x" * 1000)))
    frames = FrameDecoder(first_frame_bytes=64).feed(hello + call)
    assert [type(f) for f in frames] == [Hello, Call]
    with pytest.raises(WireError, match="first frame length"):
        FrameDecoder(first_frame_bytes=64).feed(call)
    with pytest.raises(WireError, match="first frame length"):
        FrameDecoder(first_frame_bytes=64).feed(struct.pack("<I", 1 << 30))
