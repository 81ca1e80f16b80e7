"""A malformed HTTP request is the client's mistake, not the server's.

aiohttp answers one (a NUL in a header, a line over 8 KiB, Content-Length with
Transfer-Encoding, a bad method) with a 400 before any handler runs, and logs it at
ERROR level with a traceback, from `aiohttp.server`; so it does a body it reads after the
answer and cannot decode (Content-Encoding: gzip on junk). Anyone can send such bytes, so
an operator watching for errors saw noise that anyone could make, and a flood of
tracebacks could fill the log. This filter turns those records into one debug line;
every other record of that logger (a real bug in a handler) is kept as it is.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

log = logging.getLogger(__name__)


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            message = str(getattr(exc, "message", "") or exc).strip().splitlines()
            log.debug("refused a malformed request: %s", message[0][:120] if message else exc.code)
            return False
        if isinstance(exc, RequestPayloadError):
            # What is left of a body is read after the answer (lingering close): a body
            # sent with Content-Encoding: gzip that does not inflate fails there, after the
            # page was answered ("Unhandled exception" with a traceback before).
            log.debug("dropped the rest of a request body that could not be read: %s", str(exc).strip()[:120])
            return False
        return True


def install() -> None:
    """Quiet aiohttp's server logger about malformed requests (idempotent)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server.filters):
        server.addFilter(ClientErrorFilter())
