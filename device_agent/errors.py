"""Agent failures, each one printable as a single line, with the CLI exit code."""

from __future__ import annotations

# Exit codes of pushauth-agent (documented in its --help).
EXIT_OK = 0
EXIT_REFUSED = 1  # the broker refused (token used, request expired, already answered...)
EXIT_USAGE = 2  # bad arguments or input: nothing was sent anywhere
EXIT_UNREACHABLE = 3  # the broker could not be reached, or the connection broke


class AgentError(Exception):
    """Something the user must be told about; `str()` is the one-line message."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # the protocol ErrorCode string, when there is one


class UsageError(AgentError):
    """Bad input from the user (URI, account name, number); nothing was sent."""

    exit_code = EXIT_USAGE


class Refused(AgentError):
    """The broker answered with an `error` frame."""

    exit_code = EXIT_REFUSED


class Unreachable(AgentError):
    """No connection to the broker, or it broke before the answer came."""

    exit_code = EXIT_UNREACHABLE
