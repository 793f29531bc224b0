"""Partition assignors: pure functions from subscriptions to an assignment.

An assignor takes each member's subscribed topics and each topic's partition count and
returns, for every member, the partitions it owns::

    {member_id: {topic: [partition, ...]}}

Every member appears in the result, possibly with nothing. A topic whose partition
count is missing or not positive is skipped (it does not exist yet). Only topics with
at least one partition for the member appear under that member. The result depends
only on the inputs, never on the order of a dict or a set: members and topics are
sorted first, and partition lists are ascending.

- ``round_robin`` is Kafka's RoundRobinAssignor (protocol name ``"roundrobin"``): all
  subscribed topic-partitions, sorted by (topic, partition), are dealt one at a time
  to the members in sorted order, skipping a member not subscribed to the partition's
  topic. When every member subscribes to the same topics, no member owns more than
  one partition more than another.
- ``range_`` is Kafka's RangeAssignor (protocol name ``"range"``): each topic on its
  own, its partitions are cut into contiguous ranges over the sorted members subscribed
  to it; the first ``count % members`` members get one extra partition.

``ASSIGNORS`` maps the protocol names to the functions; the group coordinator uses it
for server-side assignment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Final, Protocol

Subscriptions = Mapping[str, Collection[str]]
"""member id -> the topics it subscribes to."""

Assignment = dict[str, dict[str, list[int]]]
"""member id -> topic -> ascending partitions."""


class Assignor(Protocol):
    def __call__(
        self, subscriptions: Subscriptions, partition_counts: Mapping[str, int]
    ) -> Assignment: ...


def round_robin(subscriptions: Subscriptions, partition_counts: Mapping[str, int]) -> Assignment:
    """Deal every subscribed topic-partition over the sorted members, Kafka's RoundRobin."""
    members = sorted(subscriptions)
    result: Assignment = {member: {} for member in members}
    subscribed = {member: frozenset(subscriptions[member]) for member in members}
    topics = sorted(
        {topic for topics in subscribed.values() for topic in topics}
        & {topic for topic, count in partition_counts.items() if count > 0}
    )
    cursor = 0
    for topic in topics:
        for partition in range(partition_counts[topic]):
            # At least one member subscribes to ``topic``, so this stops within a lap.
            while topic not in subscribed[members[cursor]]:
                cursor = (cursor + 1) % len(members)
            result[members[cursor]].setdefault(topic, []).append(partition)
            cursor = (cursor + 1) % len(members)
    return result


def range_(subscriptions: Subscriptions, partition_counts: Mapping[str, int]) -> Assignment:
    """Per topic, contiguous ranges over the sorted subscribed members, Kafka's Range."""
    members = sorted(subscriptions)
    result: Assignment = {member: {} for member in members}
    members_of: dict[str, list[str]] = {}
    for member in members:  # sorted, so each list below is sorted too
        for topic in set(subscriptions[member]):
            members_of.setdefault(topic, []).append(member)
    for topic in sorted(members_of):
        count = partition_counts.get(topic, 0)
        if count <= 0:
            continue
        consumers = members_of[topic]
        per_member, extra = divmod(count, len(consumers))
        for i, member in enumerate(consumers):
            start = per_member * i + min(i, extra)
            length = per_member + (1 if i < extra else 0)
            if length:
                result[member][topic] = list(range(start, start + length))
    # Topics were visited in sorted order, so each member's dict is already sorted.
    return result


ASSIGNORS: Final[Mapping[str, Assignor]] = MappingProxyType(
    {"roundrobin": round_robin, "range": range_}
)
"""Assignors the coordinator runs itself, by Kafka protocol name."""
