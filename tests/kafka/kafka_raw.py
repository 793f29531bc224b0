"""A minimal blocking Kafka client over our own codec, for tests that need exact requests
(unsupported versions, raw produce sequences, malformed frames)."""

from __future__ import annotations

import itertools
import socket
import struct
from typing import Any

from sentinel.protocol.kafka import serde, wire
from sentinel.protocol.kafka.headers import (
    RequestHeader,
    encode_request_header,
    request_header_version,
    response_header_version,
)
from sentinel.protocol.kafka.messages import REQUESTS, RESPONSES


class RawKafka:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawKafka:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)

    def read_frame(self) -> bytes:
        """The next response frame's payload; b"" if the broker closed the connection."""
        head = self._read_exactly(4)
        if len(head) < 4:
            return b""
        (size,) = struct.unpack(">i", head)
        return self._read_exactly(size)

    def _read_exactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def request_bytes(self, api_key: int, version: int, request: Any,
                      correlation_id: int | None = None) -> tuple[int, bytes]:
        cid = next(self._ids) if correlation_id is None else correlation_id
        out = bytearray()
        encode_request_header(out, RequestHeader(api_key, version, cid, "raw-test"),
                              request_header_version(api_key, version))
        serde.encode_into(out, REQUESTS[api_key], version, request)
        return cid, bytes(out)

    def call(self, api_key: int, version: int, request: Any) -> Any:
        cid, payload = self.request_bytes(api_key, version, request)
        self.send_frame(payload)
        return self.read_response(api_key, version, cid)

    def read_response(self, api_key: int, version: int, cid: int) -> Any:
        frame = self.read_frame()
        assert frame, "the broker closed the connection"
        r = wire.Reader(frame)
        assert r.int32() == cid
        if response_header_version(api_key, version) >= 1:
            assert r.uvarint() == 0  # no tagged fields
        return serde.decode_body(r, RESPONSES[api_key], version)
