"""The Kafka protocol listener: accepts client sockets, counts them, closes idle ones.

Each accepted socket is served by its own ``KafkaSocketProtocol`` (``socket_protocol.py``:
the asyncio driver of one sans-IO ``KafkaServerConnection``, requests to handlers), which
draws on two small pure modules: ``frame_room.py`` (room in the broker's request budget
for the frame being received, taken in steps for a large one) and ``turns.py`` (which
handler starts next while answers do not drain).

Bounds, per connection (what one client can make the broker hold):

- requests: frames up to ``--max-request-bytes``, at most ``max_in_flight`` unanswered,
  beyond which reading the socket pauses (``reading_paused``); their bytes are held in
  the broker's request budget (``--max-request-bytes-in-flight``). A large frame is
  read in steps, each step's room reserved before it is read and at most what the frame
  already delivered (``LEAD_MIN_BYTES`` .. ``LEAD_MAX_BYTES``, ``frame_room.py``): a
  client that announces a frame and stalls holds no room it has not sent, and is closed
  once no byte came for ``--kafka-frame-timeout-ms``. A step that finds no room pauses
  reading, except for the frame received longest (broker-wide, ``longest_receiving``),
  which may go past the budget by its own size: frames being received can never wait
  for each other forever.
- answers: while the transport's write buffer is above its high-water mark
  (``pause_writing``) or answers given out of order wait for an earlier one beyond
  ``HELD_RESPONSE_BYTES``, the connection is not read and no handler starts; when they
  drain, handlers start again one at a time; a connection's Fetch requests are served
  one at a time (``turns.py``). So a client that never reads its answers makes the
  broker hold about two answers (one being written, one built) and its
  ``max_in_flight`` decoded requests, not one answer per request it sends.
- a receive buffer of ``RECEIVE_BUFFER_MIN_BYTES``, allocated at the first read and
  grown on demand up to ``RECEIVE_BUFFER_BYTES`` (large bodies go to their own buffer;
  ``socket_protocol.py``).

And per listener: at most ``--max-connections`` connections (one more is accepted and
closed at once, counted in ``sentinel_kafka_refused_connections_total``), and a
connection with no handler running and no byte read or written for
``--connections-max-idle-ms`` is closed (Kafka's ``connections.max.idle.ms``): a client
that does not read its answers, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time

from sentinel.broker.limits import current_open_files_limit
from sentinel.broker.service import BrokerService
from sentinel.protocol.kafka.connection import DEFAULT_MAX_IN_FLIGHT
from sentinel.protocol.kafka.frame_buffers import FrameBuffers
from sentinel.server.kafka.fetch_sessions import FetchSessions
from sentinel.server.kafka.frame_room import LongestReceiving
from sentinel.server.kafka.handlers import Handler, load_handlers
from sentinel.server.kafka.socket_protocol import KafkaSocketProtocol
from sentinel.server.metrics import Metrics

__all__ = ["KafkaListener", "connections_for_open_files"]

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
"""Connections the kernel queues for the loop to accept (at most ``net.core.somaxconn``).
asyncio's default, 100, overflowed under a burst of connects (clients starting together):
the loop accepts them a wake-up at a time, and a dropped SYN costs its client a 1 s
retransmit (1 connect in ~100 back to back). gRPC's core listens with the kernel's most."""

CLOSE_WAIT_S = 2.0
"""How long ``stop`` waits for the closed sockets to report themselves closed."""
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


class KafkaListener:
    """The Kafka port: accepts connections, serves them, counts them."""

    def __init__(
        self,
        service: BrokerService,
        metrics: Metrics,
        *,
        max_frame_bytes: int,
        max_in_flight: int | None = None,
        frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S,
        max_connections: int | None = None,
        connections_max_idle_s: float | None = None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.max_frame_bytes = max_frame_bytes
        #: A frame's body must keep arriving: closed when no byte of it came for this
        #: long (a client that announces a frame and stalls holds its buffer until then).
        self.frame_timeout_s = frame_timeout_s
        config = getattr(service, "config", None)
        if max_in_flight is None:  # from the broker's settings (--kafka-max-in-flight)
            max_in_flight = int(getattr(config, "kafka_max_in_flight", DEFAULT_MAX_IN_FLIGHT))
        self.max_in_flight = max_in_flight
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
        #: Incremental fetch sessions (KIP-227), for every connection of this listener.
        self.fetch_sessions = FetchSessions()
        metrics.kafka_fetch_sessions.set_function(lambda: len(self.fetch_sessions))
        metrics.kafka_fetch_session_partitions.set_function(
            lambda: self.fetch_sessions.partitions)
        #: Large frames' receive buffers, reused by every connection (``frame_buffers``).
        self.frame_buffers = FrameBuffers()
        self._server: asyncio.Server | None = None
        self._open: set[KafkaSocketProtocol] = set()
        self._none_open = asyncio.Event()
        self._ids = itertools.count(1)
        #: Connections receiving a large frame, broker-wide, the one receiving longest
        #: first (``frame_room.py``).
        self.longest_receiving: LongestReceiving[KafkaSocketProtocol] = LongestReceiving()
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
            lambda: KafkaSocketProtocol(self, next(self._ids)),
            host,
            port,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
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

    def opened(self, proto: KafkaSocketProtocol) -> bool:
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

    def closed(self, proto: KafkaSocketProtocol) -> None:
        if proto in self._open:
            self._open.discard(proto)
            self.metrics.kafka_connections.dec()
            if not self._open:
                self._none_open.set()

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
