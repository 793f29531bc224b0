"""A sans-IO Kafka server connection: bytes in, typed requests out, responses to bytes.

Framing, both directions::

    [int32 size][size bytes: header, body]

The driver feeds what the socket gave to ``receive_data`` and gets events back
(``events``): a ``RequestReceived`` per decoded request, an ``UnsupportedRequest``
for an API key or version outside ``versions.SUPPORTED``, or one terminal
``ConnectionClosed`` for a frame that is oversized (``max_frame_bytes``, checked on
the size prefix, before the body is waited for) or does not decode. It answers
every request, in any order, with ``send_response`` / ``send_unsupported``; those
return the bytes to write now, always in request order, because Kafka clients match
responses to requests by position. ``send_response_pieces`` returns them as a list of
buffers instead, for a vectored write: a large ``records`` field (a fetch's stored
batches, ``wire.Pieces``) is then in it by reference, never copied into the answer.

Back-pressure: at most ``max_in_flight`` requests are handed out unanswered. Beyond
that, complete frames stay buffered and ``reading_paused`` turns True (the driver
stops reading the socket); after answering, ``receive_data(b"")`` hands out what was
held back. A peer that keeps sending regardless is closed once the buffer passes
``max_buffered_bytes``.

The receive buffer is one reused ``bytearray`` consumed from a moving start offset
and compacted only when the consumed part is at least half of it, so the work is
linear in bytes received however the peer slices its writes. A large frame (at least
``DIRECT_FRAME_BYTES``, a produce request's record batches) is instead received in
place: once its size prefix has arrived, ``receive_buffer`` gives the driver a view of
the frame's own buffer to read the rest into, and ``body_received`` reports what came;
its bytes are then never copied between buffers, and the request's record batches are
views of that buffer. That buffer is an anonymous private mapping, committed by the
kernel page by page as bytes arrive: a frame announced and not sent costs address space,
not memory (``head_received_bytes`` says what it holds), and a driver may read it in
steps (``receive_buffer(limit)``) as it finds room for them.

Answers given out of order wait for the earlier ones in their slots;
``held_response_bytes`` counts them, so a driver can stop building answers while they
pile up (a client that pipelines requests behind a long poll).

States: OPEN -> CLOSED (on a bad frame or ``close()``); in CLOSED, input is ignored
and answers produce no bytes.
"""

from __future__ import annotations

import mmap
import struct
from collections import deque
from typing import Any

from sentinel.errors import DecodeError, InvalidArgumentError
from sentinel.protocol.kafka import serde, wire
from sentinel.protocol.kafka.events import (
    ConnectionClosed,
    Event,
    RequestReceived,
    UnsupportedRequest,
)
from sentinel.protocol.kafka.frame_buffers import FrameBuffers, fresh_buffer
from sentinel.protocol.kafka.headers import (
    API_VERSIONS_KEY,
    decode_request_header,
    encode_response_header,
    request_header_version,
    response_header_version,
)
from sentinel.protocol.kafka.messages import REQUESTS, RESPONSES
from sentinel.protocol.kafka.versions import (
    UNSUPPORTED_VERSION,
    api_versions_response,
    supports,
)

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "DEFAULT_MAX_IN_FLIGHT", "KafkaServerConnection"]

DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024
"""Kafka's ``socket.request.max.bytes`` default."""
DEFAULT_MAX_IN_FLIGHT = 16
_PRODUCE_KEY = 0
DIRECT_FRAME_BYTES = 64 * 1024
"""Frames at least this large are received in place (``receive_buffer``)."""
_MIN_FRAME = 8  # api key, api version, correlation id
_I32 = struct.Struct(">i")
_FIXED = struct.Struct(">hhi")


class _Slot:
    """One answered-or-not request, in arrival order."""

    __slots__ = ("correlation_id", "data", "done")

    def __init__(self, correlation_id: int) -> None:
        self.correlation_id = correlation_id
        self.data: list[wire.Buffer] = []
        self.done = False


