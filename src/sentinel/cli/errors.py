"""How a failure reaches the user: one line on stderr and an exit status.

    0    done
    1    the broker refused, could not be reached, or a record was not stored
    2    the command line is wrong (unknown flag, bad value, conflicting flags)
    130  interrupted (Ctrl-C), except where Ctrl-C is the way to stop (consume -follow)

``explain`` turns the client's exceptions into that line. It says who is wrong: the
broker that cannot be reached, the topic that does not exist, the value the broker
refused. Anything else (a bug) is left to propagate with its traceback.
"""

from __future__ import annotations

from sentinel.client import errors as client_errors
from sentinel.errors import InvalidArgumentError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "CliUsageError",
    "explain",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_UNREACHABLE = (
    client_errors.BrokerUnavailableError,
    client_errors.RequestTimedOutError,
    client_errors.ClientTimeoutError,
)


class CliError(Exception):
    """A failure to report as one line; ``exit_code`` 1 unless said otherwise."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CliUsageError(CliError):
    """The command line is wrong in a way click cannot see (flags that conflict)."""

    exit_code = EXIT_USAGE


def explain(exc: Exception, broker: str) -> CliError | None:
    """The one-line report of an expected failure, or None for an unexpected one."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, client_errors.UnresolvableBrokerError):
        return CliError(f"cannot reach broker at {broker}: the host name does not resolve")
    if isinstance(exc, client_errors.BrokerUnavailableError):
        # gRPC's "failed to connect to all addresses; last error: ...: Connection refused"
        # (some of gRPC's details close with a "]" of their own: not ours to print)
        detail = _first_line(exc.message).rsplit(": ", 1)[-1].strip(" []") or "unavailable"
        return CliError(f"cannot reach broker at {broker}: {detail}")
    if isinstance(exc, _UNREACHABLE):
        return CliError(f"cannot reach broker at {broker}: no answer in time")
    if isinstance(exc, client_errors.SentinelClientError):
        return CliError(_first_line(exc.message or exc.reason or type(exc).__name__))
    if isinstance(exc, InvalidArgumentError):  # the client refused an argument we passed
        return CliUsageError(_first_line(str(exc)))
    return None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line.strip()
