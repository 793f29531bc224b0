"""Compression codecs: round trips, Kafka wire formats, and bounded decoding."""

from __future__ import annotations

import gzip
import struct
import time
from typing import Any

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.errors import (
    CorruptRecordError,
    InvalidRecordError,
    RecordBatchTooLargeError,
    UnsupportedCompressionError,
)
from sentinel.record.compression import (
    Compression,
    compress,
    compression_from_attributes,
    decompress,
)

CODECS = list(Compression)
COMPRESSED = [c for c in Compression if c != Compression.NONE]
MiB = 1024 * 1024


def test_codec_ids_are_kafkas() -> None:
    assert [(c.name, int(c)) for c in Compression] == [
        ("NONE", 0),
        ("GZIP", 1),
        ("SNAPPY", 2),
        ("LZ4", 3),
        ("ZSTD", 4),
    ]


@pytest.mark.parametrize("codec_id", [5, 6, 7])
def test_unknown_codec_ids_are_refused(codec_id: int) -> None:
    with pytest.raises(UnsupportedCompressionError):
        compression_from_attributes(0x18 | codec_id)


def test_attributes_codec_bits() -> None:
    assert compression_from_attributes(0x0B) == Compression.LZ4  # with the timestamp bit
    assert compression_from_attributes(0x30) == Compression.NONE  # control + transactional


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(CODECS), st.binary(max_size=100_000) | st.just(b"abc" * 40_000))
def test_round_trip(codec: Compression, data: bytes) -> None:
    packed = compress(codec, data)
    assert decompress(codec, packed, len(data)) == data
    assert decompress(codec, memoryview(packed), len(data) + 10) == data


@pytest.mark.parametrize("codec", COMPRESSED)
def test_output_exactly_at_the_limit_passes_one_over_is_refused(codec: Compression) -> None:
    data = bytes(range(256)) * 1000
    packed = compress(codec, data)
    assert decompress(codec, packed, len(data)) == data
    with pytest.raises(RecordBatchTooLargeError):
        decompress(codec, packed, len(data) - 1)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_zip_bomb_is_refused_quickly(codec: Compression) -> None:
    bomb = compress(codec, bytes(64 * MiB))
    start = time.perf_counter()
    with pytest.raises(RecordBatchTooLargeError):
        decompress(codec, bomb, 1 * MiB)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("codec", COMPRESSED)
def test_highly_compressible_data_grows_the_buffer(codec: Compression) -> None:
    data = bytes(8 * MiB)
    assert decompress(codec, compress(codec, data), 16 * MiB) == data


@pytest.mark.parametrize("codec", COMPRESSED)
@pytest.mark.parametrize("cut", [1, 7, 40])
def test_truncated_input_is_corrupt(codec: Compression, cut: int) -> None:
    packed = compress(codec, bytes(range(256)) * 100)
    with pytest.raises(CorruptRecordError):
        decompress(codec, packed[:-cut], 1 * MiB)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(COMPRESSED), st.binary(max_size=300), st.data())
def test_garbage_and_mutations_raise_only_record_errors(
    codec: Compression, garbage: bytes, data: st.DataObject
) -> None:
    packed = bytearray(compress(codec, b"some payload " * 30))
    for _ in range(data.draw(st.integers(1, 4))):
        packed[data.draw(st.integers(0, len(packed) - 1))] = data.draw(st.integers(0, 255))
    for candidate in (garbage, bytes(packed)):
        try:
            out = decompress(codec, candidate, 64 * 1024)
        except InvalidRecordError:
            continue
        assert len(out) <= 64 * 1024


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(UnsupportedCompressionError):
        compress(7, b"x")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedCompressionError):
        decompress(7, b"x", 10)  # type: ignore[arg-type]


# --- Kafka wire formats ---------------------------------------------------------------


