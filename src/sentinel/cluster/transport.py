"""Broker-to-broker transport over asyncio streams: Raft envelopes and calls.

Each broker dials one connection to each peer it sends to (opened on the first send,
re-dialled with backoff of 50 ms doubling to 1 s, with jitter, while there is something
to send) and accepts the peers' connections on ``peers[node_id]``. A connection carries
one direction: the dialler sends ``Hello`` first, then ``Envelope`` and ``Call`` frames;
the acceptor answers calls with ``Reply`` frames on the same connection.

``send`` never blocks and never raises for a down peer: the envelope goes into the
peer's bounded queue, or is dropped and counted (queue full, or the last dial failed):
Raft retries on its next tick. Frames are written with ``writelines`` of the encoded
buffers, so entry bytes reach the socket without a copy of ours.

An accepted connection is refused (closed, one WARNING line, ``refused`` counted) for a
first frame that is not a ``Hello`` of our cluster from a known peer to us, an envelope
whose source is not the Hello's or whose destination is not us, any other frame
a dialler must not send, or bytes that do not decode. The other connections go on.

A broker that begins a clean stop tells every peer so (``say_leaving``: a ``Call`` of
kind ``LEAVING_KIND``, answered by the transport itself). The peer remembers it against
the connection it came on: ``leaving(peer)`` holds until the peer dials again (a
restarted broker is not leaving), and ``gone(peer)`` once that connection closed too (or
the last dial failed). A stopping broker's steps that wait on peers (handing over its
leadership, the commits its clients wait for) use them to give up at once on peers that
will never answer, rather than wait out their bounds (``cluster/node``'s stop).

Bounds against a flood on the peer port (nothing here authenticates a peer: the port
must not be reachable from outside the cluster, but a stray client must not take a
broker down either): a first frame longer than ``MAX_HELLO_BYTES`` is refused from its
length prefix; a connection has ``hello_timeout`` seconds to complete its Hello
(slowloris); at most ``max_handshakes`` connections wait for their Hello at once, a
new one closes the oldest waiting (a real peer sends its Hello at once, so it gets
through a flood); after the Hello, one connection per peer: a newer one from the same
peer replaces the older (a peer that re-dials is the one to keep). So at most
``max_handshakes + len(peers) - 1`` connections are held, each buffering at most one
frame (``max_frame_bytes``). Refusal lines are at most ``REFUSAL_LINES_PER_S`` a
second, the rest counted in the next one (``refused`` counts them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from sentinel.cluster.peers import Peer
from sentinel.cluster.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    Buffer,
    Call,
    Frame,
    FrameDecoder,
    Hello,
    Reply,
    WireError,
    encode,
    frame_size,
)
from sentinel.errors import ClosedError, InvalidArgumentError, SentinelError
from sentinel.raft.multi import Envelope

__all__ = [
    "PeerTimeoutError",
    "PeerTransport",
    "PeerUnavailableError",
    "RemoteCallError",
]

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
LISTEN_BACKLOG = 1024
"""Peer connections the kernel queues for the loop to accept (asyncio's default, 100,
drops SYNs under a burst of connects, each costing its dialer a 1 s retransmit; as the
Kafka listener's)."""
WRITE_BATCH = 1024 * 1024
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


class PeerUnavailableError(SentinelError):
    """The peer broker cannot be reached now (not listening, connection lost)."""

    kafka_code = 8
    code_name = "BROKER_NOT_AVAILABLE"


class PeerTimeoutError(PeerUnavailableError):
    """The peer did not answer a call within its timeout."""

    kafka_code = 7
    code_name = "REQUEST_TIMED_OUT"


class RemoteCallError(SentinelError):
    """The peer's handler of a call raised: its Kafka code and message, as it sent them.
    ``code_name`` is the name of the Sentinel error with that code when there is one."""

    def __init__(self, peer: int, kafka_code: int, message: str) -> None:
        super().__init__(f"broker {peer}: {message}")
        self.peer = peer
        self.kafka_code = kafka_code
        self.code_name = _code_name(kafka_code)
        self.remote_message = message


def _subclasses(cls: type[SentinelError]) -> list[type[SentinelError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


def _code_name(kafka_code: int) -> str:
    for cls in _subclasses(SentinelError):
        if cls is not RemoteCallError and cls.kafka_code == kafka_code:
            return cls.code_name
    return "UNKNOWN_SERVER_ERROR"


OnEnvelope = Callable[[Envelope], None]
OnCall = Callable[[int, str, bytes], Awaitable[bytes]]


STOP_WAIT_S = 2.0
#: The call kind of a clean stop's notice (``say_leaving``).
LEAVING_KIND = "leaving"
#: A Hello's bound (cluster id, two node ids): a first frame longer is refused at once.
MAX_HELLO_BYTES = 4096
#: A frame begun after the Hello must be whole within this (a 64 MiB AppendEntries
#: takes well under a second on a LAN); else the connection is closed as stalled.
PARTIAL_FRAME_TIMEOUT_S = 30.0
#: Calls from one peer being answered at once, at most; one more is answered at once
#: with THROTTLING_QUOTA_EXCEEDED (Kafka's 89: retriable) instead of being queued.
MAX_CALLS_PER_LINK = 256
THROTTLED = 89
#: Connections accepted and still waiting for their Hello, at most (the oldest goes).
MAX_HANDSHAKES = 64
#: At most this many refusal lines a second (the others are counted in the next one).
REFUSAL_LINES_PER_S = 10


class _Link:
    """The outbound connection to one peer: its queue, its writer task, its calls."""

    def __init__(self, owner: PeerTransport, peer: Peer) -> None:
        self.owner = owner
        self.peer = peer
        self.queue: deque[tuple[list[Buffer], int]] = deque()
        self.queued_bytes = 0
        self.dropped = 0
        self.down = False
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.backoff = 0.0
        self.next_dial = 0.0
        self.closed = False

    def kick(self) -> None:
        if self.closed:
            return
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sentinel-peer-{self.peer.node_id}"
            )
        self.wake.set()

    def offer(self, bufs: list[Buffer]) -> bool:
        size = frame_size(bufs)
        if self.down or self.queued_bytes + size > self.owner.max_queue_bytes:
            self.dropped += 1
            self.kick()  # a down peer is re-dialled once its backoff ends
            return False
        self.queue.append((bufs, size))
        self.queued_bytes += size
        self.kick()
        return True

    def fail_calls(self, exc: Exception) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # Ends on ``closed`` as well as on cancellation: 3.11's wait_for (in ``_dial``)
        # can swallow a cancellation that arrives as the connection completes.
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            if self.closed:
                return
            if not self.queue and not self.down:
                continue  # a down peer is dialled again on any send, queue or not
            if self.writer is None:
                delay = self.next_dial - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not await self._dial():
                    continue
            writer = self.writer
            if writer is None:
                continue
            try:
                while self.queue:
                    # every frame queued, up to WRITE_BATCH bytes, in one writelines:
                    # one system call for a burst of small envelopes
                    batch: list[Buffer] = []
                    batch_bytes = 0
                    while self.queue and batch_bytes < WRITE_BATCH:
                        bufs, size = self.queue.popleft()
                        self.queued_bytes -= size
                        batch += bufs
                        batch_bytes += size
                    writer.writelines(batch)
                    await writer.drain()
            except (ConnectionError, OSError) as e:
                self.disconnect(f"write failed: {e}")
            if self.queue:
                self.wake.set()

    async def _dial(self) -> bool:
        loop = asyncio.get_running_loop()
        owner = self.owner
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.peer.host, self.peer.port, limit=READ_CHUNK),
                owner.connect_timeout,
            )
        except (OSError, TimeoutError) as e:
            if not self.down:
                log.info("broker %d at %s is down: %s", self.peer.node_id, self.peer.address, e)
            self.down = True
            self.backoff = min(max(self.backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
            self.next_dial = loop.time() + self.backoff * random.uniform(0.5, 1.0)
            self.dropped += len(self.queue)
            self.queue.clear()
            self.queued_bytes = 0
            self.fail_calls(PeerUnavailableError(
                f"broker {self.peer.node_id} at {self.peer.address} is not reachable: {e}"
            ))
            return False
        if self.down:
            log.info("broker %d at %s is up", self.peer.node_id, self.peer.address)
        self.down = False
        self.backoff = 0.0
        self.writer = writer
        writer.writelines(encode(Hello(owner.cluster_id, owner.node_id, self.peer.node_id)))
        self.reader_task = loop.create_task(self._read(reader, writer))
        return True

    def disconnect(self, reason: str) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        log.info("connection to broker %d closed: %s", self.peer.node_id, reason)
        writer.close()
        self.fail_calls(PeerUnavailableError(
            f"connection to broker {self.peer.node_id} at {self.peer.address} lost: {reason}"
        ))
        if self.queue:
            self.wake.set()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(self.owner.max_frame_bytes)
        reason = "closed by the peer"
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                for frame in decoder.feed(data):
                    if not isinstance(frame, Reply):
                        raise WireError(f"a {type(frame).__name__} frame on an outbound link")
                    self._resolve(frame)
        except WireError as e:
            self.owner.refuse(f"broker {self.peer.node_id} ({self.peer.address})", str(e))
            reason = str(e)
        except (ConnectionError, OSError) as e:
            reason = str(e)
        if self.writer is writer:
            self.disconnect(reason)

    def _resolve(self, reply: Reply) -> None:
        fut = self.pending.pop(reply.call_id, None)
        if fut is None or fut.done():
            return  # timed out already
        if reply.error_code == 0:
            fut.set_result(reply.body)
        else:
            fut.set_exception(
                RemoteCallError(self.peer.node_id, reply.error_code, reply.message)
            )

    async def close(self) -> None:
        self.closed = True
        self.wake.set()
        if self.task is not None:
            self.task.cancel()
        # The reader is not cancelled: closing the connection ends its read (EOF). A
        # cancellation racing the connection's loss left the stream's waiter holding an
        # exception nobody retrieved ("Future exception was never retrieved" at exit).
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.fail_calls(ClosedError(f"transport of broker {self.owner.node_id} stopped"))
        tasks = [t for t in (self.task, self.reader_task) if t is not None]
        if tasks:  # bounded, for the same reason as ``_run``'s loop
            _done, late = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for t in late:
                t.cancel()


class PeerTransport:
    """The broker-to-broker transport of broker ``node_id`` in cluster ``cluster_id``."""

    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        peers: Mapping[int, Peer],
        *,
        on_envelope: OnEnvelope,
        on_call: OnCall,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        connect_timeout: float = 2.0,
        hello_timeout: float = 5.0,
        max_handshakes: int = MAX_HANDSHAKES,
    ) -> None:
        if node_id not in peers:
            raise InvalidArgumentError(f"node {node_id} is not one of the peers")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.peers = dict(peers)
        self.on_envelope = on_envelope
        self.on_call = on_call
        self.max_queue_bytes = max_queue_bytes
        self.max_frame_bytes = max_frame_bytes
        self.connect_timeout = connect_timeout
        self.hello_timeout = hello_timeout
        self.max_handshakes = max_handshakes
        self.refused = 0
        self._unlogged = 0  # refusals not logged since the last line
        self._refusal_second = float("-inf")  # when the current second of lines began
        self._refusal_lines = 0  # lines logged in it
        # accepted connections waiting for their Hello, oldest first
        self._handshaking: dict[asyncio.StreamWriter, None] = {}
        self._from_peer: dict[int, asyncio.StreamWriter] = {}  # the one kept per peer
        # peers that said they are stopping, and the connection they said it on
        self._leaving: dict[int, asyncio.StreamWriter] = {}
        self._links: dict[int, _Link] = {}
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.Task[None]] = set()
        self._call_tasks: set[asyncio.Task[None]] = set()
        self._call_ids = itertools.count(1)
        self._closed = False

    # -- counters

    @property
    def dropped(self) -> int:
        """Envelopes dropped (queue full or peer down), over all peers."""
        return sum(link.dropped for link in self._links.values())

    def dropped_to(self, peer: int) -> int:
        link = self._links.get(peer)
        return 0 if link is None else link.dropped

    def is_down(self, peer: int) -> bool:
        """The last dial of ``peer`` failed (sends are dropped until a dial succeeds)."""
        link = self._links.get(peer)
        return link is not None and link.down

    def leaving(self, peer: int) -> bool:
        """``peer`` said it is stopping (``say_leaving``) and has not dialled again
        since: it takes no leadership and will soon answer nothing."""
        said_on = self._leaving.get(peer)
        return said_on is not None and self._from_peer.get(peer) in (None, said_on)

    def gone(self, peer: int) -> bool:
        """``peer`` can no longer answer: it said it was stopping and its connection has
        closed since, or the last dial of it failed."""
        return self.is_down(peer) or (self.leaving(peer) and peer not in self._from_peer)

    # -- lifecycle

    async def start(self) -> None:
        me = self.peers[self.node_id]
        self._server = await asyncio.start_server(
            self._accept, me.host, me.port, limit=READ_CHUNK, backlog=LISTEN_BACKLOG
        )

    @property
    def port(self) -> int:
        """The port listened on (``start()`` first)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Close every connection, cancel every task, fail pending calls (``ClosedError``)."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(link.close() for link in self._links.values()))
        tasks = [*self._inbound, *self._call_tasks]
        for t in tasks:
            t.cancel()
        if tasks:  # bounded: see _Link._run
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        if self._server is not None:
            # Bounded: the server waits for every accepted connection to be gone, and a
            # peer's socket that is still closing must not hold up a broker's exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), STOP_WAIT_S)

    # -- sending

    def _link(self, peer: int) -> _Link:
        link = self._links.get(peer)
        if link is None:
            if peer not in self.peers or peer == self.node_id:
                raise InvalidArgumentError(f"broker {peer} is not a peer of {self.node_id}")
            link = self._links[peer] = _Link(self, self.peers[peer])
        return link

    def send(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` for ``envelope.dst``; False when dropped (counted)."""
        if self._closed:
            return False
        if envelope.src != self.node_id:
            raise InvalidArgumentError(
                f"envelope from broker {envelope.src} sent by broker {self.node_id}"
            )
        return self._link(envelope.dst).offer(encode(envelope))

    def say_leaving(self) -> None:
        """Tell every peer this broker begins a clean stop (``leaving`` there). Sent and
        not awaited: a peer that is down needs no notice, and the answers (empty) are
        dropped as a timed-out call's would be."""
        if self._closed:
            return
        for peer in self.peers:
            if peer != self.node_id:
                self._link(peer).offer(encode(Call(next(self._call_ids), LEAVING_KIND, b"")))

    async def call(self, dst: int, kind: str, body: bytes, timeout: float) -> bytes:
        """Send call ``kind`` to broker ``dst`` and return its reply's body.

        Raises ``PeerUnavailableError`` (peer down, connection lost, queue full),
        ``PeerTimeoutError`` (no reply within ``timeout`` s), ``RemoteCallError`` (the
        peer's handler raised) or ``ClosedError``. A call to a peer whose last dial
        failed fails at once (and makes the link dial again after its backoff)."""
        if self._closed:
            raise ClosedError(f"transport of broker {self.node_id} stopped")
        link = self._link(dst)
        call_id = next(self._call_ids)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        link.pending[call_id] = fut
        if not link.offer(encode(Call(call_id, kind, body))):
            link.pending.pop(call_id, None)
            state = "down" if link.down else "backlogged"
            raise PeerUnavailableError(f"broker {dst} at {link.peer.address} is {state}")
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise PeerTimeoutError(
                f"broker {dst} did not answer {kind!r} within {timeout:g} s"
            ) from None
        finally:
            link.pending.pop(call_id, None)

    # -- receiving

    @property
    def inbound(self) -> int:
        """Accepted connections held now (waiting for a Hello, or a peer's)."""
        return len(self._handshaking) + len(self._from_peer)

    def refuse(self, who: str, reason: str) -> None:
        """Count a refusal; log it unless ``REFUSAL_LINES_PER_S`` lines were logged in
        the last second (then the next line says how many more there were)."""
        self.refused += 1
        now = asyncio.get_running_loop().time()
        if now - self._refusal_second >= 1.0:
            self._refusal_second, self._refusal_lines = now, 0
        if self._refusal_lines >= REFUSAL_LINES_PER_S:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        self._unlogged = 0
        self._refusal_lines += 1
        log.warning("broker %d refused a connection from %s: %s%s", self.node_id, who, reason,
                    more)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.close()
            return
        if len(self._handshaking) >= self.max_handshakes:
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            oldest.close()
            self.refuse(_address(oldest), f"{self.max_handshakes} connections waited for a "
                        "Hello: the oldest is closed")
        self._handshaking[writer] = None
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._inbound.add(task)
        task.add_done_callback(self._inbound.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        who = f"{peername[0]}:{peername[1]}" if peername else "an unknown address"
        decoder = FrameDecoder(self.max_frame_bytes, first_frame_bytes=MAX_HELLO_BYTES)
        mine: set[asyncio.Task[None]] = set()
        src: int | None = None
        try:
            frames: list[Frame] = []
            async with asyncio.timeout(self.hello_timeout):
                while not frames:
                    data = await reader.read(READ_CHUNK)
                    if not data or writer not in self._handshaking:
                        return  # closed by the peer, or as the oldest of a flood
                    frames = decoder.feed(data)
            hello = frames.pop(0)
            if not isinstance(hello, Hello):
                raise WireError(f"first frame is a {type(hello).__name__}, not a Hello")
            if hello.cluster_id != self.cluster_id:
                raise WireError(f"cluster id {hello.cluster_id!r}, ours is {self.cluster_id!r}")
            if hello.src not in self.peers or hello.src == self.node_id:
                raise WireError(f"unknown node id {hello.src}")
            if hello.dst != self.node_id:
                raise WireError(f"Hello for broker {hello.dst}, this is broker {self.node_id}")
            src = hello.src
            who = f"broker {src} ({who})"
            self._handshaking.pop(writer, None)
            older = self._from_peer.get(src)
            self._from_peer[src] = writer
            self._leaving.pop(src, None)  # a peer that dials again is back (restarted)
            if older is not None:  # the peer re-dialled: its newest connection is kept
                log.info("broker %d: a new connection from %s replaces the older", self.node_id,
                         who)
                older.close()
            loop = asyncio.get_running_loop()
            partial_since: float | None = None
            while True:
                for frame in frames:
                    self._dispatch(src, frame, writer, mine)
                if not decoder.buffered:
                    partial_since = None
                    data = await reader.read(READ_CHUNK)
                else:  # a frame under way must complete in time (a peer cannot stall it)
                    if partial_since is None:
                        partial_since = loop.time()
                    try:
                        async with asyncio.timeout_at(partial_since + PARTIAL_FRAME_TIMEOUT_S):
                            data = await reader.read(READ_CHUNK)
                    except TimeoutError:
                        raise WireError(
                            f"a frame begun {PARTIAL_FRAME_TIMEOUT_S:g} s ago is not complete "
                            f"({decoder.buffered} bytes)"
                        ) from None
                if not data or self._from_peer.get(src) is not writer:
                    return  # closed by the peer, or replaced by its newer connection
                frames = decoder.feed(data)
        except WireError as e:
            self.refuse(who, str(e))
        except TimeoutError:
            self.refuse(who, f"no Hello within {self.hello_timeout:g} s")
        except (ConnectionError, OSError):
            pass
        finally:
            self._handshaking.pop(writer, None)
            if src is not None and self._from_peer.get(src) is writer:
                del self._from_peer[src]
            writer.close()
            for t in mine:
                t.cancel()

    def _dispatch(
        self, src: int, frame: Frame, writer: asyncio.StreamWriter, mine: set[asyncio.Task[None]]
    ) -> None:
        if isinstance(frame, Envelope):
            if frame.src != src:
                raise WireError(f"envelope claims source {frame.src} on broker {src}'s link")
            if frame.dst != self.node_id:
                raise WireError(f"envelope for broker {frame.dst} reached {self.node_id}")
            try:
                self.on_envelope(frame)
            except Exception:
                log.exception("envelope from broker %d: handler failed", src)
        elif isinstance(frame, Call):
            if frame.kind == LEAVING_KIND:  # answered here: nothing to wait for
                if src not in self._leaving:
                    log.info("broker %d: broker %d is stopping", self.node_id, src)
                self._leaving[src] = writer
                if not writer.is_closing():
                    writer.writelines(encode(Reply(frame.call_id, 0, "", b"")))
                return
            if len(mine) >= MAX_CALLS_PER_LINK:  # answered at once, not queued: bounded
                reply = Reply(frame.call_id, THROTTLED, f"{len(mine)} calls in flight on "
                              f"this link already (at most {MAX_CALLS_PER_LINK}): retry", b"")
                if not writer.is_closing():
                    writer.writelines(encode(reply))
                return
            task = asyncio.get_running_loop().create_task(self._answer(src, frame, writer))
            for owned in (mine, self._call_tasks):
                owned.add(task)
                task.add_done_callback(owned.discard)
        else:
            raise WireError(f"a {type(frame).__name__} frame after the Hello")

    async def _answer(self, src: int, call: Call, writer: asyncio.StreamWriter) -> None:
        try:
            body = await self.on_call(src, call.kind, call.body)
            reply = Reply(call.call_id, 0, "", body)
        except SentinelError as e:
            code = e.kafka_code if e.kafka_code != 0 else -1
            reply = Reply(call.call_id, code, str(e)[:4096], b"")
        except Exception as e:
            log.exception("call %r from broker %d: handler failed", call.kind, src)
            reply = Reply(call.call_id, -1, f"{type(e).__name__}: {e}"[:4096], b"")
        if writer.is_closing():
            return
        with contextlib.suppress(ConnectionError, OSError):
            writer.writelines(encode(reply))
            await writer.drain()


def _address(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    return f"{peername[0]}:{peername[1]}" if peername else "an unknown address"
