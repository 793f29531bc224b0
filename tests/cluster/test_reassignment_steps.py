"""The leader's side of a replica move (``cluster/reassignment.next_step``) on the
sans-IO Raft core in a small in-process network: one server at a time, each change only
after the previous one is committed and the target voters caught up; a leader that must
go hands over first; a leader crashed mid-move leaves a log the next one continues from."""

from __future__ import annotations

import pytest

from raft.harness import Cluster
from sentinel.cluster.reassignment import Action, Step, next_step
from sentinel.raft.core import RaftCore


def cluster_of(voters: set[int], n: int) -> Cluster:
    """``n`` nodes of which ``voters`` form the group; the others start as a joining
    broker does (``HostedReplicas.host``): every other node a voter, itself not."""
    c = Cluster(n)
    for i in c.ids:
        c.voters = frozenset(voters) if i in voters else frozenset(c.ids) - {i}
        c.start(i)
    return c


def act(core: RaftCore, step: Step) -> None:
    assert step.node is not None
    if step.action is Action.ADD:
        core.propose_config(core.voters | {step.node})
    elif step.action is Action.REMOVE:
        core.propose_config(core.voters - {step.node})
    elif step.action is Action.TRANSFER:
        core.transfer_leadership(step.node)


def move(c: Cluster, target: tuple[int, ...], rounds: int = 300) -> list[frozenset[int]]:
    """Drive the move to the end; returns the successive configurations proposed."""
    configs: list[frozenset[int]] = []
    for _ in range(rounds):
        lead = c.leader()
        if lead is not None:
            core = c.nodes[lead]
            step = next_step(core, target)
            if step.action is Action.DONE:
                return configs
            act(core, step)
            if step.action in (Action.ADD, Action.REMOVE):
                configs.append(core.voters)
        c.tick()
    raise AssertionError(f"the move to {target} did not finish")


def test_a_move_changes_one_server_at_a_time_adding_before_removing() -> None:
    c = cluster_of({1, 2}, 4)
    leader = c.elect(1)
    leader.propose(b"x")
    c.drain()
    configs = move(c, (3, 4))
    assert configs == [
        frozenset({1, 2, 3}), frozenset({1, 2, 3, 4}), frozenset({1, 3, 4}), frozenset({3, 4})
    ]
    for before, after in zip([frozenset({1, 2}), *configs], configs, strict=False):
        assert len(before ^ after) == 1
    lead = c.leader()
    assert lead in (3, 4)  # the old leader handed over before it was removed
    for i in (3, 4):
        assert c.nodes[i].voters == frozenset({3, 4})
        assert c.nodes[i].log.log_end == c.nodes[lead].log.log_end


def test_nothing_moves_before_a_new_replica_has_the_committed_log() -> None:
    c = cluster_of({1, 2}, 3)
    leader = c.elect(1)
    leader.propose(b"x")
    c.drain()
    c.isolate(3)
    step = next_step(leader, (2, 3))
    assert step == Step(Action.ADD, 3)
    act(leader, step)
    c.tick([1, 2])  # {1, 2} commit the change without 3
    assert leader.config_offset < leader.commit
    assert next_step(leader, (2, 3)).action is Action.WAIT  # 3 has nothing yet
    assert next_step(c.nodes[2], (2, 3)).action is Action.WAIT  # not the leader
    c.heal()
    configs = move(c, (2, 3))
    assert configs == [frozenset({2, 3})]


def test_a_leader_crashed_mid_move_is_followed_by_one_that_finishes_it() -> None:
    c = cluster_of({1, 2, 3}, 4)
    leader = c.elect(1)
    leader.propose(b"x")
    c.drain()
    act(leader, next_step(leader, (2, 3, 4)))  # add 4
    c.drain()
    assert leader.voters == frozenset({1, 2, 3, 4}) and leader.config_offset < leader.commit
    c.crash(1)
    configs = move(c, (2, 3, 4))
    assert configs == [frozenset({2, 3, 4})]  # the new leader only removes 1
    assert c.leader() in (2, 3, 4)


def test_a_move_to_the_same_set_is_done_at_once() -> None:
    c = cluster_of({1, 2}, 2)
    leader = c.elect(1)
    c.drain()
    assert next_step(leader, (2, 1)) == Step(Action.DONE)


@pytest.mark.parametrize("target", [(1,), (2,)])
def test_a_move_down_to_one_replica(target: tuple[int, ...]) -> None:
    c = cluster_of({1, 2}, 2)
    c.elect(1)
    c.drain()
    move(c, target)
    assert c.nodes[target[0]].voters == frozenset(target)
    assert c.leader() == target[0]