def test_snappy_is_xerial_framed() -> None:
    data = bytes(range(256)) * 300  # 76800 bytes: three 32 KiB blocks
    packed = compress(Compression.SNAPPY, data)
    assert packed[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    pos, blocks = 16, []
    while pos < len(packed):
        (n,) = struct.unpack_from(">i", packed, pos)
        blocks.append(bytes(cramjam.snappy.decompress_raw(packed[pos + 4 : pos + 4 + n])))
        pos += 4 + n
    assert [len(b) for b in blocks] == [32768, 32768, 11264]
    assert b"".join(blocks) == data


def test_raw_snappy_is_accepted() -> None:
    data = b"librdkafka writes raw snappy " * 100
    raw = bytes(cramjam.snappy.compress_raw(data))
    assert decompress(Compression.SNAPPY, raw, len(data)) == data
    with pytest.raises(RecordBatchTooLargeError):
        decompress(Compression.SNAPPY, raw, len(data) - 1)


def test_xerial_block_overrunning_the_input_is_corrupt() -> None:
    packed = bytearray(compress(Compression.SNAPPY, b"x" * 1000))
    struct.pack_into(">i", packed, 16, 1 << 30)
    with pytest.raises(CorruptRecordError):
        decompress(Compression.SNAPPY, packed, 1 * MiB)


def test_gzip_is_rfc1952_and_several_members_are_read() -> None:
    data = b"java writes gzip " * 50
    assert gzip.decompress(compress(Compression.GZIP, data)) == data
    two = gzip.compress(data) + gzip.compress(data[::-1])
    assert decompress(Compression.GZIP, two, 2 * len(data)) == data + data[::-1]
    with pytest.raises(RecordBatchTooLargeError):
        decompress(Compression.GZIP, two, 2 * len(data) - 1)


def test_lz4_is_a_frame_with_independent_blocks() -> None:
    packed = compress(Compression.LZ4, b"x" * 1000)
    assert packed[:4] == b"\x04\x22\x4d\x18"
    assert packed[4] & 0x20  # FLG: block independence, which Kafka's Java reader needs


def test_declared_content_size_over_the_limit_is_refused_before_decoding() -> None:
    data = bytes(10 * MiB)
    packed = bytes(cramjam.zstd.compress(data))  # one-shot: declares its content size
    with pytest.raises(RecordBatchTooLargeError):
        decompress(Compression.ZSTD, packed, 1 * MiB)


aiokafka_codec: Any
try:
    import aiokafka.codec as aiokafka_codec
except ImportError:  # the cross-check needs the dev dependency
    aiokafka_codec = None


@pytest.mark.skipif(aiokafka_codec is None, reason="aiokafka is not installed")
@pytest.mark.parametrize(
    ("codec", "encode", "decode"),
    [
        (Compression.GZIP, "gzip_encode", "gzip_decode"),
        (Compression.SNAPPY, "snappy_encode", "snappy_decode"),
        (Compression.LZ4, "lz4_encode", "lz4_decode"),
        (Compression.ZSTD, "zstd_encode", "zstd_decode"),
    ],
)
def test_interoperates_with_aiokafka(codec: Compression, encode: str, decode: str) -> None:
    data = bytes(range(256)) * 500
    theirs = getattr(aiokafka_codec, encode)(data)
    assert decompress(codec, theirs, len(data)) == data
    assert bytes(getattr(aiokafka_codec, decode)(compress(codec, data))) == data


@pytest.mark.parametrize("size", [0, 100, 300, 70_000, 5 * MiB])
def test_zstd_declared_sizes_of_every_field_width(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    packed = bytes(cramjam.zstd.compress(data))
    assert decompress(Compression.ZSTD, packed, size) == data
    if size:
        with pytest.raises(RecordBatchTooLargeError):
            decompress(Compression.ZSTD, packed, size - 1)


def test_streamed_zstd_without_a_declared_size() -> None:
    # Java's ZstdOutputStream streams: its frames do not declare the content size.
    streamer = cramjam.zstd.Compressor()
    streamer.compress(bytes(8 * MiB))
    packed = bytes(streamer.finish())
    assert not packed[4] & 0xC0 and not packed[4] & 0x20  # no FCS field
    assert decompress(Compression.ZSTD, packed, 8 * MiB) == bytes(8 * MiB)
    with pytest.raises(RecordBatchTooLargeError):
        decompress(Compression.ZSTD, packed, 8 * MiB - 1)
