"""A real broker for tests, with no Docker and no JVM.

In pytest, one line in ``conftest.py``::

    pytest_plugins = ["sentinel.testing"]

(or, installed with the package, nothing at all: the ``pytest11`` entry point registers
it) gives every test the ``sentinel_broker`` fixture: a running ``sentinel-server`` on
free loopback ports with a temporary data directory, stopped after the test. Its
``bootstrap_servers`` is the Kafka address, ``grpc_address`` the gRPC one.

Outside pytest, :func:`sentinel_server` is the same as a context manager.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sentinel.testing.process import BrokerProcess

__all__ = ["BrokerProcess", "sentinel_broker", "sentinel_server"]


@contextmanager
def sentinel_server(data_dir: Path | None = None, **flags: object) -> Iterator[BrokerProcess]:
    """Start a broker (``flags`` are ``sentinel-server`` options, ``kafka_port=0`` style),
    yield it running, then kill it and remove its temporary directory. With ``data_dir``
    the data is kept there instead."""
    scratch = None
    if data_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="sentinel-"))
        data_dir = scratch / "data"
    broker = BrokerProcess(data_dir, None, **flags)
    try:
        yield broker.start()
    finally:
        broker.kill()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


try:  # the fixture, where pytest is installed (it is not a dependency of the broker)
    from sentinel.testing.plugin import sentinel_broker
except ModuleNotFoundError as error:  # pragma: no cover - pytest missing
    if error.name != "pytest":
        raise
