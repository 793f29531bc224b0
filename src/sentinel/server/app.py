"""The composition root: build the broker, its front doors and metrics; start and stop
them in order.

Start: check that every port can be listened on (one line naming the port and its
setting if not), recover the broker from its data directory (saying what it
recovers), then open the metrics endpoint, then the gRPC listener, then the Kafka
listener. Stop (SIGTERM / SIGINT): in a cluster, hand the leadership over first (a
request waiting on the peers is answered within the stop budget of
``cluster/clean_stop``, so a cluster stopped whole exits in a second or so); stop
accepting, let in-flight requests finish (up to ``shutdown_grace_s``), cancel streams,
then make the logs durable and release the data directory.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import grpc

from sentinel.broker.limits import current_open_files_limit
from sentinel.broker.service import BrokerService
from sentinel.clock import Clock, SystemClock
from sentinel.cluster.figures import RaftFigures
from sentinel.config import BrokerConfig
from sentinel.fs import FS, OsFS
from sentinel.long_lived import LONG_LIVED
from sentinel.server.connections import ConnectionCount
from sentinel.server.grpc_admission import Admission
from sentinel.server.grpc_api import SentinelServicer, add_to_server
from sentinel.server.kafka.listener import KafkaListener
from sentinel.server.metrics import (
    BrokerView,
    LagFigure,
    Metrics,
    PartitionFigures,
    RaftView,
    StorageFigures,
)
from sentinel.server.metrics_http import MetricsHttpServer
from sentinel.server.ports import check_listen, in_use, unavailable
from sentinel.stopping import task_stack
from sentinel.storage.engine import NO_WORK, WorkFigures

log = logging.getLogger(__name__)


def _dump_tasks() -> None:
    """Every asyncio task and its whole chain of awaits (``task_stack``), to stderr."""
    for task in asyncio.all_tasks():
        print(f"--- {task_stack(task)}", file=sys.stderr)
    sys.stderr.flush()


def grpc_server_options(config: BrokerConfig) -> list[tuple[str, Any]]:
    """The gRPC server's channel arguments.

    A connection may have ``--grpc-max-concurrent-streams`` calls (HTTP/2 streams) open at
    once; its client queues the others itself, in its own memory, until one ends. Without
    that bound, every call of a flood reached the broker: the aio server takes calls from
    gRPC's core one at a time, and the core, past 1,000 calls waiting to be taken, drops
    new ones at random (all of them past 3,000) with a bare ``CANCELLED``, other clients'
    calls included (20,000 concurrent Produce calls on one channel: 11,000-15,000
    dropped).

    The default, 256, bounds what one connection costs everyone else: the calls it may
    queue ahead of another client's (~0.5 ms each: ~0.1-0.2 s), the unread messages in
    gRPC's buffers outside the request budget (64 KiB stream window each: 16 MiB). Long
    polls count too (our consumer keeps one ``FetchMany`` per broker open, whatever its
    partitions; a client of one ``Fetch`` per partition queues past 256 of them).

    The calls waiting to be taken, all connections together, are bounded by
    ``--grpc-max-pending-calls`` (4,096: sixteen connections at the streams bound), one
    bound with no random early drops below it: the core's default (1,000, dropping at
    random up to 3,000) dropped 490-670 calls ``CANCELLED`` of eight connections flooding
    at the bound (4,800-20,000 calls), which its own clients cannot tell from a call
    they cancelled. Past the bound the core still refuses so; each waiting call holds up
    to its 64 KiB stream window of message (4,096: 256 MiB at most, measured: the same
    RSS, +191-196 MiB over 20,000 calls of 16 KiB, with the default bound and with this).

    gRPC's overload protection is off: it counts a stream until the server has freed the
    call, which the aio server does a while after the client saw it end, so it refused
    (REFUSED_STREAM) about half of such a flood though its client kept to the limit.
    HTTP/2's own count is used instead: a client past it is refused REFUSED_STREAM
    (UNAVAILABLE: not processed, retriable). That protection is also gRPC's guard against
    a client that opens and resets streams at once (HTTP/2 rapid reset); without it such
    calls are bounded by the core's drops above. The broker authenticates no one: a
    hostile client is not what this bound is for, a flooding one is.

    No ``maximum_concurrent_rpcs`` (a server-wide count of calls being handled, past it
    RESOURCE_EXHAUSTED): it counts a following Consume or a long-poll Fetch as long as it
    lasts, refuses any client's call alike, and refuses only calls already taken from the
    core, one at a time, so the core's drops go on. Measured at 256 with 256 streams,
    20,000 calls: one connection, 30 % of the calls and of another client's refused (none
    without it); eight connections, 34 % CANCELLED (4 % without it, the pending bound
    then at its default). What the broker
    holds of admitted requests is bounded by ``--max-request-bytes-in-flight``
    (``grpc_admission``).
    """
    return [
        ("grpc.max_receive_message_length", config.max_request_bytes),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
        # No bandwidth-delay probing: it grows each stream's receive window to many
        # MB, so requests the broker has not admitted yet (the in-flight budget is
        # full) would sit in gRPC's buffers instead of the senders'.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.max_concurrent_streams", config.grpc_max_concurrent_streams),
        # One bound, no random early drops below it (soft = hard).
        ("grpc.server.max_pending_requests", config.grpc_max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", config.grpc_max_pending_calls),
        ("grpc.http.overload_protection", 0),
    ]


@dataclass
class _Endpoints:
    grpc_port: int
    metrics_port: int
    kafka_port: int = 0


class SentinelApp:
    def __init__(
        self, config: BrokerConfig, fs: FS | None = None, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self._fs = fs or OsFS()
        self.service = BrokerService(
            config, self._fs, clock or SystemClock(), on_wal_sync=self._observe_fsync
        )
        self._server: grpc.aio.Server | None = None
        self._metrics_server: MetricsHttpServer | None = None
        self._kafka: KafkaListener | None = None
        self.endpoints = _Endpoints(0, 0)

    def _observe_fsync(self, seconds: float, entries: int) -> None:
        self.metrics.observe_fsync(seconds, entries)
        if seconds * 1000 >= self.config.slow_fsync_ms:
            log.warning(
                "slow fsync: %.1f ms for %d WAL entries (--slow-fsync-ms %g)",
                seconds * 1000,
                entries,
                self.config.slow_fsync_ms,
            )

    def _check_ports(self) -> None:
        check_listen(self.config.host, self.config.port, "port")
        check_listen(self.config.kafka_listen_host, self.config.kafka_port, "kafka_port")
        if self.config.metrics_enabled:
            check_listen(self.config.metrics_host, self.config.metrics_port, "metrics_port")

    async def start(self) -> None:
        self._check_ports()  # before recovery: a broker that cannot listen fails at once
        started = time.monotonic()
        await self.service.start()
        log.info(
            "recovered %d topics, %d partitions in %.1f s",
            sum(1 for _ in self.service.registry),
            self.service.registry.partition_total,
            time.monotonic() - started,
        )
        self.metrics.attach(BrokerView(self._partition_figures, self._lags, self._storage))
        self.metrics.attach(RaftView(self._raft_figures, self._elections))
        self.metrics.count_connections(ConnectionCount(lambda: self.endpoints.grpc_port))
        budget = self.service.request_budget
        self.metrics.count_request_bytes(lambda: float(budget.in_flight))
        if self.config.metrics_enabled:
            host, port = self.config.metrics_host, self.config.metrics_port
            server = MetricsHttpServer(
                self.metrics.registry,
                read_timeout_s=self.config.metrics_read_timeout_ms / 1000.0,
            )
            try:
                bound = await server.start(host, port)
            except OSError as exc:
                await server.close()
                if exc.errno == errno.EADDRINUSE:
                    raise in_use(host, port, "metrics_port") from None
                raise unavailable(host, port, "metrics_port", exc.strerror or str(exc)) from None
            self._metrics_server = server
            self.endpoints.metrics_port = bound
        self._server = grpc.aio.server(options=grpc_server_options(self.config))
        admission = Admission.of(self.service.request_budget, self.config)
        add_to_server(SentinelServicer(self.service, self.metrics, admission), self._server)
        address = f"{self.config.host}:{self.config.port}"
        try:
            port = self._server.add_insecure_port(address)
        except RuntimeError:  # lost a race for the port since _check_ports
            raise in_use(self.config.host, self.config.port, "port") from None
        await self._server.start()
        self.endpoints.grpc_port = port
        kafka_port = await self._start_kafka()
        # With --port 0 the metadata must advertise the port the kernel picked.
        self.config = replace(self.config, port=port, kafka_port=kafka_port)
        self.service.config = self.config
        log.info(
            "sentinel listening on %s:%d; at most %d partitions; open files limit %d",
            self.config.host,
            port,
            self.service.limits.max_partitions,
            current_open_files_limit(),
        )

    async def _start_kafka(self) -> int:
        host, port = self.config.kafka_listen_host, self.config.kafka_port
        self._kafka = KafkaListener(
            self.service,
            self.metrics,
            max_frame_bytes=self.config.max_request_bytes,
            frame_timeout_s=self.config.kafka_frame_timeout_ms / 1000.0,
        )
        try:
            bound = await self._kafka.start(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:  # lost a race for the port since _check_ports
                raise in_use(host, port, "kafka_port") from None
            raise unavailable(host, port, "kafka_port", exc.strerror or str(exc)) from None
        self.endpoints.kafka_port = bound
        log.info("kafka protocol listening on %s:%d", host, bound)
        return bound

    async def stop(self) -> None:
        await self.service.hand_off()
        if self._kafka is not None:
            await self._kafka.stop(self.config.shutdown_grace_s)
            self._kafka = None
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s)
            self._server = None
        if self._metrics_server is not None:
            await self._metrics_server.close()
            self._metrics_server = None
        await self.service.stop()

    async def run_until_signalled(self) -> None:
        # From the first step: a start recovering thousands of partitions builds
        # millions of objects, and each full collection on the way walked them all.
        LONG_LIVED.install()
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # ``kill -USR2 <pid>``: every asyncio task and where it waits, to stderr (what a
        # broker that does not stop is waiting for; SIGUSR1 gives the threads).
        loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
        # What start-up built (modules, gRPC, the recovered broker) lives as long as the
        # process: out of the collector's sight, a full collection costs microseconds,
        # not ~50 ms of the event loop; and what a slow full collection finds alive
        # later (partitions created since) is frozen after it (``long_lived``).
        LONG_LIVED.install()  # again: freezes what the start built
        # One line a supervisor (and the tests) can wait for.
        print(
            f"sentinel-server ready grpc={self.config.host}:{self.endpoints.grpc_port} "
            f"metrics={self.endpoints.metrics_port} "
            f"kafka={self.config.kafka_listen_host}:{self.endpoints.kafka_port}",
            flush=True,
        )
        failure = await self._wait_stop(stop)
        log.info("stopping")
        await self.stop()
        if failure is not None:  # e.g. a replica's damaged data found as the cluster replays
            raise failure

    async def _wait_stop(self, stop: asyncio.Event) -> BaseException | None:
        """Wait for a signal, or for the cluster's Raft driver to fail (its error is
        returned: the broker must not run on without it)."""
        node = self.service.cluster_node
        if node is None:
            await stop.wait()
            return None
        failed = node.driver.failed
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(failed.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        return node.driver.failure if failed.is_set() else None

    # ---------------------------------------------------- scrape-time views

    def _partition_figures(self) -> list[PartitionFigures]:
        if not self.service.started:
            return []
        return [
            PartitionFigures(
                topic.name,
                index,
                plog.log_end_offset,
                plog.log_start_offset,
                plog.high_watermark,
                plog.size_bytes,
            )
            for topic in self.service.registry
            for index, plog in enumerate(topic.partitions)
        ]

    def _raft_figures(self) -> list[RaftFigures]:
        node = self.service.cluster_node
        return [] if node is None or not self.service.started else list(node.raft_figures())

    def _elections(self) -> int | None:
        node = self.service.cluster_node
        return None if node is None else node.elections

    def _lags(self) -> list[LagFigure]:
        if not self.service.started:
            return []
        return [
            LagFigure(group, lag.topic, lag.partition, lag.lag)
            for group, lag in self.service.all_lags()
        ]

    def _storage(self) -> StorageFigures:
        # Each engine's counts, summed field by field (``StorageFigures`` starts with
        # ``WorkFigures``' fields, in its order).
        engines = (
            (plog.work_figures() for topic in self.service.registry for plog in topic.partitions)
            if self.service.started else ()
        )
        work = WorkFigures._make(sum(column) for column in zip(NO_WORK, *engines, strict=True))
        journal = self.service.journal
        return StorageFigures(
            *work,
            journal_entries=0 if journal is None else journal.entries,
            journal_skipped=0 if journal is None else journal.skipped_appends,
        )
