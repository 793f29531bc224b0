"""The client as a Kafka user reaches for it: ``bootstrap_servers=``, confluent-style
config dicts, serializers, ``for record in consumer``, aiokafka's ``getone`` /
``getmany`` / ``async for``, errors that are ``ValueError``/``TypeError`` too, and
clients left open at interpreter exit closed quietly. Unit tests for the mapping, then
a real broker process for the rest."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker_process import BrokerProcess
from sentinel.client import (
    Admin,
    AsyncAdmin,
    AsyncConsumer,
    AsyncProducer,
    Consumer,
    ConsumerRecord,
    Producer,
    TopicPartition,
    errors,
)
from sentinel.client._kafka_config import CONSUMER_KEYS, PRODUCER_KEYS, map_config
from sentinel.client._producer_config import as_bytes
from sentinel.errors import InvalidArgumentError
from sentinel.record import Compression

NOWHERE = "127.0.0.1:1"  # clients connect lazily: construction needs no broker
DEADLINE_S = 15.0


# --- the config dict's mapping -------------------------------------------------------


def test_a_producer_dict_maps_to_the_options_with_confluent_values() -> None:
    mapped = map_config(
        "producer",
        {
            "bootstrap.servers": "h:1,h:2",
            "client.id": "billing",
            "acks": "all",
            "linger.ms": "10",
            "batch.size": 1000,
            "compression.type": "LZ4",
            "enable.idempotence": "false",
            "retries": "3",
            "request.timeout.ms": 5000,
            "max.in.flight.requests.per.connection": 2,
            "allow.auto.create.topics": False,
            "security.protocol": "PLAINTEXT",  # what the client does anyway
        },
    )
    assert mapped == {
        "bootstrap_servers": "h:1,h:2",
        "client_id": "billing",
        "acks": "all",
        "linger_ms": 10.0,
        "batch_size": 1000,
        "compression": "lz4",
        "enable_idempotence": False,
        "retries": 3,
        "request_timeout_ms": 5000,
        "max_in_flight": 2,
        "auto_create_topics": False,
    }


def test_a_consumer_dict_maps_to_the_options() -> None:
    mapped = map_config(
        "consumer",
        {
            "group.id": "g",
            "auto.offset.reset": "smallest",  # librdkafka's word for earliest
            "enable.auto.commit": "true",
            "auto.commit.interval.ms": "100",
            "session.timeout.ms": 6000,
            "max.poll.interval.ms": 9000,
            "max.poll.records": 7,
            "max.partition.fetch.bytes": 4096,
            "fetch.max.wait.ms": 50,
            "partition.assignment.strategy": "range",
            "isolation.level": "read_uncommitted",
            "allow.auto.create.topics": True,
            "group.instance.id": "worker-1",
        },
    )
    assert mapped == {
        "group_id": "g",
        "auto_offset_reset": "earliest",
        "enable_auto_commit": True,
        "auto_commit_interval_ms": 100,
        "session_timeout_ms": 6000,
        "rebalance_timeout_ms": 9000,
        "max_poll_records": 7,
        "fetch_max_bytes": 4096,
        "fetch_max_wait_ms": 50,
        "assignor": "range",
        "allow_auto_create_topics": True,
        "group_instance_id": "worker-1",
    }


@pytest.mark.parametrize(
    ("kind", "table"), [("producer", PRODUCER_KEYS), ("consumer", CONSUMER_KEYS)]
)
def test_every_mapped_key_names_a_real_option(kind: str, table: dict[str, Any]) -> None:
    client = Producer if kind == "producer" else Consumer
    options = set(client.__init__.__kwdefaults__ or {})
    for key, (name, _) in table.items():
        assert name in options or name == "" or name == "bootstrap_servers", key


def test_unknown_keys_are_all_named_with_a_hint() -> None:
    with pytest.raises(errors.ClientConfigError) as err:
        map_config("producer", {"lingr.ms": 5, "acks": 1, "colour": "blue"})
    message = str(err.value)
    assert "'lingr.ms' (did you mean 'linger.ms'?)" in message
    assert "'colour'" in message
    assert "producer" in message
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, errors.SentinelClientError)
    with pytest.raises(errors.ClientConfigError, match=r"group\.id"):
        map_config("producer", {"group.id": "g"})  # a consumer's key, not a producer's


@pytest.mark.parametrize(
    ("kind", "config", "why"),
    [
        ("producer", {"transactional.id": "t"}, "transactions"),
        ("producer", {"delivery.timeout.ms": 1000}, "retries"),
        ("producer", {"ssl.ca.location": "/ca.pem"}, "TLS"),
        ("producer", {"sasl.username": "u"}, "SASL"),
        ("producer", {"security.protocol": "SASL_SSL"}, "plaintext"),
        ("consumer", {"isolation.level": "read_committed"}, "read_uncommitted"),
    ],
)
def test_known_but_unsupported_keys_are_refused_saying_why(
    kind: str, config: dict[str, object], why: str
) -> None:
    with pytest.raises(errors.ClientConfigError) as err:
        map_config(kind, config)
    assert next(iter(config)) in str(err.value)
    assert "not supported" in str(err.value)
    assert why in str(err.value)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"linger.ms": "soon"}, "linger.ms"),
        ({"acks": "most"}, "acks"),
        ({"enable.idempotence": "yes"}, "enable.idempotence"),
        ({"batch.size": True}, "batch.size"),
        ({"compression.type": "brotli"}, "compression.type"),
        ({"bootstrap.servers": 9092}, "bootstrap.servers"),
    ],
)
def test_bad_values_name_their_key(config: dict[str, object], named: str) -> None:
    with pytest.raises(errors.ClientConfigError, match=named):
        map_config("producer", config)


def test_the_dict_reaches_the_producer_and_keywords_may_join_it() -> None:
    with Producer(
        {"bootstrap.servers": NOWHERE, "acks": "all", "compression.type": "gzip"},
        linger_ms=20,
        value_serializer=str.encode,
    ) as producer:
        config = producer._core.config
        assert config.bootstrap == (NOWHERE,)
        assert config.acks == -1
        assert config.compression is Compression.GZIP
        assert config.linger_ms == 20


def test_an_option_set_twice_differently_is_refused() -> None:
    with pytest.raises(errors.ClientConfigError, match="acks is set twice"):
        Producer({"bootstrap.servers": NOWHERE, "acks": "all"}, acks=0)
    with pytest.raises(errors.ClientConfigError, match="both set linger_ms"):
        Producer({"linger.ms": 1, "queue.buffering.max.ms": 2})
    with pytest.raises(errors.ClientConfigError, match="two bootstrap addresses"):
        Producer("127.0.0.1:1", bootstrap_servers="127.0.0.1:2")
    with pytest.raises(errors.ClientConfigError, match="two bootstrap addresses"):
        Admin({"bootstrap.servers": "127.0.0.1:1"}, bootstrap_servers="127.0.0.1:2")
    # the same value twice is no conflict
    Producer({"bootstrap.servers": NOWHERE, "acks": "all"}, acks="all").close()
    Producer(NOWHERE, bootstrap_servers=[NOWHERE]).close()


def test_the_dict_reaches_the_consumer_and_the_admin() -> None:
    with Consumer(
        {"bootstrap.servers": NOWHERE, "group.id": "g", "max.poll.records": "3"}
    ) as consumer:
        assert consumer.config.group_id == "g"
        assert consumer.config.max_poll_records == 3
        assert consumer.config.bootstrap == (NOWHERE,)
    with Admin({"bootstrap.servers": NOWHERE, "client.id": "ops"}) as admin:
        assert admin.client_id == "ops"
    with pytest.raises(errors.ClientConfigError, match="acks"):
        Consumer({"bootstrap.servers": NOWHERE, "acks": "all"})
    with pytest.raises(errors.ClientConfigError, match=r"group\.id"):
        Admin({"bootstrap.servers": NOWHERE, "group.id": "g"})


# --- bad addresses: a SentinelClientError and a ValueError, however given ------------

BAD = ["localhost", "127.0.0.1:99999", "127.0.0.1:", ":9092", "", "host:port"]


@pytest.mark.parametrize("address", BAD)
def test_a_bad_address_is_a_value_error_for_every_client_and_spelling(address: str) -> None:
    makers: list[Callable[[], object]] = [
        lambda: Producer(address),
        lambda: Producer(bootstrap_servers=address),
        lambda: Producer(bootstrap_servers=[address]),
        lambda: Producer({"bootstrap.servers": address}),
        lambda: Consumer(address),
        lambda: Consumer(bootstrap_servers=address),
        lambda: Consumer({"bootstrap.servers": address}),
        lambda: Admin(address),
        lambda: Admin(bootstrap_servers=address),
    ]
    for make in makers:
        with pytest.raises(ValueError, match="bootstrap") as err:
            make()
        assert isinstance(err.value, errors.InvalidBootstrapError)
        assert isinstance(err.value, errors.SentinelClientError)
        assert isinstance(err.value, InvalidArgumentError)


async def test_a_bad_address_is_a_value_error_for_the_async_clients() -> None:
    for make in (AsyncProducer, AsyncConsumer, AsyncAdmin):
        with pytest.raises(ValueError, match="bootstrap"):
            make(bootstrap_servers="nohost")


def test_an_unresolvable_host_is_a_value_error_too() -> None:
    assert issubclass(errors.UnresolvableBrokerError, ValueError)


# --- values that are not bytes --------------------------------------------------------


def test_a_str_value_or_key_is_refused_naming_the_serializer_option() -> None:
    with pytest.raises(TypeError, match=r"value_serializer=.*str\.encode") as err:
        as_bytes("text", "value")
    assert isinstance(err.value, errors.RecordTypeError)
    assert isinstance(err.value, errors.SentinelClientError)
    with pytest.raises(errors.RecordTypeError, match="key_serializer="):
        as_bytes("k", "key")
    with pytest.raises(errors.RecordTypeError, match=r"value_serializer=.*json"):
        as_bytes({"a": 1}, "value")
    assert as_bytes(bytearray(b"x"), "value") == b"x"


# --- against a real broker ------------------------------------------------------------


def take(consumer: Consumer, n: int) -> list[ConsumerRecord]:
    out: list[ConsumerRecord] = []
    for record in consumer:
        out.append(record)
        if len(out) == n:
            break
    return out


def test_serializers_and_deserializers_round_trip(broker: BrokerProcess) -> None:
    docs = [{"id": i, "name": f"n{i}"} for i in range(20)]
    with Producer(
        bootstrap_servers=[broker.address],
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
    ) as producer:
        for doc in docs:
            producer.send("docs", doc, key=f"k{doc['id']}")
        producer.send("docs", None, key="gone")  # a tombstone stays None
        with pytest.raises(TypeError, match="encode"):
            producer.send("docs", {"x": 1}, key=7)  # the serializer's own error, as it is
        producer.flush()
    with Consumer(
        {"bootstrap.servers": broker.address, "auto.offset.reset": "earliest"},
        topics=["docs"],
        key_deserializer=bytes.decode,
        value_deserializer=json.loads,
        consumer_timeout_ms=10_000,
    ) as consumer:
        got = take(consumer, 21)
    assert [r.value for r in got[:20]] == docs
    assert [r.key for r in got[:20]] == [f"k{i}" for i in range(20)]
    assert (got[20].key, got[20].value) == ("gone", None)


def test_a_str_value_is_refused_by_a_connected_producer(broker: BrokerProcess) -> None:
    with Producer(broker.address) as producer:
        with pytest.raises(TypeError, match="value_serializer"):
            producer.send("t", "text")  # type: ignore[arg-type]  # what users try first
        producer.send("t", b"bytes").result(DEADLINE_S)


def test_the_confluent_dict_produces_and_a_group_consumes_it_all(broker: BrokerProcess) -> None:
    with Admin({"bootstrap.servers": broker.address}) as admin:
        admin.create_topic("dict", partitions=3)
    config = {"bootstrap.servers": broker.address, "acks": "all", "linger.ms": 5}
    with Producer(config) as producer:
        for i in range(300):
            producer.send("dict", b"%d" % i, key=b"%d" % (i % 7))
        producer.flush()
    with Consumer(
        {
            "bootstrap.servers": broker.address,
            "group.id": "dict-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        },
        topics=["dict"],
    ) as consumer:
        got = take(consumer, 300)
        consumer.commit()
    assert sorted(int(r.value or b"") for r in got) == list(range(300))
    assert {r.partition for r in got} == {0, 1, 2}


def test_iteration_blocks_for_the_next_record_and_ends_on_close(broker: BrokerProcess) -> None:
    with Admin(broker.address) as admin:
        admin.create_topic("live", partitions=2)
    consumer = Consumer(broker.address, topics=["live"], auto_offset_reset="earliest")
    got: list[ConsumerRecord] = []
    finished = threading.Event()

    def read() -> None:
        for record in consumer:
            got.append(record)
        finished.set()  # the loop ended: closed

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.3)  # the reader is waiting; nothing has been produced yet
    assert got == [] and not finished.is_set()
    with Producer(broker.address) as producer:
        for i in range(5):
            producer.send("live", b"%d" % i, partition=i % 2).result(DEADLINE_S)
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(r.value for r in got) == [b"%d" % i for i in range(5)]
    consumer.close()
    assert finished.wait(DEADLINE_S), "closing the consumer ends the for loop"
    reader.join(DEADLINE_S)


def test_consumer_timeout_ms_ends_a_quiet_iteration(broker: BrokerProcess) -> None:
    with Producer(broker.address) as producer:
        producer.send("quiet", b"one").result(DEADLINE_S)
    with Consumer(
        broker.address,
        topics=["quiet"],
        auto_offset_reset="earliest",
        consumer_timeout_ms=300,
    ) as consumer:
        started = time.monotonic()
        assert [r.value for r in consumer] == [b"one"]
        assert time.monotonic() - started < DEADLINE_S


async def test_async_getone_getmany_and_async_for(broker: BrokerProcess) -> None:
    async with AsyncAdmin(broker.address) as admin:
        await admin.create_topic("async", partitions=2)
    async with AsyncProducer(bootstrap_servers=broker.address, value_serializer=str.encode) as p:
        for i in range(30):
            await p.send("async", f"v{i}", partition=i % 2)
        await p.flush()
    async with AsyncConsumer(
        {"bootstrap.servers": broker.address, "group.id": "ag", "auto.offset.reset": "earliest"},
        topics=["async"],
        value_deserializer=bytes.decode,
    ) as consumer:
        first = await consumer.getone()
        seen = [first]
        only_1 = await consumer.getmany(TopicPartition("async", 1), timeout_ms=5000)
        assert set(only_1) <= {TopicPartition("async", 1)}
        seen += [r for records in only_1.values() for r in records]
        batch = await consumer.getmany(timeout_ms=5000, max_records=4)
        assert sum(len(v) for v in batch.values()) <= 4
        for tp, records in batch.items():
            assert all((r.topic, r.partition) == tp for r in records)
            seen += records
        async for record in consumer:
            seen.append(record)
            if len(seen) == 30:
                break
        assert sorted(r.value for r in seen) == sorted(f"v{i}" for i in range(30))
        assert await consumer.getmany(timeout_ms=0) == {}  # nothing left: at once


async def test_async_for_ends_when_the_consumer_closes(broker: BrokerProcess) -> None:
    consumer = AsyncConsumer(broker.address, topics=["async-close"])
    async with AsyncProducer(broker.address) as producer:
        await producer.send_and_wait("async-close", b"x")
    await consumer.start()
    got: list[ConsumerRecord] = []

    async def read() -> None:
        async for record in consumer:
            got.append(record)

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0.2)
    assert not reader.done()  # waiting for a record
    await consumer.close()
    await asyncio.wait_for(reader, DEADLINE_S)


# --- clients left open at interpreter exit -------------------------------------------

LEFT_OPEN = """
from sentinel.client import Admin, Consumer, Producer

producer = Producer({address!r})
producer.send("left-open", b"sent, never flushed")
idle = Producer({address!r})
consumer = Consumer({address!r}, topics=["left-open"])
admin = Admin({address!r})
print("exiting", flush=True)
"""


def test_clients_left_open_exit_quietly_and_deliver(broker: BrokerProcess, tmp_path: Path) -> None:
    script = tmp_path / "left_open.py"
    script.write_text(textwrap.dedent(LEFT_OPEN.format(address=broker.address)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"
    assert done.stderr == ""  # no "Task was destroyed but it is pending!"
    with Consumer(broker.address, topics=["left-open"], auto_offset_reset="earliest",
                  consumer_timeout_ms=2000) as consumer:  # fmt: skip
        assert [r.value for r in take(consumer, 1)] == [b"sent, never flushed"]
