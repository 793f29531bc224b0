"""The pytest side of :mod:`sentinel.testing`: the ``sentinel_broker`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.testing.process import BrokerProcess


@pytest.fixture
def sentinel_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A running ``sentinel-server`` on free loopback ports, with its data in the test's
    ``tmp_path``: ``.bootstrap_servers`` for Kafka clients, ``.grpc_address`` for
    sentinel's client. Killed when the test ends."""
    broker = BrokerProcess(tmp_path / "sentinel-data").start()
    yield broker
    broker.kill()
