"""The Kafka protocol listener: sockets to ``KafkaServerConnection``, requests to handlers.

Raw asyncio: one ``BufferedProtocol`` per client socket receives into a buffer of its
own that is reused for every read (no fresh ``bytes`` per read: DESIGN's measurements)
and feeds the sans-IO ``KafkaServerConnection``, which frames, decodes and keeps the
answers in request order. Each decoded request runs as its own task calling the
handler registered for its API key (``handlers``); the buffers ``send_response_pieces``
returns are written as they become writable, in one vectored write (a fetch's stored
batches by reference, not copied into the answer). So a long-polling Fetch does not hold up the
Metadata request behind it, and the client still reads its answers in order.

Per connection, nothing else is affected:

=========================================  ==========================================
what                                       answer
=========================================  ==========================================
API key or version we do not speak         UNSUPPORTED_VERSION (the codec's answer)
an advertised API no handler serves yet    UNSUPPORTED_VERSION
oversized or malformed frame               that socket closed, one warning line
handler raises ``SentinelError``           its ``kafka_code`` in the response's
                                           ``error_code`` (handlers answer per
                                           partition; this is the last resort); a
                                           response without one: closed, one line
any other handler exception (a bug)        logged once with its trace, that socket
                                           closed
=========================================  ==========================================

Bounds: frames up to ``--max-request-bytes``; at most ``max_in_flight`` unanswered
requests per connection, beyond which reading the socket pauses (``reading_paused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import fields, is_dataclass
from typing import Any, cast

from sentinel.broker.request_budget import Reservation
from sentinel.broker.service import BrokerService
from sentinel.errors import SentinelError
from sentinel.protocol.kafka.connection import DEFAULT_MAX_IN_FLIGHT, KafkaServerConnection
from sentinel.protocol.kafka.events import (
    ConnectionClosed,
    Event,
    RequestReceived,
    UnsupportedRequest,
)
from sentinel.protocol.kafka.messages import API_NAMES, RESPONSES
from sentinel.protocol.kafka.versions import UNSUPPORTED_VERSION
from sentinel.protocol.kafka.wire import Buffer
from sentinel.server.kafka.handlers import Handler, KafkaRequestContext, load_handlers
from sentinel.server.kafka.traffic import record_traffic
from sentinel.server.metrics import Metrics

__all__ = ["KafkaListener", "first_error_code"]

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 2.0
"""How long ``stop`` waits for the closed sockets to report themselves closed."""
RECEIVE_BUFFER_BYTES = 256 * 1024
"""What one socket read may fill; the buffer is allocated once per connection."""
SMALL_FRAME_BYTES = 64 * 1024
"""Frames up to this size are admitted without waiting for the request budget."""
DEFAULT_FRAME_TIMEOUT_S = 30.0
"""A frame's body must arrive within this once its length did (and its room is held)."""


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A response class's field names, once per class (``fields()`` builds them anew)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def first_error_code(value: Any) -> int:
    """The first non-zero ``error_code`` of a response, depth first (0: none)."""
    code = getattr(value, "error_code", 0)
    if code:
        return int(code)
    for name in _field_names(type(value)):
        items = getattr(value, name)
        if isinstance(items, tuple) and items and is_dataclass(items[0]):
            for item in items:
                code = first_error_code(item)
                if code:
                    return code
    return 0


def error_response(api_key: int, code: int) -> Any | None:
    """The API's response carrying ``code`` at its top level, or None if it has no
    top-level ``error_code`` (its errors are per topic or partition)."""
    cls = RESPONSES[api_key].body.cls
    if "error_code" not in {f.name for f in fields(cls)}:
        return None
    return cls(error_code=code)


