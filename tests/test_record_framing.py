"""The framing walk of a produced batch's records (``record.framing``), and
``validate_produce`` refusing the batches that lie under a valid CRC.

Records and batches are built here by hand (``struct`` and a varint written out), not
by the code under test, so that every lie can be told: a count too high or too low, a
record length past the end or short, trailing bytes, a varint that never ends, offset
deltas out of order, garbage under each codec, a bomb. The property at the end ties
the walk to the reader: whatever the walk accepts, ``decode_records`` decodes into
exactly ``recordsCount`` records with offsets in order.
"""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
from collections.abc import Sequence

import cramjam
import crc32c as crc32c_lib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.errors import (
    CorruptRecordError,
    InvalidRecordError,
    RecordBatchTooLargeError,
    TransactionalIdAuthorizationFailedError,
)
from sentinel.log.append import validate_produce
from sentinel.log.config import TopicConfig
from sentinel.record import (
    Compression,
    build_batch,
    check_records,
    compress,
    decode_records,
    validate_batch,
)
from sentinel.record.framing import walk_records

NOW = 1_700_000_000_000
CONFIG = TopicConfig()
COMPACT = TopicConfig(cleanup_compact=True)
MAX_VALUE = 8 << 20
HEADERS = ">qiibIhiqqqhii"


