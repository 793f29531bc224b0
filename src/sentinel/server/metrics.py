"""Every Prometheus metric the broker exports, declared in one place.

The names of the original Go system are kept (``sentinel_messages_produced_total``,
``sentinel_messages_consumed_total``, ``sentinel_bytes_produced_total``,
``sentinel_active_connections``, ``sentinel_produce_latency_ms``,
``sentinel_partition_lag``), next to a real latency histogram and per-partition and
storage figures. Counters and histograms are recorded at the front doors; per-partition
and per-group gauges are read from the broker when Prometheus scrapes (a collector),
so the hot path never updates them.

``sentinel_messages_consumed_total`` counts records consumers proved they moved past
(group commits, records handed over by ``Consume`` streams: see ``consumption``);
``sentinel_messages_fetched_total`` counts records sent, read-ahead included.
``sentinel_active_connections`` is read from the kernel at scrape time (see
``connections``). ``sentinel_requests_total{code}`` is ``OK`` for a request answered
without error, else the error's reason.

The Kafka door: ``sentinel_kafka_requests_total{api,code}`` (Kafka's numeric error code,
``0`` for none), ``sentinel_kafka_request_seconds{api}``, ``sentinel_kafka_connections``
(counted by the listener, which sees every connection),
``sentinel_kafka_closed_connections_total{reason}`` (``idle``: past
``--connections-max-idle-ms``) and ``sentinel_kafka_refused_connections_total``
(beyond ``--max-connections``), ``sentinel_kafka_fetch_sessions`` and
``sentinel_kafka_fetch_session_partitions`` (KIP-227 sessions kept).

A cluster member (``--peers``) adds, per Raft group it is in (each replicated partition
it hosts, and the controller's group as topic ``__cluster_metadata`` partition 0):
``sentinel_raft_role{topic,partition}`` (0 follower, 1 pre-candidate, 2 candidate,
3 leader), ``sentinel_raft_term``, ``sentinel_raft_commit_index`` (the offset up to which
entries are committed, as this broker knows it) and, at the leader only,
``sentinel_raft_follower_lag{topic,partition,follower}`` (the leader's log end minus the
follower's matched end: records, counted in offsets, the follower is known to lack);
and ``sentinel_raft_elections_total``: elections this broker started (times one of its
groups became a candidate; pre-votes that failed are not counted).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sentinel.cluster.figures import RaftFigures
from sentinel.server.consumption import ConsumptionLedger
from sentinel.server.metrics_bulk import BulkGauge

LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


@dataclass(frozen=True, slots=True)
class PartitionFigures:
    topic: str
    partition: int
    log_end_offset: int
    log_start_offset: int
    high_watermark: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class LagFigure:
    group: str
    topic: str
    partition: int
    lag: int


@dataclass(frozen=True, slots=True)
class StorageFigures:
    flushes: int
    compactions: int
    trivial_moves: int
    flush_bytes: int
    compaction_bytes: int
    tables: int
    journal_entries: int = 0
    journal_skipped: int = 0


class BrokerView(Collector):
    """Reads per-partition, per-group and storage figures from the broker at scrape time."""

    def __init__(
        self,
        partitions: Callable[[], Iterable[PartitionFigures]],
        lags: Callable[[], Iterable[LagFigure]],
        storage: Callable[[], StorageFigures],
    ) -> None:
        self._partitions = partitions
        self._lags = lags
        self._storage = storage

    def collect(self) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        leo = BulkGauge(
            "sentinel_log_end_offset", "Offset of the next record to be appended", labels
        )
        lso = BulkGauge("sentinel_log_start_offset", "First offset still stored", labels)
        hwm = BulkGauge(
            "sentinel_high_watermark", "Offset up to which records are committed", labels
        )
        size = BulkGauge("sentinel_log_size_bytes", "Bytes of record batches stored", labels)
        for fig in self._partitions():
            values = [fig.topic, str(fig.partition)]
            leo.add_metric(values, fig.log_end_offset)
            lso.add_metric(values, fig.log_start_offset)
            hwm.add_metric(values, fig.high_watermark)
            size.add_metric(values, fig.size_bytes)
        yield from (leo, lso, hwm, size)
        lag = BulkGauge(
            "sentinel_partition_lag",
            "Records between a group's committed offset and the log end",
            ["group", "topic", "partition"],
        )
        for item in self._lags():
            lag.add_metric([item.group, item.topic, str(item.partition)], item.lag)
        yield lag
        storage = self._storage()
        yield CounterMetricFamily(
            "sentinel_storage_flushes", "Memtables flushed to tables", value=storage.flushes
        )
        yield CounterMetricFamily(
            "sentinel_storage_compactions",
            "Compactions that rewrote tables",
            value=storage.compactions,
        )
        yield CounterMetricFamily(
            "sentinel_storage_trivial_moves",
            "Tables moved down a level without rewriting",
            value=storage.trivial_moves,
        )
        yield CounterMetricFamily(
            "sentinel_storage_flush_bytes", "Bytes written by flushes", value=storage.flush_bytes
        )
        yield CounterMetricFamily(
            "sentinel_storage_compaction_bytes",
            "Bytes written by compactions",
            value=storage.compaction_bytes,
        )
        yield GaugeMetricFamily("sentinel_storage_tables", "Live tables", value=storage.tables)
        yield CounterMetricFamily(
            "sentinel_journal_entries",
            "Partition WAL entries copied to the broker journal (acks wait for its fsync)",
            value=storage.journal_entries,
        )
        yield CounterMetricFamily(
            "sentinel_journal_skipped",
            "Entries left to their partition WAL's own fsync: few partitions were appending",
            value=storage.journal_skipped,
        )


class RaftView(Collector):
    """Reads the Raft groups' figures of a cluster member at scrape time (nothing on a
    broker alone: ``figures`` gives nothing and ``elections`` None)."""

    def __init__(
        self, figures: Callable[[], Iterable[RaftFigures]], elections: Callable[[], int | None]
    ) -> None:
        self._figures = figures
        self._elections = elections

    def collect(self) -> Iterator[Metric]:
        elections = self._elections()
        if elections is None:
            return
        labels = ["topic", "partition"]
        role = BulkGauge(
            "sentinel_raft_role",
            "Raft role of this broker in the partition's group: 0 follower, 1 pre-candidate,"
            " 2 candidate, 3 leader",
            labels,
        )
        term = BulkGauge("sentinel_raft_term", "Current Raft term", labels)
        commit = BulkGauge(
            "sentinel_raft_commit_index", "Offset up to which entries are committed", labels
        )
        lag = BulkGauge(
            "sentinel_raft_follower_lag",
            "At the leader: its log end minus the follower's matched end (offsets)",
            [*labels, "follower"],
        )
        for fig in self._figures():
            values = [fig.topic, str(fig.partition)]
            role.add_metric(values, fig.role)
            term.add_metric(values, fig.term)
            commit.add_metric(values, fig.commit_index)
            for follower, behind in fig.follower_lags:
                lag.add_metric([*values, str(follower)], behind)
        yield from (role, term, commit, lag)
        yield CounterMetricFamily(
            "sentinel_raft_elections",
            "Elections this broker started (a group of it became a candidate)",
            value=elections,
        )


class RecentAverage:
    """The mean of the last N samples: the original system's latency gauge."""

    def __init__(self, size: int = 1024) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append(value)

    def value(self) -> float:
        with self._lock:
            return sum(self._samples) / len(self._samples) if self._samples else 0.0


