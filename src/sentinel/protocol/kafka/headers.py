"""Request headers v0-v2 and response headers v0-v1.

Request header (after the int32 frame length)::

    v0  [int16 api_key][int16 api_version][int32 correlation_id]
    v1  v0 + [int16 n][n bytes client_id]           (legacy nullable string, n = -1: null)
    v2  v1 + [tagged fields]                         (client_id stays a legacy string)

Response header::

    v0  [int32 correlation_id]
    v1  v0 + [tagged fields]

A request uses header v2 in its API's flexible versions and v1 otherwise (v0 belongs
to ControlledShutdown v0 alone, which we do not speak). A response uses v1 in flexible
versions and v0 otherwise, except ApiVersions: its response header is always v0, so
that a client that does not yet know our versions can read it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sentinel.codec.varint import encode_uvarint
from sentinel.errors import DecodeError
from sentinel.protocol.kafka import wire
from sentinel.protocol.kafka.messages import REQUESTS

__all__ = [
    "API_VERSIONS_KEY",
    "RequestHeader",
    "decode_request_header",
    "encode_request_header",
    "encode_response_header",
    "request_header_version",
    "response_header_version",
]

API_VERSIONS_KEY = 18
_FIXED = struct.Struct(">hhi")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None


def request_header_version(api_key: int, api_version: int) -> int:
    message = REQUESTS.get(api_key)
    return 2 if message is not None and message.flexible(api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == API_VERSIONS_KEY:
        return 0
    message = REQUESTS.get(api_key)
    return 1 if message is not None and message.flexible(api_version) else 0


def _skip_tagged(r: wire.Reader) -> None:
    count = r.uvarint()
    if count * 2 > r.remaining:
        raise DecodeError(f"{count} header tagged fields cannot fit in {r.remaining} bytes")
    for _ in range(count):
        r.uvarint()
        size = r.uvarint()
        r.need(size, "header tagged field")
        r.pos += size


def decode_request_header(r: wire.Reader, header_version: int) -> RequestHeader:
    """Read a request header of ``header_version`` (0, 1 or 2) at ``r``."""
    api_key = r.int16()
    api_version = r.int16()
    correlation_id = r.int32()
    client_id = None
    if header_version >= 1:
        client_id = r.string(False)
    if header_version >= 2:
        _skip_tagged(r)
    return RequestHeader(api_key, api_version, correlation_id, client_id)


def encode_request_header(out: bytearray, header: RequestHeader, header_version: int) -> None:
    out += _FIXED.pack(header.api_key, header.api_version, header.correlation_id)
    if header_version >= 1:
        wire.write_string(out, header.client_id, False)
    if header_version >= 2:
        out += encode_uvarint(0)


def encode_response_header(out: bytearray, correlation_id: int, header_version: int) -> None:
    out += _I32.pack(correlation_id)
    if header_version >= 1:
        out += encode_uvarint(0)
