"""Start and stop real ``sentinel-server`` processes on loopback ports for tests: the
implementation lives in :mod:`sentinel.testing` (shipped, so applications' tests can use
it too); this name stays for the tests that import it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.testing.process import READY, START_TIMEOUT_S, BrokerProcess

__all__ = ["READY", "START_TIMEOUT_S", "BrokerProcess", "module_broker"]


def module_broker(directory: str) -> Callable[..., Any]:
    """A module's ``broker`` fixture: one broker with default settings for all the
    module's tests, its data in a temporary ``directory``; ``broker =
    module_broker("name")`` at module level."""

    @pytest.fixture(scope="module", name="broker")
    def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
        proc = BrokerProcess(Path(tmp_path_factory.mktemp(directory)) / "data").start()
        yield proc
        proc.kill()

    return broker
