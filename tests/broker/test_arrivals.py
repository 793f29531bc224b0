"""A partition's queue of appends (``broker/arrivals``): turns come in arrival order, a
place that leaves (appended, refused, cancelled) lets the next one go, and one that
rejoins goes to the end."""

from __future__ import annotations

import asyncio

from sentinel.broker.arrivals import Arrivals, Place


async def take_turns(places: list[Place], done: list[int]) -> None:
    async def one(i: int, place: Place) -> None:
        await place.turn()
        done.append(i)
        await asyncio.sleep(0)  # others run meanwhile: they must still wait
        place.leave()

    await asyncio.gather(*(one(i, p) for i, p in reversed(list(enumerate(places)))))


async def test_turns_come_in_arrival_order_whatever_order_they_are_awaited_in() -> None:
    arrivals = Arrivals()
    places = [arrivals.enter() for _ in range(5)]
    done: list[int] = []
    await take_turns(places, done)
    assert done == [0, 1, 2, 3, 4]
    assert len(arrivals) == 0


async def test_a_place_alone_needs_no_wait() -> None:
    arrivals = Arrivals()
    place = arrivals.enter()
    turn = place.turn()
    try:
        turn.send(None)  # runs to its end without suspending: no future, no wake-up
    except StopIteration:
        pass
    else:
        turn.close()
        raise AssertionError("the first place waited for its turn")
    place.leave()
    place.leave()  # idempotent
    assert len(arrivals) == 0


async def test_a_place_that_leaves_without_its_turn_lets_the_others_go() -> None:
    arrivals = Arrivals()
    first, middle, last = arrivals.enter(), arrivals.enter(), arrivals.enter()
    middle.leave()  # refused before its append
    waiting = asyncio.ensure_future(last.turn())
    await asyncio.sleep(0)
    assert not waiting.done()
    first.leave()
    await asyncio.wait_for(waiting, 1)
    last.leave()
    assert len(arrivals) == 0


async def test_a_cancelled_waiter_that_leaves_passes_the_turn_on() -> None:
    arrivals = Arrivals()
    first, second, third = arrivals.enter(), arrivals.enter(), arrivals.enter()
    blocked = asyncio.ensure_future(second.turn())
    after = asyncio.ensure_future(third.turn())
    await asyncio.sleep(0)
    first.leave()  # wakes second ...
    blocked.cancel()  # ... whose request is cancelled before it runs
    second.leave()
    await asyncio.wait_for(after, 1)
    third.leave()
    assert len(arrivals) == 0


async def test_a_place_that_rejoins_goes_to_the_end() -> None:
    arrivals = Arrivals()
    ahead, behind = arrivals.enter(), arrivals.enter()
    await ahead.turn()
    ahead.leave()  # an idempotent batch that must wait for its predecessor
    await asyncio.wait_for(behind.turn(), 1)
    ahead.rejoin()
    waiting = asyncio.ensure_future(ahead.turn())
    await asyncio.sleep(0)
    assert not waiting.done()
    behind.leave()
    await asyncio.wait_for(waiting, 1)
    ahead.leave()
    assert len(arrivals) == 0
