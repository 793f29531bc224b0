"""The test harness's ports (``sentinel.testing.ports``): outside the kernel's ephemeral
range, distinct, free; and ``BrokerProcess`` takes its restart-kept ports from there."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from broker_process import BrokerProcess
from sentinel.testing.ports import (
    FALLBACK_EPHEMERAL,
    FLOOR,
    NoFreePortError,
    PortPicker,
    bindable,
    candidates,
    ephemeral_range,
    pick_port,
    pick_ports,
)


def outside(port: int, ephemeral: tuple[int, int]) -> bool:
    low, high = ephemeral
    return not low <= port <= high


def test_picked_ports_are_outside_the_ephemeral_range_distinct_and_bindable() -> None:
    ephemeral = ephemeral_range()
    ports = pick_ports(50)
    assert len(set(ports)) == 50
    for port in ports:
        assert outside(port, ephemeral), (port, ephemeral)
        assert 1024 <= port <= 65535
        for reuse in (True, False):  # as the broker binds, and as strictly as possible
            with socket.socket() as sock:
                if reuse:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen(1)


def test_no_port_is_handed_out_twice_in_a_process() -> None:
    first = set(pick_ports(20))
    second = set(pick_ports(20)) | {pick_port()}
    assert not first & second


def test_the_ephemeral_range_is_read_from_proc_or_assumed(tmp_path: Path) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text("40000\t50000\n")
    assert ephemeral_range(path) == (40000, 50000)
    assert ephemeral_range(tmp_path / "absent") == FALLBACK_EPHEMERAL
    for junk in ("", "40000\n", "x y\n", "50000 40000\n", "0 70000\n"):
        path.write_text(junk)
        assert ephemeral_range(path) == FALLBACK_EPHEMERAL, junk
    low, high = FALLBACK_EPHEMERAL  # both Linux's and the IANA default lie inside
    assert low <= 32768 and high >= 65535


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ((32768, 60999), range(FLOOR, 32768)),  # Linux's default: below it
        ((49152, 65535), range(FLOOR, 49152)),  # IANA's
        ((1024, 60999), range(61000, 65536)),  # nothing below: above it
        ((5000, 65535), range(1024, 5000)),  # nothing above either: below, from 1024
    ],
)
def test_candidates_avoid_the_range(ephemeral: tuple[int, int], expected: range) -> None:
    assert candidates(ephemeral) == expected


def test_a_port_in_use_is_skipped_and_too_few_free_ones_is_an_error() -> None:
    taken = pick_port()
    picker = PortPicker(random.Random(1), span=range(taken, taken + 1))
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", taken))
        holder.listen(1)
        assert not bindable(taken)
        with pytest.raises(NoFreePortError, match=r"found 0 of 1 free ports"):
            picker.pick(1)
    assert bindable(taken)
    assert picker.pick(1) == [taken]  # free now; once only
    with pytest.raises(NoFreePortError, match=r"found 0 of 1"):
        picker.pick(1)
    with pytest.raises(NoFreePortError, match=r"found 0 of 1"):
        PortPicker(span=range(0)).pick(1)


def test_a_seeded_picker_draws_from_its_span() -> None:
    span = range(20000, 20100)
    ports = PortPicker(random.Random(7), span).pick(5)
    assert len(set(ports)) == 5 and all(p in span for p in ports)


def test_a_broker_process_fixes_grpc_and_kafka_ports_outside_the_range(tmp_path: Path) -> None:
    ephemeral = ephemeral_range()
    broker = BrokerProcess(tmp_path / "data")
    assert broker.port != broker.kafka_port
    assert outside(broker.port, ephemeral) and outside(broker.kafka_port, ephemeral)
    cmd = broker.command()
    assert option(cmd, "--port") == str(broker.port)
    assert option(cmd, "--kafka-port") == str(broker.kafka_port)
    assert option(cmd, "--metrics-port") == "0"  # not reused: any free one, each start
    assert broker.command() == cmd
    other = BrokerProcess(tmp_path / "other")
    assert {other.port, other.kafka_port}.isdisjoint({broker.port, broker.kafka_port})


def test_a_broker_process_keeps_given_ports_and_0_is_the_kernels_choice(tmp_path: Path) -> None:
    fixed = BrokerProcess(tmp_path / "a", port=12345, kafka_port=12346, metrics_port=12347)
    assert [option(fixed.command(), f) for f in FLAGS] == ["12345", "12346", "12347"]
    kernel = BrokerProcess(tmp_path / "b", port=0, kafka_port=0)
    assert [option(kernel.command(), f) for f in FLAGS] == ["0", "0", "0"]


FLAGS = ("--port", "--kafka-port", "--metrics-port")


def option(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]
