"""The Kafka door's request handlers, one async function per API key.

Each module of this package registers its handlers with ``@handles(API_KEY)``;
``load_handlers`` imports every module here, so a new module needs no edit elsewhere.
A handler translates only: it calls ``BrokerService`` and turns its frozen results (and
errors, through ``sentinel.errors.kafka_code_of``) into the API's response value at the
request's version. It never holds metadata, group or error logic of its own.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sentinel.broker.service import BrokerService
from sentinel.server.kafka.fetch_sessions import FetchSessions


@dataclass(frozen=True, slots=True)
class KafkaRequestContext:
    """What a handler knows of the request beyond its body."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    #: ``host:port`` of the client, as the listener saw it.
    peer: str
    #: Unique per connection for the broker's life (e.g. for per-connection state).
    connection_id: int
    #: The listener's fetch sessions (KIP-227); None: every fetch is a full one.
    fetch_sessions: FetchSessions | None = None


Handler = Callable[[BrokerService, KafkaRequestContext, Any], Awaitable[Any]]

HANDLERS: dict[int, Handler] = {}


def handles(api_key: int) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine as the handler of ``api_key``."""

    def register(handler: Handler) -> Handler:
        if api_key in HANDLERS:
            raise ValueError(f"API key {api_key} has two handlers")
        HANDLERS[api_key] = handler
        return handler

    return register


def load_handlers() -> dict[int, Handler]:
    """Import every handler module of this package; the registry, filled."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return HANDLERS
