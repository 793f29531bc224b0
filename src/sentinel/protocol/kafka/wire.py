"""Bounded primitive readers and writers for Kafka's wire types.

Fixed-width integers are big-endian. Flexible ("compact") versions count lengths with
unsigned varints holding length + 1 (0 is null); older versions use int16 (strings)
or int32 (bytes, arrays) with -1 for null::

    legacy string   [int16 n][n bytes UTF-8]        n = -1: null
    compact string  [uvarint n+1][n bytes UTF-8]    uvarint 0: null
    legacy bytes    [int32 n][n bytes]              compact bytes as compact string
    legacy array    [int32 n][n elements]           compact array [uvarint n+1][...]
    tagged fields   [uvarint count]([uvarint tag][uvarint size][size bytes])*

Writing a large bytes field need not copy it: ``Pieces`` gives a field as several
buffers (a fetch's stored batches, never joined), and a ``ScatterOutput`` takes buffers of
at least ``SCATTER_MIN_BYTES`` by reference, so that an answer is written to the socket
as a list of buffers (``ScatterOutput.pieces``); into a plain ``bytearray`` both are
copied, and the bytes are the same either way.

Every read checks the bytes it needs against what remains *before* it slices or
allocates, so a length of 2**31 in a 10-byte frame costs nothing. Anything malformed
raises ``DecodeError`` and nothing else: no ``struct.error``, ``IndexError`` or
``UnicodeDecodeError`` escapes.

The bytes of a frame do not bound the *work* of decoding it: a 6 MB Metadata request
naming one topic a million times decodes into a million structs (~4 s of the event
loop here) before any handler sees it. A ``Reader`` made with ``max_elements`` also
counts the array elements it decodes, over every array of the frame, and raises
``DecodeError`` past that many (``MAX_REQUEST_ELEMENTS`` for the broker's requests).
"""

from __future__ import annotations

import struct
from typing import Any
from uuid import UUID

from sentinel.codec.varint import decode_uvarint, encode_uvarint
from sentinel.errors import DecodeError

__all__ = [
    "MAX_REQUEST_ELEMENTS",
    "PACKERS",
    "SCATTER_MIN_BYTES",
    "Buffer",
    "Pieces",
    "Reader",
    "ScatterOutput",
    "write_array_length",
    "write_bytes",
    "write_length",
    "write_string",
    "write_tagged_header",
]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


#: The most array elements one request may hold, over all its arrays: ten times the
#: 10,000 partitions a broker's derived ``--max-partitions`` allows at most, so a
#: request naming every partition of a full broker (a Fetch, a ListOffsets, an
#: OffsetCommit: its topics plus their partitions) fits with room to spare, while the
#: decode of the most a request may hold stays well under a second of the event loop.
MAX_REQUEST_ELEMENTS = 100_000


class Reader:
    """A cursor over ``buf[pos:end]``; every read is checked against ``end``.
    ``max_elements``: the most array elements the arrays read through it may hold
    together (``elements_left`` counts down; None: no bound beyond the bytes)."""

    __slots__ = ("buf", "elements_left", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0,
                 end: int | None = None, max_elements: int | None = None) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        self.end = len(self.buf) if end is None else end
        self.elements_left = -1 if max_elements is None else max_elements

    def count_elements(self, n: int, what: str) -> None:
        """Account for an array of ``n`` elements against ``max_elements``."""
        if self.elements_left < 0:
            return
        left = self.elements_left - n
        if left < 0:
            raise DecodeError(f"array {what}: {n} more elements than the "
                              f"{self.elements_left} a request may still hold")
        self.elements_left = left

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise DecodeError(f"{what}: needs {n} bytes at byte {self.pos}, "
                              f"{self.end - self.pos} remain")

    def _fixed(self, st: struct.Struct, what: str) -> Any:
        self.need(st.size, what)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def int8(self) -> int:
        return int(self._fixed(_I8, "int8"))

    def int16(self) -> int:
        return int(self._fixed(_I16, "int16"))

    def uint16(self) -> int:
        return int(self._fixed(_U16, "uint16"))

    def int32(self) -> int:
        return int(self._fixed(_I32, "int32"))

    def int64(self) -> int:
        return int(self._fixed(_I64, "int64"))

    def float64(self) -> float:
        return float(self._fixed(_F64, "float64"))

    def boolean(self) -> bool:
        return self.int8() != 0

    def uuid(self) -> UUID:
        return UUID(bytes=self.take(16, "uuid"))

    def uvarint(self) -> int:
        if self.pos >= self.end:
            raise DecodeError(f"unsigned varint truncated at byte {self.pos}")
        value, pos = decode_uvarint(self.buf[: self.end], self.pos)
        self.pos = pos
        return value

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def length(self, compact: bool, legacy: struct.Struct, what: str) -> int:
        """A length or count: -1 for null, else checked against the bytes remaining."""
        if compact:
            n = self.uvarint() - 1
        else:
            n = int(self._fixed(legacy, what))
            if n < -1:
                raise DecodeError(f"{what}: negative length {n} at byte {self.pos}")
        if n > self.end - self.pos:
            raise DecodeError(f"{what}: length {n} at byte {self.pos} exceeds the "
                              f"{self.end - self.pos} bytes remaining")
        return n

    def string(self, compact: bool) -> str | None:
        n = self.length(compact, _I16, "string")
        if n < 0:
            return None
        start = self.pos
        self.pos += n
        try:
            return str(self.buf[start : self.pos], "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string at byte {start} is not UTF-8: {exc.reason}") from None

    def blob(self, compact: bool) -> bytes | None:
        n = self.length(compact, _I32, "bytes")
        if n < 0:
            return None
        return self.take(n, "bytes")

    def blob_view(self, compact: bool) -> memoryview | None:
        """``blob`` without the copy: a view of the buffer read (read-only when that is
        ``bytes``), which keeps the whole buffer alive as long as it is held."""
        n = self.length(compact, _I32, "bytes")
        if n < 0:
            return None
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def array_length(self, compact: bool) -> int:
        return self.length(compact, _I32, "array")


