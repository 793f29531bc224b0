"""``--kafka-max-in-flight``: the requests one Kafka connection may have unanswered."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sentinel.broker.request_budget import RequestBudget
from sentinel.config import MAX_KAFKA_IN_FLIGHT, BrokerConfig, ConfigError, load_config
from sentinel.server.kafka.listener import KafkaListener
from sentinel.server.kafka.socket_protocol import KafkaSocketProtocol
from sentinel.server.metrics import Metrics


@pytest.mark.parametrize("value", [0, -1, MAX_KAFKA_IN_FLIGHT + 1])
def test_the_config_refuses_out_of_range_values(value: int) -> None:
    with pytest.raises(ConfigError, match=f"kafka-max-in-flight={value}: expected 1..1024"):
        BrokerConfig(kafka_max_in_flight=value)


def test_the_default_and_the_sources() -> None:
    assert BrokerConfig().kafka_max_in_flight == 64
    assert BrokerConfig(kafka_max_in_flight=1).kafka_max_in_flight == 1
    config = load_config({}, environ={"SENTINEL_KAFKA_MAX_IN_FLIGHT": "200"})
    assert config.kafka_max_in_flight == 200
    assert load_config({"kafka_max_in_flight": "7"}).kafka_max_in_flight == 7


def test_sentinel_server_refuses_a_bad_value_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.server", "--kafka-max-in-flight", "0"],
        capture_output=True, text=True, timeout=30, check=False, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 2, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("sentinel-server: ") and "kafka-max-in-flight=0: expected" in line


async def test_each_connection_reads_at_most_that_many_requests_ahead() -> None:
    """The listener takes the bound from the broker's settings, as the app builds it."""

    class Service:  # what the listener and a connection read of the broker
        config = BrokerConfig(kafka_max_in_flight=3)
        request_budget = RequestBudget(1 << 20)

    listener = KafkaListener(Service(), Metrics(), max_frame_bytes=1 << 20)  # type: ignore[arg-type]
    assert listener.max_in_flight == 3
    protocol = KafkaSocketProtocol(listener, 1)
    assert protocol._conn.max_in_flight == 3
