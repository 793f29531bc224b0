"""The blocked bloom filter: no false negatives, false positives near theory, a pinned format."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.codec.crc import crc32c
from sentinel.errors import CorruptionError, InvalidArgumentError
from sentinel.storage.bloom import (
    BUCKET_BITS,
    BloomBuilder,
    BloomFilter,
    key_hash,
    mask_tables,
    probes_for,
)


def build(keys: list[bytes], bits_per_key: int = 10) -> BloomFilter:
    builder = BloomBuilder(bits_per_key)
    builder.add_keys(keys)
    return BloomFilter.decode(builder.finish(), "t.sst")


def blocked_theory(bits_per_key: int, probes: int) -> float:
    """False-positive rate of a 512-bit blocked filter: Poisson bucket loads."""
    load = BUCKET_BITS / bits_per_key
    total = 0.0
    for keys in range(int(load * 4) + 40):
        weight = math.exp(-load + keys * math.log(load) - math.lgamma(keys + 1))
        total += weight * (1 - (1 - 1 / BUCKET_BITS) ** (probes * keys)) ** probes
    return total


@settings(max_examples=60, deadline=None)
@given(st.sets(st.binary(max_size=20), max_size=300), st.integers(1, 20))
def test_no_false_negatives(keys: set[bytes], bits_per_key: int) -> None:
    bloom = build(sorted(keys), bits_per_key)
    assert all(bloom.may_contain(k) for k in keys)


def make_keys(kind: str, start: int, count: int) -> list[bytes]:
    if kind == "offsets":  # the log's keys
        return [i.to_bytes(8, "big") for i in range(start, start + count)]
    if kind == "strings":
        return [b"user:%d" % i for i in range(start, start + count)]
    rng = random.Random(start)
    return [rng.randbytes(16) for _ in range(count)]


@pytest.mark.parametrize("kind", ["offsets", "strings", "random"])
def test_false_positive_rate_near_theory(kind: str) -> None:
    count = 50_000
    bloom = build(make_keys(kind, 0, count))
    queries = make_keys(kind, count, 50_000)
    rate = sum(map(bloom.may_contain, queries)) / len(queries)
    theory = blocked_theory(10, probes_for(10))
    assert 0.0095 < theory < 0.0096  # an unblocked filter: 0.0082
    assert rate < 0.02
    assert rate < theory * 1.35


def test_more_bits_fewer_false_positives() -> None:
    keys = [i.to_bytes(8, "big") for i in range(20_000)]
    queries = [i.to_bytes(8, "big") for i in range(20_000, 60_000)]
    rates = []
    for bits in (4, 10, 20):
        bloom = build(keys, bits)
        rates.append(sum(map(bloom.may_contain, queries)) / len(queries))
    assert rates[0] > rates[1] > rates[2]
    assert rates[2] < 0.001


def test_probes() -> None:
    assert [probes_for(b) for b in (1, 5, 10, 20, 100)] == [1, 3, 7, 14, 30]
    table_a, table_b = mask_tables(7)
    assert len(table_a) == len(table_b) == 8192
    assert all(m.bit_count() == 4 for m in table_a)
    assert all(m.bit_count() == 3 for m in table_b)


def bit_positions(mask: int) -> list[int]:
    return [i for i in range(BUCKET_BITS) if mask >> i & 1]


def test_format_is_pinned() -> None:
    # Changing any constant of the scheme changes these bytes and breaks every table.
    table_a, table_b = mask_tables(7)
    assert bit_positions(table_a[0]) == [62, 122, 146, 266]
    assert bit_positions(table_b[0]) == [5, 51, 336]
    assert key_hash(b"a") == crc32c(b"a")
    builder = BloomBuilder(10)
    builder.add_keys([b"a", b"b", b"offset-7"])
    assert builder.finish().hex() == (
        "0100000007000000"  # 1 bucket, 7 probes
        "0000004040400004000000000000000000004002000008112000840100000000"
        "00000000001800000a0000000000000000000800001000024000000000000000"
        "2371c39c"  # crc32c
    )


def test_empty_filter_holds_nothing() -> None:
    bloom = build([])
    assert bloom.size_bytes == 64
    assert not any(bloom.may_contain(i.to_bytes(4, "big")) for i in range(100))


def test_bits_per_key_must_be_positive() -> None:
    with pytest.raises(InvalidArgumentError):
        BloomBuilder(0)


def test_corruption_is_detected() -> None:
    builder = BloomBuilder(10)
    builder.add_keys([b"k%d" % i for i in range(100)])
    block = builder.finish()
    for pos in range(len(block)):
        bad = bytearray(block)
        bad[pos] ^= 0x10
        with pytest.raises(CorruptionError) as info:
            BloomFilter.decode(bytes(bad), "t.sst")
        assert info.value.where == "filter"
    for size in range(len(block)):
        with pytest.raises(CorruptionError):
            BloomFilter.decode(block[:size], "t.sst")
