"""Start and stop real ``sentinel-server`` processes on loopback ports for tests: the
implementation lives in :mod:`sentinel.testing` (shipped, so applications' tests can use
it too); this name stays for the tests that import it."""

from sentinel.testing.process import READY, START_TIMEOUT_S, BrokerProcess

__all__ = ["READY", "START_TIMEOUT_S", "BrokerProcess"]
