"""Compression codecs of a Kafka record batch (attributes bits 0-2), on ``cramjam``.

| id | codec  | wire format                                                       |
|----|--------|-------------------------------------------------------------------|
| 0  | none   | records as they are                                               |
| 1  | gzip   | RFC 1952 gzip (Java's ``GZIPOutputStream``); several members read |
| 2  | snappy | xerial-framed snappy, as the Java client writes it; raw snappy    |
|    |        | (as librdkafka writes it) is read too                             |
| 3  | lz4    | LZ4 frame format (Kafka >= 0.10, KIP-57), independent blocks      |
| 4  | zstd   | Zstandard frames (KIP-110)                                        |

The xerial snappy framing (snappy-java's ``SnappyOutputStream``)::

    +----------------+----------------+----------------+
    | "\\x82SNAPPY\\0"  | version i32=1  | compat i32=1   |   16-byte header
    +----------------+----------------+----------------+
    | length i32 BE  | raw snappy block of `length` bytes  |   repeated to the end
    +----------------+-------------------------------------+

Every decoder is bounded: ``decompress(codec, data, max_output)`` never holds more than
about ``max_output`` bytes of output (a zip bomb is refused, not inflated), and raises

- ``RecordBatchTooLargeError`` when the output would exceed ``max_output``,
- ``CorruptRecordError`` when the input does not decode,
- ``UnsupportedCompressionError`` for a codec id outside 0..4.

How the bound is kept: gzip decodes through ``zlib`` with ``max_length``; snappy
declares its output size up front (checked before decoding); lz4 and zstd decode into
a buffer of fixed size, sized from the frame's declared content size when present,
else guessed and grown up to ``max_output + 1``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import TypeAlias

import cramjam

from sentinel.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    RecordBatchTooLargeError,
    UnsupportedCompressionError,
)

__all__ = ["Compression", "compress", "compression_from_attributes", "decompress"]

Buffer: TypeAlias = bytes | bytearray | memoryview


class Compression(IntEnum):
    """The codec ids of a record batch's attributes, bits 0-2."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


CODEC_MASK = 0x07
_CODECS = tuple(Compression)


def compression_from_attributes(attributes: int) -> Compression:
    """The codec named by a batch's attributes; ``UnsupportedCompressionError`` if unknown."""
    codec = attributes & CODEC_MASK
    if codec >= len(_CODECS):
        raise UnsupportedCompressionError(f"unknown compression codec id {codec}")
    return _CODECS[codec]


# Kafka's defaults: gzip at Deflater's default (6), zstd at 3 (KIP-390).
_DEFAULT_GZIP_LEVEL = 6
_DEFAULT_ZSTD_LEVEL = 3

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024  # snappy-java's default block size
_I32 = struct.Struct(">i")

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_MIN_GUESS = 64 * 1024


def compress(codec: Compression, data: Buffer, *, level: int | None = None) -> bytes:
    """``data`` compressed with ``codec`` in the wire format Kafka clients read."""
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.GZIP:
        lvl = _DEFAULT_GZIP_LEVEL if level is None else level
        return bytes(cramjam.gzip.compress(data, level=lvl))
    if codec == Compression.SNAPPY:
        return _xerial_compress(data)
    if codec == Compression.LZ4:
        # Kafka's Java reader decodes each block on its own: no linked blocks.
        lz4 = cramjam.lz4.Compressor(level=level, content_checksum=False, block_linked=False)
        lz4.compress(data)
        return bytes(lz4.finish())
    if codec == Compression.ZSTD:
        lvl = _DEFAULT_ZSTD_LEVEL if level is None else level
        return bytes(cramjam.zstd.compress(data, level=lvl))
    raise UnsupportedCompressionError(f"unknown compression codec {codec!r}")


def decompress(codec: Compression, data: Buffer, max_output: int) -> bytes:
    """``data`` decompressed, refusing output longer than ``max_output`` bytes."""
    if max_output < 0:
        raise InvalidArgumentError(f"max_output must be >= 0, got {max_output}")
    if codec == Compression.NONE:
        if len(data) > max_output:
            raise RecordBatchTooLargeError(f"{len(data)} bytes exceed the limit {max_output}")
        return bytes(data)
    if codec == Compression.GZIP:
        return _gzip_decompress(data, max_output)
    if codec == Compression.SNAPPY:
        return _snappy_decompress(data, max_output)
    if codec == Compression.LZ4:
        hint = _lz4_content_size(data)
        return _decompress_growing(cramjam.lz4.decompress_into, "lz4", data, max_output, hint)
    if codec == Compression.ZSTD:
        hint = _zstd_content_size(data)
        return _decompress_growing(cramjam.zstd.decompress_into, "zstd", data, max_output, hint)
    raise UnsupportedCompressionError(f"unknown compression codec {codec!r}")


