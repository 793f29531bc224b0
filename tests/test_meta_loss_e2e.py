"""A real sentinel-server whose meta store lost its records of topics (its WAL deleted,
or cut to its header, after a kill -9: both look like a crash to the meta store alone).
Before: the start was ready with no topics, and removed the topics' directories, the
acknowledged records in them, as orphans a crash had left. Now it is refused with one
line naming the directory; ``--skip-damaged`` serves the rest and keeps it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from broker_process import BrokerProcess
from sentinel.proto_gen import sentinel_pb2 as pb
from sentinel.proto_gen import sentinel_pb2_grpc as pb_grpc
from sentinel.storage.wal_format import HEADER_SIZE
from test_damage_e2e import Start, assert_one_line_refusal, populate, run_server
from test_server_e2e import reason


def partition_files(data_dir: Path) -> dict[str, bytes]:
    root = data_dir / "topics"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("damage", ["delete", "cut to the header"])
def test_a_meta_store_that_lost_its_topics_refuses_the_start(
    start_broker: Start, damage: str
) -> None:
    broker: BrokerProcess = populate(start_broker)  # topics t (2) and u (1), kill -9
    for wal in (broker.data_dir / "meta").glob("*.wal"):
        if damage == "delete":
            wal.unlink()
        else:
            wal.write_bytes(wal.read_bytes()[:HEADER_SIZE])
    before = partition_files(broker.data_dir)
    assert any(name.startswith("t/") for name in before)
    verified = run_server(broker.data_dir, "--verify")
    assert verified.returncode == 1, verified.stdout
    assert f"DAMAGED {broker.data_dir / 'topics' / 't'}: holds partition data" in verified.stdout
    line = assert_one_line_refusal(run_server(broker.data_dir),
                                   f"meta store {broker.data_dir / 'meta'}: ",
                                   str(broker.data_dir / "topics" / "t"))
    assert "restore the meta store" in line
    assert partition_files(broker.data_dir) == before  # nothing removed

    # --skip-damaged: the broker serves, keeps the directories, and will not make a
    # topic of that name over them.
    broker.flags["skip-damaged"] = True
    broker.start()
    assert "does not define: kept, not served" in broker.read_log()
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb_grpc.SentinelStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateTopic(pb.CreateTopicRequest(name="t", partitions=1))
        assert reason(refused.value) == "KAFKA_STORAGE_ERROR"
        stub.CreateTopic(pb.CreateTopicRequest(name="fresh", partitions=1))
    assert broker.stop() == 0
    after = partition_files(broker.data_dir)
    assert {k: v for k, v in after.items() if k.startswith(("t/", "u/"))} == before
