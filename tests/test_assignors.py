"""The assignors: exact answers on Kafka's documented examples, properties on random input."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.broker.assignors import ASSIGNORS, Assignment, range_, round_robin

# --- Kafka's examples (the javadoc of RoundRobinAssignor and RangeAssignor) -------------


def test_round_robin_same_subscriptions_deals_in_order() -> None:
    # C0 and C1 subscribe to t0 and t1, three partitions each:
    # C0: [t0p0, t0p2, t1p1], C1: [t0p1, t1p0, t1p2].
    subs = {"C1": ["t0", "t1"], "C0": ["t1", "t0"]}
    assert round_robin(subs, {"t0": 3, "t1": 3}) == {
        "C0": {"t0": [0, 2], "t1": [1]},
        "C1": {"t0": [1], "t1": [0, 2]},
    }


def test_round_robin_skips_members_not_subscribed() -> None:
    # C0: t0; C1: t0, t1; C2: t0, t1, t2 with 1, 2, 3 partitions:
    # C0: [t0p0], C1: [t1p0], C2: [t1p1, t2p0, t2p1, t2p2].
    subs = {"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]}
    assert round_robin(subs, {"t0": 1, "t1": 2, "t2": 3}) == {
        "C0": {"t0": [0]},
        "C1": {"t1": [0]},
        "C2": {"t1": [1], "t2": [0, 1, 2]},
    }


def test_range_splits_each_topic_with_extras_first() -> None:
    # C0, C1 on t0, t1 with three partitions each:
    # C0: [t0p0, t0p1, t1p0, t1p1], C1: [t0p2, t1p2].
    subs = {"C0": ["t0", "t1"], "C1": ["t0", "t1"]}
    assert range_(subs, {"t0": 3, "t1": 3}) == {
        "C0": {"t0": [0, 1], "t1": [0, 1]},
        "C1": {"t0": [2], "t1": [2]},
    }


def test_three_members_six_partitions_two_each() -> None:
    subs = {m: ["t"] for m in ("b", "a", "c")}
    assert round_robin(subs, {"t": 6}) == {
        "a": {"t": [0, 3]},
        "b": {"t": [1, 4]},
        "c": {"t": [2, 5]},
    }
    assert range_(subs, {"t": 6}) == {"a": {"t": [0, 1]}, "b": {"t": [2, 3]}, "c": {"t": [4, 5]}}


def test_unknown_and_empty_topics_are_skipped_and_every_member_is_listed() -> None:
    subs = {"a": ["gone", "t"], "b": ["empty"], "c": []}
    counts = {"t": 2, "empty": 0}
    for assignor in ASSIGNORS.values():
        result = assignor(subs, counts)
        assert set(result) == {"a", "b", "c"}
        assert result["b"] == {} and result["c"] == {}
        assert result["a"] == {"t": [0, 1]}


def test_no_members() -> None:
    assert round_robin({}, {"t": 3}) == {}
    assert range_({}, {"t": 3}) == {}


def test_registry_uses_kafka_names() -> None:
    assert ASSIGNORS["roundrobin"] is round_robin
    assert ASSIGNORS["range"] is range_


# --- properties -----------------------------------------------------------------------

TOPICS = ["t0", "t1", "t2", "t3"]
members_st = st.lists(st.sampled_from(["m0", "m1", "m2", "m3", "m4", "m5"]), unique=True)
subs_st = members_st.flatmap(
    lambda ms: st.fixed_dictionaries(
        {m: st.lists(st.sampled_from(TOPICS), unique=True) for m in ms}
    )
)
counts_st = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 12))


def _check_exact_cover(
    subs: dict[str, list[str]], counts: dict[str, int], result: Assignment
) -> None:
    assert set(result) == set(subs)
    owners: Counter[tuple[str, int]] = Counter()
    for member, topics in result.items():
        for topic, parts in topics.items():
            assert topic in subs[member], "assigned a topic the member does not subscribe to"
            assert parts == sorted(parts) and parts
            owners.update((topic, p) for p in parts)
    wanted = {(t, p) for ts in subs.values() for t in ts for p in range(max(counts.get(t, 0), 0))}
    assert set(owners) == wanted, "every subscribed partition is assigned"
    assert all(n == 1 for n in owners.values()), "no partition is assigned twice"


@settings(max_examples=200, deadline=None)
@given(subs_st, counts_st)
def test_every_partition_assigned_exactly_once_to_a_subscriber(
    subs: dict[str, list[str]], counts: dict[str, int]
) -> None:
    for assignor in ASSIGNORS.values():
        result = assignor(subs, counts)
        _check_exact_cover(subs, counts, result)
        shuffled = dict(reversed(list({m: list(reversed(t)) for m, t in subs.items()}.items())))
        assert assignor(shuffled, counts) == result, "depends only on the inputs"


@settings(max_examples=200, deadline=None)
@given(members_st.filter(bool), st.lists(st.sampled_from(TOPICS), unique=True), counts_st)
def test_round_robin_balanced_within_one_when_subscriptions_are_equal(
    members: list[str], topics: list[str], counts: dict[str, int]
) -> None:
    result = round_robin({m: topics for m in members}, counts)
    sizes = [sum(len(p) for p in result[m].values()) for m in members]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=100, deadline=None)
@given(members_st.filter(bool), st.integers(0, 40))
def test_range_balanced_within_one_per_topic(members: list[str], count: int) -> None:
    result = range_({m: ["t"] for m in members}, {"t": count})
    sizes = [len(result[m].get("t", [])) for m in members]
    assert max(sizes) - min(sizes) <= 1
    # Ranges are contiguous and in member order.
    flat = [p for m in sorted(members) for p in result[m].get("t", [])]
    assert flat == list(range(count))
