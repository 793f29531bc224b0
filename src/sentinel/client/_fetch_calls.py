"""The consumer's fetch calls: made as ``_fetch_plan`` says, their answers read back.

``FetchCalls`` keeps the calls in flight (on the client's event loop). ``carry_out``
cancels and sends what a ``Plan`` says: a ``FetchMany`` of a broker's ready partitions
(``fetch_max_bytes`` each, ``RESPONSE_MAX_BYTES`` in all, ``min_bytes`` 1, long-polling
``fetch_max_wait_ms``), or a ``Fetch`` of one partition at a broker without FetchMany.
Each call's partitions are marked (``PartitionFetch.call_key``) so that the next plan
sees them covered. ``settle`` turns an ended call into what each of its partitions got:
``Answer``, with its batches or the error a Fetch of it alone would have raised (a
FetchMany partition's ``PartitionError``, or the whole call's failure). Two failures
are the broker's, not the partitions', and are handled here: UNIMPLEMENTED (an older
broker: its partitions get one Fetch each from now on) and POLICY_VIOLATION for too
many partitions in one call (fewer per call from now on).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from sentinel.client._channel import unary
from sentinel.client._fetch_plan import Flight, Plan, Ready, Send, plan
from sentinel.client._metadata import Metadata
from sentinel.client._partition_fetch import FetchConfig, PartitionFetch
from sentinel.client.errors import (
    ClientClosedError,
    PolicyViolationError,
    SentinelClientError,
    error_from_status,
)
from sentinel.client.types import TopicPartition
from sentinel.proto_gen import sentinel_pb2 as pb

__all__ = ["MAX_POSITIONS", "RESPONSE_MAX_BYTES", "Answer", "FetchCalls", "partition_error"]

log = logging.getLogger(__name__)

RESPONSE_MAX_BYTES = 16 * 1024 * 1024
"""A FetchMany answer's limit over all its partitions (the most a broker answers)."""
MAX_POSITIONS = 10_000
"""The most partitions one FetchMany names (halved while a broker refuses that many as
past its --max-partitions); more on one broker take turns."""

_STATUS = {code.value[0]: code for code in grpc.StatusCode}


def partition_error(error: pb.PartitionError) -> SentinelClientError:
    """The exception a FetchMany partition's refusal stands for: the one a Fetch of that
    partition alone would have raised (``errors.error_from_status``)."""
    status = _STATUS.get(error.status, grpc.StatusCode.UNKNOWN)
    metadata = [("sentinel-error", error.reason), *error.metadata.items()]
    return error_from_status(status, error.message, metadata)


def _unimplemented(exc: BaseException) -> bool:
    """The broker does not know the RPC (an older broker): gRPC's status, no reason."""
    return (
        isinstance(exc, SentinelClientError)
        and exc.status == grpc.StatusCode.UNIMPLEMENTED
        and exc.reason is None
    )


@dataclass(eq=False, slots=True)
class Call:
    """A fetch call in flight and the partitions it fetches, as they were sent."""

    key: int
    send: Send
    parts: tuple[PartitionFetch, ...]
    task: asyncio.Task[Any]

    def flight(self) -> Flight:
        s = self.send
        return Flight(self.key, s.address, s.many, s.long_poll, len(s.ready))


@dataclass(frozen=True, slots=True)
class Answer:
    """What one partition of an ended call got: ``data`` (a ``FetchResponse`` or a
    ``FetchedPartition``) fetched from ``ready.offset``, or ``error``."""

    part: PartitionFetch
    ready: Ready
    data: pb.FetchResponse | pb.FetchedPartition | None = None
    error: BaseException | None = None


