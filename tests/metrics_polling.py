"""Helpers of the end-to-end tests: read a broker's metrics, poll with a deadline."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from broker_process import BrokerProcess


def scrape(broker: BrokerProcess) -> dict[str, float]:
    """Every sample of the broker's ``/metrics``, by name with its labels."""
    text = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    figures: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            figures[name] = float(value)
    return figures


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")
