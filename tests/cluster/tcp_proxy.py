"""A fault-injecting TCP proxy on loopback, for tests that cut the links between brokers.

``TcpProxy(host, port)`` listens on ``127.0.0.1`` and forwards every connection it
accepts to ``host:port``. It runs its own asyncio loop in a daemon thread, so that
synchronous tests drive it; every control is callable from any thread and takes effect
before it returns:

- ``partition()``: every open connection through the proxy is cut (aborted, so both
  ends see a reset) and new ones are accepted and closed at once, until ``heal()``.
  ``partition(hang=True)`` is a black hole instead: connections stay open but no byte
  moves either way, and new ones are held, until ``heal()`` lets everything flow again.
- ``set_delay(seconds)``: every chunk is delivered that long after the proxy read it
  (a latency, pipelined: throughput is unchanged).
- ``drop_rate(p, seed)``: each chunk read cuts its connection with probability ``p``.
  TCP never loses bytes in the middle of a stream; a lost packet that TCP cannot repair
  shows up as a broken connection, which is what this gives.

Buffers are bounded (``QUEUE_CHUNKS`` chunks of ``CHUNK_BYTES`` per direction and
connection; a full queue stops reading, so TCP back-pressure reaches the sender).
``stop()`` closes everything and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

CHUNK_BYTES = 16 * 1024
QUEUE_CHUNKS = 16
CONTROL_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started."""

    accepted: int  # connections accepted (including refused ones)
    refused: int  # accepted while partitioned and closed at once, or target unreachable
    open: int  # connections being forwarded now
    cut: int  # connections cut by partition() or drop_rate()
    bytes_to_target: int
    bytes_from_target: int


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.target):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """See the module docstring. ``listen_port`` 0 picks a free port at ``start()``."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = listen_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._partitioned = False
        self._flowing: asyncio.Event | None = None  # cleared while a hanging partition lasts
        self._delay = 0.0
        self._drop_p = 0.0
        self._random = random.Random(0)
        self._accepted = self._refused = self._cut = 0
        self._to_target = self._from_target = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- lifecycle (caller's thread) ------------------------------------------------

    def start(self) -> int:
        """Listen on 127.0.0.1 (``listen_port``, or a free port) and return the port."""
        if self._thread is not None:
            return self.port
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, name=f"tcp-proxy-{self.target_port}", daemon=True
        )
        self._thread.start()
        try:
            self.port = self._call(self._listen)
        except BaseException:
            self.stop()
            raise
        return self.port

    def stop(self) -> None:
        """Close the listener and every connection, stop the loop, join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            self._call(self._shutdown)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CONTROL_TIMEOUT_S)
        assert not thread.is_alive(), "the proxy's thread did not stop"
        self._loop = None
        self._thread = None

    # -- faults (any thread) --------------------------------------------------------

    def partition(self, hang: bool = False) -> None:
        """Cut every connection and refuse new ones; ``hang``: freeze them instead."""

        async def apply() -> None:
            assert self._flowing is not None
            if hang:
                self._flowing.clear()
                return
            self._partitioned = True
            self._flowing.set()
            self._cut_all()

        self._call(apply)

    def heal(self) -> None:
        """Undo ``partition()``: new connections are forwarded, frozen ones flow."""

        async def apply() -> None:
            assert self._flowing is not None
            self._partitioned = False
            self._flowing.set()

        self._call(apply)

    def set_delay(self, seconds: float) -> None:
        """Deliver every chunk read from now on ``seconds`` later."""
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds}")
        self._delay = seconds

    def drop_rate(self, p: float, seed: int = 0) -> None:
        """Cut a connection at each chunk read with probability ``p`` (seeded)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop rate must be in [0, 1], got {p}")

        async def apply() -> None:
            self._drop_p = p
            self._random = random.Random(seed)

        self._call(apply)

    def stats(self) -> ProxyStats:
        return ProxyStats(
            accepted=self._accepted,
            refused=self._refused,
            open=len(self._links),
            cut=self._cut,
            bytes_to_target=self._to_target,
            bytes_from_target=self._from_target,
        )

    # -- the loop's thread ----------------------------------------------------------

    def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` on the proxy's loop and wait for its result."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the proxy is not running")

        async def wrapped() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(wrapped(), loop).result(CONTROL_TIMEOUT_S)

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        self._links.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _cut_all(self) -> None:
        for link in list(self._links):
            link.abort()
            self._cut += 1
        self._links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self._partitioned:
            self._refused += 1
            writer.transport.abort()
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            assert self._flowing is not None
            await self._flowing.wait()  # a hanging partition holds new connections too
            if self._partitioned or link not in self._links:
                raise ConnectionError("partitioned while connecting")
            target_reader, target_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), CONTROL_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            self._refused += 1
            self._links.discard(link)
            link.abort()
            return
        link.target = target_writer
        if link not in self._links:  # cut while it connected to the target
            link.abort()
            return
        up = self._pump(link, reader, target_writer, to_target=True)
        down = self._pump(link, target_reader, writer, to_target=False)
        link.tasks = [asyncio.ensure_future(up), asyncio.ensure_future(down)]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)
        link.abort()

    def _drop(self, link: _Link) -> None:
        """Cut one connection (both ends see a reset, both pumps stop)."""
        self._links.discard(link)
        link.abort()

    async def _pump(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        to_target: bool,
    ) -> None:
        """Copy ``source`` to ``sink`` through a bounded queue that applies the delay."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        flowing = self._flowing
        assert flowing is not None

        async def deliver() -> None:
            try:
                while True:
                    due, data = await queue.get()
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                    await flowing.wait()
                    if not data:  # end of stream: pass the half-close on
                        if sink.can_write_eof():
                            sink.write_eof()
                        return
                    sink.write(data)
                    await sink.drain()
                    if to_target:
                        self._to_target += len(data)
                    else:
                        self._from_target += len(data)
            except OSError:  # the sink went away: so does the whole connection
                self._drop(link)

        writer_task = asyncio.ensure_future(deliver())
        try:
            while True:
                await flowing.wait()
                data = await source.read(CHUNK_BYTES)
                if data and self._drop_p and self._random.random() < self._drop_p:
                    self._cut += 1
                    self._drop(link)
                    return
                await queue.put((loop.time() + self._delay, data))
                if not data:
                    break
            await writer_task
        except OSError:  # the source went away
            self._drop(link)
        finally:
            writer_task.cancel()
