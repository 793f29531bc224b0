"""``sentinel-cli``: produce, consume, and manage topics and groups from a shell.

    sentinel-cli produce -topic events -message "Hello, World!" -count 10
    sentinel-cli consume -topic events -from-beginning -max-messages 100
    sentinel-cli topics -list | -describe T | -create T -partitions N | -delete T | -alter T
                        | -delete-records T -partition P -before O
    sentinel-cli groups [-describe G | -delete G | -reset-offsets G -topic T -to-... -execute]
    sentinel-cli cluster                 (brokers, addresses, the controller/coordinator)

Options are spelled as the original CLI did, with one dash (``-topic``); two dashes
work too. Every subcommand takes ``-broker host[:port][,host[:port]...]`` (env ``SENTINEL_BROKER``,
default 127.0.0.1:9092; the port defaults to 9092), also given before the subcommand
(``sentinel-cli -broker h:9092 topics``), and ``-json``. A bare ``sentinel-cli``
prints its help; ``--version`` its version.

The shell around the subcommands: normalise the argv (``argv.py``), let click parse
and run, and turn what went wrong into one line on stderr and an exit status
(``errors.py``): 1 when the broker refused or cannot be reached, 2 for a wrong command
line, 130 on Ctrl-C. No traceback for any of those. (A closed stdout pipe, as with
``| head``, is click's to handle: it exits 1 quietly.)
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

import click

import sentinel
from sentinel.cli.argv import hoist_broker, normalize_argv, spec_from_click
from sentinel.cli.cluster import cluster
from sentinel.cli.consume import consume
from sentinel.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError
from sentinel.cli.groups import groups
from sentinel.cli.interrupts import INTERRUPTS
from sentinel.cli.produce import produce
from sentinel.cli.topics import topics

__all__ = ["cli", "main"]

PROG = "sentinel-cli"


@click.group(
    name=PROG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(sentinel.__version__, "--version", prog_name=PROG)
def cli() -> None:
    """Sentinel's command line: produce, consume, and manage topics and consumer groups.

    Options take one dash or two: -topic and --topic are the same. -broker HOST[:PORT]
    may also come before the subcommand.

    Shell completion (bash, zsh, fish): eval "$(_SENTINEL_CLI_COMPLETE=bash_source sentinel-cli)"
    """


cli.add_command(produce)
cli.add_command(consume)
cli.add_command(topics)
cli.add_command(groups)
cli.add_command(cluster)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()
    return code


def _usage_hint(exc: click.UsageError, args: Sequence[str]) -> str:
    message = exc.format_message().strip().splitlines()
    text = message[0] if message else "invalid command line"
    name = getattr(exc, "option_name", None)
    if isinstance(exc, click.NoSuchOption) and name and len(name) == 2:
        # click read "-bogus" as the short options -b -o ...: name the whole word
        word = next((a for a in args if a.startswith(name) and not a.startswith("--")), None)
        if word is not None:
            text = f"no such option: {word.partition('=')[0]}"
    ctx = exc.ctx
    if ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text


def _quiet_streams() -> None:
    """Unencodable characters in a record become '?' rather than a crash."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: the process's); returns the exit status.

    Run as the program (``argv`` None), SIGTERM stops a run as Ctrl-C does: a
    consumer leaves its group, a producer flushes what it has (``interrupts``: the
    long loops stop at a point where the client holds nothing).
    """
    if argv is None:
        _quiet_streams()
        INTERRUPTS.install()
    given = hoist_broker(list(sys.argv[1:] if argv is None else argv), set(cli.commands))
    if not given:  # a bare sentinel-cli: its help
        given = ["--help"]
    args = normalize_argv(given, spec_from_click(cli))
    try:
        result = cli.main(args=args, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        return _fail(_usage_hint(exc, args), EXIT_USAGE)
    except click.exceptions.Abort:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except click.ClickException as exc:  # e.g. a file that cannot be opened
        return _fail(exc.format_message(), EXIT_FAILURE)
    except CliError as exc:
        return _fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
