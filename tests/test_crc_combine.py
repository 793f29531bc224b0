"""``crc32c_combine``: the CRC32C of a concatenation from its parts' CRCs alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.codec.crc import crc32c, crc32c_combine


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=3000))
def test_combine_is_the_crc_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert crc32c_combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=500), min_size=1, max_size=8))
def test_combine_folds_over_many_parts(parts: list[bytes]) -> None:
    crc = 0
    for part in parts:
        crc = crc32c_combine(crc, crc32c(part), len(part))
    assert crc == crc32c(b"".join(parts))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFF_FFFF), st.binary(max_size=2000))
def test_combine_continues_a_crc_from_any_value(value: int, b: bytes) -> None:
    assert crc32c_combine(value, crc32c(b), len(b)) == crc32c(b, value)


def test_combine_of_large_lengths() -> None:
    # Lengths with high bits set walk the whole table of x^(2^k) powers.
    for length in (1 << 20, (1 << 24) + 12345):
        b = bytes(range(256)) * (length // 256) + b"\x07" * (length % 256)
        assert crc32c_combine(0xDEADBEEF, crc32c(b), len(b)) == crc32c(b, 0xDEADBEEF)


def test_combine_refuses_a_negative_length() -> None:
    with pytest.raises(ValueError, match="len2"):
        crc32c_combine(0, 0, -1)
