"""The metrics port in-process: its request-head decoder on any bytes, scrapes sharing a
render, and the connections bound (an idle connection gives way to a new one)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from sentinel.server.metrics_http import MetricsHttpServer, _BadRequestError, parse_head


@given(st.binary(max_size=300))
def test_a_request_head_of_any_bytes_is_parsed_or_refused_400(raw: bytes) -> None:
    try:
        head = parse_head(raw)
    except _BadRequestError as bad:
        assert bad.status == 400
    else:
        assert head.version in ("HTTP/1.0", "HTTP/1.1") and head.target


@given(
    st.sampled_from(["GET", "HEAD", "POST"]),
    st.text("abc/?=[]&", min_size=1, max_size=20).map(lambda t: "/" + t),
    st.dictionaries(st.text("xyz-", min_size=1, max_size=8), st.text("ab ,", max_size=8)),
)
def test_a_well_formed_head_reads_back(method: str, target: str, headers: dict[str, str]) -> None:
    raw = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = parse_head((raw + "\r\n").encode())
    assert (head.method, head.target) == (method, target)
    assert head.headers == {k.lower(): v.strip() for k, v in headers.items()}


class SlowCollector:
    """A collector whose every collection takes 50 ms and is counted."""

    def __init__(self) -> None:
        self.renders = 0
        self.lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            self.renders += 1
            count = self.renders
        time.sleep(0.05)
        yield GaugeMetricFamily("renders", "collections so far", value=count)


async def get(port: int, path: str = "/metrics") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    return answer


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_scrapes_that_arrive_together_share_a_render() -> None:
    registry = CollectorRegistry()
    collector = SlowCollector()
    registry.register(collector)
    server = MetricsHttpServer(registry)
    port = await server.start("127.0.0.1", 0)
    try:
        answers = await asyncio.gather(*(get(port) for _ in range(50)))
        assert all(a.startswith(b"HTTP/1.1 200") and b"renders " in a for a in answers)
        # the first render, and at most one more for all that arrived while it ran
        assert collector.renders <= 3, collector.renders
        # a scrape after them sees a new render
        later = await get(port)
        assert f"renders {collector.renders}.0".encode() in later
    finally:
        await server.close()


async def test_at_the_bound_an_idle_connection_gives_way_to_a_new_one() -> None:
    server = MetricsHttpServer(CollectorRegistry(), max_connections=3)
    port = await server.start("127.0.0.1", 0)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await until(lambda: server.open_connections == 3, "three connections accepted")
        assert (await get(port)).startswith(b"HTTP/1.1 200")
        assert server.evicted == 1
        assert await asyncio.wait_for(idle[0][0].read(), 5) == b""  # the oldest, closed
        for _reader, writer in idle:
            writer.close()
    finally:
        await server.close()


@pytest.mark.parametrize("path", ["/", "/metrics", "/anything?x=1"])
async def test_every_path_but_the_icon_is_a_scrape(path: str) -> None:
    registry = CollectorRegistry()
    registry.register(SlowCollector())
    server = MetricsHttpServer(registry)
    port = await server.start("127.0.0.1", 0)
    try:
        assert b"renders " in await get(port, path)
        icon = await get(port, "/favicon.ico")
        assert icon.startswith(b"HTTP/1.1 200") and icon.endswith(b"\r\n\r\n")
    finally:
        await server.close()


class BigCollector:
    """~8 MB of samples: more than the kernel's socket buffers hold."""

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("big", "many samples", labels=["name"])
        for i in range(80_000):
            family.add_metric([f"{i:0>60}"], float(i))
        yield family


async def test_a_client_that_does_not_read_its_answer_is_closed_after_the_deadline() -> None:
    registry = CollectorRegistry()
    registry.register(BigCollector())
    server = MetricsHttpServer(registry, read_timeout_s=0.5)
    port = await server.start("127.0.0.1", 0)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        await until(lambda: server.open_connections == 1, "the connection accepted")
        # rendered, written, not read: closed
        await until(lambda: server.open_connections == 0, "the connection closed", 20)
        sock.close()
    finally:
        await server.close()


class BlockedCollector:
    """A collection that waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def collect(self) -> Iterable[Metric]:
        self.release.wait(10)
        yield GaugeMetricFamily("released", "set once released", value=1)


async def test_at_the_bound_with_none_idle_a_new_connection_is_closed_at_once() -> None:
    registry = CollectorRegistry()
    collector = BlockedCollector()
    registry.register(collector)
    server = MetricsHttpServer(registry, max_connections=2)
    port = await server.start("127.0.0.1", 0)
    try:
        scrapes = [asyncio.ensure_future(get(port)) for _ in range(2)]
        busy = lambda: server.open_connections == 2 and not server.idle_connections  # noqa: E731
        await until(busy, "two scrapes waiting for their render")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
        writer.close()
        assert server.refused == 1 and server.evicted == 0
        collector.release.set()
        answers = await asyncio.gather(*scrapes)
        assert all(a.startswith(b"HTTP/1.1 200") and b"released 1.0" in a for a in answers)
    finally:
        collector.release.set()
        await server.close()
