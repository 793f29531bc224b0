"""Where a leader epoch ends (Kafka's OffsetForLeaderEpoch), against a plain oracle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.errors import FencedLeaderEpochError, UnknownLeaderEpochError
from sentinel.log.leader_epochs import UNDEFINED, check_current_epoch, epoch_end_offset


def oracle(batches: list[tuple[int, int]], log_end: int, requested: int) -> tuple[int, int]:
    """Kafka's LeaderEpochFileCache.endOffsetFor over {epoch: first base offset}."""
    starts: dict[int, int] = {}
    for base, epoch in batches:
        starts.setdefault(epoch, base)
    if requested < 0 or not starts:
        return UNDEFINED
    latest = max(starts)
    if requested == latest:
        return requested, log_end
    higher = [e for e in starts if e > requested]
    if not higher:
        return UNDEFINED
    floor = [e for e in starts if e <= requested]
    return (max(floor) if floor else requested), starts[min(higher)]


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[tuple[int, int]], int]:
    """Batches (base, epoch) in offset order, epochs never decreasing, and the log end."""
    at = draw(st.integers(0, 50))
    epoch = draw(st.integers(0, 3))
    batches = []
    for _ in range(draw(st.integers(0, 12))):
        epoch += draw(st.sampled_from([0, 0, 1, 2]))
        batches.append((at, epoch))
        at += draw(st.integers(1, 5))
    return batches, at


@given(logs(), st.integers(-2, 30))
def test_end_offsets_match_kafkas_cache(
    log: tuple[list[tuple[int, int]], int], requested: int
) -> None:
    batches, log_end = log
    bases = [b for b, _ in batches]
    epochs = [e for _, e in batches]
    assert epoch_end_offset(bases, epochs, log_end, requested) == oracle(
        batches, log_end, requested
    )


def test_examples() -> None:
    bases, epochs = [0, 10, 20, 30], [1, 1, 3, 5]
    assert epoch_end_offset(bases, epochs, 40, 5) == (5, 40)  # the latest: the log end
    assert epoch_end_offset(bases, epochs, 40, 1) == (1, 20)  # ends where 3 starts
    assert epoch_end_offset(bases, epochs, 40, 2) == (1, 20)  # 2 never led: 1's end
    assert epoch_end_offset(bases, epochs, 40, 0) == (0, 0)  # older than all: first start
    assert epoch_end_offset(bases, epochs, 40, 6) == UNDEFINED  # newer than the log
    assert epoch_end_offset(bases, epochs, 40, -1) == UNDEFINED
    assert epoch_end_offset([], [], 0, 0) == UNDEFINED


def test_current_epoch_fencing() -> None:
    check_current_epoch("t-0", -1, 4)
    check_current_epoch("t-0", 4, 4)
    with pytest.raises(FencedLeaderEpochError) as fenced:
        check_current_epoch("t-0", 3, 4)
    assert fenced.value.kafka_code == 74
    with pytest.raises(UnknownLeaderEpochError) as unknown:
        check_current_epoch("t-0", 5, 4)
    assert unknown.value.kafka_code == 75
