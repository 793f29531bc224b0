"""gRPC channels to the brokers, calls that raise the client's errors, and the IO thread
of the synchronous clients.

Every client talks to brokers through a ``Connections``: one ``grpc.aio`` channel per
broker address, created on first use, on the client's event loop. A call goes through
``unary``, which turns a failed status into a ``SentinelClientError``
(``errors.error_from_rpc``).

Connecting is retried, as Kafka's clients do: a unary call that fails because no
connection could be made (refused, or the broker did not answer the HTTP/2 handshake in
time: ``failed to connect to all addresses``), so that none of its bytes were sent, is
made again after a backoff (``CONNECT_BACKOFF_S`` doubling to ``MAX_CONNECT_BACKOFF_S``,
with jitter) until it gets through or its own timeout (the client's
``request_timeout_ms``) runs out; then the last failure is raised. A call that was sent
is never repeated here (the caller's retry rules apply to it), nor is one whose address
does not resolve (``UnresolvableBrokerError``), nor ``Produce`` (the producer retries
its batches by its ``retries`` and backoff, and knows such a send stored nothing); a
malformed address is refused when the client is made (``InvalidBootstrapError``).

That holds while the client knows of one broker only. Against a cluster (several
bootstrap addresses, or metadata naming several brokers) a call that finds no
connection fails at once instead: its caller moves to another broker (the metadata
refresh tries each bootstrap broker and each known broker in turn, the partition's
leader is looked up again, the group coordinator is found again), so a dead broker
costs one refused connection, not a whole request timeout.

The synchronous clients run their asyncio side on a ``LoopThread``: an event loop in a
daemon thread. Their blocking methods submit a coroutine and wait for it; their hot
paths (``Producer.send``, ``Consumer.poll``) do not go through the loop at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from sentinel.client.errors import (
    NOT_CONNECTED,
    BrokerUnavailableError,
    ClientClosedError,
    ClientStateError,
    ClientTimeoutError,
    InvalidBootstrapError,
    SentinelClientError,
    error_from_rpc,
)
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc

__all__ = ["Connections", "LoopThread", "parse_bootstrap", "unary"]

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A client's own connection: two clients in one process do not share a socket.
    ("grpc.use_local_subchannel_pool", 1),
    # Talk to the broker directly: an http_proxy in the environment must not capture it.
    ("grpc.enable_http_proxy", 0),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Reconnect quickly after a broker restart (the default backoff starts at 1 s).
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # gRPC's name for the least time one connection attempt (TCP and the HTTP/2
    # handshake) may take: a busy broker gets that long to answer.
    ("grpc.min_reconnect_backoff_ms", 2_000),
)
# Calls whose caller retries them by its own rules: the producer's sender counts a
# Produce that found no connection as one of the batch's retries, as before.
_OWN_RETRIES = frozenset({"/sentinel.v1.Sentinel/Produce", b"/sentinel.v1.Sentinel/Produce"})
CONNECT_BACKOFF_S = 0.05
MAX_CONNECT_BACKOFF_S = 1.0


def parse_bootstrap(bootstrap: str | Sequence[str]) -> list[str]:
    """``"h1:p1,h2:p2"`` or a list of ``host:port`` -> the addresses, in order."""
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    addresses = [item.strip() for item in items if item.strip()]
    if not addresses:
        raise InvalidBootstrapError("bootstrap names no broker")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or any(c.isspace() for c in host) or not port.isdigit():
            raise InvalidBootstrapError(f"bootstrap address {address!r} is not host:port")
        if not 0 < int(port) < 65536:
            raise InvalidBootstrapError(
                f"bootstrap address {address!r}: the port must be in 1..65535"
            )
    return addresses


def _never_sent(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() == grpc.StatusCode.UNAVAILABLE and NOT_CONNECTED in (exc.details() or "")


if TYPE_CHECKING:
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:  # the stubs' generic is not subscriptable at run time
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor


class ConnectRetry(_Interceptor):
    """Makes a unary call again, with backoff, while it fails without having been sent
    because no connection could be made, within the call's own timeout."""

    def __init__(
        self, rng: random.Random | None = None, enabled: Callable[[], bool] = lambda: True
    ) -> None:
        self._rng = rng or random.Random()
        self._enabled = enabled

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        if client_call_details.method in _OWN_RETRIES or not self._enabled():
            return await continuation(client_call_details, request)
        loop = asyncio.get_running_loop()
        timeout: float | None = client_call_details.timeout
        deadline = None if timeout is None else loop.time() + timeout
        delay = CONNECT_BACKOFF_S
        details = client_call_details
        while True:
            call = await continuation(details, request)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                if not _never_sent(exc):
                    return call
                pause = delay * self._rng.uniform(0.8, 1.2)
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= pause + CONNECT_BACKOFF_S:
                        return call  # no time left for another attempt: its failure
                    details = details._replace(timeout=remaining - pause)
                log.debug("no connection for %s yet; again in %.2f s", details.method, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, MAX_CONNECT_BACKOFF_S)
                continue
            return call


