"""``sentinel.testing``: the pytest fixture gives a running broker that Kafka clients
and sentinel's own client reach; the README's pytest example runs as written, in a
pytest of its own with the one-line conftest; the context manager cleans up after
itself."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer

from sentinel import client as sentinel_client
from sentinel.testing import BrokerProcess, sentinel_broker, sentinel_server

README = Path(__file__).resolve().parent.parent / "README.md"
assert sentinel_broker  # the fixture, imported: this module uses it as a conftest would


def test_the_fixture_gives_a_running_broker_for_kafka_and_grpc(
        sentinel_broker: BrokerProcess) -> None:
    producer = Producer({"bootstrap.servers": sentinel_broker.bootstrap_servers})
    for i in range(10):
        producer.produce("fixture", key=b"k%d" % i, value=b"v%d" % i)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": sentinel_broker.bootstrap_servers,
                         "group.id": "fixture-readers", "auto.offset.reset": "earliest"})
    consumer.subscribe(["fixture"])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 10:
        assert time.monotonic() < deadline, got
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            got.append(message.value())
    consumer.close()
    assert got == [b"v%d" % i for i in range(10)]
    # The same broker through the other door.
    with sentinel_client.Consumer(sentinel_broker.grpc_address,
                                  consumer_timeout_ms=10_000) as ours:
        ours.assign([("fixture", 0)])
        ours.seek_to_beginning()
        assert [r.value for r in itertools.islice(ours, 10)] == got


def test_the_readme_pytest_example_runs_with_a_one_line_conftest(tmp_path: Path) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    (example,) = [block for block in blocks if "def test_" in block]
    conftest, _, test_module = example.partition("# test_orders.py")
    assert "pytest_plugins" in conftest
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_orders.py").write_text("# test_orders.py" + test_module)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_context_manager_starts_and_removes_a_broker() -> None:
    with sentinel_server() as broker:
        assert broker.proc is not None and broker.proc.poll() is None
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        producer.produce("cm", value=b"x")
        assert producer.flush(10) == 0
        data = broker.data_dir
        assert data.exists()
    assert broker.proc is None
    assert not data.parent.exists()
