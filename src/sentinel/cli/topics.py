"""``sentinel-cli topics``: list, describe, create, delete, alter topics, delete records.

    sentinel-cli topics -list                      (the default)
    sentinel-cli topics -describe events
    sentinel-cli topics -create events -partitions 3 [-replication-factor 1]
                        [-config retention.ms=86400000 -config cleanup.policy=compact]
    sentinel-cli topics -delete events
    sentinel-cli topics -alter events -partitions 6     (partitions only grow)
    sentinel-cli topics -alter events -config retention.ms=3600000 [-delete-config K]
    sentinel-cli topics -delete-records events -partition 0 -before 1000
    sentinel-cli topics -reassign events -partition 0 -replicas 2,3   (a cluster)
    sentinel-cli topics -reassignments                  (the moves under way)

One action per run. ``-describe`` shows each partition's leader, replicas, log start
and end offsets, high watermark and size, and the topic's configs.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from sentinel.cli.common import admin_client, broker_options
from sentinel.cli.errors import CliUsageError
from sentinel.cli.output import Output, human_count
from sentinel.cli.params import CONFIG, config_dict
from sentinel.cli.tables import topic_dict, topic_view, topics_dict, topics_view
from sentinel.client import Admin

__all__ = ["TopicAction", "choose_action", "topics"]


@dataclass(frozen=True, slots=True)
class TopicAction:
    """The one thing a ``topics`` run does: ``verb`` on ``name`` (None for list)."""

    verb: str  # list | describe | create | delete | alter | delete-records | reassign
    #          | reassignments
    name: str | None = None


def choose_action(
    *,
    list_: bool,
    describe: str | None,
    create: str | None,
    delete: str | None,
    alter: str | None,
    partitions: int | None,
    replication_factor: int | None,
    configs: tuple[tuple[str, str], ...],
    delete_records: str | None = None,
    delete_configs: tuple[str, ...] = (),
    partition: int | None = None,
    before: int | None = None,
    reassign: str | None = None,
    replicas: tuple[int, ...] | None = None,
    reassignments: bool = False,
) -> TopicAction:
    """The action the flags ask for; ``CliUsageError`` when they ask for several or misfit."""
    given = [
        TopicAction(verb, name)
        for verb, name in (
            ("describe", describe),
            ("create", create),
            ("delete", delete),
            ("alter", alter),
            ("delete-records", delete_records),
            ("reassign", reassign),
        )
        if name is not None
    ]
    if list_:
        given.insert(0, TopicAction("list"))
    if reassignments:
        given.append(TopicAction("reassignments"))
    if len(given) > 1:
        names = " and ".join(f"-{a.verb}" for a in given)
        raise CliUsageError(f"{names} conflict: give one action per run")
    action = given[0] if given else TopicAction("list")
    if action.verb != "create" and replication_factor is not None:
        raise CliUsageError("-replication-factor goes with -create")
    if action.verb not in ("create", "alter") and configs:
        raise CliUsageError("-config goes with -create or -alter")
    if action.verb != "alter" and delete_configs:
        raise CliUsageError("-delete-config goes with -alter")
    if action.verb not in ("create", "alter") and partitions is not None:
        raise CliUsageError("-partitions goes with -create or -alter")
    if action.verb == "alter" and partitions is None and not configs and not delete_configs:
        raise CliUsageError(
            "-alter needs -partitions N (the new total), -config k=v or -delete-config k"
        )
    if action.verb == "delete-records":
        if partition is None or before is None:
            raise CliUsageError("-delete-records needs -partition P and -before OFFSET")
    elif before is not None:
        raise CliUsageError("-before goes with -delete-records")
    if action.verb == "reassign":
        if partition is None or not replicas:
            raise CliUsageError("-reassign needs -partition P and -replicas B1,B2,...")
    elif replicas is not None:
        raise CliUsageError("-replicas goes with -reassign")
    elif partition is not None and action.verb != "delete-records":
        raise CliUsageError("-partition goes with -delete-records or -reassign")
    if action.name is not None and not action.name.strip():
        raise CliUsageError(f"-{action.verb} needs a topic name")
    return action


@click.command("topics")
@broker_options
@click.option("--list", "list_", is_flag=True, help="List every topic (the default).")
@click.option(
    "--describe", metavar="NAME", default=None, help="Show a topic's partitions and configs."
)
@click.option("--create", metavar="NAME", default=None, help="Create a topic.")
@click.option("--delete", metavar="NAME", default=None, help="Delete a topic and its records.")
@click.option(
    "--alter",
    metavar="NAME",
    default=None,
    help="Grow a topic (-partitions) or change its configs (-config, -delete-config).",
)
@click.option(
    "--delete-records",
    metavar="NAME",
    default=None,
    help="Delete a partition's records below an offset (with -partition and -before).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Partitions of the new topic (-create; default: the broker's), or the new total (-alter).",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1),
    default=None,
    help="Copies of each partition (-create). [default: the broker's]",
)
@click.option(
    "--config",
    "configs",
    callback=CONFIG,
    metavar="KEY=VALUE",
    multiple=True,
    help="A topic config of -create or -alter, key=value; repeat for more.",
)
@click.option(
    "--delete-config",
    "delete_configs",
    metavar="KEY",
    multiple=True,
    help="A topic config -alter removes (back to the broker's default); repeatable.",
)
@click.option(
    "--partition",
    type=click.IntRange(min=0),
    default=None,
    help="The partition of -delete-records or -reassign.",
)
@click.option(
    "--reassign",
    metavar="NAME",
    default=None,
    help="Move a partition's replicas to the brokers of -replicas (a cluster; with -partition).",
)
@click.option(
    "--replicas",
    callback=lambda _ctx, _param, value: None if value is None else _node_ids(value),
    metavar="B1,B2,...",
    default=None,
    help="The broker ids -reassign moves the partition to; the first is the preferred leader.",
)
@click.option(
    "--reassignments", is_flag=True, help="List the replica moves under way (a cluster)."
)
@click.option(
    "--before",
    type=click.IntRange(min=-1),
    default=None,
    metavar="OFFSET",
    help="-delete-records deletes the records below OFFSET (-1: all of them).",
)
def topics(  # noqa: PLR0917 - click passes every option
    broker: str,
    json_mode: bool,
    list_: bool,
    describe: str | None,
    create: str | None,
    delete: str | None,
    alter: str | None,
    partitions: int | None,
    replication_factor: int | None,
    configs: tuple[tuple[str, str], ...],
    delete_records: str | None,
    delete_configs: tuple[str, ...],
    partition: int | None,
    before: int | None,
    reassign: str | None,
    replicas: tuple[int, ...] | None,
    reassignments: bool,
) -> None:
    """List, describe, create, delete or alter topics, or delete a partition's records."""
    action = choose_action(
        list_=list_,
        describe=describe,
        create=create,
        delete=delete,
        alter=alter,
        partitions=partitions,
        replication_factor=replication_factor,
        configs=configs,
        delete_records=delete_records,
        delete_configs=delete_configs,
        partition=partition,
        before=before,
        reassign=reassign,
        replicas=replicas,
        reassignments=reassignments,
    )
    try:
        config = config_dict(configs)
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    out = Output(json_mode=json_mode)
    name = action.name or ""
    with admin_client(broker) as admin:
        if action.verb == "list":
            found = admin.list_topics().values()
            out.result(topics_dict(found), topics_view(found))
        elif action.verb == "describe":
            topic = admin.describe_topic(name)
            out.result(topic_dict(topic), topic_view(topic))
        elif action.verb == "create":
            # 0: the broker's default
            topic = admin.create_topic(
                name,
                -1 if partitions is None else partitions,  # -1: the broker's default
                replication_factor or -1,
                config,
            )
            count = human_count(len(topic.partitions), "partition")
            out.result({"created": topic_dict(topic)}, f"created topic {topic.name} ({count})")
        elif action.verb == "delete":
            admin.delete_topic(name)
            out.result({"deleted": name}, f"deleted topic {name}")
        elif action.verb == "delete-records":
            assert partition is not None and before is not None
            start = admin.delete_records(name, partition, before)
            out.result(
                {"topic": name, "partition": partition, "log_start_offset": start},
                f"deleted the records of {name}/{partition} below offset {start}",
            )
        elif action.verb == "reassign":
            assert partition is not None and replicas
            admin.reassign_partition(name, partition, replicas)
            target = ",".join(map(str, replicas))
            out.result(
                {"topic": name, "partition": partition, "target": list(replicas)},
                f"moving {name}/{partition} to brokers {target} "
                "(done when -reassignments no longer lists it)",
            )
        elif action.verb == "reassignments":
            moves = admin.list_partition_reassignments()
            rows = [
                {"topic": t, "partition": p, "replicas": list(now), "target": list(target)}
                for (t, p), (now, target) in sorted(moves.items())
            ]
            lines = [
                f"{r['topic']}/{r['partition']}: replicas {r['replicas']} -> {r['target']}"
                for r in rows
            ]
            out.result({"reassignments": rows}, "\n".join(lines) or "no moves under way")
        else:
            _alter(
                out,
                admin,
                name,
                partitions=partitions,
                config=config,
                delete_configs=delete_configs,
            )


def _node_ids(text: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(item) for item in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of broker ids like 1,2,3") from None
    return ids


def _alter(
    out: Output,
    admin: Admin,
    name: str,
    *,
    partitions: int | None,
    config: dict[str, str],
    delete_configs: tuple[str, ...],
) -> None:
    changes = []
    if config or delete_configs:
        topic = admin.alter_topic_configs(name, config, delete_configs)
        changed = [f"{k}={v}" for k, v in config.items()] + [f"-{k}" for k in delete_configs]
        changes.append(f"configs {', '.join(changed)}")
    if partitions is not None:
        topic = admin.create_partitions(name, partitions)
        changes.append(f"now has {human_count(len(topic.partitions), 'partition')}")
    out.result({"altered": topic_dict(topic)}, f"topic {topic.name}: {'; '.join(changes)}")
