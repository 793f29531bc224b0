"""What this broker tells the controller about its partition groups, best effort.

Two facts only a group's leader learns, recorded through the controller so that every
broker's image holds them: who leads a group in which term (brokers without a replica
name that leader in their metadata), and that a replica move is done (the group's
voters are the move's target). Each report is a task of its own; a report lost to a
failure is followed by the next one (the next election's, the next move step's), so
nothing here retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from sentinel.errors import SentinelError
from sentinel.stopping import cancel_and_wait

log = logging.getLogger("sentinel.cluster.node")  # the name these lines always had

Execute = Callable[[str, Mapping[str, Any]], Awaitable[int]]
"""``Controller.execute``: run an operation at the controller's leader."""


class ControllerReports:
    def __init__(self, node_id: int, execute: Execute) -> None:
        self._node_id = node_id
        self._execute = execute
        self._tasks: set[asyncio.Task[None]] = set()
        self._moves: set[int] = set()  # groups whose move is being reported

    def leader(self, group: int, term: int) -> None:
        """Tell the controller this broker leads ``group`` in ``term``."""

        async def report() -> None:
            try:
                await self._execute(
                    "partition_leader", {"group": group, "leader": self._node_id, "term": term}
                )
            except SentinelError as exc:
                log.debug("reporting the leader of group %d: %s", group, exc)

        self._spawn(report(), f"report-leader-{group}")

    def reporting_move(self, group: int) -> bool:
        """A report of ``group``'s finished move is under way."""
        return group in self._moves

    def move_done(self, group: int, target: tuple[int, ...]) -> None:
        """Tell the controller the move of ``group`` to ``target`` is done (once at a
        time; a failed report is retried by the next step)."""
        self._moves.add(group)

        async def report() -> None:
            try:
                await self._execute(
                    "partition_replicas", {"group": group, "replicas": list(target)}
                )
                log.info("group %d: replicas are now %s", group, list(target))
            except SentinelError as exc:
                log.debug("reporting the move of group %d: %s", group, exc)
            finally:
                self._moves.discard(group)

        self._spawn(report(), f"report-move-{group}")

    def _spawn(self, report: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(report, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel the reports under way (the broker is stopping)."""
        await cancel_and_wait(list(self._tasks), "the controller reports")