def _too_large(codec: str, max_output: int) -> RecordBatchTooLargeError:
    return RecordBatchTooLargeError(f"{codec} data decompresses to more than {max_output} bytes")


# --- gzip ---------------------------------------------------------------------------


def _gzip_decompress(data: Buffer, max_output: int) -> bytes:
    parts: list[bytes] = []
    remaining = max_output
    pending: Buffer = data
    try:
        while True:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out = d.decompress(pending, remaining + 1)
            if len(out) > remaining:
                raise _too_large("gzip", max_output)
            if not d.eof:
                raise CorruptRecordError("gzip data is truncated")
            parts.append(out)
            remaining -= len(out)
            pending = d.unused_data
            if not pending:
                break
    except zlib.error as exc:
        raise CorruptRecordError(f"gzip data does not decode: {exc}") from exc
    return parts[0] if len(parts) == 1 else b"".join(parts)


# --- snappy -------------------------------------------------------------------------


def _xerial_compress(data: Buffer) -> bytes:
    view = memoryview(data)
    parts = [_XERIAL_HEADER]
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK]))
        parts.append(_I32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _snappy_raw(block: Buffer, max_output: int) -> bytes:
    try:
        size = cramjam.snappy.decompress_raw_len(block)
    except cramjam.DecompressionError as exc:
        raise CorruptRecordError(f"snappy block header does not decode: {exc}") from exc
    if size > max_output:
        raise _too_large("snappy", max_output)
    try:
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise CorruptRecordError(f"snappy data does not decode: {exc}") from exc


def _snappy_decompress(data: Buffer, max_output: int) -> bytes:
    view = memoryview(data)
    if view[: len(_XERIAL_MAGIC)] != _XERIAL_MAGIC:
        return _snappy_raw(view, max_output)
    if len(view) < len(_XERIAL_HEADER):
        raise CorruptRecordError("xerial snappy header is truncated")
    parts: list[bytes] = []
    remaining = max_output
    pos = len(_XERIAL_HEADER)
    end = len(view)
    while pos < end:
        if end - pos < 4:
            raise CorruptRecordError(f"xerial snappy block length truncated at byte {pos}")
        (length,) = _I32.unpack_from(view, pos)
        pos += 4
        if length < 0 or length > end - pos:
            raise CorruptRecordError(
                f"xerial snappy block of {length} bytes at byte {pos} overruns {end} bytes"
            )
        block = _snappy_raw(view[pos : pos + length], remaining)
        remaining -= len(block)
        parts.append(block)
        pos += length
    return b"".join(parts)


# --- lz4 and zstd -------------------------------------------------------------------


def _lz4_content_size(data: Buffer) -> int | None:
    """The content size an LZ4 frame declares (FLG bit 3), if it does."""
    if len(data) < 14 or bytes(data[:4]) != _LZ4_MAGIC or not data[4] & 0x08:
        return None
    return int.from_bytes(data[6:14], "little")


def _zstd_content_size(data: Buffer) -> int | None:
    """The content size the first zstd frame header declares, if it does."""
    if len(data) < 5 or bytes(data[:4]) != _ZSTD_MAGIC:
        return None
    descriptor = data[4]
    fcs_flag = descriptor >> 6
    single_segment = (descriptor >> 5) & 1
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if fcs_size == 0:
        return None
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    if len(data) < pos + fcs_size:
        return None
    size = int.from_bytes(data[pos : pos + fcs_size], "little")
    return size + 256 if fcs_size == 2 else size


def _decompress_growing(
    decompress_into: Callable[[Buffer, bytearray], int],
    codec: str,
    data: Buffer,
    max_output: int,
    hint: int | None,
) -> bytes:
    """Decode into a fixed buffer, growing it up to ``max_output + 1`` bytes.

    The codec fails when the buffer is too small, which looks the same as corrupt
    input, so a failure grows the buffer until it holds ``max_output + 1`` bytes; a
    failure there is reported as too large if the codec says it ran out of room, else
    as corrupt.
    """
    cap = max_output + 1
    if hint is not None:
        if hint > max_output:
            raise _too_large(codec, max_output)
        size = hint
    else:
        size = min(cap, max(_MIN_GUESS, 4 * len(data)))
    while True:
        buf = bytearray(size)
        try:
            written = decompress_into(data, buf)
        except cramjam.DecompressionError as exc:
            if size < cap:
                size = min(cap, max(size * 4, _MIN_GUESS))
                continue
            if "whole buffer" in str(exc):
                raise _too_large(codec, max_output) from exc
            raise CorruptRecordError(f"{codec} data does not decode: {exc}") from exc
        if written > max_output:
            raise _too_large(codec, max_output)
        del buf[written:]
        return bytes(buf)
