"""The access log's client address (the one the limits count, not always the peer's),
and each request's duration.

Behind a load balancer named with `--trusted-proxy`, every request's peer is the balancer;
the limits take the client's address from the X-Forwarded-For the balancer added
(limits.Limiter.client_address). The access log says the same, so a line names whom the
limits counted, in aiohttp's lines and in the RP lane's (broker/rp_lane.py) alike.

Each line ends with how long the request took, in milliseconds (`12.34ms`; the field
`request_duration_ms`, a number): from the moment the broker had the request (aiohttp:
its head; the lane: its whole body) until its response was handed to the connection.
"""

from __future__ import annotations

from typing import Any

from aiohttp.web_log import AccessLogger, KeyMethod

from .limits import LIMITER

REMOTE = "remote_address"  # the key aiohttp gives `%a` in a line's fields
HEALTHZ = "/healthz"
DURATION = "request_duration_ms"  # the key of a line's duration in its fields
# aiohttp's default format and a duration; `%D` (aiohttp: microseconds) is compiled
# below to milliseconds, under DURATION.
LOG_FORMAT = AccessLogger.LOG_FORMAT + " %Dms"


def duration_ms(seconds: float) -> float:
    """A request's duration as its line gives it: milliseconds, to 0.01 ms."""
    return round(seconds * 1000, 2)


def client_address(request: Any) -> str:
    """The client's address of an aiohttp or RP lane request, as the limits see it
    ("-" when unknown, as aiohttp writes it)."""
    try:
        app = request.app
    except (AttributeError, AssertionError):
        # A request aiohttp refused before routing (a malformed head: 400, 431) has no
        # app, and asking for it fails an assertion (AttributeError under -O): the line
        # was a traceback at ERROR instead, one per bad request. Its peer is named.
        app = None
    limiter = app.get(LIMITER) if app is not None else None
    address = limiter.client_address(request) if limiter is not None else request.remote
    return address or "-"


class ClientAccessLogger(AccessLogger):
    """aiohttp's access log (same format and fields) with `%a` from client_address and
    the duration in milliseconds. The broker has no option for another format, so the
    one aiohttp passes (its default) is replaced by LOG_FORMAT."""

    def __init__(self, logger: Any, log_format: str = LOG_FORMAT) -> None:
        super().__init__(logger, LOG_FORMAT)

    def compile_format(self, log_format: str) -> tuple[str, list[KeyMethod]]:
        fmt, methods = super().compile_format(log_format)
        return fmt, [_replaced(k, m) for k, m in methods]


class ChecksQuietAccessLogger(ClientAccessLogger):
    """ClientAccessLogger without the lines of passed health checks (`serve
    --access-log-no-checks`): behind HAProxy, which checks each node twice a second,
    they were half the log. A check answered 503 (the node is out) is still logged."""

    def log(self, request: Any, response: Any, time: float) -> None:
        if request is not None and request.path == HEALTHZ and response.status == 200:
            return
        super().log(request, response, time)


def _replaced(key: Any, method: Any) -> KeyMethod:
    if key == REMOTE:
        return KeyMethod(key, _format_a)
    if key == "request_time_micro":  # %D
        return KeyMethod(DURATION, _format_ms)
    return KeyMethod(key, method)


def _format_a(request: Any, response: Any, time: float) -> str:
    return "-" if request is None else client_address(request)


def _format_ms(request: Any, response: Any, time: float) -> float:
    return duration_ms(time)
