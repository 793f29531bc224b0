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

Bounds, per connection (what one client can make the broker hold):

- requests: frames up to ``--max-request-bytes``, at most ``max_in_flight`` unanswered,
  beyond which reading the socket pauses (``reading_paused``); their bytes are held in
  the broker's request budget (``--max-request-bytes-in-flight``). A large frame is
  read in steps, each step's room reserved before it is read and at most what the frame
  already delivered (``LEAD_MIN_BYTES`` .. ``LEAD_MAX_BYTES``): a client that announces
  a frame and stalls holds no room it has not sent, and is closed once no byte came for
  ``--kafka-frame-timeout-ms``. A step that finds no room pauses reading, except for the
  frame received longest (broker-wide), which may go past the budget by its own size:
  frames being received can never wait for each other forever.
- answers: while the transport's write buffer is above its high-water mark
  (``pause_writing``) or answers given out of order wait for an earlier one beyond
  ``HELD_RESPONSE_BYTES``, the connection is not read and no handler starts; when they
  drain, handlers start again one at a time; a connection's Fetch requests are served
  one at a time. So a client that never reads its answers makes the broker hold about
  two answers (one being written, one built) and its ``max_in_flight`` decoded
  requests, not one answer per request it sends.
- a receive buffer of ``RECEIVE_BUFFER_MIN_BYTES``, allocated at the first read and
  grown on demand up to ``RECEIVE_BUFFER_BYTES`` (large bodies go to their own buffer).

