"""Partitioners: Kafka's murmur2 bit for bit, round-robin, sticky (KIP-480)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.broker.partitioner import (
    Partitioner,
    RoundRobinPartitioner,
    StickyPartitioner,
    default_partition,
    murmur2,
    to_positive,
)
from sentinel.errors import InvalidArgumentError

# Apache Kafka's UtilsTest.testMurmur2 (signed Java ints), plus librdkafka's
# rdmurmur2 unit-test strings, which it checks against the Java client.
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"", 275646681),
    (b"kafka", -798503068),
    (b"giberish123456789", -1890243828),
    (b"1234", -1614185708),
    (b"234", -406844982),
    (b"34", -2026295078),
]


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS)
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_vectors_cover_every_tail_length() -> None:
    assert {len(data) & 3 for data, _ in KAFKA_VECTORS} == {0, 1, 2, 3}


def test_to_positive_drops_the_sign_bit_not_abs() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


def test_default_partition() -> None:
    # toPositive(-790332482) = 1357151166; % 50 = 16, as other Kafka ports pin it.
    assert default_partition(b"foobar", 50) == 16
    assert default_partition(b"21", 1) == 0
    with pytest.raises(InvalidArgumentError):
        default_partition(b"x", 0)


aiokafka_partitioner: Any
try:
    import aiokafka.partitioner as aiokafka_partitioner
except ImportError:  # the cross-check needs the dev dependency
    aiokafka_partitioner = None


@pytest.mark.skipif(aiokafka_partitioner is None, reason="aiokafka is not installed")
@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    theirs = aiokafka_partitioner.murmur2(data) & 0xFFFFFFFF
    assert murmur2(data) & 0xFFFFFFFF == theirs
    assert -(2**31) <= murmur2(data) < 2**31


def test_partitioners_satisfy_the_protocol() -> None:
    partitioners: list[Partitioner] = [RoundRobinPartitioner(), StickyPartitioner(random.Random(1))]
    for p in partitioners:
        assert 0 <= p.partition("t", None, 3) < 3


@given(st.binary(max_size=32), st.integers(1, 1000))
def test_keyed_records_always_hash(key: bytes, n: int) -> None:
    expected = default_partition(key, n)
    sticky = StickyPartitioner(random.Random(0))
    round_robin = RoundRobinPartitioner()
    for _ in range(3):
        assert sticky.partition("t", key, n) == expected
        assert round_robin.partition("t", key, n) == expected
        sticky.on_new_batch("t", expected, n)


def test_round_robin_cycles_per_topic() -> None:
    p = RoundRobinPartitioner()
    assert [p.partition("a", None, 3) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [p.partition("b", None, 2) for _ in range(3)] == [0, 1, 0]


def test_round_robin_can_ignore_keys_like_kafkas() -> None:
    p = RoundRobinPartitioner(hash_keys=False)
    assert [p.partition("a", b"same", 4) for _ in range(5)] == [0, 1, 2, 3, 0]


def test_sticky_stays_until_a_new_batch_then_moves() -> None:
    p = StickyPartitioner(random.Random(42))
    first = p.partition("t", None, 8)
    assert all(p.partition("t", None, 8) == first for _ in range(100))
    visited = [first]
    for _ in range(200):
        p.on_new_batch("t", visited[-1], 8)
        nxt = p.partition("t", None, 8)
        assert nxt != visited[-1]
        assert all(p.partition("t", None, 8) == nxt for _ in range(3))
        visited.append(nxt)
    assert set(visited) == set(range(8))
    counts = Counter(visited)
    assert max(counts.values()) < 3 * min(counts.values())


def test_sticky_ignores_a_stale_new_batch_report() -> None:
    p = StickyPartitioner(random.Random(7))
    current = p.partition("t", None, 5)
    p.on_new_batch("t", (current + 1) % 5, 5)  # not the sticky partition: no change
    assert p.partition("t", None, 5) == current


def test_sticky_is_per_topic_and_copes_with_one_partition() -> None:
    p = StickyPartitioner(random.Random(3))
    assert p.partition("one", None, 1) == 0
    p.on_new_batch("one", 0, 1)
    assert p.partition("one", None, 1) == 0
    a = p.partition("a", None, 1000)
    b = p.partition("b", None, 1000)
    p.on_new_batch("a", a, 1000)
    assert p.partition("b", None, 1000) == b


def test_sticky_repicks_when_partitions_shrink() -> None:
    p = StickyPartitioner(random.Random(5))
    while p.partition("t", None, 10) < 4:
        p.on_new_batch("t", p.partition("t", None, 10), 10)
    assert 0 <= p.partition("t", None, 4) < 4


def test_sticky_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[int]:
        p = StickyPartitioner(random.Random(seed))
        out = []
        for _ in range(20):
            out.append(p.partition("t", None, 6))
            p.on_new_batch("t", out[-1], 6)
        return out

    assert run(11) == run(11)
