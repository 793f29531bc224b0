"""The broker-to-broker transport on loopback: envelopes both ways, calls, a peer
down then up, drops counted, and refusal of every bad connection while the others
keep working."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

import pytest

from listen_queue import burst_overflows
from sentinel.cluster.peers import Peer
from sentinel.cluster.transport import (
    PeerTimeoutError,
    PeerTransport,
    PeerUnavailableError,
    RemoteCallError,
)
from sentinel.cluster.wire import Call, Hello, encode
from sentinel.errors import ClosedError, NotLeaderError
from sentinel.raft.log import Entry
from sentinel.raft.messages import AppendEntries, Heartbeat
from sentinel.raft.multi import Beat, Envelope
from sentinel.testing.ports import pick_ports

CID = "c0ffee0123456789"


async def wait_for(what: str, pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Node:
    def __init__(self, node_id: int, peers: dict[int, Peer], **kw: float) -> None:
        self.got: list[Envelope] = []
        self.transport = PeerTransport(
            node_id, CID, peers, on_envelope=self._on_envelope, on_call=self._on_call, **kw
        )
        self.raise_on_envelope = False

    def _on_envelope(self, env: Envelope) -> None:
        if self.raise_on_envelope:
            self.raise_on_envelope = False
            raise RuntimeError("handler bug")
        self.got.append(env)

    async def _on_call(self, src: int, kind: str, body: bytes) -> bytes:
        if kind == "echo":
            return bytes([src]) + body
        if kind == "not-leader":
            raise NotLeaderError("partition orders-0 is led by broker 3")
        if kind == "slow":
            await asyncio.sleep(60)
        raise RuntimeError(f"no such call {kind}")


def beat(src: int, dst: int, n: int = 0) -> Envelope:
    return Envelope(src, dst, beats=(Beat(n, 1, 0),))


@pytest.fixture
def peers() -> dict[int, Peer]:
    return {i: Peer(i, "127.0.0.1", p) for i, p in zip((1, 2, 3), pick_ports(3), strict=True)}


@pytest.fixture
async def nodes(peers: dict[int, Peer]) -> AsyncIterator[dict[int, Node]]:
    nodes = {i: Node(i, peers) for i in peers}
    for n in nodes.values():
        await n.transport.start()
    yield nodes
    for n in nodes.values():
        await n.transport.stop()


async def test_envelopes_both_ways(nodes: dict[int, Node]) -> None:
    for src, dst in [(1, 2), (2, 1), (3, 1), (1, 3)]:
        for i in range(5):
            assert nodes[src].transport.send(beat(src, dst, i))
    await wait_for("deliveries", lambda: [len(nodes[i].got) for i in (1, 2, 3)] == [10, 5, 5])
    assert [e.beats[0].group for e in nodes[2].got] == list(range(5))  # in order
    assert {e.src for e in nodes[1].got} == {2, 3}
    assert all(n.transport.refused == 0 and n.transport.dropped == 0 for n in nodes.values())


async def test_handler_error_keeps_the_connection(nodes: dict[int, Node]) -> None:
    nodes[2].raise_on_envelope = True
    nodes[1].transport.send(beat(1, 2, 0))
    nodes[1].transport.send(beat(1, 2, 1))
    await wait_for("the second envelope", lambda: len(nodes[2].got) == 1)
    assert nodes[2].got[0].beats[0].group == 1
    assert nodes[2].transport.refused == 0


async def test_calls_and_remote_errors(nodes: dict[int, Node]) -> None:
    t = nodes[1].transport
    assert await t.call(2, "echo", b"hi", timeout=5) == b"\x01hi"
    replies = await asyncio.gather(*(t.call(3, "echo", bytes([i]), timeout=5) for i in range(20)))
    assert replies == [b"\x01" + bytes([i]) for i in range(20)]
    with pytest.raises(RemoteCallError) as info:
        await t.call(2, "not-leader", b"", timeout=5)
    assert info.value.kafka_code == 6 and info.value.code_name == "NOT_LEADER_OR_FOLLOWER"
    assert "led by broker 3" in str(info.value)
    with pytest.raises(RemoteCallError) as info:
        await t.call(2, "unknown", b"", timeout=5)
    assert info.value.kafka_code == -1 and info.value.code_name == "UNKNOWN_SERVER_ERROR"
    with pytest.raises(PeerTimeoutError) as timed_out:
        await t.call(2, "slow", b"", timeout=0.05)
    assert timed_out.value.kafka_code == 7 and timed_out.value.code_name == "REQUEST_TIMED_OUT"
    assert await t.call(2, "echo", b"after", timeout=5) == b"\x01after"


async def test_stop_fails_pending_calls(nodes: dict[int, Node]) -> None:
    t = nodes[1].transport
    pending = asyncio.ensure_future(t.call(2, "slow", b"", timeout=60))
    await wait_for(
        "the call to leave",
        lambda: 2 in t._links and t._links[2].writer is not None and not t._links[2].queue,
    )
    await t.stop()
    with pytest.raises(ClosedError):
        await pending
    with pytest.raises(ClosedError):
        await t.call(2, "echo", b"", timeout=1)
    assert not t.send(beat(1, 2))


async def test_peer_down_then_up(peers: dict[int, Peer]) -> None:
    one, two = Node(1, peers), Node(2, peers)
    await one.transport.start()
    try:
        t = one.transport
        t.send(beat(1, 2))
        await wait_for("peer 2 seen down", lambda: t.is_down(2))
        assert not t.send(beat(1, 2))
        assert t.dropped_to(2) >= 2
        with pytest.raises(PeerUnavailableError) as info:
            await t.call(2, "echo", b"", timeout=5)
        assert info.value.kafka_code == 8 and info.value.code_name == "BROKER_NOT_AVAILABLE"
        await two.transport.start()

        def resend() -> bool:  # Raft sends again every tick
            t.send(beat(1, 2, 42))
            return bool(two.got)

        await wait_for("re-dial and delivery", resend)
        assert not t.is_down(2)
        assert await t.call(2, "echo", b"up", timeout=5) == b"\x01up"
        # peer 2 dies again: the connection loss is noticed, then it comes back
        await two.transport.stop()
        await wait_for("peer 2 down again", lambda: (t.send(beat(1, 2)), t.is_down(2))[1])
        two = Node(2, peers)
        await two.transport.start()
        await wait_for("second re-dial", resend)
    finally:
        await one.transport.stop()
        await two.transport.stop()


async def test_queue_full_drops_are_counted(peers: dict[int, Peer]) -> None:
    one, two = Node(1, peers, max_queue_bytes=4000), Node(2, peers)
    await one.transport.start()
    await two.transport.start()
    try:
        big = Envelope(1, 2, messages=((1, AppendEntries(1, 1, 2, 0, 0, (
            Entry(0, 1, 1, b"x" * 900),), 0)),))
        taken = [one.transport.send(big) for _ in range(20)]  # no await: nothing written yet
        assert 1 <= sum(taken) < 20
        assert one.transport.dropped == taken.count(False)
        await wait_for("queued ones", lambda: len(two.got) == sum(taken))
        assert two.got[0] == big
    finally:
        await one.transport.stop()
        await two.transport.stop()


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(10):
            return await reader.read()  # the server closes it
    finally:
        writer.close()


def _b(frame: Hello | Envelope | Call) -> bytes:
    return b"".join(bytes(b) for b in encode(frame))


HELLO_2_TO_1 = _b(Hello(CID, 2, 1))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_b(Hello("another-cluster", 2, 1)), "cluster id"),
        (_b(Hello(CID, 9, 1)), "unknown node id 9"),
        (_b(Hello(CID, 1, 1)), "unknown node id 1"),
        (_b(Hello(CID, 2, 3)), "Hello for broker 3"),
        (HELLO_2_TO_1 + _b(beat(3, 1)), "claims source 3"),
        (HELLO_2_TO_1 + _b(beat(2, 3)), "for broker 3"),
        (HELLO_2_TO_1 + HELLO_2_TO_1, "a Hello frame after the Hello"),
        (_b(Call(1, "echo", b"")), "not a Hello"),
        (os.urandom(64), ""),
        (b"\x10\x00\x00\x00garbage-garbage-garbage", "CRC"),
        (HELLO_2_TO_1 + b"\xff\xff\xff\xff", "exceeds"),
    ],
)
async def test_refusals_leave_the_others_working(
    nodes: dict[int, Node], data: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # an established link 2 -> 1 before, that must survive
    nodes[2].transport.send(beat(2, 1, 1))
    await wait_for("first delivery", lambda: len(nodes[1].got) == 1)
    with caplog.at_level(logging.WARNING, logger="sentinel.cluster.transport"):
        assert await _raw(nodes[1].transport.port, data) == b""
        await wait_for("the refusal counted", lambda: nodes[1].transport.refused == 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    nodes[2].transport.send(beat(2, 1, 2))
    nodes[3].transport.send(beat(3, 1, 3))
    await wait_for("later deliveries", lambda: len(nodes[1].got) == 3)
    assert await nodes[2].transport.call(1, "echo", b"", timeout=5) == b"\x02"
    # the spoofed envelope never reached the handler
    assert {(e.src, e.beats[0].group) for e in nodes[1].got} == {(2, 1), (2, 2), (3, 3)}


async def test_large_append_entries_arrive_intact(nodes: dict[int, Node]) -> None:
    entries, at = [], 0
    for i in range(6):
        data = os.urandom(1024 * 1024 + i)
        entries.append(Entry(at, 2, 100, data))
        at += 100
    env = Envelope(1, 2, messages=(
        (5, AppendEntries(2, 1, 2, 0, 0, tuple(entries), 0)),
        (6, Heartbeat(2, 1, 2, 0)),
    ))
    assert nodes[1].transport.send(env)
    assert nodes[1].transport.send(beat(1, 2, 9))
    await wait_for("the large envelope", lambda: len(nodes[2].got) == 2, timeout=30)
    assert nodes[2].got[0] == env
    assert nodes[2].got[1].beats[0].group == 9


async def test_silent_connection_refused_after_hello_timeout(peers: dict[int, Peer]) -> None:
    one = Node(1, peers, hello_timeout=0.2)
    await one.transport.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", peers[1].port)
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        writer.close()
        assert one.transport.refused == 1
    finally:
        await one.transport.stop()


async def test_a_frame_left_unfinished_after_the_hello_is_refused(
    peers: dict[int, Peer], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that passed the Hello cannot hold its link (and the buffer) with a frame
    it never finishes: once begun, a frame must be whole in time."""
    import sentinel.cluster.transport as transport

    monkeypatch.setattr(transport, "PARTIAL_FRAME_TIMEOUT_S", 0.3)
    one = Node(1, peers)
    await one.transport.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", peers[1].port)
        whole = _b(beat(2, 1, 1))
        with caplog.at_level(logging.WARNING, logger="sentinel.cluster.transport"):
            writer.write(HELLO_2_TO_1 + whole + whole[:-3])  # one beat, then most of one
            await writer.drain()
            async with asyncio.timeout(10):
                assert await reader.read() == b""  # closed
            writer.close()
            await wait_for("the refusal counted", lambda: one.transport.refused == 1)
        assert len(one.got) == 1  # the whole frame before it was delivered
        assert any("is not complete" in r.getMessage() for r in caplog.records)
    finally:
        await one.transport.stop()


