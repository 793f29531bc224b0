"""One Kafka client socket: the asyncio driver of one ``KafkaServerConnection``.

A ``BufferedProtocol`` receives into a buffer of its own that is reused for every read
(no fresh ``bytes`` per read: DESIGN's measurements) and feeds the sans-IO
``KafkaServerConnection``, which frames, decodes and keeps the answers in request order.
Each decoded request runs as its own task calling the handler registered for its API key
(``handlers``); the buffers ``send_response_pieces`` returns are written as they become
writable, in one vectored write (a fetch's stored batches by reference, not copied into
the answer). So a long-polling Fetch does not hold up the Metadata request behind it, and
the client still reads its answers in order. What may run together is decided before a
handler starts (``request_order.py``): an admin request that changes the broker's state
(CreateTopics, DeleteTopics, AlterConfigs, ...) runs alone in its place, after every
earlier request of the connection finished and before any later one starts, so a
client's pipelined admin requests take effect in the order sent, as on Kafka's broker
(which serves a connection's requests one at a time); the others overlap as before.

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

Reading the socket pauses (``_flow``) while any of these holds: ``max_in_flight``
requests are unanswered (``reading_paused``); the frame being received waits for room in
the broker's request budget (``frame_room.py``: the steps a large frame is read in); its
answers do not drain (``turns.py``: which handler starts when). A frame's body must keep
arriving: the connection is closed once no byte of it came for ``frame_timeout_s``
(the clock stops while the broker holds the client back).

The receive buffer is ``RECEIVE_BUFFER_MIN_BYTES``, allocated at the first read and grown
on demand up to ``RECEIVE_BUFFER_BYTES`` (large bodies go to their own buffer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from sentinel.broker.request_budget import Reservation
from sentinel.errors import SentinelError, kafka_code_of
from sentinel.protocol.kafka.connection import KafkaServerConnection
from sentinel.protocol.kafka.events import (
    ConnectionClosed,
    Event,
    RequestReceived,
    UnsupportedRequest,
)
from sentinel.protocol.kafka.messages import API_NAMES
from sentinel.protocol.kafka.versions import UNSUPPORTED_VERSION
from sentinel.protocol.kafka.wire import Buffer
from sentinel.server.kafka.frame_room import FrameRoom, Step
from sentinel.server.kafka.handlers import Handler, KafkaRequestContext
from sentinel.server.kafka.request_order import RequestOrder
from sentinel.server.kafka.response_errors import error_response, first_error_code
from sentinel.server.kafka.traffic import record_traffic
from sentinel.server.kafka.turns import FETCH_KEY, Turns

if TYPE_CHECKING:
    from sentinel.server.kafka.listener import KafkaListener

__all__ = ["KafkaSocketProtocol"]

log = logging.getLogger(__name__)

RECEIVE_BUFFER_BYTES = 256 * 1024
"""What one socket read may fill at most (the buffer grows to it on demand)."""
RECEIVE_BUFFER_MIN_BYTES = 4 * 1024
"""The receive buffer's first size, allocated at the first read (an idle connection
holds none)."""

class KafkaSocketProtocol(asyncio.BufferedProtocol):
    """One client connection: the driver of one ``KafkaServerConnection``."""

    def __init__(self, listener: KafkaListener, connection_id: int) -> None:
        self._listener = listener
        self._id = connection_id
        self._conn = KafkaServerConnection(
            max_frame_bytes=listener.max_frame_bytes,
            max_in_flight=listener.max_in_flight,
            buffers=listener.frame_buffers,
        )
        #: Our receive buffer, allocated at the first read, grown and shrunk with them.
        self._view: memoryview | None = None
        #: The last ``get_buffer`` gave the connection's own frame buffer.
        self._direct = False
        self._transport: asyncio.Transport | None = None
        self._paused = False
        #: Room in the broker's request budget for the frame being received.
        self._room = FrameRoom(
            self._conn, listener.service.request_budget, listener.longest_receiving, self
        )
        #: Waiting for room for the next step: reading stays paused meanwhile.
        self._admission: asyncio.Task[None] | None = None
        #: Drops the connection if the frame being received stops arriving.
        self._body_timer: asyncio.TimerHandle | None = None
        #: Which requests may run together: admin requests that change state run alone.
        self._order = RequestOrder()
        #: Which waiting handler starts next while answers do not drain.
        self._turns = Turns(self._conn)
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
        direct = self._conn.receive_buffer(self._room.ahead())
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
        self._turns.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._turns.write_paused = False
        self._last_active = time.monotonic()
        self._flow()
        self._turns.let_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._order.close()
        self._turns.close()
        self._view = None
        self._disarm()
        self._conn.close()
        if self._admission is not None:
            self._admission.cancel()
        self._room.close()
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
        return self._last_active < deadline and (
            not self.tasks or self._turns.write_paused
        )

    # ---------------------------------------------------------------- events

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            self._disarm()
            if isinstance(event, RequestReceived):
                self._dispatch(event, self._room.frame_received(event.frame_bytes))
                continue
            held = self._room.frame_ended()
            if held is not None:
                held.release()
            if isinstance(event, UnsupportedRequest):
                self._unsupported(event)
            elif isinstance(event, ConnectionClosed):
                self._drop("bad_frame", event.reason)
                return
        self._make_room()
        self._flow()

    # ------------------------------------------------- the frame being received

    def _make_room(self) -> None:
        """Hold room for the frame being received (``FrameRoom.advance``): without room
        for a large frame's next step, reading this connection pauses until earlier
        requests are answered; the body's clock runs only while it may be read."""
        if self._admission is not None or self._transport is None:
            return
        step = self._room.advance()
        if step is Step.READ:
            self._arm(self._conn.head_frame_bytes())
        elif step is Step.WHOLE:
            self._disarm()
        elif step is Step.WAIT:
            self._disarm()  # the clock stops while the broker holds the client back
            self._admission = asyncio.get_running_loop().create_task(
                self._wait_for_room(self._room.wanted)
            )

    async def _wait_for_room(self, step: int) -> None:
        me = asyncio.current_task()
        try:
            room = await self._listener.service.request_budget.reserve(step, None)
        finally:
            if self._admission is me:
                self._admission = None
        if not self._room.room_came(room) or self._transport is None:
            return
        self._arm(self._conn.head_frame_bytes())  # the clock starts once reading resumes
        self._flow()

    def promoted(self) -> None:
        """This connection's frame is now the one received longest: if it waits for
        room, it may go past the budget instead (``FrameRoom.advance``)."""
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

    def _flow(self) -> None:
        transport = self._transport
        if transport is None:
            return
        pause = (
            self._conn.reading_paused or self._admission is not None
            or self._turns.congested()
        )
        if pause and not self._paused:
            transport.pause_reading()
            self._paused = True
        elif self._paused and not pause:
            transport.resume_reading()
            self._paused = False

    # ------------------------------------------------------------- requests

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
            self._listener.fetch_sessions,
        )
        # The ticket is taken here, in arrival order: a task's first step may come later.
        ticket = self._order.arrived(event.api_key)
        task = asyncio.get_running_loop().create_task(
            self._serve(handler, ctx, event, held, ticket)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(
        self, handler: Handler, ctx: KafkaRequestContext, event: RequestReceived,
        held: Reservation, ticket: int,
    ) -> None:
        # First in request order (``request_order.py``: an admin request that changes
        # state runs alone); then in turn while answers do not drain (``turns.py``);
        # Fetch requests one at a time, each taking its turn once the one before it is
        # answered.
        order, turns = self._order, self._turns
        turn: asyncio.Future[None] | None = None
        try:
            if order.must_wait(ticket):
                in_order: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                order.wait(ticket, in_order)
                await in_order
            if event.api_key == FETCH_KEY:
                async with self._fetching:
                    if turns.must_wait(event.correlation_id):
                        turn = self._queue_turn(event.correlation_id)
                        await turn
                    await self._answer(handler, ctx, event)
            else:
                if turns.must_wait(event.correlation_id):
                    turn = self._queue_turn(event.correlation_id)
                    await turn
                await self._answer(handler, ctx, event)
        finally:
            held.release()
            turns.finished(turn)
            order.finished(ticket)

    def _queue_turn(self, correlation_id: int) -> asyncio.Future[None]:
        """What the handler of ``correlation_id`` waits on until its turn comes."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.wait(correlation_id, turn)
        return turn

    async def _answer(
        self, handler: Handler, ctx: KafkaRequestContext, event: RequestReceived
    ) -> None:
        started = time.perf_counter()
        api = API_NAMES.get(event.api_key, str(event.api_key))
        # A handler that fails is answered with the error in every item of the request,
        # as Kafka answers (``response_errors``); a bug with UNKNOWN_SERVER_ERROR and
        # its trace in the log.
        try:
            response = await handler(self._listener.service, ctx, event.request)
        except Exception as exc:
            typed = isinstance(exc, SentinelError)
            if not typed:
                log.exception("kafka %s: %s v%d handler failed; %s", self.peer, api,
                              event.api_version, "answered UNKNOWN_SERVER_ERROR"
                              if event.expects_response else "closing the connection")
                if not event.expects_response:
                    self._drop("internal", None)
                    return
            response = error_response(event.api_key, event.request, kafka_code_of(exc),
                                      str(exc) if typed else None)
        if not event.expects_response and (code := first_error_code(response)):
            # A produce with acks 0 has no answer to carry a refusal (not the leader, no
            # such topic, a full disk): Kafka closes the connection, so that the
            # producer asks for metadata again instead of sending on into the void.
            log.info("kafka %s: a produce with acks 0 was refused (error %d); closing "
                     "the connection", self.peer, code)
            self._drop("acks0_refused", None)
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