async def unary(call: Awaitable[T]) -> T:
    """Await a gRPC call; a failed status raises the matching ``SentinelClientError``."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from None


class Connections:
    """One channel and stub per broker address. Lives on one event loop.

    ``bootstrap()`` is the stub of the first bootstrap broker that is not known to be
    down; ``rotate()`` moves to the next after a transport failure. ``stub(address)``
    is a given broker's (a partition's leader). ``single``: whether the client knows of
    one broker only (then connecting is retried within a call; see the module doc).
    """

    def __init__(self, bootstrap: Sequence[str]) -> None:
        self._bootstrap = list(bootstrap)
        self._index = 0
        self.single = len(self._bootstrap) == 1
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.SentinelStub] = {}
        self._closed = False

    def stub(self, address: str | None = None) -> pb_grpc.SentinelStub:
        if self._closed:
            raise ClientClosedError("the client is closed")
        if address is None:
            address = self._bootstrap[self._index]
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=CHANNEL_OPTIONS,
                interceptors=(ConnectRetry(enabled=lambda: self.single),),  # type: ignore[arg-type]
            )
            self._channels[address] = channel
            stub = self._stubs[address] = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        return stub

    def bootstrap(self) -> pb_grpc.SentinelStub:
        return self.stub(None)

    def rotate(self) -> None:
        """The current bootstrap broker failed: use the next one."""
        self._index = (self._index + 1) % len(self._bootstrap)

    def bootstrap_order(self) -> list[str]:
        """The bootstrap addresses, the current one first."""
        i = self._index
        return self._bootstrap[i:] + self._bootstrap[:i]

    def prefer(self, address: str) -> None:
        """``address`` answered: make it the current bootstrap broker if it is one."""
        if address in self._bootstrap:
            self._index = self._bootstrap.index(address)

    async def close(self) -> None:
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close(grace=None)


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff_s: float,
    retry_on: tuple[type[SentinelClientError], ...] = (SentinelClientError,),
) -> T:
    """Call ``fn`` until it succeeds, retrying retriable ``retry_on`` errors
    ``attempts - 1`` times, ``backoff_s`` apart (growing linearly)."""
    for attempt in range(attempts):
        try:
            return await fn()
        except retry_on as exc:
            if not exc.retriable or attempt == attempts - 1:
                raise
            await asyncio.sleep(backoff_s * (1 + attempt))
    raise AssertionError("unreachable")


class LoopThread:
    """An asyncio event loop in a daemon thread: the IO side of a synchronous client."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._stopped = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (``ClientTimeoutError``)."""
        if self.in_loop_thread:
            coro.close()
            raise ClientStateError(
                "a blocking client call from the client's own IO thread (a callback?) "
                "would deadlock"
            )
        if self._stopped:
            coro.close()
            raise ClientClosedError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ClientTimeoutError(f"the call did not finish within {timeout} s") from None
        except concurrent.futures.CancelledError:
            raise BrokerUnavailableError("the call was cancelled (client closing?)") from None

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` on the loop from any thread."""
        if self.in_loop_thread:
            fn(*args)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to do
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs) and join the thread."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread:
            self._thread.join(timeout)