def _count(
    children: dict[str, tuple[Counter, Counter]],
    counters: tuple[Counter, Counter],
    topic: str,
    records: int,
    size: int,
) -> None:
    """Add to a topic's record and byte counters, their labelled children looked up once
    per topic (``labels()`` checks and locks on every call)."""
    pair = children.get(topic)
    if pair is None:
        pair = children[topic] = (counters[0].labels(topic), counters[1].labels(topic))
    pair[0].inc(records)
    pair[1].inc(size)


class Metrics:
    """The broker's instruments, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.messages_produced = Counter(
            "sentinel_messages_produced", "Records appended", ["topic"], registry=reg
        )
        self.messages_consumed = Counter(
            "sentinel_messages_consumed",
            "Records consumers moved past (group commits, records handed over by streams)",
            ["topic"],
            registry=reg,
        )
        self.messages_fetched = Counter(
            "sentinel_messages_fetched",
            "Records sent to consumers, read-ahead included",
            ["topic"],
            registry=reg,
        )
        self.bytes_produced = Counter(
            "sentinel_bytes_produced", "Record batch bytes appended", ["topic"], registry=reg
        )
        self.bytes_consumed = Counter(
            "sentinel_bytes_consumed",
            "Record batch bytes sent to consumers",
            ["topic"],
            registry=reg,
        )
        # Labelled children by topic, looked up once (``labels()`` checks and locks on
        # every call): the traffic counters move on every produce and fetch.
        self._produced: dict[str, tuple[Counter, Counter]] = {}
        self._fetched: dict[str, tuple[Counter, Counter]] = {}
        self.active_connections = Gauge(
            "sentinel_active_connections",
            "Client TCP connections open to the gRPC port (-1: unknown on this platform)",
            registry=reg,
        )
        self.request_bytes_in_flight = Gauge(
            "sentinel_request_bytes_in_flight",
            "Request bytes the broker holds (read or being read, not yet answered), "
            "both doors; bounded by --max-request-bytes-in-flight",
            registry=reg,
        )
        self._consumption = ConsumptionLedger()
        self._recent_produce_ms = RecentAverage()
        self.produce_latency_ms = Gauge(
            "sentinel_produce_latency_ms",
            "Average produce latency over the last 1024 requests, in milliseconds",
            registry=reg,
        )
        self.produce_latency_ms.set_function(self._recent_produce_ms.value)
        self.produce_latency = Histogram(
            "sentinel_produce_latency_seconds",
            "Produce request latency",
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.fetch_latency = Histogram(
            "sentinel_fetch_latency_seconds",
            "Fetch request latency (without long-poll waiting)",
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.wal_fsync_latency = Histogram(
            "sentinel_wal_fsync_seconds",
            "WAL fsync latency (one fsync may cover many writes: group commit)",
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.requests = Counter(
            "sentinel_requests",
            "Requests by API method and result",
            ["method", "code"],
            registry=reg,
        )
        # The Kafka protocol door (server/kafka/listener.py).
        self.kafka_requests = Counter(
            "sentinel_kafka_requests",
            "Kafka protocol requests by API and Kafka error code (0: none; the first"
            " non-zero code of the response, e.g. a partition's refusal)",
            ["api", "code"],
            registry=reg,
        )
        self._kafka_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.kafka_request_latency = Histogram(
            "sentinel_kafka_request_seconds",
            "Kafka protocol request latency, from decoded to answered (Fetch long-polls"
            " and acks=all fsync waits included)",
            ["api"],
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.kafka_connections = Gauge(
            "sentinel_kafka_connections",
            "Client TCP connections open to the Kafka port",
            registry=reg,
        )
        self.kafka_fetch_sessions = Gauge(
            "sentinel_kafka_fetch_sessions",
            "Incremental fetch sessions kept (KIP-227; Kafka's NumIncrementalFetchSessions)",
            registry=reg,
        )
        self.kafka_fetch_session_partitions = Gauge(
            "sentinel_kafka_fetch_session_partitions",
            "Partitions kept over all fetch sessions (Kafka's"
            " NumIncrementalFetchPartitionsCached)",
            registry=reg,
        )
        self.kafka_closed_connections = Counter(
            "sentinel_kafka_closed_connections",
            "Kafka connections the broker closed, by reason (bad_frame: oversized or"
            " malformed; internal: a produce with acks 0 whose handler failed;"
            " acks0_refused: a produce with acks 0 refused, so that its producer looks"
            " again; idle)",
            ["reason"],
            registry=reg,
        )
        self.kafka_refused_connections = Counter(
            "sentinel_kafka_refused_connections",
            "Kafka connections accepted and closed at once: --max-connections were open",
            registry=reg,
        )

    def observe_produce(self, seconds: float) -> None:
        self.produce_latency.observe(seconds)
        self._recent_produce_ms.add(seconds * 1000.0)

    def count_produced(self, topic: str, records: int, size: int) -> None:
        """``sentinel_messages_produced_total`` and ``sentinel_bytes_produced_total``."""
        counters = (self.messages_produced, self.bytes_produced)
        _count(self._produced, counters, topic, records, size)

    def count_fetched(self, topic: str, records: int, size: int) -> None:
        """``sentinel_messages_fetched_total`` and ``sentinel_bytes_consumed_total``."""
        counters = (self.messages_fetched, self.bytes_consumed)
        _count(self._fetched, counters, topic, records, size)

    def observe_kafka_request(self, api: str, code: int, seconds: float) -> None:
        # The labelled children are looked up once per (api, code): ``labels()`` checks
        # and locks on every call, ~25 Python calls per request.
        children = self._kafka_children.get((api, code))
        if children is None:
            children = (
                self.kafka_requests.labels(api, str(code)),
                self.kafka_request_latency.labels(api),
            )
            self._kafka_children[(api, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_fsync(self, seconds: float, _entries: int) -> None:
        self.wal_fsync_latency.observe(seconds)

    def count_connections(self, source: Callable[[], float]) -> None:
        """``source`` gives the open client connections when Prometheus scrapes."""
        self.active_connections.set_function(source)

    def count_request_bytes(self, source: Callable[[], float]) -> None:
        """``source`` gives the request bytes in flight when Prometheus scrapes."""
        self.request_bytes_in_flight.set_function(source)

    def observe_fetch_start(self, peer: str, topic: str, partition: int, offset: int) -> None:
        self._consumption.fetched(peer, topic, partition, offset)

    def observe_commit(
        self, peer: str, group: str, topic: str, partition: int, offset: int
    ) -> None:
        consumed = self._consumption.committed(peer, group, topic, partition, offset)
        if consumed:
            self.messages_consumed.labels(topic).inc(consumed)

    def attach(self, view: BrokerView | RaftView) -> None:
        self.registry.register(view)
