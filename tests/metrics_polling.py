"""Helpers of the end-to-end tests: read a broker's metrics, poll with a deadline."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from broker_process import BrokerProcess

T = TypeVar("T")


def scrape(broker: BrokerProcess) -> dict[str, float]:
    """Every sample of the broker's ``/metrics``, by name with its labels."""
    text = urllib.request.urlopen(broker.metrics_url, timeout=5).read().decode()
    figures: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            figures[name] = float(value)
    return figures


def wait_for(check: Callable[[], T], what: str = "the condition", timeout: float = 15.0) -> T:
    """Call ``check`` until it returns something truthy and return that; fail after
    ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
