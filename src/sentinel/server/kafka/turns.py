"""Turns: which waiting handler of one Kafka connection may start, while answers do not drain.

A connection answers in request order (``KafkaServerConnection``): an answer built before
an earlier one waits in memory until that one is written. A client that does not read
its answers, or a long poll with many requests pipelined behind it, would otherwise make
the broker build and hold one answer per request it sends. So while answers do not
drain, handlers do not start (and the socket is not read: the driver's flow control
asks ``congested``):

=================================================  ===================================
the connection's answers                           the handler of a request
=================================================  ===================================
drain, no handler waits, none let through           starts at once (the usual case)
drain, others wait or one let through is running    waits; they start one at a time,
                                                    in request order, each once the
                                                    one before it finished
held beyond ``HELD_RESPONSE_BYTES`` (they wait for  starts if it is the oldest
an earlier one)                                     unanswered request (they can only
                                                    drain once it is answered); else
                                                    waits
write paused (the transport's buffer above its      waits, oldest or not
high-water mark)
=================================================  ===================================

A waiting handler that was cancelled (its connection closed) is skipped. And a
connection's Fetch requests (``FETCH_KEY``) are served one at a time, each in its turn
(the driver holds a lock around them): Kafka's clients send one at a time anyway, and a
pipeline of long polls would otherwise build their answers together.

Pure: the answers' state is read from ``AnswerBacklog`` (the connection), whether writing
is paused is set by the driver (``write_paused``), and a waiting handler is woken through
its ``Waiter`` (an ``asyncio.Future[None]`` in the driver, anything with the same two
methods in tests). No event loop, no socket.
"""

from __future__ import annotations

import collections
from typing import Protocol

__all__ = ["FETCH_KEY", "HELD_RESPONSE_BYTES", "AnswerBacklog", "Turns", "Waiter"]

FETCH_KEY = 1
"""Fetch requests of one connection are served one at a time (Kafka's clients send one at
a time anyway): a pipeline of long polls would otherwise build their answers together."""
HELD_RESPONSE_BYTES = 1024 * 1024
"""Answers waiting for an earlier one beyond this stop handlers from starting."""


class AnswerBacklog(Protocol):
    """What ``Turns`` reads of a connection's answers (``KafkaServerConnection``)."""

    @property
    def held_response_bytes(self) -> int:
        """Bytes of answers given and not yet writable: they wait for an earlier one."""
        ...

    @property
    def oldest_unanswered(self) -> int | None:
        """The correlation id of the oldest request not answered yet."""
        ...


class Waiter(Protocol):
    """How a waiting handler is let through (an ``asyncio.Future[None]``)."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...


class Turns:
    """The order in which one connection's handlers start while its answers do not
    drain (the module's table)."""

    __slots__ = ("_answers", "_closed", "_taken", "_waiting", "write_paused")

    def __init__(self, answers: AnswerBacklog) -> None:
        self._answers = answers
        #: The transport's write buffer is above its high-water mark (set by the driver).
        self.write_paused = False
        #: Handlers waiting for their turn, in request order (cancelled ones included,
        #: until ``let_next`` meets them).
        self._waiting: collections.deque[tuple[int, Waiter]] = collections.deque()
        #: One of them was let through and has not finished: the next waits for it.
        self._taken = False
        self._closed = False

    @property
    def waiting(self) -> int:
        """Handlers queued for their turn (cancelled ones not yet skipped included)."""
        return len(self._waiting)

    def congested(self) -> bool:
        """Answers do not drain: the client does not read them, or they wait for an
        earlier one (a long poll) beyond ``HELD_RESPONSE_BYTES``."""
        return self.write_paused or self._answers.held_response_bytes > HELD_RESPONSE_BYTES

    def held_back(self, correlation_id: int) -> bool:
        """Whether the request ``correlation_id`` must wait for answers to drain. The
        oldest unanswered one never waits for the answers held behind it: they can only
        drain once it is answered (a second Fetch queued behind a long poll, with more
        than ``HELD_RESPONSE_BYTES`` of answers behind both, waited for good)."""
        if self.write_paused:
            return True
        answers = self._answers
        return (
            answers.held_response_bytes > HELD_RESPONSE_BYTES
            and correlation_id != answers.oldest_unanswered
        )

    def must_wait(self, correlation_id: int) -> bool:
        """Whether the handler of ``correlation_id`` must ``wait`` for its turn: others
        wait or one let through runs (it goes after them), or answers do not drain."""
        return bool(self._waiting) or self._taken or self.held_back(correlation_id)

    def wait(self, correlation_id: int, waiter: Waiter) -> None:
        """Queue the handler of ``correlation_id``; ``waiter`` is set once it may start
        (at once, if it is first and answers drain)."""
        self._waiting.append((correlation_id, waiter))
        self.let_next()

    def let_next(self) -> None:
        """Let the first waiting handler through, in order, unless answers do not drain;
        the oldest unanswered request's handler is let through even then. One at a time:
        none while one let through has not ``finished``."""
        if self._taken or self._closed:
            return
        waiting = self._waiting
        while waiting and waiting[0][1].done():  # cancelled meanwhile
            waiting.popleft()
        if not waiting:
            return
        if not self.congested():
            _, waiter = waiting.popleft()
        else:
            for index, (correlation_id, waiter) in enumerate(waiting):
                if not waiter.done() and not self.held_back(correlation_id):
                    del waiting[index]
                    break
            else:
                return
        waiter.set_result(None)
        self._taken = True

    def finished(self, waiter: Waiter | None) -> None:
        """A handler is done (or cancelled): ``waiter`` is what it waited on (None: it
        started at once). If it was let through, the next may go now."""
        if waiter is not None and waiter.done() and not waiter.cancelled():
            self._taken = False
        self.let_next()

    def close(self) -> None:
        """The connection is gone: nobody is let through any more."""
        self._closed = True
