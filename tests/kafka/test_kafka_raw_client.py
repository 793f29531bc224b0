"""bench/kafka_raw.c, the benchmark's library-free Kafka client, against a real broker.

It is compiled here with the system C compiler as the benchmark compiles it (``cc -O2``),
then: its produced batches are accepted and decode record by record with our own reader
(keyless, the values it says, offsets in order); its consumer reads them all back; an
error answer (a partition the topic does not have) makes it fail loudly; and it runs
against its own sink (the fake broker for its ceiling). Skipped only where no C
compiler exists, so that the benchmark's client cannot rot unnoticed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kafka_raw import RawKafka

from broker_process import BrokerProcess, module_broker
from sentinel.client import Admin
from sentinel.protocol.kafka.messages import fetch as fe
from sentinel.record import decode_records, iter_batches

SOURCE = Path(__file__).parents[2] / "bench" / "kafka_raw.c"
COUNT = 5000
SIZE = 100
PARTITIONS = 4
BATCH_BYTES = 20_000  # several batches per partition, several requests in flight


@pytest.fixture(scope="module")
def kafka_raw(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on the PATH: bench/kafka_raw.c cannot be built here")
    binary = str(tmp_path_factory.mktemp("kafka_raw") / "kafka_raw")
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", binary, str(SOURCE)], check=True)
    return binary


broker = module_broker("kafka-raw")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def report(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


Row = tuple[int, bytes | None, bytes | None]


def fetch_all(client: RawKafka, topic: str, partition: int) -> list[Row]:
    """(offset, key, value) of every record of ``partition``, through our own decoder."""
    records: list[Row] = []
    offset = 0
    while True:
        answer = client.call(1, 4, fe.FetchRequest(max_wait_ms=0, min_bytes=0, topics=(
            fe.FetchTopic(topic=topic, partitions=(
                fe.FetchPartition(partition=partition, fetch_offset=offset,
                                  partition_max_bytes=1 << 20),)),)))  # fmt: skip
        part = answer.responses[0].partitions[0]
        assert part.error_code == 0
        batches = list(iter_batches(part.records or b""))
        if not batches:
            return records
        for batch in batches:
            for r in decode_records(batch):
                records.append((r.offset, r.key, r.value))
                offset = r.offset + 1


def test_produce_and_consume_against_a_real_broker(broker: BrokerProcess, kafka_raw: str) -> None:
    with Admin(broker.grpc_address) as admin:
        admin.create_topic("raw", partitions=PARTITIONS)

    produced = report(run(kafka_raw, "produce", broker.kafka_address, "raw", str(PARTITIONS),
                          str(COUNT), str(SIZE), str(BATCH_BYTES), "5"))  # fmt: skip
    assert produced["records"] == COUNT
    assert isinstance(produced["requests"], int) and produced["requests"] > 5  # pipelined

    with RawKafka(broker.kafka_address) as client:
        stored = [fetch_all(client, "raw", p) for p in range(PARTITIONS)]
    assert sum(len(s) for s in stored) == COUNT
    for records in stored:
        assert [offset for offset, _, _ in records] == list(range(len(records)))
        assert all(key is None and value is not None and len(value) == SIZE
                   for _, key, value in records)  # fmt: skip
        assert all(v is not None and v.isalnum() for _, _, v in records)

    consumed = report(run(kafka_raw, "consume", broker.kafka_address, "raw", str(PARTITIONS),
                          str(COUNT), "65536"))  # fmt: skip
    assert consumed["records"] == COUNT


def test_an_error_answer_fails_the_client(broker: BrokerProcess, kafka_raw: str) -> None:
    with Admin(broker.grpc_address) as admin:
        admin.create_topic("two", partitions=2)
    # partition 2 does not exist: the broker answers it with an error code
    done = run(kafka_raw, "produce", broker.kafka_address, "two", "3", "300", str(SIZE))
    assert done.returncode != 0
    assert "ERROR: Produce to partition 2: error code" in done.stderr


def test_the_sink_answers_every_produce(kafka_raw: str, tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    sink = subprocess.Popen([kafka_raw, "sink", str(port_file)])
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():  # it appears whole (renamed into place)
            assert sink.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        done = run(kafka_raw, "produce", f"127.0.0.1:{port_file.read_text().strip()}",
                   "sink", "4", str(COUNT), "1024", str(BATCH_BYTES))  # fmt: skip
        assert report(done)["records"] == COUNT
        assert sink.wait(10) == 0
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
