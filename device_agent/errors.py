"""Agent failures, each one printable as a single line, with the CLI exit code."""

from __future__ import annotations

# Exit codes of pushauth-agent (documented in its --help).
EXIT_OK = 0
EXIT_REFUSED = 1  # the broker refused (token used, request expired, already answered...)
EXIT_USAGE = 2  # bad arguments or input: nothing was sent anywhere
EXIT_UNREACHABLE = 3  # the broker could not be reached, or the connection broke
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head`)


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


class WrongClock(Refused):
    """The broker refused a signed HTTP request as stale: this device's clock is off
    the broker's by more than the broker allows (stale_request). Nothing was used up:
    the same request with the clock set right goes through."""


class RotationTooEarly(Refused):
    """The broker refused a recovery-key rotation (409 conflict) whose ts is not newer
    than `newer_than`: a recovery from the credential, or its last rotation, signed by a
    clock ahead of this device's. Signing again just after it may work
    (recovery_keys.rotate_recovery_keys)."""

    def __init__(self, message: str, *, newer_than: int) -> None:
        super().__init__(message, code="conflict")
        self.newer_than = newer_than


class Unreachable(AgentError):
    """No connection to the broker, or it broke before the answer came."""

    exit_code = EXIT_UNREACHABLE


class InsecureBroker(UsageError):
    """A broker URL without TLS to a host other than this computer (docs/protocol.md,
    section 2.1): refused before connecting, whatever the command."""


# After the broker closes with one of these, a device MAY reconnect (with backoff);
# after any other 4xxx close it MUST NOT resend the same thing by itself
# (docs/protocol.md, section 15): 4429 rate_limited, 4408 auth_timeout.
RETRYABLE_PROTOCOL_CLOSES = frozenset({4429, 4408})


class BrokerClosed(Unreachable):
    """The broker closed the connection with close code `close_code`."""

    def __init__(self, message: str, *, close_code: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.close_code = close_code

    @property
    def final(self) -> bool:
        """A protocol close (4000..4999) that forbids an automatic reconnect."""
        return 4000 <= self.close_code <= 4999 and self.close_code not in RETRYABLE_PROTOCOL_CLOSES
