"""CRC32C (Castagnoli), the checksum of every Sentinel disk and wire format.

The ``crc32c`` package uses the SSE4.2 / ARMv8 instructions where present (~25 GB/s).
"""

from __future__ import annotations

from crc32c import crc32c as _crc32c


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C of ``data``, continuing from ``value`` (0 to start)."""
    return int(_crc32c(data, value))