class KafkaServerConnection:
    """The server side of one Kafka client connection, without IO."""

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 max_buffered_bytes: int | None = None,
                 buffers: FrameBuffers | None = None) -> None:
        """``buffers``: where large frames are received (shared by a listener's
        connections, ``frame_buffers``); None: a fresh buffer each."""
        if max_frame_bytes < _MIN_FRAME or max_in_flight < 1:
            raise InvalidArgumentError("max_frame_bytes must be >= 8 and max_in_flight >= 1")
        self.max_frame_bytes = max_frame_bytes
        self.max_in_flight = max_in_flight
        self.max_buffered_bytes = (max_buffered_bytes if max_buffered_bytes is not None
                                   else 2 * (max_frame_bytes + 4))
        self._buf = bytearray()
        self._start = 0
        #: The frame being received in place (``receive_buffer``) and its bytes so far.
        self._body: memoryview | mmap.mmap | None = None
        self._filled = 0
        self._buffers = buffers
        self._pending: deque[_Slot] = deque()
        self._slots: dict[int, _Slot] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """Requests handed out and not answered yet (or answered out of order)."""
        return len(self._pending)

    @property
    def reading_paused(self) -> bool:
        """True while no more requests may be handed out: stop reading the socket."""
        return self._closed or len(self._pending) >= self.max_in_flight

    @property
    def oldest_unanswered(self) -> int | None:
        """The correlation id of the oldest request handed out and not answered: the
        one whose answer the held answers (``held_response_bytes``) wait for."""
        for slot in self._pending:
            if not slot.done:
                return slot.correlation_id
        return None

    @property
    def held_response_bytes(self) -> int:
        """Bytes of answers given and not yet writable: they wait for an earlier one."""
        return sum(len(b) for slot in self._pending if slot.done for b in slot.data)

    @property
    def buffered_bytes(self) -> int:
        if self._body is not None:
            return 4 + self._filled
        return len(self._buf) - self._start

    def head_frame_bytes(self) -> int:
        """The size (length prefix included) of the next frame not handed out yet, once
        its prefix has arrived; 0 before that. A driver can hold memory for it before
        reading its body."""
        if self._body is not None:
            return 4 + len(self._body)
        if self._closed or self.buffered_bytes < 4:
            return 0
        (size,) = _I32.unpack_from(self._buf, self._start)
        return 4 + size if _MIN_FRAME <= size <= self.max_frame_bytes else 0

    def head_received_bytes(self) -> int:
        """How much of the frame ``head_frame_bytes`` sizes is in memory (its prefix
        included); 0 before its prefix."""
        if self._body is not None:
            return 4 + self._filled
        need = self.head_frame_bytes()
        return min(need, len(self._buf) - self._start) if need else 0

    def close(self) -> None:
        self._closed = True
        self._buf = bytearray()
        self._start = 0
        self._body = None

    def receive_buffer(self, limit: int | None = None) -> memoryview | None:
        """Where to read the next bytes into when they belong to a large frame whose
        size prefix has arrived (the rest of that frame's own buffer, at most ``limit``
        bytes of it; then report them with ``body_received``), else None (read into
        your own buffer and pass it to ``receive_data``)."""
        if self._body is None:
            if self._closed or len(self._pending) >= self.max_in_flight:
                return None
            avail = len(self._buf) - self._start
            if avail < 4:
                return None
            (size,) = _I32.unpack_from(self._buf, self._start)
            if not DIRECT_FRAME_BYTES <= size <= self.max_frame_bytes or avail >= 4 + size:
                return None
            # What is buffered is this frame's beginning (it is not complete): move it.
            body = fresh_buffer(size) if self._buffers is None else self._buffers.take(size)
            begin = self._start + 4
            body[: avail - 4] = memoryview(self._buf)[begin:]
            self._body, self._filled = body, avail - 4
            self._buf.clear()
            self._start = 0
        end = len(self._body) if limit is None else min(len(self._body), self._filled + limit)
        return memoryview(self._body)[self._filled : end]

    def body_received(self, nbytes: int) -> list[Event]:
        """``nbytes`` were read into the view ``receive_buffer`` gave; the events they
        complete (the frame's request, once it is whole)."""
        body = self._body
        if body is None or self._closed:
            return []
        self._filled += nbytes
        if self._filled < len(body):
            return []
        self._body = None
        return [self._decode_frame(body)]

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the socket; return the events they complete."""
        if self._closed:
            return []
        events: list[Event] = []
        body = self._body
        if body is not None and data:  # a driver not using receive_buffer: copy them in
            take = min(len(data), len(body) - self._filled)
            body[self._filled : self._filled + take] = data[:take]
            events += self.body_received(take)
            data = data[take:]
            if self._body is not None:
                return events
        self._buf += data
        while len(self._pending) < self.max_in_flight:
            event = self._next_frame()
            if event is None:
                break
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
        self._compact()
        if self.buffered_bytes > self.max_buffered_bytes:
            events.append(self._fail(f"peer sent {self.buffered_bytes} bytes ahead of "
                                     f"{len(self._pending)} unanswered requests"))
        return events

    def _compact(self) -> None:
        if self._start == len(self._buf):
            self._buf.clear()
            self._start = 0
        elif self._start and self._start * 2 >= len(self._buf):
            del self._buf[: self._start]
            self._start = 0

    def _fail(self, reason: str) -> ConnectionClosed:
        self.close()
        return ConnectionClosed(reason)

    def _next_frame(self) -> Event | None:
        avail = len(self._buf) - self._start
        if avail < 4:
            return None
        (size,) = _I32.unpack_from(self._buf, self._start)
        if size > self.max_frame_bytes:
            return self._fail(f"frame of {size} bytes exceeds the {self.max_frame_bytes} limit")
        if size < _MIN_FRAME:
            return self._fail(f"frame of {size} bytes is shorter than a request header")
        if avail < 4 + size:
            return None
        begin = self._start + 4
        # One copy, into immutable bytes: a produce request's record batches are then
        # read-only views of it (``Reader.view``), never copied again by the decoder.
        with memoryview(self._buf) as buf:
            frame = bytes(buf[begin : begin + size])
        self._start = begin + size
        return self._decode_frame(frame)

    def _decode_frame(self, frame: bytes | memoryview | mmap.mmap) -> Event:
        api_key, api_version, correlation_id = _FIXED.unpack_from(frame, 0)
        if correlation_id in self._slots:
            return self._fail(f"correlation id {correlation_id} reused while in flight")
        if not supports(api_key, api_version):
            self._track(correlation_id)
            return UnsupportedRequest(api_key, api_version, correlation_id)
        r = wire.Reader(memoryview(frame), max_elements=wire.MAX_REQUEST_ELEMENTS)
        try:
            header = decode_request_header(r, request_header_version(api_key, api_version))
            # Bytes after the body are ignored, as Kafka's brokers ignore them:
            # librdkafka 2.16 sends 3 after a Metadata v12 body asking for every topic.
            request = serde.decode_body(r, REQUESTS[api_key], api_version, trailing_ok=True)
        except DecodeError as exc:
            return self._fail(f"api {api_key} v{api_version} correlation id "
                              f"{correlation_id}: {exc}")
        self._track(correlation_id)
        expects = not (api_key == _PRODUCE_KEY and request.acks == 0)
        return RequestReceived(api_key, api_version, correlation_id, header.client_id,
                               request, expects, len(frame) + 4)

    def _track(self, correlation_id: int) -> None:
        slot = _Slot(correlation_id)
        self._pending.append(slot)
        self._slots[correlation_id] = slot

    def send_response(self, request: RequestReceived, response: Any) -> bytes:
        """Encode the answer to ``request``; return the bytes now writable, in order.

        ``response`` is the API's response value class. Raises ``InvalidArgumentError``
        for a request not in flight here or a response that does not encode.
        """
        return b"".join(self.send_response_pieces(request, response))

    def send_response_pieces(self, request: RequestReceived, response: Any) -> list[wire.Buffer]:
        """``send_response``, as buffers to write in order: large fields by reference."""
        if self._closed:
            return []
        data: list[wire.Buffer] = []
        if request.expects_response:
            out = wire.ScatterOutput()
            encode_response_header(
                out, request.correlation_id,
                response_header_version(request.api_key, request.api_version))
            serde.encode_into(out, RESPONSES[request.api_key], request.api_version, response)
            pieces = out.pieces()
            size = _I32.pack(out.size)
            # An answer with nothing large in it stays one ``bytes`` (one plain write).
            data = [size + pieces[0]] if len(pieces) == 1 else [size, *pieces]
        return self._complete(request.correlation_id, data)

    def send_unsupported(self, event: UnsupportedRequest) -> bytes:
        """Answer an unsupported request with UNSUPPORTED_VERSION.

        ApiVersions (any version) gets a full v0 response with the versions we do
        speak, as Kafka brokers answer, so the client can pick one. Any other API
        gets a v0 header and the bare error code.
        """
        if self._closed:
            return b""
        out = bytearray(4)
        encode_response_header(out, event.correlation_id, 0)
        if event.api_key == API_VERSIONS_KEY:
            serde.encode_into(out, RESPONSES[API_VERSIONS_KEY], 0,
                              api_versions_response(UNSUPPORTED_VERSION))
        else:
            out += struct.pack(">h", UNSUPPORTED_VERSION)
        _I32.pack_into(out, 0, len(out) - 4)
        return b"".join(self._complete(event.correlation_id, [bytes(out)]))

    def _complete(self, correlation_id: int, data: list[wire.Buffer]) -> list[wire.Buffer]:
        slot = self._slots.pop(correlation_id, None)
        if slot is None:
            raise InvalidArgumentError(f"correlation id {correlation_id} is not in flight")
        slot.data = data
        slot.done = True
        ready: list[wire.Buffer] = []
        while self._pending and self._pending[0].done:
            ready += self._pending.popleft().data
        return ready