async def test_calls_in_flight_on_a_link_are_bounded(
    peers: dict[int, Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer cannot make a broker hold unbounded handler tasks: past the bound a call
    is answered at once with THROTTLING_QUOTA_EXCEEDED (retriable), and the calls in
    flight still complete."""
    import sentinel.cluster.transport as transport

    monkeypatch.setattr(transport, "MAX_CALLS_PER_LINK", 4)
    release = asyncio.Event()
    one, two = Node(1, peers), Node(2, peers)

    async def slow(src: int, kind: str, body: bytes) -> bytes:
        await release.wait()
        return body

    one.transport.on_call = slow
    await one.transport.start()
    await two.transport.start()
    try:
        held = [asyncio.ensure_future(two.transport.call(1, "slow", b"%d" % i, timeout=10))
                for i in range(4)]
        await asyncio.sleep(0.2)  # the four are in flight at broker 1
        with pytest.raises(transport.RemoteCallError) as refused:
            await two.transport.call(1, "slow", b"x", timeout=10)
        assert refused.value.kafka_code == 89
        release.set()
        assert await asyncio.gather(*held) == [b"%d" % i for i in range(4)]
    finally:
        await one.transport.stop()
        await two.transport.stop()


async def test_a_stopping_peer_is_leaving_then_gone_and_back_once_it_dials_again(
    peers: dict[int, Peer],
) -> None:
    one, two = Node(1, peers), Node(2, peers)
    await one.transport.start()
    await two.transport.start()
    t = one.transport
    try:
        two.transport.send(beat(2, 1))
        await wait_for("broker 2's connection", lambda: bool(one.got))
        assert not t.leaving(2) and not t.gone(2)
        two.transport.say_leaving()  # a clean stop begins at broker 2
        await wait_for("broker 2's notice", lambda: t.leaving(2))
        assert not t.gone(2)  # still connected: it still answers (its stop drains)
        assert not t.leaving(3)  # only the one that said it
        await two.transport.stop()
        await wait_for("broker 2 gone", lambda: t.gone(2))  # its connection closed
        assert t.leaving(2)
        two = Node(2, peers)  # restarted: its first dial makes it a peer like any other
        await two.transport.start()
        two.transport.send(beat(2, 1, 7))
        await wait_for("the restarted broker's envelope", lambda: len(one.got) == 2)
        assert not t.leaving(2) and not t.gone(2)
        assert t.refused == 0 and two.transport.refused == 0
    finally:
        await one.transport.stop()
        await two.transport.stop()


async def test_a_burst_of_connects_fits_the_listen_queue(peers: dict[int, Peer]) -> None:
    """Peers dialing together (a cluster starting, a partition healing) are queued, not
    dropped: a dropped SYN cost its dialer a 1 s retransmit."""
    node = Node(1, peers)
    await node.transport.start()
    try:
        overflows = await asyncio.to_thread(burst_overflows, peers[1].port)
    finally:
        await node.transport.stop()
    assert overflows == 0
