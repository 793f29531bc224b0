"""Kafka's variable-length integers: unsigned varints and zig-zag varints / varlongs.

Each byte carries 7 bits of the value, least significant group first; the high bit
says another byte follows::

    300 = 0b10_0101100  ->  [1_0101100] [0_0000010]  =  0xAC 0x02

Signed values are zig-zag mapped first so that small magnitudes stay short
(0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3, ...)::

    zigzag(n) = (n << 1) ^ (n >> 63)        unzigzag(z) = (z >> 1) ^ -(z & 1)

| kind             | Kafka name (ByteUtils)        | range          | max bytes |
|------------------|-------------------------------|----------------|-----------|
| unsigned varint  | ``writeUnsignedVarint``       | 0 .. 2**32 - 1 | 5         |
| varint           | ``writeVarint`` (zig-zag)     | int32          | 5         |
| varlong          | ``writeVarlong`` (zig-zag)    | int64          | 10        |

Decoders take ``(buffer, position)`` and return ``(value, next_position)``. A varint
that runs past its maximum length, past the end of the buffer, or encodes a value out
of its range raises ``DecodeError`` (the peer is wrong). Encoding a value out of range
raises ``InvalidArgumentError`` (the caller is wrong).

Record encoding in ``sentinel.record.batch`` looks small values up in ``ZIGZAG_SMALL``
instead of calling these functions: most lengths and deltas in a batch are small.
"""

from __future__ import annotations

from typing import TypeAlias

from sentinel.errors import DecodeError, InvalidArgumentError

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "INT64_MAX",
    "INT64_MIN",
    "ZIGZAG_SMALL",
    "ZIGZAG_SMALL_LIMIT",
    "decode_uvarint",
    "decode_varint",
    "decode_varlong",
    "encode_uvarint",
    "encode_varint",
    "encode_varlong",
    "size_of_uvarint",
    "size_of_varint",
    "size_of_varlong",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_UINT32_MAX = (1 << 32) - 1

Buffer: TypeAlias = bytes | bytearray | memoryview


def _encode_unsigned(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_uvarint(value: int) -> bytes:
    """Unsigned varint of ``value`` in 0 .. 2**32 - 1."""
    if not 0 <= value <= _UINT32_MAX:
        raise InvalidArgumentError(f"unsigned varint out of range: {value}")
    return _encode_unsigned(value)


def encode_varint(value: int) -> bytes:
    """Zig-zag varint of the int32 ``value``."""
    if not INT32_MIN <= value <= INT32_MAX:
        raise InvalidArgumentError(f"varint out of int32 range: {value}")
    return _encode_unsigned((value << 1) ^ (value >> 31))


def encode_varlong(value: int) -> bytes:
    """Zig-zag varlong of the int64 ``value``."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgumentError(f"varlong out of int64 range: {value}")
    return _encode_unsigned((value << 1) ^ (value >> 63))


def _size_unsigned(value: int) -> int:
    size = 1
    while value > 0x7F:
        value >>= 7
        size += 1
    return size


def size_of_uvarint(value: int) -> int:
    """Bytes ``encode_uvarint(value)`` takes."""
    return _size_unsigned(value)


def size_of_varint(value: int) -> int:
    """Bytes ``encode_varint(value)`` takes."""
    return _size_unsigned((value << 1) ^ (value >> 31))


def size_of_varlong(value: int) -> int:
    """Bytes ``encode_varlong(value)`` takes."""
    return _size_unsigned((value << 1) ^ (value >> 63))


def _decode_unsigned(
    buf: Buffer, pos: int, max_bytes: int, bits: int, what: str
) -> tuple[int, int]:
    end = len(buf)
    result = 0
    shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise DecodeError(f"{what} truncated at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> bits:
                raise DecodeError(f"{what} ending at byte {pos} exceeds {bits} bits")
            return result, pos
        shift += 7
    raise DecodeError(f"{what} longer than {max_bytes} bytes ending at byte {pos}")


def decode_uvarint(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    """Unsigned varint at ``buf[pos]``: ``(value, next_pos)``."""
    return _decode_unsigned(buf, pos, 5, 32, "unsigned varint")


def decode_varint(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    """Zig-zag varint (int32) at ``buf[pos]``: ``(value, next_pos)``."""
    raw, pos = _decode_unsigned(buf, pos, 5, 32, "varint")
    return (raw >> 1) ^ -(raw & 1), pos


def decode_varlong(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    """Zig-zag varlong (int64) at ``buf[pos]``: ``(value, next_pos)``."""
    raw, pos = _decode_unsigned(buf, pos, 10, 64, "varlong")
    return (raw >> 1) ^ -(raw & 1), pos


ZIGZAG_SMALL_LIMIT = 4096
"""``ZIGZAG_SMALL[n]`` is ``encode_varint(n)`` for ``0 <= n < ZIGZAG_SMALL_LIMIT``."""

ZIGZAG_SMALL: tuple[bytes, ...] = tuple(_encode_unsigned(n << 1) for n in range(ZIGZAG_SMALL_LIMIT))
