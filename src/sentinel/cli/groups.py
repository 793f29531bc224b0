"""``sentinel-cli groups``: list consumer groups, or describe one.

    sentinel-cli groups                 (or -list): every group, its state and size
    sentinel-cli groups -describe G     members and their assignment; per partition the
                                        committed offset, log end offset and lag

A group the broker knows nothing of is an error ("unknown group"), not an empty table.
"""

from __future__ import annotations

import click

from sentinel.cli.common import admin_client, broker_options
from sentinel.cli.errors import CliError, CliUsageError
from sentinel.cli.output import Output
from sentinel.cli.tables import group_dict, group_view, groups_dict, groups_view
from sentinel.client.types import GroupDescription

__all__ = ["groups", "is_unknown"]


def is_unknown(group: GroupDescription) -> bool:
    """Whether the broker knows nothing of the group (it answers "Dead", empty)."""
    return group.state.lower() == "dead" and not group.members and not group.lag


@click.command("groups")
@broker_options
@click.option("--list", "list_", is_flag=True, help="List every group (the default).")
@click.option("--describe", metavar="GROUP", default=None, help="Show a group's members and lag.")
def groups(broker: str, json_mode: bool, list_: bool, describe: str | None) -> None:
    """List consumer groups, or describe one."""
    if list_ and describe is not None:
        raise CliUsageError("-list and -describe conflict: give one action per run")
    out = Output(json_mode=json_mode)
    with admin_client(broker) as admin:
        if describe is None:
            found = admin.list_groups()
            out.result(groups_dict(found), groups_view(found))
            return
        group = admin.describe_group(describe)
    if is_unknown(group):
        raise CliError(f"unknown group {describe!r}")
    out.result(group_dict(group), group_view(group))
