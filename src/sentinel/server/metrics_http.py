"""The ``/metrics`` port: Prometheus's exposition over HTTP/1.1, on the broker's event loop.

A scrape is ``GET`` (or ``HEAD``) of any path but ``/favicon.ico`` (an empty answer), as
prometheus-client's own server answers: the text format, or OpenMetrics when the
``Accept`` header asks for it, gzipped when ``Accept-Encoding`` allows it, restricted to
the families ``?name[]=...`` names. Connections are kept alive as HTTP/1.1 says.

What bounds the port (prometheus-client's ``ThreadingWSGIServer`` had none of these: a
listen queue of 5, a thread per connection for as long as its client kept it open):

=====================================  ============================================
what                                   answer
=====================================  ============================================
a burst of connects                    a listen queue of ``LISTEN_BACKLOG``
connections open at once               at most ``max_connections``; one more
                                       closes the one that has waited longest for
                                       a request, or, none waiting, is closed
a request head that does not arrive    the connection is closed ``read_timeout_s``
(or a kept-alive connection idle)      after it was opened (or last answered)
an answer its client does not read     the connection is closed ``read_timeout_s``
                                       after the answer was written
a request head over ``MAX_HEAD_BYTES`` ``431``, closed
not HTTP/1.x                           ``400``, closed
a method other than GET and HEAD       ``405``, closed
a request with a body                  answered, closed (its body is not read)
many scrapes at once                   one render at a time, on one thread of its
                                       own; the scrapes that arrive while a render
                                       is waiting to start share it
=====================================  ============================================

An open connection costs a socket and a small task, no thread: the one render thread
is all the port adds to the broker's threads. A scrape sees everything that happened
before it arrived (a render it shares starts after it arrived).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import logging
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from sentinel.server.metrics_bulk import render

__all__ = ["LISTEN_BACKLOG", "MAX_HEAD_BYTES", "MetricsHttpServer"]

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
"""Connections the kernel holds for the port before they are accepted (``somaxconn`` at
most): with 5, a burst of connects lost some, whose clients waited for a SYN retransmit."""
MAX_HEAD_BYTES = 16 * 1024
"""A request line and its headers together."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True, slots=True)
class _Scrape:
    """What a render depends on: scrapes with the same one share a render."""

    accept: str
    gzip: bool
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"

    @property
    def has_body(self) -> bool:
        length = self.headers.get("content-length", "0").strip()
        return "transfer-encoding" in self.headers or length not in ("", "0")


