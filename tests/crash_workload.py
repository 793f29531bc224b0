"""What the shared-pipeline and journal crash suites both do: rounds of one append per
partition log, all waiting on the same sync waves, and reading back what a log serves."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from sentinel.log.partition_log import PartitionLog
from sentinel.record import build_batch, decode_records, iter_batches

T0 = 1_700_000_000_000


def append_rounds(
    logs: list[PartitionLog],
    acked: list[list[bytes]],
    rounds: int,
    value: Callable[[int, int], bytes],
    flush_every: int,
    after_round: Callable[[int], None] | None = None,
) -> None:
    """``rounds`` rounds of one append per partition, all waiting on the same waves;
    after each round ``after_round(round)`` if given, and every ``flush_every``-th round
    a flush of one partition. ``acked`` gets what was acknowledged."""
    for round_ in range(rounds):
        waits: list[tuple[int, bytes, concurrent.futures.Future[None]]] = []
        for i, log in enumerate(logs):
            v = value(i, round_)
            result = log.append_many([build_batch([(None, v, (), T0)])], wait=False)[0]
            waits.append((i, v, log.sync_future(result.lsn)))
        for i, v, future in waits:
            future.result(timeout=30)
            acked[i].append(v)
        if after_round is not None:
            after_round(round_)
        if round_ % flush_every == flush_every - 1:
            logs[round_ % len(logs)].engine.flush()


def stored(log: PartitionLog) -> list[bytes]:
    """Every record value the log serves, in order."""
    result = log.read(log.log_start_offset, 1 << 20)
    return [
        r.value or b""
        for view in iter_batches(b"".join(result.batches))
        for r in decode_records(view)
    ]
