"""Connecting: a broker slow to answer the first connection is waited for, with backoff,
within the request timeout; an address that cannot work fails fast and clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from broker_process import BrokerProcess
from sentinel.client import Admin, Consumer, Producer, errors
from sentinel.client._channel import parse_bootstrap
from sentinel.errors import InvalidArgumentError
from sentinel.testing.ports import pick_port


@pytest.fixture
def paused(start_broker: Callable[..., BrokerProcess]) -> Iterator[Callable[[float], None]]:
    """``pause(seconds)``: SIGSTOP the broker now and SIGCONT it ``seconds`` later, so
    its kernel accepts a connection that it answers only then."""
    broker = start_broker()
    with Admin(broker.address) as admin:
        admin.create_topic("slow", partitions=1)
    with Producer(broker.address) as producer:
        producer.send("slow", b"hello").result(10)
    timers: list[threading.Timer] = []

    def pause(seconds: float) -> None:
        assert broker.proc is not None
        pid = broker.proc.pid
        os.kill(pid, signal.SIGSTOP)
        timer = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
        timers.append(timer)
        timer.start()

    pause.broker = broker  # type: ignore[attr-defined]
    yield pause
    for timer in timers:
        timer.join()


def test_admin_consumer_and_cli_wait_for_a_slow_first_connection(
    paused: Callable[[float], None],
) -> None:
    broker: BrokerProcess = paused.broker  # type: ignore[attr-defined]
    paused(0.6)
    started = time.monotonic()
    with Admin(broker.address, request_timeout_ms=10_000) as admin:
        assert "slow" in admin.list_topics()
    assert time.monotonic() - started >= 0.3  # it did wait for the broker

    paused(0.6)
    with Consumer(
        broker.address, auto_offset_reset="earliest", request_timeout_ms=10_000
    ) as consumer:
        consumer.assign([("slow", 0)])
        deadline = time.monotonic() + 15
        values: list[bytes | None] = []
        while not values and time.monotonic() < deadline:
            values = [r.value for r in consumer.poll(1.0)]
    assert values == [b"hello"]

    paused(0.6)
    env = {**os.environ, "SENTINEL_BROKER": broker.address}
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel.cli.main", "topics", "-list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "slow" in proc.stdout


def test_a_producer_waits_for_a_slow_first_connection(paused: Callable[[float], None]) -> None:
    broker: BrokerProcess = paused.broker  # type: ignore[attr-defined]
    paused(0.6)
    with Producer(broker.address, retries=0, request_timeout_ms=10_000) as producer:
        assert producer.send("slow", b"again").result(15).offset == 1


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on, outside the ephemeral range: no connection's source
    port either (a dial from it to itself would connect)."""
    return pick_port()


def test_nothing_listening_fails_within_the_request_timeout(closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"
    started = time.monotonic()
    with (
        Admin(address, request_timeout_ms=1_000) as admin,
        pytest.raises(errors.BrokerUnavailableError) as err,
    ):
        admin.list_topics()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5  # it retried, and gave up at the request timeout
    assert "Connection refused" in str(err.value)


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.0.0.1:", ":9092", "127.0.0.1:99999", "127.0.0.1:0", "a b:1"]
)
def test_a_malformed_address_is_refused_at_once(address: str) -> None:
    with pytest.raises(errors.InvalidBootstrapError) as err:
        parse_bootstrap(address)
    assert isinstance(err.value, errors.SentinelClientError)
    assert isinstance(err.value, InvalidArgumentError)  # the caller's mistake
    assert address in str(err.value)
    with pytest.raises(errors.InvalidBootstrapError):
        Admin(address)


@pytest.mark.parametrize(
    "details",
    [
        "DNS resolution failed for no-such-broker.invalid:9092: C-ares status is not "
        "ARES_SUCCESS qtype=A name=no-such-broker.invalid: Domain name not found",
        "errors resolving no-such-broker.invalid:9092: [field:hostname lookup error:address "
        "lookup failed for no-such-broker.invalid:9092: Domain name not found]",
    ],
)
def test_a_name_that_does_not_resolve_is_a_clear_error_that_is_not_retried(details: str) -> None:
    error = errors.error_from_status(grpc.StatusCode.UNAVAILABLE, details, ())
    assert isinstance(error, errors.BrokerUnavailableError)  # the CLI: "cannot reach"
    assert isinstance(error, errors.UnresolvableBrokerError)
    assert not error.retriable
    assert "cannot resolve" in str(error) and "no-such-broker.invalid" in str(error)
