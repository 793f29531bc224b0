"""What consumers are done with, from what their requests prove (sans-IO).

The broker sends records ahead of use: a client prefetches, a stream pushes whole
batches. So ``sentinel_messages_consumed_total`` is not what was sent (that is
``sentinel_messages_fetched_total``) but what a consumer's later request proves it has
moved past:

- a group's commit moves its committed offset of a partition from N to M: M - N
  records (offsets; gaps left by compaction count too). N is the group's previous
  commit seen by this broker, else the offset the committing connection (gRPC peer)
  first fetched that partition from, else the commit only sets N (counts nothing);
- a ``Consume`` stream counts the records it hands over, at most ``max_messages``.

A consumer outside any group that only fetches is counted in fetched, not consumed: no
request of it says what it used. Memory is bounded: the oldest entries are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict

Key = tuple[str, str, int]  # (peer or group, topic, partition)


class _Bounded(OrderedDict[Key, int]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: Key, value: int) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class ConsumptionLedger:
    def __init__(self, limit: int = 100_000) -> None:
        self._fetch_starts = _Bounded(limit)  # (peer, topic, partition) -> first offset
        self._commits = _Bounded(limit)  # (group, topic, partition) -> committed offset

    def fetched(self, peer: str, topic: str, partition: int, offset: int) -> None:
        key = (peer, topic, partition)
        if key not in self._fetch_starts:
            self._fetch_starts.remember(key, offset)

    def committed(self, peer: str, group: str, topic: str, partition: int, offset: int) -> int:
        """Records the commit proves consumed (0 if it moves back or nothing is known)."""
        key = (group, topic, partition)
        before = self._commits.get(key)
        if before is None:
            before = self._fetch_starts.get((peer, topic, partition), offset)
        self._commits.remember(key, offset)
        return max(0, offset - before)
