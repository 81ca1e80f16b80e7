"""The access log's client address: the one the limits count, not always the peer's.

Behind a load balancer named with `--trusted-proxy`, every request's peer is the balancer;
the limits take the client's address from the X-Forwarded-For the balancer added
(limits.Limiter.client_address). The access log says the same, so a line names whom the
limits counted, in aiohttp's lines and in the RP lane's (broker/rp_lane.py) alike.
"""

from __future__ import annotations

from typing import Any

from aiohttp.web_log import AccessLogger, KeyMethod

from .limits import LIMITER

REMOTE = "remote_address"  # the key aiohttp gives `%a` in a line's fields


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
    """aiohttp's access log (same format and fields) with `%a` from client_address."""

    def compile_format(self, log_format: str) -> tuple[str, list[KeyMethod]]:
        fmt, methods = super().compile_format(log_format)
        return fmt, [KeyMethod(k, _format_a) if k == REMOTE else KeyMethod(k, m) for k, m in methods]


def _format_a(request: Any, response: Any, time: float) -> str:
    return "-" if request is None else client_address(request)
