"""``cluster/clean_stop``: a stopping broker gives up at once on the commits its peers
can no longer make, and on every other one once its stop budget is spent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from sentinel.cluster.clean_stop import CHECK_S, bound_commit_waits, cannot_commit
from sentinel.errors import NotLeaderError


@pytest.mark.parametrize(
    ("voters", "gone", "expected"),
    [
        ({1, 2, 3}, set(), False),
        ({1, 2, 3}, {2}, False),  # 1 and 3 are a majority
        ({1, 2, 3}, {2, 3}, True),  # §5.3: 1 alone is no majority of three
        ({1}, set(), False),  # a group of one commits alone
        ({1, 2}, {2}, True),
        ({1, 2, 3, 4, 5}, {4, 5}, False),
        ({1, 2, 3, 4, 5}, {3, 4, 5}, True),
        ({2, 3, 4}, {3}, False),  # this broker (1) is no voter: 2 and 4 are a majority
        ({2, 3, 4}, {3, 4}, True),
    ],
)
def test_a_group_cannot_commit_once_its_live_voters_are_no_majority(
    voters: set[int], gone: set[int], expected: bool
) -> None:
    assert cannot_commit(voters, 1, gone.__contains__) is expected


@dataclass
class FakeCore:
    voters: frozenset[int]


@dataclass
class FakeDriver:
    """What ``bound_commit_waits`` uses of a ``MultiRaftDriver``."""

    voters: dict[int, frozenset[int]]
    id: int = 1
    waiters: dict[int, list[asyncio.Future[None]]] = field(default_factory=dict)

    def wait(self, group: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(group, []).append(fut)
        return fut

    def commit_waiting(self) -> list[int]:
        return [g for g, futs in self.waiters.items() if any(not f.done() for f in futs)]

    def core(self, group: int) -> FakeCore:
        return FakeCore(self.voters[group])

    def give_up_commits(self, group: int, error: Exception) -> int:
        futs = self.waiters.pop(group, [])
        for f in futs:
            f.set_exception(error)
        return len(futs)


async def test_commits_without_a_quorum_are_given_up_at_once_the_others_at_the_deadline(
) -> None:
    driver = FakeDriver({7: frozenset({1, 2, 3}), 8: frozenset({1, 3, 4})})
    gone = {2, 3}  # 7 keeps 1 of 3, 8 keeps 1 and 4
    orphan, kept = driver.wait(7), driver.wait(8)
    loop = asyncio.get_running_loop()
    budget = 0.5
    started = loop.time()
    task = asyncio.create_task(
        bound_commit_waits(driver, gone.__contains__, started + budget)  # type: ignore[arg-type]
    )
    try:
        with pytest.raises(NotLeaderError, match="too few of its peers"):
            await asyncio.wait_for(orphan, budget / 2)
        assert not kept.done()
        with pytest.raises(NotLeaderError, match="stop budget is spent"):
            await asyncio.wait_for(kept, 10 * budget)
        assert loop.time() - started >= budget
        late = driver.wait(8)  # a request that came after: given up as soon as seen
        with pytest.raises(NotLeaderError):
            await asyncio.wait_for(late, 10 * CHECK_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
