"""The fault-injecting TCP proxy of the cluster tests, against a tiny asyncio echo server:
bytes pass both ways, a partition cuts and refuses, heal restores, a black hole holds
bytes until healed, a delay delays, drops cut connections, and stop leaves no thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from cluster.tcp_proxy import TcpProxy
from metrics_polling import wait_for
from sentinel.testing.ports import pick_port


class EchoServer:
    """An asyncio echo server on 127.0.0.1 in a daemon thread; counts its connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.connections = 0
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _listen(self) -> int:
        self.server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    def start(self) -> int:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        return self.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", echo.port)
    proxy.start()
    yield proxy
    proxy.stop()


def connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = sock.recv(min(65536, size - got))
        assert chunk, f"connection closed after {got} of {size} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def is_closed(sock: socket.socket) -> bool:
    """The peer closed or reset the connection (within the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` while reading its echo (a thread sends: neither side blocks)."""
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    echoed = recv_exactly(sock, len(payload))
    sender.join(10)
    return echoed


def test_bytes_pass_both_ways_and_are_counted(proxy: TcpProxy, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: far more than the proxy buffers
    with connect(proxy) as sock:
        assert round_trip(sock, payload) == payload
        assert round_trip(sock, b"again") == b"again"
    size = len(payload) + 5
    wait_for(lambda: proxy.stats().open == 0, "the connection to be closed")
    stats = proxy.stats()
    assert (stats.accepted, stats.refused, stats.cut) == (1, 0, 0)
    assert (stats.bytes_to_target, stats.bytes_from_target) == (size, size)
    assert echo.connections == 1


def test_partition_cuts_open_connections_and_refuses_new_ones(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    with connect(proxy) as before:
        assert round_trip(before, b"ping") == b"ping"
        proxy.partition()
        assert is_closed(before)
    with connect(proxy) as during:  # accepted, then closed at once
        assert is_closed(during)
    assert echo.connections == 1  # nothing reached the target while partitioned
    stats = proxy.stats()
    assert (stats.cut, stats.refused, stats.open) == (1, 1, 0)

    proxy.heal()
    with connect(proxy) as after:
        assert round_trip(after, b"pong") == b"pong"
    assert echo.connections == 2


def test_hanging_partition_holds_bytes_until_healed(proxy: TcpProxy) -> None:
    with connect(proxy) as open_before:
        assert round_trip(open_before, b"1") == b"1"
        proxy.partition(hang=True)
        open_before.sendall(b"held")
        with connect(proxy) as opened_during:
            opened_during.sendall(b"also held")
            opened_during.settimeout(0.3)
            with pytest.raises(TimeoutError):
                opened_during.recv(1)
            open_before.settimeout(0.3)
            with pytest.raises(TimeoutError):
                open_before.recv(1)
            proxy.heal()
            open_before.settimeout(10)
            opened_during.settimeout(10)
            assert recv_exactly(open_before, 4) == b"held"
            assert recv_exactly(opened_during, 9) == b"also held"
    assert proxy.stats().cut == 0


def test_delay_applies_each_way(proxy: TcpProxy) -> None:
    delay = 0.15
    with connect(proxy) as sock:
        assert round_trip(sock, b"warm") == b"warm"
        proxy.set_delay(delay)
        began = time.monotonic()
        assert round_trip(sock, b"slow") == b"slow"
        assert time.monotonic() - began >= 2 * delay  # there and back
        proxy.set_delay(0)
        assert round_trip(sock, b"fast") == b"fast"
    with pytest.raises(ValueError, match="delay"):
        proxy.set_delay(-1)


def test_drop_rate_cuts_connections(proxy: TcpProxy) -> None:
    proxy.drop_rate(1.0, seed=7)
    with connect(proxy) as sock:
        sock.sendall(b"lost")
        assert is_closed(sock)
    assert proxy.stats().cut == 1
    proxy.drop_rate(0.0)
    with connect(proxy) as sock:
        assert round_trip(sock, b"kept") == b"kept"
    with pytest.raises(ValueError, match="drop rate"):
        proxy.drop_rate(1.5)


def test_target_down_refuses_the_client() -> None:
    # Nothing listens there, and outside the ephemeral range no connection has it as
    # its source port either (a dial from that port to itself would connect).
    dead_port = pick_port()
    proxy = TcpProxy("127.0.0.1", dead_port)
    proxy.start()
    try:
        with connect(proxy) as sock:
            assert is_closed(sock)
        assert wait_for(lambda: proxy.stats().refused == 1, "the refusal to be counted")
    finally:
        proxy.stop()


def test_stop_closes_connections_and_leaves_no_thread(echo: EchoServer) -> None:
    threads_before = set(threading.enumerate())
    proxy = TcpProxy("127.0.0.1", echo.port)
    port = proxy.start()
    assert proxy.start() == port  # idempotent
    assert proxy.running
    with connect(proxy) as sock:
        assert round_trip(sock, b"x") == b"x"
        proxy.partition(hang=True)  # even a frozen connection does not hold stop up
        proxy.stop()
        assert is_closed(sock)
    assert not proxy.running
    assert set(threading.enumerate()) == threads_before
    proxy.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(RuntimeError, match="not running"):
        proxy.heal()


def test_fixed_listen_port_and_restart(echo: EchoServer) -> None:
    port = pick_port()  # outside the ephemeral range: still free for the restart
    proxy = TcpProxy("127.0.0.1", echo.port, listen_port=port)
    assert proxy.address == f"127.0.0.1:{port}"
    for _ in range(2):  # a stopped proxy starts again on the same port
        assert proxy.start() == port
        with connect(proxy) as sock:
            assert round_trip(sock, b"ok") == b"ok"
        proxy.stop()
