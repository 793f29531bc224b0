"""Single-dash long options: ``-topic events`` means ``--topic events``.

The original ``sentinel-cli`` (Go's ``flag`` package) spelled every option with one
dash; click wants two. ``normalize_argv`` rewrites the command line before click sees
it, and only for option names the command being parsed declares, so everything else
passes through untouched::

    produce -topic t -message -count   ->  produce --topic t --message -count
                                            (a value is never rewritten)
    consume -partition -1              ->  consume --partition -1
    topics -config=retention.ms=1      ->  topics --config=retention.ms=1
    produce -x                         ->  produce -x    (unknown: click reports it)
    produce -- -topic                  ->  produce -- -topic   (after --: operands)

``hoist_broker`` moves a ``-broker`` given before the subcommand to after it::

    -broker h:1 topics -list           ->  topics --broker h:1 -list

The walk tracks which (sub)command is being parsed, so ``-describe`` is known in
``topics`` and ``groups`` but not in ``produce``. ``CommandSpec`` is a plain value,
built from the click tree by ``spec_from_click``; the rewriting itself is pure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import click

__all__ = ["CommandSpec", "hoist_broker", "normalize_argv", "spec_from_click"]

_BROKER_NAMES = ("-broker", "--broker")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command's long options (name -> takes a value) and its subcommands."""

    options: Mapping[str, bool] = field(default_factory=dict)
    subcommands: Mapping[str, CommandSpec] = field(default_factory=dict)

    def takes_value(self, name: str) -> bool:
        return self.options.get(name, False)


def spec_from_click(command: click.Command) -> CommandSpec:
    """The long options of ``command`` (and, for a group, of each subcommand)."""
    options: dict[str, bool] = {"help": False}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        takes_value = not (param.is_flag or param.count)
        for opt in (*param.opts, *param.secondary_opts):
            if opt.startswith("--"):
                options[opt[2:]] = takes_value
    subcommands: dict[str, CommandSpec] = {}
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            subcommands[name] = spec_from_click(sub)
    return CommandSpec(options, subcommands)


def normalize_argv(args: Sequence[str], spec: CommandSpec) -> list[str]:
    """``args`` with each ``-name`` (or ``-name=value``) of a known long option as ``--name``."""
    out: list[str] = []
    current = spec
    expecting_value = False
    for index, token in enumerate(args):
        if expecting_value:  # the value of the option before: never rewritten
            out.append(token)
            expecting_value = False
            continue
        if token == "--":
            out.extend(args[index:])
            break
        if token.startswith("--"):
            name, eq, _ = token[2:].partition("=")
            expecting_value = current.takes_value(name) and not eq
            out.append(token)
            continue
        if token.startswith("-") and len(token) > 2:
            name, eq, _ = token[1:].partition("=")
            if name in current.options:
                expecting_value = current.takes_value(name) and not eq
                out.append("-" + token)
                continue
        elif not token.startswith("-") and token in current.subcommands:
            current = current.subcommands[token]
        out.append(token)
    return out


def hoist_broker(args: Sequence[str], subcommands: Collection[str]) -> list[str]:
    """``args`` with a ``-broker X`` (``--broker=X``) before the subcommand moved after it."""
    moved: list[str] = []
    head: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token in subcommands:
            return [*head, token, *moved, *args[index + 1 :]]
        name, eq, _ = token.partition("=")
        if name in _BROKER_NAMES:
            if eq:
                moved.append(token)
            elif index + 1 < len(args):
                moved += [token, args[index + 1]]
                index += 1
            else:
                head.append(token)
        else:
            head.append(token)
        index += 1
    return [*head, *moved]
