"""Commits of one group take effect in the order they were made, however long each one's
durable write takes: the last commit acknowledged is the one ``fetch_offsets`` answers
and the one the meta store keeps (Kafka applies a connection's requests in order, and a
client's pipelined async commits rely on it: the last one wins)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

from sentinel.broker.group_driver import GroupDriver
from sentinel.broker.group_events import ErrorCode, OffsetAndMetadata, TopicPartition
from sentinel.broker.meta_store import MetaStore
from sentinel.clock import SystemClock
from sentinel.fs import MemFS

TP = ("a", 0)


class SlowFirstWrite(MetaStore):
    """A meta store whose first commit's write waits (up to ``hold_s``) for a later one
    to be written first, as a thread of the executor may be slower than the next one."""

    def __init__(self, inner: MetaStore, hold_s: float = 0.5) -> None:
        super().__init__(inner._engine)
        self.hold_s = hold_s
        self.later_written = threading.Event()
        self.writes = 0
        self.lock = threading.Lock()

    def commit_offsets(
        self, group: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        with self.lock:
            self.writes += 1
            first = self.writes == 1
        if first:
            self.later_written.wait(self.hold_s)
        super().commit_offsets(group, offsets)
        if not first:
            self.later_written.set()


async def test_commits_of_one_group_apply_in_the_order_they_were_made() -> None:
    meta = SlowFirstWrite(MetaStore.open(MemFS(), "/data/meta"))
    driver = GroupDriver(meta, {"a": 1}.get, SystemClock())
    driver.start()
    try:
        # Two commits from outside group membership, as a standalone consumer pipelines
        # them on one connection: 10 first, then 20; both are acknowledged.
        first = asyncio.ensure_future(
            driver.commit("g", "", -1, {TP: OffsetAndMetadata(10, "")}))
        second = asyncio.ensure_future(
            driver.commit("g", "", -1, {TP: OffsetAndMetadata(20, "")}))
        assert await asyncio.wait_for(first, 10) == {TP: ErrorCode.NONE}
        assert await asyncio.wait_for(second, 10) == {TP: ErrorCode.NONE}
        assert driver.fetch_offsets("g", [TP]) == {TP: OffsetAndMetadata(20, "")}
    finally:
        await driver.stop()
    assert meta.all_offsets()["g"] == {TP: OffsetAndMetadata(20, "")}, "the meta store kept 10"
    meta.close()
