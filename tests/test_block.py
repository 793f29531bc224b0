"""Data blocks and the index block: golden bytes, round trips, corruption."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, InvalidArgumentError
from sentinel.storage.block import (
    BlockBuilder,
    IndexBlock,
    decode_block,
    encode_block,
)
from sentinel.storage.entry import ABSENT, Entry

sorted_entries = st.dictionaries(
    st.binary(max_size=10),
    st.none() | st.binary(max_size=64),
    min_size=1,
    max_size=60,
).map(lambda d: sorted(d.items()))


def decode(data: bytes) -> list[Entry]:
    block = decode_block(data, 0, len(data), "t.sst", "block@0")
    return list(zip(block.keys, block.values, strict=True))


# -- golden bytes, built independently with struct


def test_golden_bytes_with_prefix() -> None:
    data = encode_block([(b"ab1", b"x"), (b"ab2", None)], prefix=True)
    body = b"ab" + b"1" + b"2" + b"x"  # prefix, suffixes, values
    body += struct.pack("<5I", 2, 3, 4, 5, 5)  # bounds: P, key ends, value ends (= D)
    body += bytes([0, 1])  # kinds: put, tombstone
    body += struct.pack("<I", 2)
    assert data == body + struct.pack("<I", crc32c(body))


def test_golden_bytes_without_prefix() -> None:
    data = encode_block([(b"ab1", b"xy"), (b"ab2", b"")], prefix=False)
    body = b"ab1ab2xy" + struct.pack("<5I", 0, 3, 6, 8, 8) + bytes(2) + struct.pack("<I", 2)
    assert data == body + struct.pack("<I", crc32c(body))


def test_golden_index_bytes() -> None:
    data = IndexBlock([b"a", b"c"], [b"b", b"dd"], [0, 40], [40, 7]).encode()
    body = b"abcdd" + struct.pack("<5I", 0, 1, 2, 3, 5)
    body += struct.pack("<2Q", 0, 40) + struct.pack("<2I", 40, 7) + struct.pack("<I", 2)
    assert data == body + struct.pack("<I", crc32c(body))


# -- round trips


@settings(max_examples=150, deadline=None)
@given(sorted_entries, st.booleans())
def test_round_trip(entries: list[Entry], prefix: bool) -> None:
    assert decode(encode_block(entries, prefix)) == entries


@settings(max_examples=80, deadline=None)
@given(sorted_entries, st.booleans())
def test_estimated_size_is_exact_and_grows(entries: list[Entry], prefix: bool) -> None:
    builder = BlockBuilder(prefix)
    assert builder.estimated_size == 0
    previous = 0
    for key, value in entries:
        builder.add(key, value)
        assert builder.estimated_size > previous
        previous = builder.estimated_size
    out = bytearray()
    assert builder.finish_into(out) == len(out) == previous


@settings(max_examples=50, deadline=None)
@given(sorted_entries, st.binary(max_size=40), st.binary(max_size=40))
def test_decode_inside_a_larger_buffer(entries: list[Entry], before: bytes, after: bytes) -> None:
    data = encode_block(entries)
    block = decode_block(before + data + after, len(before), len(data), "t.sst", "block@0")
    assert list(zip(block.keys, block.values, strict=True)) == entries


def test_offset_keys_share_a_prefix() -> None:
    entries: list[Entry] = [(i.to_bytes(8, "big"), b"v") for i in range(1000, 1040)]
    with_prefix = encode_block(entries, prefix=True)
    without = encode_block(entries)
    assert len(without) - len(with_prefix) == 39 * 6  # 6 shared bytes stored once
    assert decode(with_prefix) == entries


def test_single_entry_and_empty_key_and_value() -> None:
    for entries in ([(b"", b"")], [(b"", None)], [(b"k", b"")], [(b"", b"x"), (b"a", None)]):
        assert decode(encode_block(entries)) == entries


def test_empty_block_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        BlockBuilder().finish_into(bytearray())


def test_builder_resets_after_finish() -> None:
    builder = BlockBuilder()
    out = bytearray()
    builder.add(b"a", b"1")
    first = builder.finish_into(out)
    builder.add(b"b", None)
    second = builder.finish_into(out)
    assert len(out) == first + second
    assert decode(bytes(out[:first])) == [(b"a", b"1")]
    assert decode(bytes(out[first:])) == [(b"b", None)]


def test_block_lookups() -> None:
    entries: list[Entry] = [(b"b", b"1"), (b"d", None), (b"f", b"3")]
    data = encode_block(entries)
    block = decode_block(data, 0, len(data), "t.sst", "block@0")
    assert block.get(b"b") == b"1"
    assert block.get(b"d") is None
    assert block.get(b"c") is ABSENT
    assert block.get(b"g") is ABSENT
    assert block.floor(b"a") is None
    assert block.floor(b"b") == (b"b", b"1")
    assert block.floor(b"b", strict=True) is None
    assert block.floor(b"e") == (b"d", None)
    assert block.floor(b"z", strict=True) == (b"f", b"3")
    assert list(block.entries(b"c", b"f")) == [(b"d", None)]
    assert list(block.entries()) == entries


# -- corruption


def test_every_flipped_byte_is_detected() -> None:
    data = encode_block([(b"key1", b"value"), (b"key2", None), (b"key3", b"")])
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        with pytest.raises(CorruptionError) as info:
            decode_block(bytes(bad), 0, len(bad), "t.sst", "block@123")
        assert info.value.path == "t.sst"
        assert info.value.where == "block@123"


def test_truncated_block_is_detected() -> None:
    data = encode_block([(b"key1", b"value"), (b"key2", b"v")])
    for size in range(len(data)):
        with pytest.raises(CorruptionError):
            decode_block(data[:size], 0, size, "t.sst", "block@0")
        # the index claims the full size but the buffer is short
        with pytest.raises(CorruptionError):
            decode_block(data[:size], 0, len(data), "t.sst", "block@0")


def test_unknown_kind_with_valid_crc_is_refused() -> None:
    data = bytearray(encode_block([(b"a", b"1")]))
    kind_at = len(data) - 9  # kinds sit just before n and the crc
    data[kind_at] = 7
    data[-4:] = struct.pack("<I", crc32c(data[:-4]))
    with pytest.raises(CorruptionError, match="kind"):
        decode_block(bytes(data), 0, len(data), "t.sst", "block@0")


# -- index block


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=9), st.binary(max_size=9)), min_size=1, max_size=30))
def test_index_round_trip(keys: list[tuple[bytes, bytes]]) -> None:
    offsets = [17 * i for i in range(len(keys))]
    sizes = [17] * len(keys)
    index = IndexBlock([k[0] for k in keys], [k[1] for k in keys], offsets, sizes)
    assert IndexBlock.decode(index.encode(), "t.sst") == index


def test_index_flipped_and_truncated() -> None:
    data = IndexBlock([b"a", b"c"], [b"b", b"d"], [0, 30], [30, 30]).encode()
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(CorruptionError) as info:
            IndexBlock.decode(bytes(bad), "t.sst")
        assert info.value.where == "index"
    for size in range(len(data)):
        with pytest.raises(CorruptionError):
            IndexBlock.decode(data[:size], "t.sst")


def test_index_needs_matching_lists() -> None:
    with pytest.raises(InvalidArgumentError):
        IndexBlock([b"a"], [b"b"], [0, 1], [1]).encode()
    with pytest.raises(InvalidArgumentError):
        IndexBlock([], [], [], []).encode()
