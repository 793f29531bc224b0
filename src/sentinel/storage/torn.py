"""What a torn write looks like, for the append-only files whose last record a crash may
have cut (the WAL's segments, the manifest).

A crash leaves a prefix of what was being written (the file ends inside the record), or
whole sectors that were never written, which read as zeros (an extent the file system
allocated but did not fill). A record that is all there, with bytes that are neither,
was changed after it was written: that is damage, not a torn write, and refusing it is
what keeps an acknowledged record from being cut silently.
"""

from __future__ import annotations

#: Torn writes lose whole sectors.
SECTOR_BYTES = 512


def zeros_to_end(data: bytes, start: int) -> bool:
    """True if every byte of ``data`` from ``start`` on is zero (space allocated, never
    written)."""
    return not bytes(data[start:]).rstrip(b"\0")


def reads_unwritten(data: bytes, start: int, end: int) -> bool:
    """True if ``data[start:end]`` reads as zeros from a sector boundary (a multiple of
    ``SECTOR_BYTES`` in the file) to ``end``: sectors a crash left unwritten."""
    zeros_from = start + len(bytes(data[start:end]).rstrip(b"\0"))
    return -(-zeros_from // SECTOR_BYTES) * SECTOR_BYTES < end
