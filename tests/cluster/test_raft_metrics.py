"""The Raft figures of a cluster on every broker's /metrics (issue 8, "Metrics"):
``sentinel_raft_role``, ``sentinel_raft_term``, ``sentinel_raft_commit_index``,
``sentinel_raft_follower_lag`` and ``sentinel_raft_elections_total``, per partition and
for the controller's group (``__cluster_metadata``-0)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.harness import Cluster, poll
from sentinel.proto_gen import sentinel_pb2 as pb

TOPIC = "raftmetrics"
PARTITIONS = 3
LEADER, FOLLOWER = 3.0, 0.0
GROUPS = [(TOPIC, p) for p in range(PARTITIONS)] + [("__cluster_metadata", 0)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(3, tmp_path).start()
    yield cluster
    cluster.close()


def labels_of(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    pairs = (item.split("=", 1) for item in rest.rstrip("}").split(",") if item)
    return name, {k: v.strip('"') for k, v in pairs}


def samples(cluster: Cluster, i: int, metric: str) -> dict[tuple[str, int, str], float]:
    """Broker ``i``'s samples of ``metric`` by (topic, partition, follower or "")."""
    found = {}
    for key, value in cluster.metrics(i).items():
        name, labels = labels_of(key)
        if name == metric:
            found[labels["topic"], int(labels["partition"]), labels.get("follower", "")] = value
    return found


def settled(cluster: Cluster, live: list[int]) -> dict[tuple[str, int], int] | None:
    """The leader of every group once each has exactly one leader, the others follow,
    and all live brokers agree on its term and commit index; else None."""
    roles = {i: samples(cluster, i, "sentinel_raft_role") for i in live}
    terms = {i: samples(cluster, i, "sentinel_raft_term") for i in live}
    commits = {i: samples(cluster, i, "sentinel_raft_commit_index") for i in live}
    leaders = {}
    for topic, p in GROUPS:
        key = (topic, p, "")
        if any(key not in roles[i] for i in live):
            return None
        leading = [i for i in live if roles[i][key] == LEADER]
        if len(leading) != 1 or any(roles[i][key] != FOLLOWER for i in live if i not in leading):
            return None
        if len({terms[i][key] for i in live}) != 1 or len({commits[i][key] for i in live}) != 1:
            return None
        leaders[topic, p] = leading[0]
    return leaders


def produce(cluster: Cluster, leader: int, partition: int, count: int) -> None:
    channel, stub = cluster.stub(leader)
    with channel:
        stub.Produce(
            pb.ProduceRequest(
                topic=TOPIC, partition=partition, acks=pb.ACKS_ALL,
                records=[pb.Record(value=f"v{n}".encode()) for n in range(count)],
            ),
            timeout=10,
        )


def test_raft_figures_on_every_broker(cluster: Cluster) -> None:
    cluster.wait_formed()
    cluster.create_topic(TOPIC, PARTITIONS, 3)
    ids = cluster.node_ids
    leaders = poll(lambda: settled(cluster, ids), "one leader per group, terms agreed", 30)

    # One leader per group across brokers; at it, a lag sample per follower.
    for (topic, p), leader in leaders.items():
        lags = samples(cluster, leader, "sentinel_raft_follower_lag")
        followers = {f for (t, q, f) in lags if (t, q) == (topic, p)}
        assert followers == {str(i) for i in ids if i != leader}
        for i in ids:
            if i != leader:
                assert not any(
                    (t, q) == (topic, p) for (t, q, _) in samples(
                        cluster, i, "sentinel_raft_follower_lag")
                )
    elections = {i: cluster.metrics(i)["sentinel_raft_elections_total"] for i in ids}
    assert sum(elections.values()) > 0

    # Records committed: every broker's commit index reaches the same offset.
    leader0 = leaders[TOPIC, 0]
    produce(cluster, leader0, 0, 5)
    key = (TOPIC, 0, "")
    poll(
        lambda: True
        if {samples(cluster, i, "sentinel_raft_commit_index")[key] for i in ids} == {
            samples(cluster, leader0, "sentinel_raft_commit_index")[key]
        } and samples(cluster, leader0, "sentinel_raft_commit_index")[key] >= 5
        else None,
        "every broker's commit index past the 5 records",
        15,
    )

    # kill -9 the leader: a survivor leads in a later term and counted its election.
    term_before = samples(cluster, leader0, "sentinel_raft_term")[key]
    cluster.kill(leader0)
    live = cluster.live_ids()
    after = poll(lambda: settled(cluster, live), "a new leader among the survivors", 30)
    new_leader = after[TOPIC, 0]
    assert new_leader != leader0
    assert samples(cluster, new_leader, "sentinel_raft_term")[key] > term_before
    before = sum(elections[i] for i in live)
    poll(
        lambda: True
        if sum(cluster.metrics(i)["sentinel_raft_elections_total"] for i in live) > before
        else None,
        "the survivors' elections counter to count the election",
        10,
    )
    lags = samples(cluster, new_leader, "sentinel_raft_follower_lag")
    assert (TOPIC, 0, str(leader0)) in lags  # the dead follower is still tracked
