"""Broker-wide limits on what requests may make the broker hold: partitions (each is a
log with its own files), topics created on the side of a request, and the process's
open-files limit they are derived from.

A partition costs no thread (the engines share a worker pool and a sync pipeline) and
holds its files open (measured: 4, LOCK, WAL segment, manifest and its table; 3 when
new) only while it is among the ``--max-open-partitions`` most recently used
(``open_partitions_for_open_files``); after a clean stop an idle partition is not even
opened at start. ``--max-partitions`` is derived with ``FDS_PER_PARTITION`` = 2: idle
partitions hold none, and the budget covers the moments when many hold files at once
(a topic's partitions are created together; after a crash each recovers with its files
open until the open-files limit releases it).

The limits bound *creation*, never recovery: a broker that finds more partitions on disk
than its limit (the limit was lowered) still opens them all.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

from sentinel.errors import CallerError

FDS_PER_PARTITION = 2
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


FDS_PER_OPEN_PARTITION = 6
"""Open files budgeted per partition whose files are open: 4 measured (LOCK, WAL
segment, manifest, one table), with room for a second table or a value segment read."""

MAX_DERIVED_OPEN_PARTITIONS = 2048
"""The derived ``--max-open-partitions`` never goes above this: the partitions in use
keep their files open, the idle ones beyond are closed and reopened on demand. A
round-robin over more partitions than this reopens files on every request (a few
``open`` calls each): 2,048 keeps a producer spread over 1,000-2,000 partitions free of
that churn wherever RLIMIT_NOFILE allows (~13,000 files; 20,000 here: 2,048)."""


def open_partitions_for_open_files(open_files: int) -> int:
    """The default ``--max-open-partitions`` for a process allowed ``open_files`` files:
    what the limit holds after the reserve, at most ``MAX_DERIVED_OPEN_PARTITIONS``."""
    reserve = min(RESERVED_FDS, open_files // 2)
    derived = (open_files - reserve) // FDS_PER_OPEN_PARTITION
    return max(1, min(MAX_DERIVED_OPEN_PARTITIONS, derived))


def current_open_files_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _NR_OPEN if soft == resource.RLIM_INFINITY else soft
