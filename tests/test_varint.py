"""Kafka varints: golden encodings, round trips, and bounded decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.codec.varint import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    ZIGZAG_SMALL,
    ZIGZAG_SMALL_LIMIT,
    decode_uvarint,
    decode_varint,
    decode_varlong,
    encode_uvarint,
    encode_varint,
    encode_varlong,
    size_of_uvarint,
    size_of_varint,
    size_of_varlong,
)
from sentinel.errors import DecodeError, InvalidArgumentError, PeerError

# Zig-zag varint encodings, worked by hand from the protobuf/Kafka definition.
VARINT_GOLDEN = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (-2, "03"),
    (63, "7e"),
    (-64, "7f"),
    (64, "8001"),
    (300, "d804"),  # zigzag 600 = 0b100_1011000
    (INT32_MAX, "feffffff0f"),
    (INT32_MIN, "ffffffff0f"),
]

VARLONG_GOLDEN = [
    *VARINT_GOLDEN,
    (INT64_MAX, "feffffffffffffffff01"),
    (INT64_MIN, "ffffffffffffffffff01"),
    (1 << 40, "808080808040"),
]

UVARINT_GOLDEN = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (300, "ac02"),
    ((1 << 32) - 1, "ffffffff0f"),
]


@pytest.mark.parametrize(("value", "hexed"), VARINT_GOLDEN)
def test_varint_golden(value: int, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert encode_varint(value) == data
    assert decode_varint(data) == (value, len(data))
    assert size_of_varint(value) == len(data)


@pytest.mark.parametrize(("value", "hexed"), VARLONG_GOLDEN)
def test_varlong_golden(value: int, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert encode_varlong(value) == data
    assert decode_varlong(data) == (value, len(data))
    assert size_of_varlong(value) == len(data)


@pytest.mark.parametrize(("value", "hexed"), UVARINT_GOLDEN)
def test_uvarint_golden(value: int, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert encode_uvarint(value) == data
    assert decode_uvarint(data) == (value, len(data))
    assert size_of_uvarint(value) == len(data)


@given(st.integers(INT32_MIN, INT32_MAX), st.binary(max_size=4), st.binary(max_size=4))
def test_varint_round_trip_in_context(value: int, before: bytes, after: bytes) -> None:
    data = before + encode_varint(value) + after
    assert decode_varint(memoryview(data), len(before)) == (value, len(data) - len(after))


@given(st.integers(INT64_MIN, INT64_MAX))
def test_varlong_round_trip(value: int) -> None:
    data = encode_varlong(value)
    assert len(data) == size_of_varlong(value) <= 10
    assert decode_varlong(bytearray(data)) == (value, len(data))


@given(st.integers(0, (1 << 32) - 1))
def test_uvarint_round_trip(value: int) -> None:
    data = encode_uvarint(value)
    assert decode_uvarint(data) == (value, len(data))


def test_small_table_matches_encoder() -> None:
    assert len(ZIGZAG_SMALL) == ZIGZAG_SMALL_LIMIT
    assert all(ZIGZAG_SMALL[n] == encode_varint(n) for n in range(ZIGZAG_SMALL_LIMIT))


@pytest.mark.parametrize(
    ("encode", "value"),
    [
        (encode_varint, INT32_MAX + 1),
        (encode_varint, INT32_MIN - 1),
        (encode_varlong, INT64_MAX + 1),
        (encode_varlong, INT64_MIN - 1),
        (encode_uvarint, -1),
        (encode_uvarint, 1 << 32),
    ],
)
def test_encode_out_of_range_is_the_callers_error(encode: object, value: int) -> None:
    assert callable(encode)
    with pytest.raises(InvalidArgumentError):
        encode(value)


@pytest.mark.parametrize(
    ("decode", "hexed"),
    [
        (decode_varint, ""),  # nothing
        (decode_varint, "80"),  # continuation, then the end
        (decode_varint, "ffffffff"),  # four continuations, then the end
        (decode_varint, "ffffffff8f01"),  # six bytes: longer than 5
        (decode_varint, "ffffffff1f"),  # 5 bytes but 33 bits
        (decode_uvarint, "8080808080"),  # 5 continuation bytes
        (decode_varlong, "ffffffffffffffffff03"),  # 10 bytes but 65 bits
        (decode_varlong, "ffffffffffffffffffff01"),  # 11 bytes
    ],
)
def test_bad_varints_are_the_peers_error(decode: object, hexed: str) -> None:
    assert callable(decode)
    with pytest.raises(DecodeError) as info:
        decode(bytes.fromhex(hexed))
    assert isinstance(info.value, PeerError)


@given(st.binary(max_size=12), st.integers(0, 12))
def test_decoding_any_bytes_returns_or_raises_decode_error(data: bytes, pos: int) -> None:
    for decode in (decode_varint, decode_varlong, decode_uvarint):
        try:
            _, end = decode(data, pos)
        except DecodeError:
            continue
        assert pos < end <= len(data)