def varint(n: int) -> bytes:
    """Zig-zag varint, written out independently of ``sentinel.codec.varint``."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def record(
    offset_delta: int = 0,
    key: bytes | None = b"k",
    value: bytes | None = b"v",
    *,
    ts_delta: int = 0,
    headers: bytes = b"\x00",
    length: int | None = None,
) -> bytes:
    """One record; ``length`` overrides the true length of its body."""
    body = (
        b"\x00"
        + varint(ts_delta)
        + varint(offset_delta)
        + (varint(-1) if key is None else varint(len(key)) + key)
        + (varint(-1) if value is None else varint(len(value)) + value)
        + headers
    )
    return varint(len(body) if length is None else length) + body


def records(n: int) -> bytes:
    return b"".join(record(i, b"key-%d" % i, b"value-%d" % i) for i in range(n))


def batch(
    body: bytes,
    count: int,
    *,
    last_offset_delta: int | None = None,
    attributes: int = 0,
) -> bytes:
    """A batch around ``body`` with a correct length and CRC, whatever the body says."""
    lod = count - 1 if last_offset_delta is None else last_offset_delta
    tail = struct.pack(">hiqqqhii", attributes, lod, NOW, NOW, -1, -1, -1, count) + body
    crc = crc32c_lib.crc32c(tail)
    return struct.pack(">qiibI", 0, 49 + len(body), -1, 2, crc) + tail


CODECS = [c for c in Compression if c is not Compression.NONE]


def produce(data: bytes, config: TopicConfig = CONFIG) -> None:
    validate_produce(data, config, MAX_VALUE)


# --- honest batches pass ------------------------------------------------------------


def test_the_hand_built_batch_is_what_the_builder_writes() -> None:
    ours = batch(records(3), 3)
    theirs = build_batch([(b"key-%d" % i, b"value-%d" % i, (), NOW) for i in range(3)])
    assert ours == theirs
    produce(ours)


@pytest.mark.parametrize("codec", list(Compression), ids=[c.name for c in Compression])
def test_a_valid_batch_of_each_codec_is_accepted(codec: Compression) -> None:
    recs = [(b"k%d" % i, b"value %d " % i * 50, (("h", b"x"),), NOW + i) for i in range(20)]
    data = build_batch(recs, compression=codec)
    produce(data)
    assert check_records(data, validate_batch(data, max_batch_bytes=len(data))) == 0


def test_null_keys_are_counted_and_a_compacted_topic_refuses_them() -> None:
    data = batch(record(0, None) + record(1, b"k") + record(2, None, None), 3)
    assert check_records(data, validate_batch(data, max_batch_bytes=len(data))) == 2
    produce(data)
    with pytest.raises(InvalidRecordError, match="without key"):
        produce(data, COMPACT)
    produce(batch(records(3), 3), COMPACT)


def test_headers_big_varints_and_a_large_record_pass() -> None:
    headers = varint(2) + varint(1) + b"a" + varint(-1) + varint(2) + "é".encode() + varint(0)
    body = (
        record(0, headers=headers)
        + record(1, b"k" * 10_000, b"v" * 70_000, ts_delta=-(1 << 40))
        + record(2, None, None, ts_delta=(1 << 62))
    )
    produce(batch(body, 3))


def test_offset_deltas_past_the_one_and_two_byte_forms() -> None:
    n = 20_000  # deltas up to 19999: one, two and three varint bytes
    body = b"".join(record(i, None, b"") for i in range(n))
    produce(batch(body, n))


# --- lies are refused ---------------------------------------------------------------


def test_the_count_lie_of_the_attack_is_refused() -> None:
    """Header: 1 record, lastOffsetDelta 0; body: 3 records. Stored, it made the log
    hand out offset 1 next, and consumers saw 0, 1, 2, 1, 2, 3."""
    with pytest.raises(CorruptRecordError, match="follow the 1 records"):
        produce(batch(records(3), 1))


P = pytest.param
UTF8_BAD = varint(1) + varint(2) + b"\xff\xfe" + varint(-1)
LIES = [
    P(records(2), 3, CorruptRecordError, id="count-too-high"),
    P(records(3), 2, CorruptRecordError, id="count-too-low"),
    P(record(0) + record(1), 1, CorruptRecordError, id="count-lie-lastOffsetDelta-agrees"),
    P(records(3) + b"\x00", 3, CorruptRecordError, id="trailing-byte"),
    P(record(0, length=1000) + record(1) + record(2), 3, CorruptRecordError, id="len-past-end"),
    P(record(0, length=4) + record(1) + record(2), 3, CorruptRecordError, id="len-below-min"),
    P(record(0, length=9) + record(1) + record(2), 3, CorruptRecordError, id="len-short"),
    P(record(0, length=7) + record(1), 2, CorruptRecordError, id="len-long"),
    P(record(0, length=-1) + record(1), 2, CorruptRecordError, id="len-negative"),
    P(b"\xff" * 9 + b"\x01" + record(1), 2, CorruptRecordError, id="len-10-byte-varint"),
    P(b"\x80\x80\x80\x80\x10" + record(1), 2, CorruptRecordError, id="len-over-32-bits"),
    P(record(0) + b"\x00\x80", 2, CorruptRecordError, id="varint-cut-by-the-end"),
    P(
        record(0, key=b"").replace(b"\x00\x02v", b"\x05\x02v"),
        1,
        CorruptRecordError,
        id="key-length-odd",
    ),
    P(
        record(0, ts_delta=0).replace(b"\x00\x00\x00", b"\x00" + b"\xff" * 10 + b"\x00", 1),
        1,
        CorruptRecordError,
        id="timestamp-11-byte-varlong",
    ),
    P(record(0, headers=varint(2**31 - 1)), 1, CorruptRecordError, id="header-count-huge"),
    P(record(0, headers=varint(-1)), 1, CorruptRecordError, id="header-count-negative"),
    P(record(0, headers=UTF8_BAD), 1, CorruptRecordError, id="header-key-not-utf8"),
    P(
        record(0, headers=varint(1) + varint(1) + b"a" + varint(-2)),
        1,
        CorruptRecordError,
        id="header-value-length-negative",
    ),
    P(
        record(0, headers=varint(1) + varint(1) + b"a" + varint(50)),
        1,
        CorruptRecordError,
        id="header-value-past-record",
    ),
    P(record(0) + record(0) + record(0), 3, InvalidRecordError, id="offset-deltas-repeat"),
    P(record(0) + record(2) + record(1), 3, InvalidRecordError, id="offset-deltas-unordered"),
    P(record(1) + record(2), 2, InvalidRecordError, id="offset-deltas-not-from-0"),
    P(bytes(range(40)), 3, CorruptRecordError, id="random-bytes"),
]


@pytest.mark.parametrize(("body", "count", "error"), LIES)
def test_framing_lies_are_refused(body: bytes, count: int, error: type[InvalidRecordError]) -> None:
    with pytest.raises(error):
        produce(batch(body, count))


def test_key_and_value_lengths_below_minus_one_are_refused() -> None:
    for field in ("key", "value"):
        body = b"\x00" + varint(0) + varint(0)
        body += varint(-2) if field == "key" else varint(1) + b"k" + varint(-3)
        body += b"\x00" * 4
        with pytest.raises(CorruptRecordError, match=f"{field} length"):
            produce(batch(varint(len(body)) + body, 1))


def test_a_key_running_past_its_record_is_refused() -> None:
    rec = b"\x00" + varint(0) + varint(0) + varint(30) + b"k" + varint(-1) + b"\x00"
    with pytest.raises(CorruptRecordError):
        produce(batch(varint(len(rec)) + rec + record(1, b"x" * 30), 2))


@pytest.mark.parametrize("codec", CODECS, ids=[c.name for c in CODECS])
def test_garbage_under_each_codec_is_refused(codec: Compression) -> None:
    garbage = bytes((i * 197 + 13) % 256 for i in range(60))
    with pytest.raises(CorruptRecordError):
        produce(batch(garbage, 3, attributes=int(codec)))


@pytest.mark.parametrize("codec", CODECS, ids=[c.name for c in CODECS])
def test_a_valid_compression_of_lying_records_is_refused(codec: Compression) -> None:
    for body, count in ((records(3), 1), (bytes(range(60)), 3), (records(2) + b"x", 2)):
        with pytest.raises(CorruptRecordError):
            produce(batch(compress(codec, body), count, attributes=int(codec)))


def _zstd_stream(data: bytes) -> bytes:
    """A zstd frame that does not declare its size (as a streaming writer makes)."""
    compressor = cramjam.zstd.Compressor(level=3)
    compressor.compress(data)
    return bytes(compressor.finish())


@pytest.mark.parametrize(
    "make",
    [
        lambda zeros: gzip.compress(zeros, compresslevel=1),
        lambda zeros: bytes(cramjam.zstd.compress(zeros)),
        _zstd_stream,
        lambda zeros: compress(Compression.LZ4, zeros),
    ],
    ids=["gzip", "zstd", "zstd-stream", "lz4"],
)
def test_a_bomb_is_refused_within_the_bound(make: object) -> None:
    """128 MiB of zeros, refused at the 64 MiB bound: never inflated whole, and
    quickly (a full inflate would hold 128 MiB and take several times as long)."""
    assert callable(make)
    payload = make(bytes(128 << 20))
    data = batch(payload, 1, attributes={0x1F: 1, 0x28: 4, 0x04: 3}[payload[0]])
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(RecordBatchTooLargeError):
            produce(data)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 160 << 20
    assert elapsed < 5.0


def test_a_smaller_bound_is_kept() -> None:
    data = build_batch([(None, bytes(4096), (), NOW)], compression=Compression.GZIP)
    header = validate_batch(data, max_batch_bytes=len(data))
    with pytest.raises(RecordBatchTooLargeError):
        check_records(data, header, max_records_bytes=1024)
    with pytest.raises(RecordBatchTooLargeError):
        check_records(data, header, max_records=0)


def test_the_transactional_bit_without_a_transactional_id_is_refused() -> None:
    data = batch(records(3), 3, attributes=0x10)
    with pytest.raises(TransactionalIdAuthorizationFailedError) as err:
        produce(data)
    assert err.value.kafka_code == 53
    with pytest.raises(InvalidRecordError, match="control"):  # control alone: 87
        produce(batch(records(3), 3, attributes=0x20))


def test_walk_records_never_reads_past_its_end() -> None:
    body = records(2)
    assert walk_records(body + records(1), 0, len(body), 2) == 0
    with pytest.raises(CorruptRecordError):
        walk_records(body, 0, len(body) + 1, 2)


# --- the walk and the reader agree --------------------------------------------------


def _mutations() -> st.SearchStrategy[list[tuple[str, int, int]]]:
    kind = st.sampled_from(["set", "insert", "delete", "count", "lod"])
    return st.lists(
        st.tuples(kind, st.integers(0, 1 << 16), st.integers(-300, 300)), min_size=1, max_size=4
    )


def _mutate(
    body: bytes, count: int, lod: int, steps: Sequence[tuple[str, int, int]]
) -> tuple[bytes, int, int]:
    buf = bytearray(body)
    for kind, where, what in steps:
        at = where % (len(buf) + 1)
        if kind == "set" and buf:
            buf[at % len(buf)] = what % 256
        elif kind == "insert":
            buf[at:at] = bytes([what % 256]) * (1 + where % 3)
        elif kind == "delete":
            del buf[at : at + 1 + where % 3]
        elif kind == "count":
            count += what % 5 - 2
        elif kind == "lod":
            lod += what % 5 - 2
    return bytes(buf), count, lod


SIZES = [0, 1, 40, 63, 64, 200, 8191, 8192, 70_000]
"""Value sizes whose lengths take one, two and three varint bytes, at the edges."""


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.sampled_from(SIZES), min_size=1, max_size=6),
    with_headers=st.booleans(),
    codec=st.sampled_from(list(Compression)),
    steps=_mutations(),
)
def test_whatever_the_walk_accepts_decodes_to_exactly_count_records(
    sizes: list[int], with_headers: bool, codec: Compression, steps: list[tuple[str, int, int]]
) -> None:
    n = len(sizes)
    headers = (("h", b"x"), ("i", None)) if with_headers else ()
    honest = build_batch(
        [
            (b"k%d" % i if i % 2 else None, b"v" * size, headers, NOW + i)
            for i, size in enumerate(sizes)
        ]
    )
    body, count, lod = _mutate(honest[61:], n, n - 1, steps)
    if codec is not Compression.NONE:
        body = compress(codec, body)  # a valid compression of the lying records
    data = batch(body, count, last_offset_delta=lod, attributes=int(codec))
    try:
        produce(data)
    except InvalidRecordError:
        return
    decoded = decode_records(data)
    assert [r.offset for r in decoded] == list(range(count))
