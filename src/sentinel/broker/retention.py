"""Retention and key compaction: the periodic pass over every partition of a broker.

``Retention`` owns the pass's one worker thread and the pass in flight. A pass reads
and rewrites batches, so it runs off the event loop, where consumers and producers
would otherwise wait for it (the log serializes writers). A failing partition is
logged and the pass goes on; a full disk is retried by the next pass.

In a cluster a replicated log never moves its start behind its Raft group's back:
the pass hands each log to the cluster node (``ReplicaRetention``), which moves the
start through the group; key compaction is off there (the Raft log does not take the
gaps compaction leaves between batches).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from sentinel.broker.topics import OfflinePartition, Topic
from sentinel.clock import Clock
from sentinel.errors import ClosedError, StorageUnavailableError
from sentinel.log.open_files import OpenLogLimit
from sentinel.log.partition_log import PartitionLog

log = logging.getLogger("sentinel.broker.service")  # the name these lines always had


class ReplicaRetention(Protocol):
    """Retention of a replicated log (``cluster/node``'s ``ClusterNode``)."""

    def apply_retention(self, plog: PartitionLog | OfflinePartition) -> int: ...


class Retention:
    """Passes of retention and compaction over ``topics``' partitions.

    ``replicated`` None: a broker alone, which applies each log's rules itself."""

    def __init__(
        self,
        topics: Iterable[Topic],
        clock: Clock,
        *,
        replicated: ReplicaRetention | None,
        open_limit: OpenLogLimit | None = None,
    ) -> None:
        self._topics = topics
        self._clock = clock
        self._replicated = replicated
        self._open_limit = open_limit
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "sentinel-retention")
        self._pass: concurrent.futures.Future[int] | None = None

    async def run_forever(self, interval_s: Callable[[], float]) -> None:
        """A pass every ``interval_s()`` seconds (read each round, from the service's
        config, which the server replaces once it bound its ports), in the worker
        thread."""
        loop = asyncio.get_running_loop()
        while True:
            interval = interval_s()
            await asyncio.sleep(interval)
            self._pass = self._worker.submit(self.enforce, list(self._topics), interval)
            # Shielded: this task's cancel (a stop) must not cancel a pass still queued
            # for the worker, which ``stop`` then waits for (it raised CancelledError,
            # and the broker exited 1 at SIGTERM).
            await asyncio.shield(asyncio.wrap_future(self._pass, loop=loop))

    async def stop(self) -> None:
        """Once ``run_forever`` is cancelled: let a pass in the worker thread finish."""
        handed, self._pass = self._pass, None
        if handed is not None and not handed.cancelled():
            await asyncio.wrap_future(handed)
        self._worker.shutdown(wait=True)

    def enforce(self, topics: list[Topic] | None = None, idle_s: float | None = None) -> int:
        """One pass of retention and key compaction over every partition. With
        ``idle_s`` (the periodic passes give their interval), a partition whose files
        were released that long ago or more is also given a clean-shutdown record
        (``PartitionLog.mark_idle_clean``): after a crash, the next start checks it and
        opens it on first use instead of recovering it, so that the start after a kill
        grows with the partitions used lately, not with every partition."""
        if idle_s is not None and self._open_limit is not None:
            self._open_limit.trim()  # partitions no longer under production: released
        removed = marked = 0
        started = self._clock.monotonic()
        passes = {"retention": [0, 0], "compaction": [0, 0]}  # partitions, records removed
        for topic in topics if topics is not None else list(self._topics):
            for plog in topic.partitions:
                try:
                    if topic.config.cleanup_delete:
                        # A replicated log moves its start through its Raft group (the
                        # records go later, counted there): never behind its back.
                        cluster = self._replicated
                        gone = plog.apply_retention() if cluster is None else (
                            cluster.apply_retention(plog)
                        )
                        passes["retention"][0] += 1
                        passes["retention"][1] += gone
                        removed += gone
                    # Not in a cluster yet: the Raft log does not take the gaps
                    # compaction leaves between batches.
                    if topic.config.cleanup_compact and self._replicated is None:
                        gone = plog.compact_keys()
                        passes["compaction"][0] += 1
                        passes["compaction"][1] += gone
                        removed += gone
                    if idle_s is not None and isinstance(plog, PartitionLog):
                        marked += plog.mark_idle_clean(idle_s)
                except StorageUnavailableError:
                    pass  # a full disk: the engine logged it once; the next pass retries
                except ClosedError:
                    if not getattr(plog, "closed", False):
                        log.exception("retention failed for %s", topic.name)
                    # Else closed meanwhile: its topic was deleted (or the replica moved
                    # away) after this pass took its list of topics. Nothing to keep.
                except Exception:  # a failing partition must not stop the others
                    log.exception("retention failed for %s", topic.name)
        if marked:
            log.info("marked %d idle partitions clean (released %.0f s ago or more)", marked,
                     idle_s)  # fmt: skip
        for kind, (partitions, gone) in passes.items():
            # INFO when the pass removed something; DEBUG otherwise (every 30 s by default).
            log.log(
                logging.INFO if gone else logging.DEBUG,
                "%s pass: %d records removed from %d partitions in %.0f ms",
                kind,
                gone,
                partitions,
                (self._clock.monotonic() - started) * 1000,
            )
        return removed
