"""Shared fixtures: real broker processes on loopback ports."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker_process import BrokerProcess

# Every broker a test starts listens for Kafka clients on a free port, never on 9093
# (the default), which another broker or another test run may hold. BrokerProcess
# passes --kafka-port itself; this covers servers tests start by hand.
os.environ.setdefault("SENTINEL_KAFKA_PORT", "0")


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """A factory: ``start_broker(**flags)`` starts a broker on a free loopback port."""
    started: list[BrokerProcess] = []

    def start(name: str = "broker", **flags: object) -> BrokerProcess:
        broker = BrokerProcess(tmp_path / name, **flags).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        if broker.proc is not None:
            broker.kill()


@pytest.fixture
def broker(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    """One running broker with default settings."""
    return start_broker()
