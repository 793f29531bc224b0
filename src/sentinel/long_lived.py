"""The cycle collector and a broker's long-lived objects.

CPython's collector walks every tracked object of the oldest generation at each full
collection, and runs one whenever that generation grew by a quarter since the last. A
broker's oldest generation is mostly its partitions (each ~100 objects before it holds
a record: engine, memtable, slots, producer state), which live as long as their topic.
At 10,000 partitions created at run time (1.09 million tracked objects) a full
collection took 0.3-0.7 s of the event loop, and a Fetch naming every partition (60,000
short-lived objects) set one off every few requests: a Fetch took 148 ms at best, 292 ms
on average and 864 ms at worst, and one idle consumer assigned those partitions kept the
broker busy 0.45 of a core.

So what a start recovered is frozen once it is up (``gc.freeze``: moved to a permanent
generation the collector never walks), and after that, a full collection that took
longer than ``FREEZE_AFTER_S`` freezes what survived it: everything alive right then, no
cyclic garbage (the collection just freed it), so the next full collections walk only
what came since. Objects frozen are still freed by their reference counts; only a cycle
among them would outlive its use, which is what a topic's deletion makes of its
partitions (an engine and its maintenance refer to each other). ``thaw`` (called when a
topic's partitions are closed for good) gives the frozen objects back to the oldest
generation: the next full collection frees those cycles, takes its time once, and
freezes again. A request in flight at a freeze that ends in a cycle (an exception
holding its frames) would be kept too; freezes are rare (here a full collection takes
10 ms once the oldest generation holds ~300,000 objects the last freeze did not take:
some 3,000 partitions' worth), so that stays a few requests' worth. A broker of a few
hundred partitions never freezes after its start.

Process-wide, as the collector is; installed once by the server (``install``), a no-op
elsewhere (tests running brokers in process keep the default collector).
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["FREEZE_AFTER_S", "LongLived", "thaw"]

FREEZE_AFTER_S = 0.01
"""A full collection longer than this freezes what survived it."""


class LongLived:
    """Freezes the survivors of slow full collections (the module's docstring)."""

    def __init__(self) -> None:
        self._started: float | None = None
        #: Freezes after a slow full collection, and thaws, so far (for tests and logs).
        self.freezes = 0
        self.thaws = 0
        self._installed = False

    def install(self) -> None:
        """Freeze what exists now (a start's recovered state) and watch full collections."""
        if not self._installed:
            gc.callbacks.append(self._on_collection)
            self._installed = True
        gc.freeze()

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._on_collection)
            self._installed = False

    def thaw(self) -> None:
        """Objects frozen may have become cyclic garbage (a deleted topic's partitions):
        let the next full collection see them."""
        if self._installed and gc.get_freeze_count():
            gc.unfreeze()
            self.thaws += 1

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if started is not None and time.perf_counter() - started > FREEZE_AFTER_S:
            # Everything still tracked survived the collection that just ended.
            gc.freeze()
            self.freezes += 1


#: The process's one policy (the collector is one per process).
LONG_LIVED = LongLived()


def thaw() -> None:
    """``LONG_LIVED.thaw``: a topic's partitions were closed for good."""
    LONG_LIVED.thaw()
