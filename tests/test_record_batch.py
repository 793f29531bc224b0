"""RecordBatch v2: golden bytes, round trips, validation, splitting, stamping, fuzzing.

Expected bytes are built here with ``struct`` and hand-written varints, independently
of the code under test; aiokafka's record builder and reader are the second opinion.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from typing import Any

import crc32c as crc32c_lib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.errors import (
    CallerError,
    CorruptRecordError,
    InvalidArgumentError,
    InvalidRecordError,
    RecordBatchTooLargeError,
    StateError,
    UnsupportedCompressionError,
)
from sentinel.record import (
    BatchBuilder,
    BatchHeader,
    Compression,
    Record,
    RecordInput,
    TimestampType,
    build_batch,
    decode_records,
    iter_batches,
    parse_header,
    stamp_batch,
    validate_batch,
)

HEADER = struct.Struct(">qiibIhiqqqhii")
FIELDS = [
    "base_offset",
    "batch_length",
    "leader_epoch",
    "magic",
    "crc",
    "attributes",
    "last_offset_delta",
    "base_timestamp",
    "max_timestamp",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "record_count",
]
T0 = 1_700_000_000_000
MiB = 1024 * 1024
LIMIT = 1 * MiB


def crc(data: bytes | bytearray | memoryview) -> int:
    return int(crc32c_lib.crc32c(data))


def assemble(records: bytes, **fields: int) -> bytes:
    """A batch around ``records`` (already encoded) with a correct length and CRC."""
    values = {
        "base_offset": 0,
        "leader_epoch": -1,
        "magic": 2,
        "attributes": 0,
        "last_offset_delta": 0,
        "base_timestamp": T0,
        "max_timestamp": T0,
        "producer_id": -1,
        "producer_epoch": -1,
        "base_sequence": -1,
        "record_count": 1,
        **fields,
    }
    values["batch_length"] = 49 + len(records)
    values["crc"] = 0
    raw = bytearray(HEADER.pack(*(values[f] for f in FIELDS)) + records)
    struct.pack_into(">I", raw, 17, crc(raw[21:]))
    return bytes(raw)


def rewrite(batch: bytes, **fields: int) -> bytes:
    """``batch`` with header fields replaced and the CRC recomputed."""
    values = dict(zip(FIELDS, HEADER.unpack_from(batch), strict=True))
    values.update(fields)
    raw = bytearray(batch)
    HEADER.pack_into(raw, 0, *(values[f] for f in FIELDS))
    struct.pack_into(">I", raw, 17, crc(raw[21:]))
    return bytes(raw)


def with_fresh_crc(batch: bytes | bytearray) -> bytes:
    raw = bytearray(batch)
    if len(raw) >= 21:
        struct.pack_into(">I", raw, 17, crc(raw[21:]))
    return bytes(raw)


def test_crc32c_library_is_castagnoli() -> None:
    assert crc(b"123456789") == 0xE3069283


# --- golden bytes -------------------------------------------------------------------

# Three records, varints zig-zag encoded by hand:
#   0: key b"k", value b"hello", header ("h1", b"v1"), timestamp T0      (delta 0)
#   1: key None, value None, header ("n", None),       timestamp T0 + 5  (delta 5 -> 0x0a)
#   2: key b"",  value b"",  no headers,               timestamp T0 - 3  (delta -3 -> 0x05)
REC0 = b"\x24" + b"\x00\x00\x00" + b"\x02k" + b"\x0ahello" + b"\x02" + b"\x04h1" + b"\x04v1"
REC1 = b"\x12" + b"\x00\x0a\x02" + b"\x01" + b"\x01" + b"\x02" + b"\x02n" + b"\x01"
REC2 = b"\x0c" + b"\x00\x05\x04" + b"\x00" + b"\x00" + b"\x00"
GOLDEN_RECORDS: list[RecordInput] = [
    (b"k", b"hello", [("h1", b"v1")], T0),
    (None, None, [("n", None)], T0 + 5),
    (b"", b"", [], T0 - 3),
]


def test_golden_record_lengths() -> None:
    assert [len(r) - 1 for r in (REC0, REC1, REC2)] == [0x24 // 2, 0x12 // 2, 0x0C // 2]


def test_build_matches_golden_bytes() -> None:
    expected = assemble(
        REC0 + REC1 + REC2,
        base_offset=42,
        leader_epoch=7,
        last_offset_delta=2,
        max_timestamp=T0 + 5,
        producer_id=1234,
        producer_epoch=3,
        base_sequence=99,
        record_count=3,
    )
    built = build_batch(
        GOLDEN_RECORDS,
        base_offset=42,
        leader_epoch=7,
        producer_id=1234,
        producer_epoch=3,
        base_sequence=99,
    )
    assert built == expected


def test_decode_golden_bytes() -> None:
    batch = assemble(REC0 + REC1 + REC2, base_offset=100, last_offset_delta=2, record_count=3)
    assert decode_records(batch) == [
        Record(100, T0, b"k", b"hello", (("h1", b"v1"),)),
        Record(101, T0 + 5, None, None, (("n", None),)),
        Record(102, T0 - 3, b"", b"", ()),
    ]


def test_header_fields_and_properties() -> None:
    batch = build_batch(
        GOLDEN_RECORDS,
        base_offset=10,
        compression=Compression.LZ4,
        timestamp_type=TimestampType.LOG_APPEND_TIME,
        is_transactional=True,
        producer_id=5,
        producer_epoch=1,
        base_sequence=0,
    )
    header = validate_batch(batch, max_batch_bytes=LIMIT)
    assert header == parse_header(batch)
    assert isinstance(header, BatchHeader)
    assert (header.base_offset, header.record_count, header.last_offset_delta) == (10, 3, 2)
    assert (header.last_offset, header.next_offset, header.size) == (12, 13, len(batch))
    assert header.compression == Compression.LZ4
    assert header.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert header.is_transactional and not header.is_control and header.has_producer_id
    assert not header.has_delete_horizon
    assert (header.base_timestamp, header.max_timestamp) == (T0, T0 + 5)
    assert header.attributes == 0x03 | 0x08 | 0x10


# --- builder ------------------------------------------------------------------------


def test_builder_counts_and_sizes() -> None:
    builder = BatchBuilder()
    assert builder.size_estimate == 61
    for i, (key, value, headers, ts) in enumerate(GOLDEN_RECORDS):
        assert builder.append(key, value, headers, ts) == i
    assert builder.count == 3
    batch = builder.build()
    assert builder.size_estimate == len(batch) == 61 + len(REC0 + REC1 + REC2)
    assert builder.build() == batch


def test_empty_builder_refuses_to_build() -> None:
    with pytest.raises(StateError):
        BatchBuilder().build()


def test_unknown_compression_is_refused_by_the_builder() -> None:
    with pytest.raises(UnsupportedCompressionError):
        BatchBuilder(compression=6)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [{"producer_epoch": 2**15}, {"base_offset": 2**63}, {"leader_epoch": -(2**31) - 1}],
)
def test_out_of_range_header_fields_are_the_callers_error(options: dict[str, int]) -> None:
    with pytest.raises(InvalidArgumentError):
        build_batch(GOLDEN_RECORDS, **options)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        build_batch([(None, None, [], 2**63)])


def test_large_fields_and_many_records_take_the_slow_varint_path() -> None:
    big = bytes(range(256)) * 40  # 10240 bytes: past the small-varint table
    records: list[RecordInput] = [(big, big, [("k" * 5000, big)], T0 + 10**12)]
    records += [(None, b"v", [], T0 - i) for i in range(5000)]
    batch = build_batch(records)
    decoded = decode_records(batch)
    assert len(decoded) == 5001
    assert decoded[0] == Record(0, T0 + 10**12, big, big, (("k" * 5000, big),))
    assert decoded[-1] == Record(5000, T0 - 4999, None, b"v", ())


# --- round trips --------------------------------------------------------------------

headers_st = st.lists(
    st.tuples(st.text(max_size=6), st.none() | st.binary(max_size=6)), max_size=3
).map(tuple)
record_st = st.tuples(
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=150),
    headers_st,
    st.integers(-(10**6), 10**9).map(lambda d: T0 + d),
)
records_st = st.lists(record_st, min_size=1, max_size=25)


def expected_records(records: Sequence[RecordInput], base_offset: int) -> list[Record]:
    return [
        Record(base_offset + i, ts, key, value, tuple(headers))
        for i, (key, value, headers, ts) in enumerate(records)
    ]


@settings(max_examples=60, deadline=None)
@given(
    records_st,
    st.sampled_from(list(Compression)),
    st.integers(0, 2**62),
    st.integers(-1, 2**40),
    st.integers(-1, 2**15 - 1),
    st.integers(-1, 2**31 - 1),
)
def test_round_trip(
    records: list[RecordInput],
    codec: Compression,
    base_offset: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
) -> None:
    batch = build_batch(
        records,
        compression=codec,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence if producer_id < 0 else max(base_sequence, 0),
    )
    header = validate_batch(batch, max_batch_bytes=LIMIT)
    assert header.compression == codec
    assert header.max_timestamp == max(r[3] for r in records)
    assert header.base_timestamp == records[0][3]
    assert (header.producer_id, header.producer_epoch) == (producer_id, producer_epoch)
    assert decode_records(batch) == expected_records(records, base_offset)
    assert decode_records(memoryview(bytearray(batch))) == expected_records(records, base_offset)


def test_control_and_transactional_flags_are_preserved() -> None:
    marker_key = struct.pack(">hh", 0, 1)  # version 0, COMMIT
    marker_value = struct.pack(">hi", 0, 17)  # version 0, coordinator epoch
    batch = build_batch(
        [(marker_key, marker_value, [], T0)],
        is_control=True,
        is_transactional=True,
        producer_id=9,
        producer_epoch=2,
        base_sequence=-1,
    )
    header = validate_batch(batch, max_batch_bytes=LIMIT, from_producer=False)
    assert header.is_control and header.is_transactional
    assert decode_records(batch) == [Record(0, T0, marker_key, marker_value, ())]
    with pytest.raises(InvalidRecordError, match="control"):
        validate_batch(batch, max_batch_bytes=LIMIT)


# --- validation ---------------------------------------------------------------------


def sample_batch(codec: Compression = Compression.NONE) -> bytes:
    return build_batch(GOLDEN_RECORDS, compression=codec)


@pytest.mark.parametrize("codec", list(Compression))
def test_every_flipped_byte_under_the_crc_is_caught(codec: Compression) -> None:
    batch = sample_batch(codec)
    for i in range(17, len(batch)):
        raw = bytearray(batch)
        raw[i] ^= 0x01
        with pytest.raises(CorruptRecordError, match="CRC"):
            validate_batch(raw, max_batch_bytes=LIMIT)


def test_flips_outside_the_crc() -> None:
    batch = sample_batch()
    for i in range(8, 12):  # batchLength
        raw = bytearray(batch)
        raw[i] ^= 0x01
        with pytest.raises(CorruptRecordError, match="length"):
            validate_batch(raw, max_batch_bytes=LIMIT)
    raw = bytearray(batch)
    raw[16] = 1  # magic
    with pytest.raises(InvalidRecordError, match="magic 1"):
        validate_batch(raw, max_batch_bytes=LIMIT)
    raw = bytearray(batch)
    raw[3] ^= 0xFF  # base offset and leader epoch are the leader's to stamp
    raw[13] ^= 0xFF
    validate_batch(raw, max_batch_bytes=LIMIT)


def test_wrong_magic_is_invalid_not_corrupt() -> None:
    v1_message = struct.pack(">qiIbbq", 0, 22, 0, 1, 0, T0) + b"\xff\xff\xff\xff" * 2
    with pytest.raises(InvalidRecordError) as info:
        validate_batch(v1_message, max_batch_bytes=LIMIT)
    assert not isinstance(info.value, CorruptRecordError)
    assert isinstance(info.value, CallerError)


@pytest.mark.parametrize("size", [0, 1, 16, 17, 60])
def test_short_buffers_are_corrupt(size: int) -> None:
    with pytest.raises(CorruptRecordError):
        validate_batch(sample_batch()[:size], max_batch_bytes=LIMIT)


def test_extra_or_missing_bytes_are_corrupt() -> None:
    batch = sample_batch()
    for candidate in (batch + b"\x00", batch[:-1]):
        with pytest.raises(CorruptRecordError, match="length field"):
            validate_batch(candidate, max_batch_bytes=LIMIT)


def test_size_limit() -> None:
    batch = sample_batch()
    assert validate_batch(batch, max_batch_bytes=len(batch)).size == len(batch)
    with pytest.raises(RecordBatchTooLargeError):
        validate_batch(batch, max_batch_bytes=len(batch) - 1)


def test_unknown_codec_with_a_good_crc() -> None:
    with pytest.raises(UnsupportedCompressionError):
        validate_batch(rewrite(sample_batch(), attributes=5), max_batch_bytes=LIMIT)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"record_count": -1}, "record count"),
        ({"record_count": 4}, "record count"),  # more than lastOffsetDelta + 1
        ({"record_count": 1000, "last_offset_delta": 999}, "cannot fit"),
    ],
)
def test_implausible_counts_are_corrupt(fields: dict[str, int], message: str) -> None:
    with pytest.raises(CorruptRecordError, match=message):
        validate_batch(
            rewrite(sample_batch(), **fields), max_batch_bytes=LIMIT, from_producer=False
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"last_offset_delta": 5}, "lastOffsetDelta"),
        ({"producer_id": 7, "base_sequence": -1}, "base sequence"),
    ],
)
def test_producer_rules(fields: dict[str, int], message: str) -> None:
    batch = rewrite(sample_batch(), **fields)
    with pytest.raises(InvalidRecordError, match=message):
        validate_batch(batch, max_batch_bytes=LIMIT)
    validate_batch(batch, max_batch_bytes=LIMIT, from_producer=False)


def test_compacted_and_empty_batches_pass_when_not_from_a_producer() -> None:
    compacted = assemble(
        REC0 + REC2[:1] + b"\x00\x05\x08\x00\x00\x00", last_offset_delta=9, record_count=2
    )
    validate_batch(compacted, max_batch_bytes=LIMIT, from_producer=False)
    assert [r.offset for r in decode_records(compacted)] == [0, 4]
    empty = assemble(b"", last_offset_delta=4, record_count=0)
    assert validate_batch(empty, max_batch_bytes=LIMIT, from_producer=False).next_offset == 5
    assert decode_records(empty) == []
    with pytest.raises(InvalidRecordError, match="at least one"):
        validate_batch(empty, max_batch_bytes=LIMIT)


# --- iter_batches -------------------------------------------------------------------


def test_iter_batches_splits_without_copying() -> None:
    batches = [sample_batch(), sample_batch(Compression.ZSTD), build_batch([(None, b"x", [], T0)])]
    buffer = bytearray(b"".join(batches))
    views = list(iter_batches(buffer))
    assert [bytes(v) for v in views] == batches
    assert all(v.obj is buffer for v in views)
    assert list(iter_batches(b"")) == []


def test_iter_batches_partial_tail() -> None:
    first, last = sample_batch(), sample_batch(Compression.GZIP)
    for cut in range(1, len(last)):
        buffer = first + last[:cut]
        assert [bytes(v) for v in iter_batches(buffer, allow_partial_tail=True)] == [first]
        with pytest.raises(CorruptRecordError, match=r"partial|overruns"):
            list(iter_batches(buffer))


def test_iter_batches_bad_length_is_corrupt_even_in_the_tail() -> None:
    buffer = sample_batch() + struct.pack(">qi", 0, 48)
    with pytest.raises(CorruptRecordError, match="below the minimum"):
        list(iter_batches(buffer, allow_partial_tail=True))


# --- stamp_batch --------------------------------------------------------------------


def test_stamp_keeps_the_crc() -> None:
    batch = bytearray(sample_batch())
    crc_before = bytes(batch[17:21])
    stamp_batch(batch, 1000, 12)
    assert bytes(batch[17:21]) == crc_before
    header = validate_batch(batch, max_batch_bytes=LIMIT)
    assert (header.base_offset, header.leader_epoch) == (1000, 12)
    assert [r.offset for r in decode_records(batch)] == [1000, 1001, 1002]
    assert header.timestamp_type == TimestampType.CREATE_TIME


@pytest.mark.parametrize("codec", list(Compression))
def test_stamp_log_append_time_in_a_request_buffer(codec: Compression) -> None:
    batch = sample_batch(codec)
    request = bytearray(b"head" + batch + b"tail")
    view = memoryview(request)[4 : 4 + len(batch)]
    stamp_batch(view, 50, 3, log_append_time_ms=T0 + 99)
    assert request[:4] == b"head" and request[-4:] == b"tail"
    header = validate_batch(view, max_batch_bytes=LIMIT)
    assert header.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert (header.max_timestamp, header.base_timestamp) == (T0 + 99, T0)
    assert header.compression == codec
    records = decode_records(view)
    assert [(r.offset, r.timestamp) for r in records] == [
        (50, T0 + 99),
        (51, T0 + 99),
        (52, T0 + 99),
    ]


def test_stamp_refuses_read_only_and_short_buffers() -> None:
    with pytest.raises(InvalidArgumentError):
        stamp_batch(memoryview(sample_batch()), 0, 0)
    with pytest.raises(InvalidArgumentError):
        stamp_batch(bytearray(60), 0, 0)


# --- decode bounds --------------------------------------------------------------------


def test_decompressed_size_is_bounded() -> None:
    batch = build_batch([(None, bytes(4 * MiB), [], T0)], compression=Compression.ZSTD)
    assert len(batch) < 2000
    with pytest.raises(RecordBatchTooLargeError):
        decode_records(batch, max_records_bytes=1 * MiB)
    assert decode_records(batch, max_records_bytes=5 * MiB)[0].value == bytes(4 * MiB)


def test_record_count_is_bounded_before_decompressing() -> None:
    batch = build_batch([(None, None, [], T0)] * 1000, compression=Compression.ZSTD)
    assert len(decode_records(batch, max_records=1000)) == 1000
    with pytest.raises(RecordBatchTooLargeError, match="1000 records"):
        decode_records(batch, max_records=999)


@pytest.mark.parametrize(
    ("records", "count", "message"),
    [
        (b"\x0e\x00\x00\x00\x0a" + b"abc" + b"\x01\x00", 1, "key of 5 bytes"),
        (b"\x0c\x00\x00\x00\x09" + b"\x01\x00", 1, "key length -5"),
        (b"\x0c\x00\x00\x00\x01" + b"\x07" + b"\x00", 1, "value length -4"),
        (b"\x0e\x00\x00\x00\x01\x01\x00" + b"\x00", 1, "declared 7 bytes"),
        (b"\x0a\x00\x00\x00\x01\x01\x00", 1, "record length 5"),
        (b"\x0c\x00\x00\x00\x01\x01\x00" + b"\x00\x00", 1, "2 bytes after"),
        (b"\x0c\x00\x00\x00\x01\x01\x00" * 2, 3, "cannot fit"),
        (b"\x12\x00\x00\x00\x01\x01\x02" + b"\x04\xff\xfe" + b"\x01", 1, "UTF-8"),
        (b"\x0c\x00\x00\x00\x01\x01\x7e", 1, "header count 63"),
        (b"\x10\x00\x00\x00\x01\x01\x02\x01\x00\x01", 1, "header key length -1"),
        (b"\x0c\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 1, "varint|record length"),
    ],
)
def test_malformed_records_with_a_good_crc(records: bytes, count: int, message: str) -> None:
    batch = assemble(records, record_count=count, last_offset_delta=count - 1)
    with pytest.raises(CorruptRecordError, match=message):
        decode_records(batch)


# --- fuzzing: only our typed errors escape -----------------------------------------


def only_record_errors(data: bytes | bytearray) -> None:
    """Every entry point either succeeds or raises an InvalidRecordError."""

    def split_and_decode() -> None:
        for view in iter_batches(data, allow_partial_tail=True):
            decode_records(view, max_records_bytes=LIMIT)

    calls = [
        split_and_decode,
        lambda: validate_batch(data, max_batch_bytes=LIMIT),
        lambda: decode_records(data, max_records_bytes=LIMIT),
        lambda: decode_records(data, max_records_bytes=LIMIT, verify_crc=False),
    ]
    for call in calls:
        with contextlib.suppress(InvalidRecordError):
            call()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    only_record_errors(data)
    only_record_errors(with_fresh_crc(data))


@st.composite
def mutated_batches(draw: st.DrawFn) -> bytes:
    records = draw(st.lists(record_st, min_size=1, max_size=5))
    codec = draw(st.sampled_from(list(Compression)))
    raw = bytearray(build_batch(records, compression=codec))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(raw) - 1)) if raw else 0
        if kind == "set" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 8))]
        else:
            del raw[at:]
    if len(raw) >= 12 and draw(st.booleans()):
        struct.pack_into(">i", raw, 8, len(raw) - 12)  # keep the framing consistent
    return with_fresh_crc(raw) if draw(st.booleans()) else bytes(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_batches())
def test_fuzz_mutated_batches(data: bytes) -> None:
    only_record_errors(data)


# --- aiokafka as the second opinion ------------------------------------------------

aiokafka_records: Any
try:
    import aiokafka.record.default_records as aiokafka_records
except ImportError:  # the cross-check needs the dev dependency
    aiokafka_records = None
needs_aiokafka = pytest.mark.skipif(aiokafka_records is None, reason="aiokafka is not installed")


def aiokafka_build(records: Sequence[RecordInput], codec: Compression) -> bytes:
    builder = aiokafka_records.DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=64 * MiB,
    )
    for i, (key, value, headers, ts) in enumerate(records):
        assert builder.append(i, timestamp=ts, key=key, value=value, headers=list(headers))
    return bytes(builder.build())


def aiokafka_read(batch: bytes) -> list[Record]:
    reader = aiokafka_records.DefaultRecordBatch(batch)
    assert reader.validate_crc()
    return [
        Record(r.offset, r.timestamp, r.key, r.value, tuple(tuple(h) for h in r.headers))
        for r in reader
    ]


@needs_aiokafka
def test_uncompressed_bytes_match_aiokafka_exactly() -> None:
    ours = bytearray(build_batch(GOLDEN_RECORDS))
    theirs = aiokafka_build(GOLDEN_RECORDS, Compression.NONE)
    stamp_batch(ours, 0, struct.unpack_from(">i", theirs, 12)[0])
    assert bytes(ours) == theirs


@needs_aiokafka
@settings(max_examples=40, deadline=None)
@given(records_st, st.sampled_from(list(Compression)))
def test_interoperates_with_aiokafka(records: list[RecordInput], codec: Compression) -> None:
    expected = expected_records(records, 0)
    theirs = aiokafka_build(records, codec)
    validate_batch(theirs, max_batch_bytes=LIMIT)
    assert decode_records(theirs) == expected
    assert aiokafka_read(build_batch(records, compression=codec)) == expected
