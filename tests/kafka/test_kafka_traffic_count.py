"""The Kafka door's produce traffic counter reads record counts from three header fields
in place; it agrees with the full header parse on every accepted batch sequence."""

from __future__ import annotations

import pytest

from sentinel.record import build_batch, stamped
from sentinel.server.kafka.traffic import _produced_records, _records


def _batches(counts: list[int], base: int = 0) -> bytes:
    out = []
    for n in counts:
        batch = build_batch([(None, b"v" * 10, (), 1_700_000_000_000)] * n)
        out.append(stamped(batch, base, 0) if base else batch)
    return b"".join(out)


@pytest.mark.parametrize("counts", [[1], [3, 1, 7], [50] * 4, []])
@pytest.mark.parametrize("base", [0, 5])
def test_lean_count_matches_the_header_parse(counts: list[int], base: int) -> None:
    data = _batches(counts, base)
    assert _produced_records(data) == _records(data) == sum(counts)
    assert _produced_records(memoryview(data)) == sum(counts)


def test_lean_count_stops_at_a_partial_tail() -> None:
    data = _batches([2, 3])
    cut = data[: len(data) - 5]
    assert _produced_records(cut) == _records(cut) == 2
