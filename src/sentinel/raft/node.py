"""The asyncio driver of one Raft node: the thin shell around the sans-IO ``RaftCore``.

One task owns the core: it takes messages from an inbox (``deliver``, called by the
transport), ticks the core from one timer, and after every input runs the Ready
contract:

    persist (log, then hard state; in a worker thread, it fsyncs)
      -> send every message (the injected ``Transport``)
      -> apply the committed entries in order (the injected ``apply``)
      -> advance

``propose`` appends at the leader and returns once the entry is committed and applied
here; it raises ``NotLeaderError`` when this node does not lead, or when the entry
was lost (another leader's entry was committed in its place). Between a Ready and its
``advance`` only ``propose`` touches the core (etcd's RawNode allows it): what it adds
goes into the next Ready, so nothing is sent before it is persisted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from sentinel.errors import ClosedError, NotLeaderError
from sentinel.raft.core import RaftCore
from sentinel.raft.errors import MalformedMessageError
from sentinel.raft.log import Entry
from sentinel.raft.messages import Message
from sentinel.raft.state import Ready
from sentinel.stopping import cancel_and_wait

log = logging.getLogger(__name__)


class Transport(Protocol):
    def send(self, m: Message) -> None:
        """Send without waiting; a message may be lost (Raft retries)."""


_KICK = object()  # an inbox item that only asks for the Ready to be handled


class RaftNode:
    def __init__(
        self,
        core: RaftCore,
        transport: Transport,
        *,
        persist: Callable[[Ready], None] | None = None,
        apply: Callable[[Entry], None] | None = None,
        tick_seconds: float = 0.05,
    ) -> None:
        self.core = core
        self._transport = transport
        self._persist = persist
        self._apply = apply
        self._tick = tick_seconds
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._waiters: dict[int, tuple[int, asyncio.Future[Entry]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def id(self) -> int:
        return self.core.id

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"raft-node-{self.id}")

    async def stop(self) -> None:
        """Stop at once (as a killed process: nothing more is sent); pending proposals
        fail with ``ClosedError``."""
        self._stopped = True
        self._inbox.put_nowait(_KICK)  # the loop also ends by itself: 3.11's wait_for
        if self._task is not None:  # can swallow a cancellation
            await cancel_and_wait([self._task], f"raft node {self.id}")
        self._fail_waiters(None, ClosedError(f"raft node {self.id} stopped"))

    def deliver(self, m: Message) -> None:
        """A message from the transport (any thread-free caller on the loop)."""
        if not self._stopped:
            self._inbox.put_nowait(m)

    async def propose(self, data: bytes, count: int = 1) -> Entry:
        if self._stopped:
            raise ClosedError(f"raft node {self.id} stopped")
        entry = self.core.propose(data, count)  # NotLeaderError when not leading
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._waiters[entry.base] = (entry.term, fut)
        self._inbox.put_nowait(_KICK)
        return await fut

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick
        while not self._stopped:
            try:
                item: object | None = await asyncio.wait_for(
                    self._inbox.get(), max(0.0, next_tick - loop.time())
                )
            except TimeoutError:
                item = None
            if self._stopped:
                return
            if item is None:
                self.core.tick()
                next_tick = max(next_tick + self._tick, loop.time())
            else:
                self._step(item)
                while not self._inbox.empty():
                    self._step(self._inbox.get_nowait())
            await self._handle_ready()

    def _step(self, item: object) -> None:
        if not isinstance(item, Message):
            return
        try:
            self.core.step(item)
        except MalformedMessageError as e:
            log.warning("raft node %d refused a message: %s", self.id, e)

    async def _handle_ready(self) -> None:
        core = self.core
        while core.has_ready():
            rd = core.ready()
            if self._persist is not None and (rd.must_sync or rd.hard_state is not None):
                await asyncio.to_thread(self._persist, rd)
                if self._stopped:  # killed while persisting: nothing more goes out
                    return
            for m in rd.messages:
                self._transport.send(m)
            for e in rd.committed:
                if self._apply is not None:
                    self._apply(e)
                self._resolve(e)
            core.advance(rd)
            leader = None if core.leader is None else str(core.leader)
            self._fail_waiters(
                rd.applied,
                NotLeaderError(f"raft node {self.id}: the entry was replaced", leader),
            )

    def _resolve(self, e: Entry) -> None:
        waiter = self._waiters.pop(e.base, None)
        if waiter is None:
            return
        term, fut = waiter
        if fut.done():
            return
        if term == e.term:
            fut.set_result(e)
        else:
            leader = None if self.core.leader is None else str(self.core.leader)
            fut.set_exception(NotLeaderError(
                f"raft node {self.id}: entry at {e.base} of term {term} was replaced", leader
            ))

    def _fail_waiters(self, below: int | None, error: Exception) -> None:
        """Fail the proposals at offsets below ``below`` (None: all)."""
        for base in [b for b in self._waiters if below is None or b < below]:
            _, fut = self._waiters.pop(base)
            if not fut.done():
                fut.set_exception(error)
