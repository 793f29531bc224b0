"""The composition root: build the broker, its front doors and metrics; start and stop
them in order.

Start: recover the broker from its data directory, then open the metrics endpoint, then
the gRPC listener. Stop (SIGTERM / SIGINT): stop accepting, let in-flight requests finish
(up to ``shutdown_grace_s``), cancel streams, then make the logs durable and release the
data directory.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, replace
from typing import Any

import grpc
from prometheus_client import start_http_server

from sentinel.broker.limits import current_open_files_limit
from sentinel.broker.service import BrokerService
from sentinel.clock import Clock, SystemClock
from sentinel.config import BrokerConfig
from sentinel.fs import FS, OsFS
from sentinel.server.grpc_api import SentinelServicer, add_to_server
from sentinel.server.metrics import (
    BrokerView,
    LagFigure,
    Metrics,
    PartitionFigures,
    StorageFigures,
)

log = logging.getLogger(__name__)


@dataclass
class _Endpoints:
    grpc_port: int
    metrics_port: int


class SentinelApp:
    def __init__(
        self, config: BrokerConfig, fs: FS | None = None, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self.service = BrokerService(
            config, fs or OsFS(), clock or SystemClock(), on_wal_sync=self.metrics.observe_fsync
        )
        self._server: grpc.aio.Server | None = None
        self._metrics_server: Any = None
        self.endpoints = _Endpoints(0, 0)

    async def start(self) -> None:
        await self.service.start()
        self.metrics.attach(BrokerView(self._partition_figures, self._lags, self._storage))
        if self.config.metrics_enabled:
            server, _thread = start_http_server(
                self.config.metrics_port,
                addr=self.config.metrics_host,
                registry=self.metrics.registry,
            )
            self._metrics_server = server
            self.endpoints.metrics_port = server.server_port
        options = [
            ("grpc.max_receive_message_length", self.config.max_request_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            # No bandwidth-delay probing: it grows each stream's receive window to many
            # MB, so requests the broker has not admitted yet (the in-flight budget is
            # full) would sit in gRPC's buffers instead of the senders'.
            ("grpc.http2.bdp_probe", 0),
        ]
        self._server = grpc.aio.server(options=options)
        add_to_server(SentinelServicer(self.service, self.metrics), self._server)
        address = f"{self.config.host}:{self.config.port}"
        port = self._server.add_insecure_port(address)
        await self._server.start()
        self.endpoints.grpc_port = port
        # With --port 0 the metadata must advertise the port the kernel picked.
        self.config = replace(self.config, port=port)
        self.service.config = self.config
        log.info(
            "sentinel listening on %s:%d; at most %d partitions; open files limit %d",
            self.config.host,
            port,
            self.service.limits.max_partitions,
            current_open_files_limit(),
        )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s)
            self._server = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        await self.service.stop()

    async def run_until_signalled(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # One line a supervisor (and the tests) can wait for.
        print(
            f"sentinel-server ready grpc={self.config.host}:{self.endpoints.grpc_port} "
            f"metrics={self.endpoints.metrics_port}",
            flush=True,
        )
        await stop.wait()
        log.info("stopping")
        await self.stop()

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

    def _lags(self) -> list[LagFigure]:
        if not self.service.started:
            return []
        return [
            LagFigure(group, lag.topic, lag.partition, lag.lag)
            for group, lag in self.service.all_lags()
        ]

    def _storage(self) -> StorageFigures:
        flushes = compactions = moves = flush_bytes = compaction_bytes = tables = 0
        if self.service.started:
            for topic in self.service.registry:
                for plog in topic.partitions:
                    stats = plog.engine_stats()
                    flushes += stats.flushes
                    compactions += stats.compactions
                    moves += stats.trivial_moves
                    flush_bytes += stats.flush_bytes_written
                    compaction_bytes += stats.compaction_bytes_written
                    tables += sum(stats.tables_per_level)
        return StorageFigures(flushes, compactions, moves, flush_bytes, compaction_bytes, tables)
