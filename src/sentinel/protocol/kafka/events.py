"""What a Kafka server connection hands its driver: frozen, typed events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ConnectionClosed", "Event", "RequestReceived", "UnsupportedRequest"]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A decoded request. Answer it with ``KafkaServerConnection.send_response``.

    ``request`` is the value class of the API's request (e.g. ``MetadataRequest``).
    ``expects_response`` is False for Produce with ``acks=0``: the driver still calls
    ``send_response`` (to free the slot), and nothing is written.
    """

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    request: Any
    expects_response: bool = True
    #: The frame's size on the wire (length prefix included): what the request weighs.
    frame_bytes: int = 0


@dataclass(frozen=True, slots=True)
class UnsupportedRequest:
    """A request for an API key or version we do not speak; its body was not decoded.

    Answer it with ``KafkaServerConnection.send_unsupported`` (UNSUPPORTED_VERSION).
    """

    api_key: int
    api_version: int
    correlation_id: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer sent an oversized or malformed frame: close the socket, log ``reason``.

    Terminal: the connection ignores further input.
    """

    reason: str


Event = RequestReceived | UnsupportedRequest | ConnectionClosed
