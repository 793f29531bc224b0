"""Which fetch calls the consumer makes next: the pure core of ``Fetcher``'s driver.

The driver describes, at one moment, the partitions that may be fetched (``Ready``) and
the calls in flight (``Flight``); ``plan`` answers which calls to cancel and which to
send (``Plan``). Per broker (a partition goes to its leader's address)::

    FetchMany broker   at most one call, a FetchMany of every ready partition of the
                       broker (at most ``max_positions``, in turns when there are more).
                       A partition that becomes ready while the call is out (assigned,
                       resolved, buffer drained, resumed, seeked, recovered) waits for its
                       answer, unless the call is a pure long-poll (none of its
                       partitions was known to have data when it was sent): then it is
                       cancelled and sent again with the newcomer, so a long-poll never
                       holds a partition back. A call expected to bring data answers at
                       once and is left to do so; a call already at ``max_positions``
                       is never re-sent larger.
    Fetch broker       one Fetch per ready partition (a broker without FetchMany).

Cancelling is bounded: a call is re-sent only for a partition that became ready since
it was sent, and the new call covers it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sentinel.client.types import TopicPartition

__all__ = ["Flight", "Plan", "Ready", "Send", "plan"]


@dataclass(frozen=True, slots=True)
class Ready:
    """A partition that may be fetched now: its position is known, its buffer has room,
    it is not paused and no error or recovery is pending."""

    tp: TopicPartition
    address: str | None  # its leader's host:port (None: the bootstrap broker)
    offset: int  # where its next fetch starts
    generation: int
    known_data: bool  # its last answer's high watermark is past ``offset``
    covered_by: int | None = None  # the call in flight fetching it at this generation


@dataclass(frozen=True, slots=True)
class Flight:
    """A call in flight."""

    key: int
    address: str | None
    many: bool  # a FetchMany (else a Fetch of one partition)
    long_poll: bool  # sent with no partition known to have data
    size: int  # partitions it fetches


@dataclass(frozen=True, slots=True)
class Send:
    """A call to make: a FetchMany of ``ready`` (``many``), else a Fetch of its one."""

    address: str | None
    many: bool
    ready: tuple[Ready, ...]
    long_poll: bool


@dataclass(frozen=True, slots=True)
class Plan:
    cancel: tuple[int, ...]  # keys of calls to cancel (their partitions are re-sent)
    send: tuple[Send, ...]


def plan(
    ready: Sequence[Ready],
    flights: Sequence[Flight],
    *,
    single_fetch: Collection[str | None],
    max_positions: int,
    turn: int = 0,
) -> Plan:
    """The calls to cancel and to send (see the module docstring). ``single_fetch``:
    the brokers without FetchMany; ``turn`` rotates which partitions a FetchMany past
    ``max_positions`` takes."""
    by_address: dict[str | None, list[Ready]] = {}
    for r in ready:
        by_address.setdefault(r.address, []).append(r)
    cancel: list[int] = []
    send: list[Send] = []
    for address, parts in by_address.items():
        fresh = [r for r in parts if r.covered_by is None]
        if not fresh:
            continue
        if address in single_fetch:
            send.extend(Send(address, False, (r,), not r.known_data) for r in fresh)
            continue
        current = [f for f in flights if f.many and f.address == address]
        if any(not f.long_poll or f.size >= max_positions for f in current):
            continue  # its answer comes soon (or it is full): the newcomers go next
        gone = {f.key for f in current}
        cancel.extend(gone)
        mine = [r for r in parts if r.covered_by is None or r.covered_by in gone]
        if len(mine) > max_positions:
            start = turn % len(mine)
            mine = (mine[start:] + mine[:start])[:max_positions]
        send.append(Send(address, True, tuple(mine), not any(r.known_data for r in mine)))
    return Plan(tuple(cancel), tuple(send))
