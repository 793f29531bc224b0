"""CRC32C (Castagnoli), the checksum of every Sentinel disk and wire format.

The ``crc32c`` package uses the SSE4.2 / ARMv8 instructions where present (~25 GB/s).

``crc32c_combine`` gives the CRC of a concatenation from the CRCs of its parts without
reading the bytes again (zlib's ``crc32_combine``, by multiplication modulo the CRC's
polynomial: CRC is linear over GF(2), and appending ``n`` bytes to ``A`` multiplies the
register by ``x^(8n)``). It runs in Python: measured here 3.5 us for a length seen
recently (the ``x^(8n)`` operator is cached) and 50 us for a new one, against 0.8 us
for the hardware CRC of 16 KiB and 18 us for 512 KiB. So it pays only where the bytes
it avoids reading are megabytes; the produce path does not use it (docs/benchmarks.md,
"Broker alone, 2026-12-02").
"""

from __future__ import annotations

from functools import lru_cache

from crc32c import crc32c as _crc32c

#: The reflected CRC32C polynomial (x^32 + ... , bit 31 is x^0).
_POLY = 0x82F63B78
_X0 = 1 << 31  # the polynomial 1 in the reflected representation


#: ``crc32c(data, value=0)``: the CRC32C of ``data``, continuing from ``value`` (0 to
#: start). The package's own function, not a wrapper: the produce path calls it a few
#: times per batch, and a Python frame around it cost a third of the call.
crc32c = _crc32c


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo the polynomial (both reflected)."""
    product = 0
    mask = _X0
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers() -> tuple[int, ...]:
    """``x^(2^k)`` modulo the polynomial, for k = 0..31."""
    out = []
    p = _X0 >> 1  # x^1
    for _ in range(32):
        out.append(p)
        p = _multmodp(p, p)
    return tuple(out)


_X2N = _powers()


@lru_cache(maxsize=256)
def _shift(nbytes: int) -> int:
    """``x^(8 * nbytes)`` modulo the polynomial: appending ``nbytes`` bytes."""
    p = _X0
    k = 3  # 8 = 2^3
    while nbytes:
        if nbytes & 1:
            p = _multmodp(_X2N[k & 31], p)
        nbytes >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of ``A + B`` from ``crc1 = crc32c(A)``, ``crc2 = crc32c(B)`` and
    ``len2 = len(B)``, without the bytes. Also ``crc32c(B, v)`` is
    ``crc32c_combine(v, crc32c(B), len(B))``: the CRC of ``B`` continued from any value."""
    if len2 < 0:
        raise ValueError(f"len2 must be >= 0, not {len2}")
    if len2 == 0:
        return crc1
    return _multmodp(_shift(len2), crc1) ^ crc2
