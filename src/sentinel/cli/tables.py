"""Topics and groups as JSON documents (``*_dict``) and as rich tables (``*_view``).

The JSON shapes, one document per command::

    topics -list        {"topics": [TOPIC, ...]}           (by name)
    topics -describe    TOPIC
    TOPIC               {"name", "partitions": [PARTITION...], "replication_factor",
                         "configs": {k: v}, "records", "size_bytes"}
    PARTITION           {"partition", "leader" (-1: none now), "replicas", "isr",
                         "under_replicated", "log_start_offset", "log_end_offset",
                         "high_watermark", "size_bytes"}
    cluster             {"controller_id", "brokers": [{"node_id", "address",
                         "kafka_address", "controller"}]}
    groups              {"groups": [{"group_id", "state", "members"}, ...]}
    groups -describe    {"group_id", "state", "protocol", "generation",
                         "members": [{"member_id", "client_id", "assignment":
                                      [{"topic", "partition"}]}],
                         "partitions": [{"topic", "partition", "member_id",
                                         "committed_offset", "log_end_offset", "lag"}]}

``records`` is the sum over partitions of ``high_watermark - log_start_offset``: the
offsets a consumer can read (records removed by compaction are still counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sentinel.cli.output import human_size
from sentinel.client.types import (
    ClusterMetadata,
    GroupDescription,
    GroupSummary,
    PartitionDescription,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "cluster_dict",
    "cluster_view",
    "group_dict",
    "group_view",
    "groups_dict",
    "groups_view",
    "topic_dict",
    "topic_view",
    "topics_dict",
    "topics_view",
]


def _readable(partitions: Iterable[PartitionDescription]) -> int:
    return sum(max(0, p.high_watermark - p.log_start_offset) for p in partitions)


def _size(partitions: Iterable[PartitionDescription]) -> int:
    return sum(max(0, p.size_bytes) for p in partitions)


def _ints(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values) or "-"


def partition_dict(p: PartitionDescription) -> dict[str, Any]:
    return {
        "partition": p.partition,
        "leader": p.leader,
        "replicas": list(p.replicas),
        "isr": list(p.isr),
        "under_replicated": len(p.isr) < len(p.replicas),
        "log_start_offset": p.log_start_offset,
        "log_end_offset": p.log_end_offset,
        "high_watermark": p.high_watermark,
        "size_bytes": p.size_bytes,
    }


def topic_dict(topic: TopicDescription) -> dict[str, Any]:
    return {
        "name": topic.name,
        "partitions": [partition_dict(p) for p in topic.partitions],
        "replication_factor": topic.replication_factor,
        "configs": dict(sorted(topic.configs.items())),
        "records": _readable(topic.partitions),
        "size_bytes": _size(topic.partitions),
    }


def topics_dict(topics: Iterable[TopicDescription]) -> dict[str, Any]:
    return {"topics": [topic_dict(t) for t in sorted(topics, key=lambda t: t.name)]}


def topics_view(topics: Iterable[TopicDescription]) -> RenderableType:
    ordered = sorted(topics, key=lambda t: t.name)
    if not ordered:
        return Text("no topics")
    table = Table(title=None, box=None, pad_edge=False, header_style="bold")
    table.add_column("TOPIC", no_wrap=True)
    table.add_column("PARTITIONS", justify="right")
    table.add_column("REPLICATION", justify="right")
    table.add_column("RECORDS", justify="right")
    table.add_column("SIZE", justify="right")
    for t in ordered:
        table.add_row(
            t.name,
            str(len(t.partitions)),
            str(t.replication_factor),
            str(_readable(t.partitions)),
            human_size(_size(t.partitions)),
        )
    return table


def topic_view(topic: TopicDescription) -> RenderableType:
    head = Text.assemble(
        ("Topic: ", "bold"),
        topic.name,
        f"   partitions: {len(topic.partitions)}",
        f"   replication factor: {topic.replication_factor}",
        f"   records: {_readable(topic.partitions)}",
        f"   size: {human_size(_size(topic.partitions))}",
    )
    parts = Table(box=None, pad_edge=False, header_style="bold")
    for name in (
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "IN SYNC",
        "LOG START",
        "LOG END",
        "HIGH WATERMARK",
    ):
        parts.add_column(name, justify="right")
    parts.add_column("SIZE", justify="right")
    for p in topic.partitions:
        parts.add_row(
            str(p.partition),
            str(p.leader) if p.leader >= 0 else "none",
            _ints(p.replicas),
            _ints(p.isr),
            f"{len(p.isr)}/{len(p.replicas)}",
            str(p.log_start_offset),
            str(p.log_end_offset),
            str(p.high_watermark),
            human_size(max(0, p.size_bytes)),
        )
    configs = Table(box=None, pad_edge=False, header_style="bold")
    configs.add_column("CONFIG", no_wrap=True)
    configs.add_column("VALUE")
    for key, value in sorted(topic.configs.items()):
        configs.add_row(key, value)
    return Group(head, Text(""), parts, Text(""), configs)


def groups_dict(groups: Iterable[GroupSummary]) -> dict[str, Any]:
    return {
        "groups": [
            {"group_id": g.group_id, "state": g.state, "members": g.members}
            for g in sorted(groups, key=lambda g: g.group_id)
        ]
    }


def groups_view(groups: Iterable[GroupSummary]) -> RenderableType:
    ordered = sorted(groups, key=lambda g: g.group_id)
    if not ordered:
        return Text("no groups")
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("GROUP", no_wrap=True)
    table.add_column("STATE")
    table.add_column("MEMBERS", justify="right")
    for g in ordered:
        table.add_row(g.group_id, g.state, str(g.members))
    return table


def _owners(group: GroupDescription) -> dict[TopicPartition, str]:
    return {tp: m.member_id for m in group.members for tp in m.assignment}


def _partition_rows(group: GroupDescription) -> list[dict[str, Any]]:
    """One row per partition that is committed or assigned, by topic and partition."""
    owners = _owners(group)
    rows: dict[TopicPartition, dict[str, Any]] = {}
    for lag in group.lag:
        tp = TopicPartition(lag.topic, lag.partition)
        rows[tp] = {
            "topic": lag.topic,
            "partition": lag.partition,
            "member_id": owners.get(tp),
            "committed_offset": lag.committed_offset,
            "log_end_offset": lag.log_end_offset,
            "lag": lag.lag,
        }
    for tp, member in owners.items():
        if tp not in rows:
            rows[tp] = {
                "topic": tp.topic,
                "partition": tp.partition,
                "member_id": member,
                "committed_offset": -1,
                "log_end_offset": None,
                "lag": None,
            }
    return [rows[tp] for tp in sorted(rows)]


def group_dict(group: GroupDescription) -> dict[str, Any]:
    return {
        "group_id": group.group_id,
        "state": group.state,
        "protocol": group.protocol,
        "generation": group.generation,
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "assignment": [
                    {"topic": tp.topic, "partition": tp.partition} for tp in m.assignment
                ],
            }
            for m in group.members
        ],
        "partitions": _partition_rows(group),
    }


def _dash(value: int | None, *, negative_is_none: bool = False) -> str:
    if value is None or (negative_is_none and value < 0):
        return "-"
    return str(value)


def group_view(group: GroupDescription) -> RenderableType:
    head = Text.assemble(
        ("Group: ", "bold"),
        group.group_id,
        f"   state: {group.state}",
        f"   protocol: {group.protocol or '-'}",
        f"   generation: {group.generation}",
        f"   members: {len(group.members)}",
    )
    members = Table(box=None, pad_edge=False, header_style="bold")
    members.add_column("MEMBER", no_wrap=True)
    members.add_column("CLIENT")
    members.add_column("ASSIGNMENT")
    for m in group.members:
        assigned = ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(m.assignment))
        members.add_row(m.member_id, m.client_id, assigned or "-")
    parts = Table(box=None, pad_edge=False, header_style="bold")
    parts.add_column("TOPIC", no_wrap=True)
    for name in ("PARTITION", "COMMITTED", "LOG END", "LAG"):
        parts.add_column(name, justify="right")
    parts.add_column("MEMBER", no_wrap=True)
    for row in _partition_rows(group):
        parts.add_row(
            row["topic"],
            str(row["partition"]),
            _dash(row["committed_offset"], negative_is_none=True),
            _dash(row["log_end_offset"]),
            _dash(row["lag"]),
            row["member_id"] or "-",
        )
    blocks: list[RenderableType] = [head]
    if group.members:
        blocks += [Text(""), members]
    if group.lag or any(m.assignment for m in group.members):
        blocks += [Text(""), parts]
    return Group(*blocks)


def cluster_dict(cluster: ClusterMetadata) -> dict[str, Any]:
    return {
        "controller_id": cluster.controller_id,
        "brokers": [
            {
                "node_id": b.node_id,
                "address": b.address,
                "kafka_address": b.kafka_address,
                "controller": b.node_id == cluster.controller_id,
            }
            for b in sorted(cluster.brokers, key=lambda b: b.node_id)
        ],
    }


def cluster_view(cluster: ClusterMetadata) -> RenderableType:
    """The brokers; the controller's leader is marked."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("BROKER", justify="right")
    table.add_column("ADDRESS (gRPC)", no_wrap=True)
    table.add_column("KAFKA ADDRESS", no_wrap=True)
    table.add_column("ROLE")
    for b in sorted(cluster.brokers, key=lambda b: b.node_id):
        role = "controller, coordinator" if b.node_id == cluster.controller_id else ""
        table.add_row(str(b.node_id), b.address, b.kafka_address or "-", role)
    if cluster.controller_id < 0:
        return Group(table, Text(""), Text("no controller now (an election is under way)"))
    return table
