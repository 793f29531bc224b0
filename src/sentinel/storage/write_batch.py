"""A write batch, and its encoding as one WAL entry (the unit of atomicity).

WAL payload layout (big-endian)::

    +----------------+------------------------------------------------------+
    | u32 op count N | N ops                                                |
    +----------------+------------------------------------------------------+
    op: | u8 kind (1 = put, 0 = delete) | u32 key length | u32 value length |
        | key bytes | value bytes (absent for delete: value length is 0)     |

A batch is replayed whole or not at all: the WAL frames and checksums each payload.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from sentinel.errors import CorruptionError

_COUNT = struct.Struct(">I")
_OP = struct.Struct(">BII")
_PUT_HEAD = struct.Struct(">IBII")  # the count of a one-op batch, then its op header
_PUT = 1
_DELETE = 0


class WriteBatch:
    """Puts and deletes applied atomically, in order (a later op on a key wins)."""

    __slots__ = ("_ops", "_size")

    def __init__(self) -> None:
        self._ops: list[tuple[bytes, bytes | None]] = []
        self._size = 0

    def put(self, key: bytes, value: bytes) -> WriteBatch:
        self._ops.append((bytes(key), bytes(value)))
        self._size += len(key) + len(value)
        return self

    def delete(self, key: bytes) -> WriteBatch:
        self._ops.append((bytes(key), None))
        self._size += len(key)
        return self

    @property
    def ops(self) -> list[tuple[bytes, bytes | None]]:
        return self._ops

    @property
    def byte_size(self) -> int:
        """Bytes of keys and values in the batch."""
        return self._size

    def __len__(self) -> int:
        return len(self._ops)


def encode_ops(ops: list[tuple[bytes, bytes | None]]) -> bytes:
    """The WAL payload for ``ops``."""
    pack = _OP.pack
    parts: list[bytes] = [_COUNT.pack(len(ops))]
    append = parts.append
    for key, value in ops:
        if value is None:
            append(pack(_DELETE, len(key), 0))
            append(key)
        else:
            append(pack(_PUT, len(key), len(value)))
            append(key)
            append(value)
    return b"".join(parts)


def encode_ops_parts(ops: list[tuple[bytes, bytes | None]]) -> bytes | tuple[bytes, ...]:
    """``encode_ops`` as parts for one ``writev``: every value of ``PARTS_FROM`` bytes or
    more is its own part (not copied), the small pieces between are joined. The bytes
    are those of ``encode_ops``, so value positions do not change."""
    pack = _OP.pack
    parts: list[bytes] = []
    small: list[bytes] = [_COUNT.pack(len(ops))]
    for key, value in ops:
        if value is None:
            small += (pack(_DELETE, len(key), 0), key)
        elif len(value) >= PARTS_FROM:
            small += (pack(_PUT, len(key), len(value)), key)
            parts += (b"".join(small), value)
            small = []
        else:
            small += (pack(_PUT, len(key), len(value)), key, value)
    if not parts:
        return b"".join(small)
    if small:
        parts.append(b"".join(small))
    return tuple(parts)


#: From this size on a put's payload is handed to the WAL in parts (one ``writev``, no
#: joining copy of the value); below it one joined ``bytes`` is cheaper.
PARTS_FROM = 4096


def encode_put(key: bytes, value: bytes) -> bytes | tuple[bytes, bytes, bytes]:
    """The WAL payload of a single put (the hot path: no batch object)."""
    head = _PUT_HEAD.pack(1, _PUT, len(key), len(value))
    if len(value) >= PARTS_FROM:
        return head, key, value
    return head + key + value


def value_positions(ops: Sequence[tuple[bytes, bytes | None]]) -> Iterator[tuple[bytes, int, int]]:
    """For each op of ``ops``: (key, where its value starts in the encoded payload, its
    length); a delete has length 0. Value separation points into the WAL entry with it."""
    position = _COUNT.size
    for key, value in ops:
        position += _OP.size + len(key)
        length = 0 if value is None else len(value)
        yield key, position, length
        position += length


def decode_ops(payload: bytes, where: str) -> Iterator[tuple[bytes, bytes | None]]:
    """The ops of a WAL payload; a payload that does not parse is corruption at ``where``."""
    view = memoryview(payload)
    if len(view) < _COUNT.size:
        raise CorruptionError(where, "write batch", "payload shorter than its header")
    (count,) = _COUNT.unpack_from(view, 0)
    pos = _COUNT.size
    end = len(view)
    for _ in range(count):
        if pos + _OP.size > end:
            raise CorruptionError(where, "write batch", "op header runs past the payload")
        kind, key_len, value_len = _OP.unpack_from(view, pos)
        pos += _OP.size
        if kind not in (_PUT, _DELETE) or pos + key_len + value_len > end:
            raise CorruptionError(where, "write batch", "op runs past the payload")
        key = bytes(view[pos : pos + key_len])
        pos += key_len
        if kind == _PUT:
            yield key, bytes(view[pos : pos + value_len])
            pos += value_len
        else:
            yield key, None
    if pos != end:
        raise CorruptionError(where, "write batch", "trailing bytes after the last op")
