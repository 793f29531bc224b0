"""Broker-wide limits on what requests may make the broker hold: partitions (each is a
log with its own files), topics created on the side of a request, and the process's
open-files limit they are derived from.

A partition costs no thread (the engines share a worker pool and a sync pipeline) and
holds its files open (measured: 1, its WAL segment, and one per table read since it was
reopened) only while it is among the ``--max-open-partitions`` most recently used
(``open_partitions_for_open_files``); after a clean stop an idle partition is not even
opened at start. ``--max-partitions`` is derived with ``FDS_PER_PARTITION`` = 1: idle
partitions hold none, and the budget covers the worst moment, when every partition
holds its WAL segment at once (a topic's partitions are created together; after a
crash each recovers with its files open until the open-files limit releases it).

The limits bound *creation*, never recovery: a broker that finds more partitions on disk
than its limit (the limit was lowered) still opens them all.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

from sentinel.errors import CallerError

FDS_PER_PARTITION = 1
"""Open files budgeted per partition towards ``--max-partitions`` (see the module doc)."""

RESERVED_FDS = 1024
"""Open files kept for client sockets, the gRPC runtime, metrics and the meta store
(at most half the limit on a small one)."""

MAX_DERIVED_PARTITIONS = 10_000
"""The derived default never goes above this (what ``bench_partitions`` measures: memory
and the time of a restart after a crash grow with it): set ``--max-partitions`` to go
beyond."""


_NR_OPEN = 1 << 20  # Linux's default ceiling on open files per process


class PolicyViolationError(CallerError):
    """The request would take the broker past one of its limits (partitions, topics
    created by one request). Kafka's POLICY_VIOLATION."""

    kafka_code = 44
    code_name = "POLICY_VIOLATION"


@dataclass(frozen=True, slots=True)
class TopicLimits:
    max_partitions: int  # all topics together
    max_auto_create_per_request: int  # topics one request may create implicitly

    def check_partitions(self, current: int, adding: int, what: str) -> None:
        """Refuse ``adding`` partitions to the ``current`` total if it passes the limit."""
        if current + adding > self.max_partitions:
            raise PolicyViolationError(
                f"{what} would bring the broker to {current + adding} partitions; its limit "
                f"is {self.max_partitions} (--max-partitions, max_partitions); it has {current}"
            )

    def check_auto_create(self, unknown: int) -> None:
        if unknown > self.max_auto_create_per_request:
            raise PolicyViolationError(
                f"the request names {unknown} unknown topics; one request may create at most "
                f"{self.max_auto_create_per_request} (--max-auto-create-per-request)"
            )


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Kafka's scripts advise); the
    soft limit now in force. Harmless where it is already there or cannot be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NR_OPEN if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        # A container may refuse: the soft limit stays, and the default follows it.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return current_open_files_limit()


def partitions_for_open_files(open_files: int) -> int:
    """The default partition limit for a process allowed ``open_files`` files."""
    reserve = min(RESERVED_FDS, open_files // 2)
    return max(1, min(MAX_DERIVED_PARTITIONS, (open_files - reserve) // FDS_PER_PARTITION))


FDS_PER_OPEN_PARTITION = 2
"""Open files budgeted per partition whose files are open: 1 measured for a partition
that is appended to (its WAL segment; the broker holds the data directory's LOCK for
all, the manifest is open only while an edit is appended), one more per table read
since it was last reopened (tables reopen on their first read)."""

MAX_DERIVED_OPEN_PARTITIONS = 256
"""The derived ``--max-open-partitions`` never goes above this: the partitions in use
keep their files open, the idle ones beyond are closed and reopened on demand. A
release is its files' ``close`` (no fsync: it was synced) and a reopen one ``open`` (the
WAL segment, for appending; on the event loop, no thread hop), so a round-robin over
more partitions than this costs a reopen and a release per request, on the event loop
(a producer round-robin over 1,000 partitions lost 15-25 % of its MB/s to them): the
partitions under production stay open beyond it (``active_partitions_for_open_files``).
256 keeps a broker of 10,000 partitions used once each under 1,024 open files with
RLIMIT_NOFILE 20,000 as with 1,024 ((1,024 - 512) / 2 = 256)."""


def open_partitions_for_open_files(open_files: int) -> int:
    """The default ``--max-open-partitions`` for a process allowed ``open_files`` files:
    what the limit holds after the reserve, at most ``MAX_DERIVED_OPEN_PARTITIONS``."""
    return max(1, min(MAX_DERIVED_OPEN_PARTITIONS, active_partitions_for_open_files(open_files)))


def active_partitions_for_open_files(open_files: int) -> int:
    """The default ``--max-active-partitions``: partitions under production (appended to
    twice within 2 s) kept open beyond ``--max-open-partitions``, up to what the limit
    holds after the reserve at ``FDS_PER_OPEN_PARTITION`` each (9,488 at 20,000; 256 at
    1,024, where no more than ``--max-open-partitions`` are open)."""
    reserve = min(RESERVED_FDS, open_files // 2)
    return max(1, (open_files - reserve) // FDS_PER_OPEN_PARTITION)


def current_open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _NR_OPEN if soft == resource.RLIM_INFINITY else soft