class KafkaListener:
    """The Kafka port: accepts connections, serves them, counts them."""

    def __init__(
        self,
        service: BrokerService,
        metrics: Metrics,
        *,
        max_frame_bytes: int,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.max_frame_bytes = max_frame_bytes
        self.max_in_flight = max_in_flight
        #: A frame's body must arrive within this once its room is held (a client that
        #: announces a frame and stalls would otherwise hold budget room until it leaves).
        self.frame_timeout_s = frame_timeout_s
        self.handlers: dict[int, Handler] = load_handlers()
        self._server: asyncio.Server | None = None
        self._open: set[_KafkaProtocol] = set()
        self._none_open = asyncio.Event()
        self._ids = itertools.count(1)

    @property
    def connections(self) -> int:
        return len(self._open)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _KafkaProtocol(self, next(self._ids)), host, port, reuse_address=True
        )
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; give requests in flight up to ``grace_s``; close the rest."""
        if self._server is None:
            return
        self._server.close()
        pending = {task for proto in self._open for task in proto.tasks}
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
        for proto in list(self._open):
            proto.close()
        if self._open:  # their connection_lost runs on the next loop iterations
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_open.wait(), CLOSE_WAIT_S)
        # Bounded: the server also waits for connections accepted after the snapshot
        # above; none of them may hold up the broker's exit.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), CLOSE_WAIT_S)
        self._server = None

    def opened(self, proto: _KafkaProtocol) -> None:
        self._open.add(proto)
        self._none_open.clear()
        self.metrics.kafka_connections.inc()

    def closed(self, proto: _KafkaProtocol) -> None:
        if proto in self._open:
            self._open.discard(proto)
            self.metrics.kafka_connections.dec()
            if not self._open:
                self._none_open.set()


class _KafkaProtocol(asyncio.BufferedProtocol):
    """One client connection: the driver of one ``KafkaServerConnection``."""

    def __init__(self, listener: KafkaListener, connection_id: int) -> None:
        self._listener = listener
        self._id = connection_id
        self._conn = KafkaServerConnection(
            max_frame_bytes=listener.max_frame_bytes, max_in_flight=listener.max_in_flight
        )
        self._view = memoryview(bytearray(RECEIVE_BUFFER_BYTES))
        #: The last ``get_buffer`` gave the connection's own frame buffer.
        self._direct = False
        self._transport: asyncio.Transport | None = None
        self._paused = False
        #: Bytes held in the broker's request budget for the frame being received.
        self._head: Reservation | None = None
        #: Waiting for room in the budget: reading stays paused meanwhile.
        self._admission: asyncio.Task[None] | None = None
        #: Drops the connection if the held frame's body does not arrive in time.
        self._body_timer: asyncio.TimerHandle | None = None
        self.peer = "?"
        self.tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ asyncio calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self._listener.opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # A large frame's body is read straight into its own buffer (no copy out of ours).
        direct = self._conn.receive_buffer()
        self._direct = direct is not None
        return self._view if direct is None else direct

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self._handle(self._conn.body_received(nbytes))
        else:
            self._handle(self._conn.receive_data(self._view[:nbytes]))

    def eof_received(self) -> bool | None:
        return None  # close our side too (unanswered requests are dropped)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._disarm()
        self._conn.close()
        if self._admission is not None:
            self._admission.cancel()
        if self._head is not None:
            self._head.release()
            self._head = None
        for task in self.tasks:
            task.cancel()
        self._listener.closed(self)
        log.debug("kafka connection %s closed (%s)", self.peer, exc or "by the client")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # ---------------------------------------------------------------- events

    def _handle(self, events: list[Event]) -> None:
        budget = self._listener.service.request_budget
        for event in events:
            # The first frame completed is the one whose room was reserved, if any;
            # frames read whole in one go are accounted as they are (already in memory).
            held, self._head = self._head, None
            self._disarm()
            if isinstance(event, RequestReceived):
                self._dispatch(event, held or budget.force(event.frame_bytes))
            elif isinstance(event, UnsupportedRequest):
                if held is not None:
                    held.release()
                self._unsupported(event)
            elif isinstance(event, ConnectionClosed):
                if held is not None:
                    held.release()
                self._drop("bad_frame", event.reason)
                return
        self._admit_head()
        self._flow()

    def _admit_head(self) -> None:
        """Hold room in the broker's request budget (``--max-request-bytes-in-flight``)
        for the frame whose length prefix has arrived, before its body is read: without
        room, reading this connection pauses until earlier requests are answered. Small
        frames pass at once (16 in flight per connection bound them)."""
        need = self._conn.head_frame_bytes()
        if need == 0 or self._head is not None or self._admission is not None:
            return
        budget = self._listener.service.request_budget
        if need <= SMALL_FRAME_BYTES:
            self._head = budget.force(need)
            self._arm(need)
            return
        self._head = budget.try_reserve(need)
        if self._head is None:
            self._admission = asyncio.get_running_loop().create_task(self._wait_for_room(need))
        else:
            self._arm(need)

    async def _wait_for_room(self, need: int) -> None:
        try:
            self._head = await self._listener.service.request_budget.reserve(need, None)
        finally:
            self._admission = None
        self._arm(need)  # the clock starts once reading resumes
        self._flow()

    def _arm(self, need: int) -> None:
        """Start the clock for the body of the frame whose room is held (Kafka's
        request.timeout.ms idea, on the broker's side)."""
        self._disarm()
        timeout = self._listener.frame_timeout_s
        self._body_timer = asyncio.get_running_loop().call_later(
            timeout, self._drop, "frame_timeout",
            f"the body of a {need}-byte frame did not arrive within {timeout:g} s",
        )

    def _disarm(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _flow(self) -> None:
        transport = self._transport
        if transport is None:
            return
        pause = self._conn.reading_paused or self._admission is not None
        if pause and not self._paused:
            transport.pause_reading()
            self._paused = True
        elif self._paused and not pause:
            transport.resume_reading()
            self._paused = False

    def _unsupported(self, event: UnsupportedRequest) -> None:
        log.debug(
            "kafka %s: api %d v%d unsupported", self.peer, event.api_key, event.api_version
        )
        self._listener.metrics.observe_kafka_request(
            API_NAMES.get(event.api_key, str(event.api_key)), UNSUPPORTED_VERSION, 0.0
        )
        self._write([self._conn.send_unsupported(event)])

    def _dispatch(self, event: RequestReceived, held: Reservation) -> None:
        handler = self._listener.handlers.get(event.api_key)
        if handler is None:  # in the codec's table, served by no handler module (yet)
            held.release()
            self._unsupported(
                UnsupportedRequest(event.api_key, event.api_version, event.correlation_id)
            )
            return
        ctx = KafkaRequestContext(
            event.api_key,
            event.api_version,
            event.correlation_id,
            event.client_id,
            self.peer,
            self._id,
        )
        task = asyncio.get_running_loop().create_task(self._serve(handler, ctx, event, held))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(
        self, handler: Handler, ctx: KafkaRequestContext, event: RequestReceived,
        held: Reservation,
    ) -> None:
        try:
            await self._answer(handler, ctx, event)
        finally:
            held.release()

    async def _answer(
        self, handler: Handler, ctx: KafkaRequestContext, event: RequestReceived
    ) -> None:
        started = time.perf_counter()
        api = API_NAMES.get(event.api_key, str(event.api_key))
        try:
            response = await handler(self._listener.service, ctx, event.request)
        except SentinelError as exc:
            response = error_response(event.api_key, exc.kafka_code)
            if response is None:
                self._drop("internal", f"{api} v{event.api_version} failed: {exc}")
                return
        except Exception:
            log.exception("kafka %s: %s v%d handler failed; closing the connection",
                          self.peer, api, event.api_version)
            self._drop("internal", None)
            return
        try:
            data = self._conn.send_response_pieces(event, response)
        except SentinelError:
            log.exception("kafka %s: %s v%d response does not encode; closing the connection",
                          self.peer, api, event.api_version)
            self._drop("internal", None)
            return
        metrics = self._listener.metrics
        elapsed = time.perf_counter() - started
        metrics.observe_kafka_request(api, first_error_code(response), elapsed)
        record_traffic(metrics, event.api_key, event.request, response)
        self._write(data)
        # Frames held back while max_in_flight were unanswered are handed out now.
        self._handle(self._conn.receive_data(b""))

    def _write(self, data: list[Buffer]) -> None:
        """One vectored write: a fetch's stored batches go out without being copied into
        the answer (uvloop's ``writelines`` keeps references, it does not join)."""
        if self._transport is None:
            return
        if len(data) > 1:
            self._transport.writelines(data)
        elif data and data[0]:
            self._transport.write(data[0])

    def _drop(self, reason: str, detail: str | None) -> None:
        """Close this connection (and only it); one log line unless already logged."""
        if detail is not None:
            log.warning("kafka connection %s closed: %s", self.peer, detail)
        self._listener.metrics.kafka_closed_connections.labels(reason).inc()
        self._conn.close()
        self.close()

