"""Room in the broker's request budget for the frame a Kafka connection receives.

Every request's bytes are held in the broker's request budget
(``--max-request-bytes-in-flight``, ``broker/request_budget.py``) from their arrival until
the request is answered. A small frame (up to ``SMALL_FRAME_BYTES``) is read without
waiting for room: its bytes are held as they arrive, and ``max_in_flight`` requests per
connection bound them. A large frame is read in steps, each step's room reserved before
it is read:

=======================================  ============================================
the frame being received                 its reservation (``FrameRoom.head``)
=======================================  ============================================
its size prefix has not arrived          none (``advance``: ``Step.NONE``)
bytes arrived                            holds them (grown as they come)
large, the room ahead all read           + the next step: what the frame delivered so
                                         far, within ``LEAD_MIN_BYTES`` ..
                                         ``LEAD_MAX_BYTES``, at most what is left
                                         (``Step.READ``)
large, the budget has no room for it     the driver waits for room, not reading the
                                         socket (``Step.WAIT``, ``wanted`` bytes);
                                         the frame received longest broker-wide
                                         (``LongestReceiving``) takes it past the
                                         budget instead (``Step.READ``)
whole                                    holds exactly the frame (``frame_received``);
                                         the request holds it until answered
=======================================  ============================================

So a client that announces a frame and stalls holds no room it has not sent (beyond one
step, at most what it already delivered), and frames being received can never wait for
each other forever: the one received longest always proceeds, and when it is whole the
next one longest is ``promoted`` (if it waits for room, it may now go past the budget).

Sans-IO: the driver reads the socket, waits for room (``RequestBudget.reserve``) and
keeps the clock that drops a frame that stops arriving; this module only decides.
"""

from __future__ import annotations

import enum
from typing import Generic, Protocol, TypeVar

from sentinel.broker.request_budget import RequestBudget, Reservation

__all__ = [
    "LEAD_MAX_BYTES",
    "LEAD_MIN_BYTES",
    "SMALL_FRAME_BYTES",
    "FrameRoom",
    "LongestReceiving",
    "Promotable",
    "ReceivedFrames",
    "Step",
    "next_step_bytes",
]

SMALL_FRAME_BYTES = 64 * 1024
"""Frames up to this size are read without waiting for the request budget (their bytes
are held in it as they arrive)."""
LEAD_MIN_BYTES = SMALL_FRAME_BYTES
LEAD_MAX_BYTES = 4 * 1024 * 1024
"""A large frame's next step: as many bytes as it delivered, within these bounds."""


def next_step_bytes(need: int, have: int) -> int:
    """The next step of a large frame of ``need`` bytes of which ``have`` arrived: as many
    as it delivered, within ``LEAD_MIN_BYTES`` .. ``LEAD_MAX_BYTES``, at most the rest."""
    return min(need - have, max(LEAD_MIN_BYTES, min(have, LEAD_MAX_BYTES)))


class Promotable(Protocol):
    """A connection told when its frame becomes the one received longest."""

    def promoted(self) -> None: ...


P = TypeVar("P", bound=Promotable)


class LongestReceiving(Generic[P]):
    """The connections receiving a large frame, broker-wide, the one receiving longest
    first: it may go past the budget by its own size when it finds no room."""

    __slots__ = ("_order",)

    def __init__(self) -> None:
        self._order: dict[P, None] = {}  # insertion ordered: the longest first

    def __len__(self) -> int:
        return len(self._order)

    def receiving(self, connection: P) -> bool:
        """``connection`` receives a large frame; True if it has received one longest."""
        self._order.setdefault(connection, None)
        return next(iter(self._order)) is connection

    def done(self, connection: P) -> None:
        """``connection``'s large frame is whole (or gone): the next one longest received
        is ``promoted`` (it may now go past the budget, if it waits for room)."""
        order = self._order
        if connection not in order:
            return
        was_first = next(iter(order)) is connection
        del order[connection]
        if was_first and order:
            next(iter(order)).promoted()


class ReceivedFrames(Protocol):
    """What ``FrameRoom`` reads of a connection's frames (``KafkaServerConnection``)."""

    def head_frame_bytes(self) -> int: ...

    def head_received_bytes(self) -> int: ...


class Step(enum.Enum):
    """What the driver does after ``FrameRoom.advance``."""

    NONE = "no frame is being received"
    WHOLE = "the frame arrived whole: nothing more to read of it"
    READ = "read on: room is held for the next bytes"
    WAIT = "wait for room for the next step (``wanted`` bytes), not reading meanwhile"


class FrameRoom:
    """One connection's room in the request budget for the frame it receives (the
    module's table). ``connection`` is what ``LongestReceiving`` knows it by."""

    __slots__ = ("_budget", "_connection", "_frames", "_longest", "head", "wanted")

    def __init__(
        self,
        frames: ReceivedFrames,
        budget: RequestBudget,
        longest: LongestReceiving[P],
        connection: P,
    ) -> None:
        self._frames = frames
        self._budget = budget
        self._longest: LongestReceiving[P] = longest
        self._connection: P = connection
        #: Held for the frame being received: what of it arrived, and the room for its
        #: next step.
        self.head: Reservation | None = None
        #: The step ``advance`` found no room for (``Step.WAIT``).
        self.wanted = 0

    def ahead(self) -> int:
        """Bytes of the frame being received that may be read now (room is held)."""
        head = self.head
        if head is None:
            return 0
        return max(0, head.size - self._frames.head_received_bytes())

    def advance(self) -> Step:
        """Hold what the frame being received delivered so far and, for a large frame,
        room for its next step before that step is read (the driver calls this after
        every read, unless it waits for room)."""
        need = self._frames.head_frame_bytes()
        if need == 0:
            return Step.NONE
        budget = self._budget
        have = self._frames.head_received_bytes()
        head = self.head
        if head is None:
            head = self.head = budget.force(have)
        elif head.size < have:  # read through the driver's own buffer, past the room
            head.grow(have - head.size)
        if have >= need:  # whole, handed out once max_in_flight allows: not read meanwhile
            return Step.WHOLE
        if need > SMALL_FRAME_BYTES and head.size <= have:  # the next step's room
            step = next_step_bytes(need, have)
            room = budget.try_reserve(step)
            if room is None and self._longest.receiving(self._connection):
                room = budget.force(step)  # received longest: it may go past the budget
            if room is None:
                self.wanted = step
                return Step.WAIT
            self._longest.receiving(self._connection)
            head.absorb(room)
        return Step.READ

    def room_came(self, room: Reservation) -> bool:
        """The room the driver waited for (``Step.WAIT``) came: held for the frame, True;
        or given back if the frame is gone meanwhile, False."""
        if self.head is None:
            room.release()
            return False
        self.head.absorb(room)
        return True

    def frame_received(self, size: int) -> Reservation:
        """A frame of ``size`` bytes is whole: its reservation, holding exactly that. The
        first frame completed is the one whose room was held, if any; frames read whole
        in one go are accounted as they are (already in memory)."""
        held = self.frame_ended()
        if held is None:
            return self._budget.force(size)
        if held.size < size:
            held.grow(size - held.size)
        else:
            held.shrink(size)
        return held

    def frame_ended(self) -> Reservation | None:
        """The frame being received is whole or refused: what was held for it (the
        caller's now), and the next frame received longest broker-wide is promoted."""
        held, self.head = self.head, None
        if held is not None:
            self._longest.done(self._connection)
        return held

    def close(self) -> None:
        """The connection is gone: what it held is given back."""
        if self.head is not None:
            self.head.release()
            self.head = None
        self._longest.done(self._connection)