class FetchCalls:
    """The fetch calls in flight (the client's loop only)."""

    def __init__(self, config: FetchConfig, metadata: Metadata, on_end: Callable[[], None]):
        self._config = config
        self._metadata = metadata
        self._on_end = on_end  # a call ended (called from its task's done callback)
        self._calls: dict[int, Call] = {}
        self._keys = itertools.count()
        self._single_fetch: set[str | None] = set()  # brokers without FetchMany
        self._max_positions = MAX_POSITIONS
        self._turn = 0

    def plan(self, ready: list[Ready]) -> Plan:
        return plan(
            ready,
            [c.flight() for c in self._calls.values()],
            single_fetch=self._single_fetch,
            max_positions=self._max_positions,
            turn=self._turn,
        )

    def carry_out(self, decided: Plan, parts: Mapping[TopicPartition, PartitionFetch]) -> None:
        """Cancel and send as ``decided`` (``parts``: the assigned partitions)."""
        for key in decided.cancel:
            call = self._calls.get(key)
            if call is not None:
                call.task.cancel()
                self._forget(call)
        for send in decided.send:
            self._send(send, tuple(parts[r.tp] for r in send.ready))

    def ended(self) -> list[Call]:
        return [c for c in self._calls.values() if c.task.done()]

    def tasks(self) -> list[asyncio.Task[Any]]:
        return [c.task for c in self._calls.values()]

    def _send(self, send: Send, parts: tuple[PartitionFetch, ...]) -> None:
        stub = self._metadata.stub_at(send.address)
        max_wait = self._config.fetch_max_wait_ms
        max_bytes = self._config.fetch_max_bytes
        timeout = self._config.request_timeout_ms / 1000.0 + max_wait / 1000.0
        coro: Awaitable[Any]
        if send.many:
            self._turn += 1
            request = pb.FetchManyRequest(
                max_wait_ms=max_wait, min_bytes=1, max_bytes=max(RESPONSE_MAX_BYTES, max_bytes)
            )
            add = request.positions.add  # 40 % faster than a list of messages
            for r in send.ready:
                tp = r.tp
                add(topic=tp.topic, partition=tp.partition, offset=r.offset, max_bytes=max_bytes)
            coro = unary(stub.FetchMany(request, timeout=timeout))
        else:
            (r,) = send.ready
            one = pb.FetchRequest(
                topic=r.tp.topic, partition=r.tp.partition, offset=r.offset,
                max_bytes=max_bytes, max_wait_ms=max_wait,
            )  # fmt: skip
            coro = unary(stub.Fetch(one, timeout=timeout))
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(lambda _task: self._on_end())
        call = Call(next(self._keys), send, parts, task)
        self._calls[call.key] = call
        for part, r in zip(parts, send.ready, strict=True):
            part.call_key, part.call_generation = call.key, r.generation

    def _forget(self, call: Call) -> None:
        """``call`` no longer fetches its partitions."""
        self._calls.pop(call.key, None)
        for part in call.parts:
            if part.call_key == call.key:
                part.call_key, part.call_generation = -1, -1

    def settle(self, call: Call) -> list[Answer]:
        """What each partition of the ended ``call`` got (nothing if it was cancelled,
        or failed as the broker's refusal of FetchMany itself)."""
        self._forget(call)
        if call.task.cancelled():
            return []
        members = list(zip(call.parts, call.send.ready, strict=True))
        exc = call.task.exception()
        if exc is not None:
            if self._refused(call, exc):
                return []
            return [Answer(part, r, error=exc) for part, r in members]
        resp = call.task.result()
        if not call.send.many:
            return [Answer(part, r, data=resp) for part, r in members]
        got = {(p.topic, p.partition): p for p in resp.partitions}
        out = []
        for part, r in members:
            answer = got.get((r.tp.topic, r.tp.partition))
            if answer is None:
                continue  # not answered: fetched again next time
            if answer.HasField("error"):
                out.append(Answer(part, r, error=partition_error(answer.error)))
            else:
                out.append(Answer(part, r, data=answer))
        return out

    def _refused(self, call: Call, exc: BaseException) -> bool:
        """Whether a failed call is the broker's refusal of FetchMany as such (handled
        here), or the client is closed."""
        if isinstance(exc, ClientClosedError):
            return True
        if not call.send.many:
            return False
        if _unimplemented(exc):
            broker = call.send.address or "the bootstrap broker"
            log.info("%s has no FetchMany: one Fetch per partition", broker)
            self._single_fetch.add(call.send.address)
            return True
        if isinstance(exc, PolicyViolationError) and len(call.parts) > 1:
            self._max_positions = max(1, len(call.parts) // 2)
            log.info("FetchMany refused (%s): %d partitions per call", exc, self._max_positions)
            return True
        return False
