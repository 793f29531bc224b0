"""``metrics_bulk.render`` writes the same bytes as prometheus-client's encoders would,
in both formats (the text format and OpenMetrics), for any label values (quotes,
backslashes, newlines, non-ASCII), any values, beside families of every other kind,
and a ``BulkGauge`` reads as a plain gauge where it is read the generic way (a scrape
restricted to some names)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

from sentinel.server.metrics import BrokerView, LagFigure, PartitionFigures, StorageFigures
from sentinel.server.metrics_bulk import BulkGauge, render
from sentinel.storage.engine import WorkFigures

label_values = st.text(max_size=12)
values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.just(float("nan")),
)
rows = st.lists(st.tuples(st.tuples(label_values, label_values, label_values), values),
                max_size=20)


class _Rows(Collector):
    def __init__(self, two: list[tuple[tuple[str, str, str], float]],
                 three: list[tuple[tuple[str, str, str], float]]) -> None:
        self._two, self._three = two, three

    def collect(self):  # type: ignore[no-untyped-def]
        pairs = BulkGauge("bulk_pairs", 'pairs "of" labels\\ per\nrow', ["topic", "partition"])
        for (a, b, _), v in self._two:
            pairs.add_metric([a, b], v)
        yield pairs
        triples = BulkGauge("bulk_triples", "three labels", ["group", "topic", "partition"])
        for labels, v in self._three:
            triples.add_metric(list(labels), v)
        yield triples


def _registry(two: list, three: list) -> CollectorRegistry:  # type: ignore[type-arg]
    registry = CollectorRegistry(auto_describe=True)  # as the broker's
    Counter("plain_requests", "Requests", ["api"], registry=registry).labels("x").inc(3)
    Histogram("plain_seconds", "Seconds", registry=registry).observe(0.2)
    registry.register(_Rows(two, three))
    return registry


@settings(max_examples=60, deadline=None)
@given(two=rows, three=rows)
def test_render_writes_what_the_encoders_write(two: list, three: list) -> None:  # type: ignore[type-arg]
    registry = _registry(two, three)
    for encoder in (generate_latest, openmetrics_latest):
        expected = encoder(registry)
        got = render(registry, encoder)
        # The bulk families come after the others; the encoders' own order differs
        # only in where they stand, so compare each family's block.
        assert sorted(_blocks(got)) == sorted(_blocks(expected))
        assert got.endswith(b"# EOF\n") == expected.endswith(b"# EOF\n")


def _blocks(body: bytes) -> list[bytes]:
    """The body cut at each ``# HELP`` line: one block per family."""
    text = body.removesuffix(b"# EOF\n")
    return [b"# HELP" + block for block in text.split(b"# HELP") if block]


def test_a_restricted_scrape_reads_bulk_families_sample_by_sample() -> None:
    registry = _registry([(("t", "0", ""), 5)], [])
    restricted = registry.restricted_registry(["bulk_pairs"])
    assert render(restricted, generate_latest) == generate_latest(restricted)
    assert b'bulk_pairs{partition="0",topic="t"} 5.0' in generate_latest(restricted)
    assert registry.get_sample_value("bulk_pairs", {"topic": "t", "partition": "0"}) == 5


def test_a_broker_of_many_partitions_renders_the_same() -> None:
    figures = [PartitionFigures(f"t{t}", p, 10 + p, 1, 9 + p, 4096 * p)
               for t in range(20) for p in range(50)]
    lags = [LagFigure('g"1', f"t{t}", p, p) for t in range(20) for p in range(50)]
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BrokerView(lambda: figures, lambda: lags,
                                 lambda: StorageFigures(1, 2, 3, 4, 5, 6, 7, 8)))
    for encoder in (generate_latest, openmetrics_latest):
        assert sorted(_blocks(render(registry, encoder))) == sorted(_blocks(encoder(registry)))


def test_the_storage_figures_start_with_an_engine_s_work_figures() -> None:
    """The broker sums each engine's ``WorkFigures`` field by field into
    ``StorageFigures`` by position (``SentinelApp._storage``)."""
    names = [f.name for f in dataclasses.fields(StorageFigures)]
    assert names[: len(WorkFigures._fields)] == list(WorkFigures._fields)