And per listener: at most ``--max-connections`` connections (one more is accepted and
closed at once, counted in ``sentinel_kafka_refused_connections_total``), and a
connection with no handler running and no byte read or written for
``--connections-max-idle-ms`` is closed (Kafka's ``connections.max.idle.ms``): a client
that does not read its answers, too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import time
from dataclasses import fields, is_dataclass
from typing import Any, cast

from sentinel.broker.limits import current_open_files_limit
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
"""What one socket read may fill at most (the buffer grows to it on demand)."""
RECEIVE_BUFFER_MIN_BYTES = 4 * 1024
"""The receive buffer's first size, allocated at the first read (an idle connection
holds none)."""
SMALL_FRAME_BYTES = 64 * 1024
"""Frames up to this size are read without waiting for the request budget (their bytes
are held in it as they arrive)."""
LEAD_MIN_BYTES = SMALL_FRAME_BYTES
LEAD_MAX_BYTES = 4 * 1024 * 1024
"""A large frame's next step: as many bytes as it delivered, within these bounds."""
FETCH_KEY = 1
"""Fetch requests of one connection are served one at a time (Kafka's clients send one at
a time anyway): a pipeline of long polls would otherwise build their answers together."""
HELD_RESPONSE_BYTES = 1024 * 1024
"""Answers waiting for an earlier one beyond this stop handlers from starting."""
DEFAULT_FRAME_TIMEOUT_S = 30.0
"""A frame's body must keep arriving: closed when no byte of it came for this long."""
DEFAULT_CONNECTIONS_MAX_IDLE_S = 600.0
"""Kafka's ``connections.max.idle.ms`` default."""
MAX_DERIVED_CONNECTIONS = 10_000
"""The derived ``--max-connections`` never goes above this."""
REFUSAL_LOG_INTERVAL_S = 10.0
"""At most one log line per this many seconds about refused connections."""


def connections_for_open_files(open_files: int) -> int:
    """The default ``--max-connections`` for a process allowed ``open_files`` files:
    half of them (the other half is the partitions' and the other doors'), at least 16,
    at most ``MAX_DERIVED_CONNECTIONS``."""
    return max(16, min(MAX_DERIVED_CONNECTIONS, open_files // 2))


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
        max_connections: int | None = None,
        connections_max_idle_s: float | None = None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.max_frame_bytes = max_frame_bytes
        self.max_in_flight = max_in_flight
        #: A frame's body must keep arriving: closed when no byte of it came for this
        #: long (a client that announces a frame and stalls holds its buffer until then).
        self.frame_timeout_s = frame_timeout_s
        config = getattr(service, "config", None)
        if max_connections is None:  # from the broker's settings (0: derived)
            max_connections = int(getattr(config, "max_connections", 0))
        self.max_connections = max_connections or connections_for_open_files(
            current_open_files_limit()
        )
        if connections_max_idle_s is None:
            idle_ms = getattr(config, "connections_max_idle_ms", None)
            connections_max_idle_s = (
                DEFAULT_CONNECTIONS_MAX_IDLE_S if idle_ms is None else idle_ms / 1000.0
            )
        self.connections_max_idle_s = connections_max_idle_s
        self.handlers: dict[int, Handler] = load_handlers()
        self._server: asyncio.Server | None = None
        self._open: set[_KafkaProtocol] = set()
        self._none_open = asyncio.Event()
        self._ids = itertools.count(1)
        #: Connections receiving a large frame, the one receiving longest first.
        self._receiving: dict[_KafkaProtocol, None] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._refused_unlogged = 0
        self._refusal_logged_at = -math.inf

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
        self._sweeper = loop.create_task(self._sweep_idle())
        return bound

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; give requests in flight up to ``grace_s``; close the rest."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
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

    def opened(self, proto: _KafkaProtocol) -> bool:
        """Count a new connection in; False if it is one too many (close it)."""
        if len(self._open) >= self.max_connections:
            self._refused()
            return False
        self._open.add(proto)
        self._none_open.clear()
        self.metrics.kafka_connections.inc()
        return True

    def _refused(self) -> None:
        self.metrics.kafka_refused_connections.inc()
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            log.warning(
                "kafka: refused %d connection(s): %d open is the limit (--max-connections)",
                self._refused_unlogged, self.max_connections,
            )
            self._refused_unlogged = 0
            self._refusal_logged_at = now

    def closed(self, proto: _KafkaProtocol) -> None:
        self.done_receiving(proto)
        if proto in self._open:
            self._open.discard(proto)
            self.metrics.kafka_connections.dec()
            if not self._open:
                self._none_open.set()

    # ---------------------------------------------------- large frames received

    def receiving(self, proto: _KafkaProtocol) -> bool:
        """``proto`` receives a large frame; True if it has received one longest."""
        self._receiving.setdefault(proto, None)
        return next(iter(self._receiving)) is proto

    def done_receiving(self, proto: _KafkaProtocol) -> None:
        """``proto``'s large frame is whole (or gone): the next one longest received may
        now go past the budget, if it waits for room."""
        if proto not in self._receiving:
            return
        was_first = next(iter(self._receiving)) is proto
        del self._receiving[proto]
        if was_first and self._receiving:
            next(iter(self._receiving)).promoted()

    # ------------------------------------------------------------ idle connections

    async def _sweep_idle(self) -> None:
        idle = self.connections_max_idle_s
        interval = min(max(idle / 4.0, 0.05), 30.0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            deadline = loop.time() - idle
            for proto in [p for p in self._open if p.idle_since(deadline)]:
                log.debug("kafka connection %s idle for %g s: closed", proto.peer, idle)
                self.metrics.kafka_closed_connections.labels("idle").inc()
                proto.close_idle()


class _KafkaProtocol(asyncio.BufferedProtocol):
    """One client connection: the driver of one ``KafkaServerConnection``."""

    def __init__(self, listener: KafkaListener, connection_id: int) -> None:
        self._listener = listener
        self._id = connection_id
        self._conn = KafkaServerConnection(
            max_frame_bytes=listener.max_frame_bytes, max_in_flight=listener.max_in_flight
        )
        #: Our receive buffer, allocated at the first read, grown and shrunk with them.
        self._view: memoryview | None = None
        #: The last ``get_buffer`` gave the connection's own frame buffer.
        self._direct = False
        self._transport: asyncio.Transport | None = None
        self._paused = False
        #: Bytes held in the broker's request budget for the frame being received: what
        #: of it arrived, and the room for its next step.
        self._head: Reservation | None = None
        #: Waiting for room for the next step: reading stays paused meanwhile.
        self._admission: asyncio.Task[None] | None = None
        #: Drops the connection if the frame being received stops arriving.
        self._body_timer: asyncio.TimerHandle | None = None
        #: The transport's write buffer is above its high-water mark.
        self._write_paused = False
        #: Handlers waiting for the answers before theirs to drain, in request order,
        #: and whether one of them was let through and has not finished.
        self._turns: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._turn_taken = False
        self._fetching = asyncio.Lock()
        self._last_active = time.monotonic()
        #: The transport's unwritten bytes when the idle sweep last looked.
        self._unsent = 0
        self.peer = "?"
        self.tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ asyncio calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        if not self._listener.opened(self):
            self._conn.close()
            transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        # A large frame's body is read straight into its own buffer (no copy out of ours),
        # as far as the room held for it goes.
        direct = self._conn.receive_buffer(self._room_ahead())
        self._direct = direct is not None and len(direct) > 0
        if direct is not None and self._direct:
            return direct
        view = self._view
        if view is None:
            view = self._view = memoryview(bytearray(RECEIVE_BUFFER_MIN_BYTES))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        self._last_active = time.monotonic()
        if self._direct:
            self._handle(self._conn.body_received(nbytes))
            return
        view = self._view
        assert view is not None  # get_buffer gave it
        self._handle(self._conn.receive_data(view[:nbytes]))
        size = len(view)
        if nbytes == size and size < RECEIVE_BUFFER_BYTES:
            self._view = memoryview(bytearray(size * 2))
        elif nbytes <= size // 8 and size > RECEIVE_BUFFER_MIN_BYTES:
            self._view = memoryview(bytearray(size // 2))

    def eof_received(self) -> bool | None:
        return None  # close our side too (unanswered requests are dropped)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._last_active = time.monotonic()
        self._flow()
        self._next_turn()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._view = None
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

    def close_idle(self) -> None:
        """Close an idle connection: at once if answers are still unwritten (its client
        does not read them), else as ``close``."""
        transport = self._transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def idle_since(self, deadline: float) -> bool:
        """Nothing read or written since ``deadline`` (a write going on counts: its
        unwritten bytes changed since the last look), and no handler running (those
        waiting for answers that do not drain do not count)."""
        transport = self._transport
        if transport is None:
            return False
        unsent = transport.get_write_buffer_size()
        if unsent != self._unsent:
            self._unsent = unsent
            self._last_active = time.monotonic()
            return False
        return self._last_active < deadline and (not self.tasks or self._write_paused)

    # ---------------------------------------------------------------- events

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            # The first frame completed is the one whose room was held, if any; frames
            # read whole in one go are accounted as they are (already in memory).
            held, self._head = self._head, None
            if held is not None:
                self._listener.done_receiving(self)
            self._disarm()
            if isinstance(event, RequestReceived):
                self._dispatch(event, self._holding(held, event.frame_bytes))
            elif isinstance(event, UnsupportedRequest):
                if held is not None:
                    held.release()
                self._unsupported(event)
            elif isinstance(event, ConnectionClosed):
                if held is not None:
                    held.release()
                self._drop("bad_frame", event.reason)
                return
        self._make_room()
        self._flow()

    def _holding(self, held: Reservation | None, size: int) -> Reservation:
        """``held`` made to hold exactly a received frame's ``size`` bytes."""
        if held is None:
            return self._listener.service.request_budget.force(size)
        if held.size < size:
            held.grow(size - held.size)
        else:
            held.shrink(size)
        return held

    def _room_ahead(self) -> int:
        """Bytes of the frame being received that may be read now (room is held)."""
        if self._head is None:
            return 0
        return max(0, self._head.size - self._conn.head_received_bytes())

    def _make_room(self) -> None:
        """Hold, in the broker's request budget (``--max-request-bytes-in-flight``),
        what the frame being received delivered so far and, for a large frame, room
        for its next step before that step is read: without room, reading this
        connection pauses until earlier requests are answered. Small frames are read
        without waiting (16 in flight per connection bound them)."""
        need = self._conn.head_frame_bytes()
        if need == 0 or self._admission is not None or self._transport is None:
            return
        budget = self._listener.service.request_budget
        have = self._conn.head_received_bytes()
        if self._head is None:
            self._head = budget.force(have)
        elif self._head.size < have:  # read through our own buffer, past the room
            self._head.grow(have - self._head.size)
        if have >= need:  # whole, handed out once max_in_flight allows: not read meanwhile
            self._disarm()
            return
        if need > SMALL_FRAME_BYTES and self._head.size <= have:  # the next step's room
            step = min(need - have, max(LEAD_MIN_BYTES, min(have, LEAD_MAX_BYTES)))
            room = budget.try_reserve(step)
            if room is None and self._listener.receiving(self):
                room = budget.force(step)  # received longest: it may go past the budget
            if room is None:
                self._disarm()  # the clock stops while the broker holds the client back
                self._admission = asyncio.get_running_loop().create_task(
                    self._wait_for_room(step)
                )
                return
            self._listener.receiving(self)
            self._head.absorb(room)
        self._arm(need)

    async def _wait_for_room(self, step: int) -> None:
        me = asyncio.current_task()
        try:
            room = await self._listener.service.request_budget.reserve(step, None)
        finally:
            if self._admission is me:
                self._admission = None
        if self._head is None or self._transport is None:
            room.release()
            return
        self._head.absorb(room)
        self._arm(self._conn.head_frame_bytes())  # the clock starts once reading resumes
        self._flow()

    def promoted(self) -> None:
        """This connection's frame is now the one received longest: if it waits for
        room, it may go past the budget instead (``_make_room``)."""
        task = self._admission
        if task is None or self._transport is None:
            return
        self._admission = None
        task.cancel()
        self._make_room()
        self._flow()

    def _arm(self, need: int) -> None:
        """Start the clock for the body of the frame being received: it must keep
        arriving (Kafka's request.timeout.ms idea, on the broker's side)."""
        self._disarm()
        timeout = self._listener.frame_timeout_s
        self._body_timer = asyncio.get_running_loop().call_later(
            timeout, self._drop, "frame_timeout",
            f"the rest of a {need}-byte frame did not arrive within {timeout:g} s of its"
            " last byte",
        )

    def _disarm(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _congested(self) -> bool:
        """Answers do not drain: the client does not read them, or they wait for an
        earlier one (a long poll) beyond ``HELD_RESPONSE_BYTES``."""
        return self._write_paused or self._conn.held_response_bytes > HELD_RESPONSE_BYTES

    def _held_back(self, correlation_id: int) -> bool:
        """Whether the request ``correlation_id`` must wait for answers to drain. The
        oldest unanswered one never waits for the answers held behind it: they can only
        drain once it is answered (a second Fetch queued behind a long poll, with more
        than ``HELD_RESPONSE_BYTES`` of answers behind both, waited for good)."""
        if self._write_paused:
            return True
        return (
            self._conn.held_response_bytes > HELD_RESPONSE_BYTES
            and correlation_id != self._conn.oldest_unanswered
        )

    def _flow(self) -> None:
        transport = self._transport
        if transport is None:
            return
        pause = self._conn.reading_paused or self._admission is not None or self._congested()
        if pause and not self._paused:
            transport.pause_reading()
            self._paused = True
        elif self._paused and not pause:
            transport.resume_reading()
            self._paused = False

    async def _take_turn(self, correlation_id: int) -> bool:
        """Wait while answers do not drain (``_held_back``), then start one handler at
        a time until none waits; True if this one was let through that way."""
        if not self._turns and not self._turn_taken and not self._held_back(correlation_id):
            return False
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append((correlation_id, turn))
        self._next_turn()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # let through as it was cancelled
                self._turn_taken = False
            raise
        return True

    def _next_turn(self) -> None:
        """Let the first waiting handler through, in order, unless answers do not drain;
        the oldest unanswered request's handler is let through even then."""
        if self._turn_taken or self._transport is None:
            return
        while self._turns and self._turns[0][1].done():  # cancelled meanwhile
            self._turns.popleft()
        if not self._turns:
            return
        if not self._congested():
            _, turn = self._turns.popleft()
        else:
            found = [t for cid, t in self._turns if not t.done() and not self._held_back(cid)]
            if not found:
                return
            turn = found[0]
            self._turns = collections.deque(e for e in self._turns if e[1] is not turn)
        turn.set_result(None)
        self._turn_taken = True

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
        turn = False
        try:
            if event.api_key == FETCH_KEY:
                async with self._fetching:
                    turn = await self._take_turn(event.correlation_id)
                    await self._answer(handler, ctx, event)
            else:
                turn = await self._take_turn(event.correlation_id)
                await self._answer(handler, ctx, event)
        finally:
            held.release()
            if turn:
                self._turn_taken = False
            self._next_turn()

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
        self._last_active = time.monotonic()
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

