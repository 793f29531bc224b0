"""``sentinel-cli groups``: list consumer groups, describe, delete one, reset its offsets.

    sentinel-cli groups                 (or -list): every group, its state and size
    sentinel-cli groups -describe G     members and their assignment; per partition the
                                        committed offset, log end offset and lag
    sentinel-cli groups -delete G       a group without members, and its offsets
    sentinel-cli groups -reset-offsets G -topic T [-partition P]
                        -to-earliest | -to-latest | -to-offset N | -to-datetime T
                        | -shift-by N   [-execute]

A group the broker knows nothing of is an error ("unknown group"), not an empty table.
``-reset-offsets`` is a dry run that prints the plan unless ``-execute`` is given, as
kafka-consumer-groups; like Kafka, the broker resets only a group without active
members (its consumers would overwrite the reset with their next commit).
"""

from __future__ import annotations

import click

from sentinel.cli.common import admin_client, broker_options
from sentinel.cli.errors import CliError, CliUsageError
from sentinel.cli.output import Output, human_count
from sentinel.cli.params import parse_time
from sentinel.cli.reset import ResetTarget, moves_dict, moves_view, plan_reset
from sentinel.cli.tables import group_dict, group_view, groups_dict, groups_view
from sentinel.client import Admin, TopicPartition
from sentinel.client.types import GroupDescription

__all__ = ["choose_target", "groups", "is_unknown"]


def is_unknown(group: GroupDescription) -> bool:
    """Whether the broker knows nothing of the group (it answers "Dead", empty)."""
    return group.state.lower() == "dead" and not group.members and not group.lag


def choose_target(
    *,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime: str | None,
    shift_by: int | None,
) -> ResetTarget:
    """The one reset scope asked for; ``CliUsageError`` for none or several."""
    given: list[ResetTarget] = []
    if to_earliest:
        given.append(ResetTarget("earliest"))
    if to_latest:
        given.append(ResetTarget("latest"))
    if to_offset is not None:
        given.append(ResetTarget("offset", to_offset))
    if to_datetime is not None:
        try:
            given.append(ResetTarget("datetime", parse_time(to_datetime)))
        except ValueError as exc:
            raise CliUsageError(f"-to-datetime: {exc}") from None
    if shift_by is not None:
        given.append(ResetTarget("shift", shift_by))
    if len(given) != 1:
        raise CliUsageError(
            "-reset-offsets needs exactly one of -to-earliest, -to-latest, -to-offset N, "
            "-to-datetime T, -shift-by N"
        )
    return given[0]


def _reset(  # noqa: PLR0917 - the command's options
    admin: Admin,
    out: Output,
    group: str,
    topic: str,
    partition: int | None,
    target: ResetTarget,
    execute: bool,
) -> None:
    described = admin.describe_group(group)
    if described.members:
        count = human_count(len(described.members), "active member")
        raise CliError(
            f"group {group!r} has {count} (state {described.state}): offsets can be reset "
            "only while it has none (stop its consumers first)"
        )
    found = admin.describe_topic(topic)
    parts = list(found.partitions)
    if partition is not None:
        if not 0 <= partition < len(parts):
            raise CliError(
                f"topic {topic!r} has {human_count(len(parts), 'partition')}; "
                f"there is no partition {partition}"
            )
        parts = [parts[partition]]
    committed = {
        tp.partition: offset
        for tp, offset in admin.list_group_offsets(group).items()
        if tp.topic == topic
    }
    by_time = None
    if target.kind == "datetime":
        by_time = {
            p.partition: admin.list_offsets(topic, p.partition, target.value).offset for p in parts
        }
    moves = plan_reset(topic, parts, committed, target, by_time)
    if execute:
        admin.alter_group_offsets(
            group, {TopicPartition(m.topic, m.partition): m.new for m in moves}
        )
    out.result(moves_dict(group, moves, execute), moves_view(moves))
    if not out.json_mode:
        if execute:
            out.note(
                f"reset the offsets of group {group} on {human_count(len(moves), 'partition')}"
            )
        else:
            out.note("dry run: nothing changed; add -execute to apply")


@click.command("groups")
@broker_options
@click.option("--list", "list_", is_flag=True, help="List every group (the default).")
@click.option("--describe", metavar="GROUP", default=None, help="Show a group's members and lag.")
@click.option("--delete", metavar="GROUP", default=None, help="Delete a group without members.")
@click.option(
    "--reset-offsets",
    metavar="GROUP",
    default=None,
    help="Plan (or with -execute, apply) new committed offsets for a group without members.",
)
@click.option("--topic", default=None, help="The topic whose offsets -reset-offsets sets.")
@click.option(
    "--partition",
    type=click.IntRange(min=0),
    default=None,
    help="Only this partition (-reset-offsets). [default: every partition]",
)
@click.option("--to-earliest", is_flag=True, help="Reset to the log start offsets.")
@click.option("--to-latest", is_flag=True, help="Reset to the ends of the partitions.")
@click.option("--to-offset", type=int, default=None, metavar="N", help="Reset to offset N.")
@click.option(
    "--to-datetime",
    default=None,
    metavar="TIME",
    help="Reset to the first offset at or after TIME (ISO 8601, UTC unless given; or epoch ms).",
)
@click.option("--shift-by", type=int, default=None, metavar="N", help="Move by N (may be < 0).")
@click.option("--execute", is_flag=True, help="Apply the reset (without it: a dry run).")
def groups(  # noqa: PLR0917 - click passes every option
    broker: str,
    json_mode: bool,
    list_: bool,
    describe: str | None,
    delete: str | None,
    reset_offsets: str | None,
    topic: str | None,
    partition: int | None,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime: str | None,
    shift_by: int | None,
    execute: bool,
) -> None:
    """List consumer groups, describe or delete one, or reset its offsets."""
    actions = [
        name
        for name, given in (
            ("-list", list_),
            ("-describe", describe is not None),
            ("-delete", delete is not None),
            ("-reset-offsets", reset_offsets is not None),
        )
        if given
    ]
    if len(actions) > 1:
        raise CliUsageError(f"{' and '.join(actions)} conflict: give one action per run")
    resetting = reset_offsets is not None
    scoped = to_earliest or to_latest or execute or partition is not None or topic is not None
    if not resetting and (scoped or to_offset is not None or to_datetime or shift_by is not None):
        raise CliUsageError(
            "-topic, -partition, -to-*, -shift-by and -execute go with -reset-offsets"
        )
    out = Output(json_mode=json_mode)
    if reset_offsets is not None:
        if topic is None:
            raise CliUsageError("-reset-offsets needs -topic T")
        target = choose_target(
            to_earliest=to_earliest,
            to_latest=to_latest,
            to_offset=to_offset,
            to_datetime=to_datetime,
            shift_by=shift_by,
        )
        with admin_client(broker) as admin:
            _reset(admin, out, reset_offsets, topic, partition, target, execute)
        return
    with admin_client(broker) as admin:
        if delete is not None:
            admin.delete_group(delete)
            out.result({"deleted": delete}, f"deleted group {delete}")
            return
        if describe is None:
            found = admin.list_groups()
            out.result(groups_dict(found), groups_view(found))
            return
        group = admin.describe_group(describe)
    if is_unknown(group):
        raise CliError(f"unknown group {describe!r}")
    out.result(group_dict(group), group_view(group))
