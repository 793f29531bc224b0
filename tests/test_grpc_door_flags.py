"""The gRPC door's flags: ``--grpc-max-concurrent-streams``, ``--grpc-max-pending-calls``,
``--grpc-request-timeout-ms`` and ``--grpc-request-hold-ms`` are checked when the
configuration is made (one line naming the setting, exit 2, as every setting) and reach
the gRPC server and its admission (running, in ``test_grpc_flood_e2e``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sentinel.broker.request_budget import RequestBudget
from sentinel.config import BrokerConfig, ConfigError, load_config
from sentinel.server.app import grpc_server_options
from sentinel.server.grpc_admission import (
    DEFAULT_HOLD_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    Admission,
)

SERVER = [sys.executable, "-m", "sentinel.cli.server"]


def refusal(args: list[str], env: dict[str, str] | None = None) -> str:
    """The one line ``sentinel-server`` refuses these arguments with (exit 2)."""
    result = subprocess.run(
        [*SERVER, "--port", "0", "--metrics-port", "0", *args],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"grpc_max_concurrent_streams": 0}, "grpc-max-concurrent-streams=0: expected 1.."),
        ({"grpc_max_concurrent_streams": -3}, "grpc-max-concurrent-streams=-3: expected 1.."),
        ({"grpc_max_concurrent_streams": 2**31}, "expected 1..2147483647"),
        ({"grpc_max_pending_calls": 0}, "grpc-max-pending-calls=0: expected 1.."),
        ({"grpc_max_pending_calls": 2**31}, "grpc-max-pending-calls=2147483648: expected 1.."),
        ({"grpc_request_timeout_ms": 0}, "grpc-request-timeout-ms=0: expected at least 1"),
        ({"grpc_request_hold_ms": -1}, "grpc-request-hold-ms=-1: expected at least 1"),
        (
            {"grpc_request_hold_ms": 2000, "grpc_request_timeout_ms": 1000},
            r"grpc-request-hold-ms \(2000\) must not exceed grpc-request-timeout-ms \(1000\)",
        ),
    ],
)
def test_the_config_refuses_out_of_range_values(settings: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BrokerConfig(**settings)  # type: ignore[arg-type]


def test_the_bounds_themselves_are_accepted() -> None:
    BrokerConfig(grpc_max_concurrent_streams=1, grpc_request_timeout_ms=1, grpc_request_hold_ms=1)
    BrokerConfig(grpc_max_concurrent_streams=2**31 - 1, grpc_request_hold_ms=30_000)
    BrokerConfig(grpc_max_pending_calls=1)
    BrokerConfig(grpc_max_pending_calls=2**31 - 1)


def test_every_source_sets_them() -> None:
    config = load_config(
        {"grpc_max_concurrent_streams": "64"},
        environ={
            "SENTINEL_GRPC_MAX_PENDING_CALLS": "777",
            "SENTINEL_GRPC_REQUEST_TIMEOUT_MS": "5000",
            "SENTINEL_GRPC_REQUEST_HOLD_MS": "250",
        },
    )
    assert (config.grpc_max_concurrent_streams, config.grpc_max_pending_calls) == (64, 777)
    assert (config.grpc_request_timeout_ms, config.grpc_request_hold_ms) == (5000, 250)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--grpc-max-concurrent-streams", "0"], {}, "grpc-max-concurrent-streams=0: expected"),
        (["--grpc-max-pending-calls", "0"], {}, "grpc-max-pending-calls=0: expected"),
        (["--grpc-request-timeout-ms", "-5"], {}, "grpc-request-timeout-ms=-5: expected"),
        (
            ["--grpc-request-hold-ms", "5000"],
            {"SENTINEL_GRPC_REQUEST_TIMEOUT_MS": "1000"},
            "grpc-request-hold-ms (5000) must not exceed grpc-request-timeout-ms (1000)",
        ),
        (
            [],
            {"SENTINEL_GRPC_MAX_CONCURRENT_STREAMS": "many"},
            "SENTINEL_GRPC_MAX_CONCURRENT_STREAMS='many' is not a valid int",
        ),
    ],
)
def test_sentinel_server_refuses_a_bad_value_in_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    line = refusal(args, env)
    assert line.startswith("sentinel-server: "), line
    assert message in line, line


def test_the_grpc_server_is_given_the_streams_bound() -> None:
    options = dict(grpc_server_options(BrokerConfig(grpc_max_concurrent_streams=9)))
    assert options["grpc.max_concurrent_streams"] == 9
    # The bound counts HTTP/2 streams, not calls the server has yet to free.
    assert options["grpc.http.overload_protection"] == 0
    assert dict(grpc_server_options(BrokerConfig()))["grpc.max_concurrent_streams"] == 256


def test_the_grpc_server_is_given_one_pending_calls_bound() -> None:
    """Soft and hard limits equal: no random early drops below the bound."""
    options = dict(grpc_server_options(BrokerConfig(grpc_max_pending_calls=123)))
    assert options["grpc.server.max_pending_requests"] == 123
    assert options["grpc.server.max_pending_requests_hard_limit"] == 123
    default = dict(grpc_server_options(BrokerConfig()))
    assert default["grpc.server.max_pending_requests"] == 4096


def test_admission_takes_its_hold_and_timeout_from_the_config() -> None:
    budget = RequestBudget(1 << 20)
    door = Admission.of(budget, BrokerConfig(grpc_request_timeout_ms=2500, grpc_request_hold_ms=40))
    assert (door.hold_s, door.request_timeout_s) == (0.04, 2.5)
    # The defaults of an Admission made without a config are the flags' defaults.
    default = Admission.of(budget, BrokerConfig())
    assert (default.hold_s, default.request_timeout_s) == (
        DEFAULT_HOLD_S,
        DEFAULT_REQUEST_TIMEOUT_S,
    )
    assert (DEFAULT_HOLD_S, DEFAULT_REQUEST_TIMEOUT_S) == (1.0, 30.0)