class _BadRequestError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def parse_head(raw: bytes) -> _Head:
    """The request line and headers of ``raw`` (ending in a blank line); raises
    ``_BadRequestError(400)`` for anything that is not an HTTP/1.x request head."""
    lines = raw.decode("latin-1").split("\r\n")  # latin-1: every byte is a character
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1]:
        raise _BadRequestError(400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequestError(400)
        headers[name.lower()] = value.strip()
    return _Head(parts[0], parts[1], parts[2], headers)


class MetricsHttpServer:
    """The metrics port of one broker (module doc). ``start``, then ``close``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        read_timeout_s: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        self._registry = registry
        self._read_timeout_s = read_timeout_s
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        #: The connections waiting for a request, the longest waiting first.
        self._idle: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._render_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="metrics-render"
        )
        self._render_turn = asyncio.Lock()
        self._renders: set[asyncio.Future[None]] = set()
        #: The render each kind of scrape that arrives now joins (not started yet).
        self._waiting: dict[_Scrape, asyncio.Future[bytes]] = {}
        self.refused = 0  # connections closed at once: the bound, none idle
        self.evicted = 0  # idle connections closed for a new one

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def idle_connections(self) -> int:
        """Open connections waiting for a request."""
        return len(self._idle)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host``:``port`` (0: any free port); the port bound."""
        self._server = await asyncio.start_server(
            self._accept, host, port, backlog=LISTEN_BACKLOG, limit=MAX_HEAD_BYTES
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = [*self._connections, *self._renders]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self._render_thread.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max_connections and not self._evict_idle():
            self.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(task, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except TimeoutError:  # an answer its client did not read in time
            writer.transport.abort()
        except Exception:
            log.exception("metrics port: a connection failed")
        finally:
            self._connections.discard(task)
            self._idle.pop(task, None)
            writer.close()

    def _evict_idle(self) -> bool:
        """At the connections bound: close the connection that has waited longest for
        a request (its client may open it again), if one waits; whether one did."""
        if not self._idle:
            return False
        task = next(iter(self._idle))
        self._idle.pop(task).transport.abort()
        self.evicted += 1
        return True

    async def _serve(
        self, task: asyncio.Task[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            self._idle[task] = writer  # the newest idle last
            raw: bytes | None
            try:
                raw = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=self._read_timeout_s
                )
            except (TimeoutError, asyncio.IncompleteReadError):
                return  # no request came (or the client left)
            except asyncio.LimitOverrunError:
                raw = None  # a head over the limit
            finally:
                self._idle.pop(task, None)
            if raw is None:
                await self._answer(writer, 431, b"", keep_alive=False)
                return
            try:
                head = parse_head(raw)
            except _BadRequestError as bad:
                await self._answer(writer, bad.status, b"", keep_alive=False)
                return
            if head.method not in ("GET", "HEAD"):
                await self._answer(writer, 405, b"", keep_alive=False, allow=True)
                return
            keep_alive = head.keep_alive and not head.has_body
            status, headers, body = await self._scrape(head)
            await self._answer(
                writer, status, body, keep_alive=keep_alive, headers=headers,
                send_body=head.method == "GET",
            )  # fmt: skip
            if not keep_alive:
                return

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        keep_alive: bool,
        headers: tuple[tuple[str, str], ...] = (),
        send_body: bool = True,
        allow: bool = False,
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if allow:
            lines.append("Allow: GET, HEAD")
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: " + ("keep-alive" if keep_alive else "close"))
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if send_body and body:
            writer.write(body)
        # A client that does not read its answer holds it (a scrape of 10,000 partitions
        # is 2.3 MB) only this long.
        await asyncio.wait_for(writer.drain(), timeout=self._read_timeout_s)

    # ------------------------------------------------------------ rendering

    async def _scrape(self, head: _Head) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        url = urlsplit(head.target)
        if url.path == "/favicon.ico":
            return 200, (), b""
        names = tuple(parse_qs(url.query).get("name[]", ()))
        scrape = _Scrape(
            head.headers.get("accept", ""), gzip_accepted(head.headers.get("accept-encoding", "")),
            names,
        )  # fmt: skip
        _encoder, content_type = choose_encoder(scrape.accept)
        headers = [("Content-Type", content_type)]
        if scrape.gzip:
            headers.append(("Content-Encoding", "gzip"))
        try:
            body = await self._shared_render(scrape)
        except Exception:
            log.exception("metrics port: a render failed")
            return 500, (), b""
        return 200, tuple(headers), body

    async def _shared_render(self, scrape: _Scrape) -> bytes:
        """The render of ``scrape`` that has not started yet, joined, or a new one."""
        render = self._waiting.get(scrape)
        if render is None:
            render = asyncio.get_running_loop().create_future()
            self._waiting[scrape] = render
            task = asyncio.ensure_future(self._run_render(scrape, render))
            self._renders.add(task)
            task.add_done_callback(self._renders.discard)
        return await asyncio.shield(render)

    async def _run_render(self, scrape: _Scrape, render: asyncio.Future[bytes]) -> None:
        async with self._render_turn:
            # From here on, a scrape that arrives starts the next render: this one may
            # have read some figures already.
            if self._waiting.get(scrape) is render:
                del self._waiting[scrape]
            loop = asyncio.get_running_loop()
            try:
                body = await loop.run_in_executor(self._render_thread, self._render, scrape)
            except asyncio.CancelledError:
                render.cancel()
                raise
            except Exception as exc:  # handed to every waiting scrape
                render.set_exception(exc)
                render.exception()  # retrieved: the waiters may all have gone
            else:
                render.set_result(body)

    def _render(self, scrape: _Scrape) -> bytes:
        encoder, _content_type = choose_encoder(scrape.accept)
        registry = (
            self._registry.restricted_registry(list(scrape.names))
            if scrape.names
            else self._registry
        )
        body = render(registry, encoder)  # the per-partition families in one pass
        return gzip.compress(body) if scrape.gzip else body