def write_length(out: bytearray, n: int, compact: bool, legacy: struct.Struct) -> None:
    """Write a length or count (``n = -1`` for null)."""
    if compact:
        out += encode_uvarint(n + 1)
    else:
        out += legacy.pack(n)


def write_string(out: bytearray, value: str | None, compact: bool) -> None:
    if value is None:
        write_length(out, -1, compact, _I16)
        return
    data = value.encode("utf-8")
    write_length(out, len(data), compact, _I16)
    out += data


Buffer = bytes | memoryview

SCATTER_MIN_BYTES = 64 * 1024
"""A buffer at least this large goes into a ``ScatterOutput`` by reference."""


class Pieces:
    """A bytes field given as consecutive buffers, written as their concatenation
    without joining them (``len`` is the bytes in all; each buffer must stay unchanged
    until written: stored batches, or views of them)."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: tuple[Buffer, ...]) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pieces):
            other = bytes(other)
        return isinstance(other, bytes | memoryview) and bytes(self) == other

    def __hash__(self) -> int:
        return hash(bytes(self))

    def __repr__(self) -> str:
        return f"Pieces({len(self.parts)} buffers, {self.size} bytes)"


class ScatterOutput(bytearray):
    """An output that takes large buffers by reference: ``attach`` ends the current run
    of written bytes and queues the buffer itself; ``pieces`` is everything, in order."""

    __slots__ = ("_pieces",)

    def __init__(self) -> None:
        super().__init__()
        self._pieces: list[Buffer] = []

    def attach(self, data: Buffer) -> None:
        if self:
            self._pieces.append(bytes(self))
            del self[:]
        self._pieces.append(data)

    @property
    def size(self) -> int:
        """Bytes written and attached so far."""
        return sum(len(p) for p in self._pieces) + len(self)

    def pieces(self) -> list[Buffer]:
        """Every piece in order (what was written since the last attach as one)."""
        return [*self._pieces, bytes(self)] if self else list(self._pieces)


def write_bytes(out: bytearray, value: Buffer | Pieces | None, compact: bool) -> None:
    if value is None:
        write_length(out, -1, compact, _I32)
        return
    write_length(out, len(value), compact, _I32)
    parts = value.parts if isinstance(value, Pieces) else (value,)
    scatter = out if isinstance(out, ScatterOutput) else None
    for part in parts:
        if scatter is not None and len(part) >= SCATTER_MIN_BYTES:
            scatter.attach(part)
        else:
            out += part


def write_array_length(out: bytearray, n: int, compact: bool) -> None:
    write_length(out, n, compact, _I32)


def write_tagged_header(out: bytearray, tag: int, size: int) -> None:
    out += encode_uvarint(tag)
    out += encode_uvarint(size)


PACKERS: dict[str, struct.Struct] = {
    "int8": _I8, "int16": _I16, "uint16": _U16, "int32": _I32, "int64": _I64,
    "float64": _F64,
}
