"""What stands between a socket and the RP API: time limits on a request's head and
body, and problem documents (never text/plain, never a traceback) for requests so
broken that aiohttp refuses them before any handler runs (DESIGN invariants 9, 13).

aiohttp's own knobs cover part of it: `keepalive_timeout` closes a connection idle
between requests (and, since aiohttp starts that timer when the connection opens, one
that never sends a byte). But it has no limit on the time to send a request head: a
client that sends one header line a minute held its socket for an hour (the default
keep-alive is 3,630 s), and 300 of them used up a low file-descriptor limit. So the
broker serves through `GuardedRequestHandler`, aiohttp's own handler plus:

- a head timer: armed when a connection opens and when the first byte of a later
  request arrives, stopped when the head is complete; on expiry the client gets a
  408 problem and the connection is closed;
- `handle_error` answering aiohttp's refusals (a head line or field over 8 KiB, too
  many headers, a NUL or other invalid byte in a header, a bad method) with a
  problem document and a debug log line: client behaviour is not a server error.

The body is read by handlers, through `read_body`, with its own time limit (a
client sending one byte a second must not hold a handler either), after they checked
the API key: a request without a valid one is refused without waiting for its body.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from . import metrics
from .bounds import WRITE_TIMEOUT_S, Timeouts
from .connections import ConnectionGate, Slot, write_deadline
from .http_head import LaneRequest
from .problems import ApiError, problem, problem_document

if TYPE_CHECKING:
    from .context import ApiRequest
    from .rp_lane import Lane

log = logging.getLogger(__name__)


TIMEOUTS = web.AppKey("http_timeouts", Timeouts)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a head timer and problem documents for parse
    errors (see the module docstring). It relies on one internal of aiohttp's: the
    handler waits for the next request head on `_waiter`, the very signal aiohttp's
    own keep-alive check uses (and, to see a complete head, its queue of parsed
    messages); tests/test_broker_http_guard.py pins the behaviour."""

    __slots__ = (
        "_answered",
        "_eof",
        "_gate",
        "_head_timeout",
        "_head_timer",
        "_heard",
        "_parsed",
        "_write_timeout",
        "_write_timer",
        "connection_slot",
    )

    def __init__(
        self,
        manager: Any,
        *,
        head_timeout: float,
        write_timeout: float = WRITE_TIMEOUT_S,
        gate: ConnectionGate | None = None,
        slot: Slot | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timeout = write_timeout
        self._write_timer: asyncio.TimerHandle | None = None
        self._gate = gate
        # The connection's count (broker/connections.py): taken here, or by the RP lane
        # that handed the connection over; given back at close, or handed at an upgrade to
        # the device socket, which gives it back once a credential is proven
        # (broker/device_ws.py, _Upgrade.prepare).
        self.connection_slot = slot
        # Requests parsed and answered, and whether the client half-closed: then what it
        # sent is answered before the connection closes (eof_received).
        self._parsed = self._answered = 0
        self._eof = False
        self._heard = False  # any byte received (a connection the RP lane hands over has)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.connection_slot is None and self._gate is not None:
            self.connection_slot = self._gate.admit(transport)
            if self.connection_slot is None:
                return  # refused: the transport has the refusal's protocol now
        super().connection_made(transport)
        self._arm()  # a connection that never completes a head is closed too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._write_disarm()
        if self.connection_slot is not None:
            self.connection_slot.release()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = write_deadline(self.transport, self._write_timeout, self._gate)

    def resume_writing(self) -> None:
        self._write_disarm()
        super().resume_writing()

    def _write_disarm(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def data_received(self, data: bytes) -> None:
        self._heard = True
        queued = len(self._messages)
        super().data_received(data)
        self._parsed += len(self._messages) - queued  # (nothing takes them meanwhile)
        if self._messages:
            self._disarm()  # a complete head was parsed
        elif data and not self._request_in_progress and not self._upgraded:
            self._arm()  # the first bytes of a request head (no-op if armed already)

    def eof_received(self) -> bool:
        """The client shut down its sending side after its requests (`nc -N`, scripts,
        some HTTP/1.0 tools): they are answered, then the connection is closed, as the
        RP lane does. aiohttp's returns None, so asyncio closed the connection at once
        and `GET /healthz` then a shutdown got nothing back. Counted, not read off
        aiohttp's state: a request taken off its queue may not have started yet."""
        if self._answered >= self._parsed:
            return False  # nothing asked: close now
        self._eof = True  # (a body cut short is waited for until --body-timeout, as any slow one)
        return True

    # The access log's durations. aiohttp times a request by loop.time(), which uvloop
    # keeps in whole milliseconds, cached per turn of the loop: a 0.3 ms request was
    # logged as "0.0ms", a 2.6 ms one as "2.0ms". The monotonic clock instead, as the RP
    # lane's lines use (the same CLOCK_MONOTONIC, so a start aiohttp took elsewhere
    # still compares, to within its millisecond).
    async def _handle_request(self, request: Any, start_time: float | None, request_handler: Any) -> Any:
        started = None if start_time is None else time.monotonic()  # None: no access log
        return await super()._handle_request(request, started, request_handler)

    def log_access(self, request: Any, response: Any, time_: float | None) -> None:
        if self._logging_enabled and self.access_logger is not None and time_ is not None:
            self.access_logger.log(request, response, time.monotonic() - time_)

    async def finish_response(self, request: Any, resp: Any, start_time: float | None) -> Any:
        done = await super().finish_response(request, resp, start_time)
        self._answered += 1
        if self._eof and self._answered >= self._parsed:
            self.close()  # aiohttp's: no next request; closed once this one is done
        return done

    def _waiting_for_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        if self._head_timeout > 0 and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or not self._waiting_for_head():
            return
        peer = transport.get_extra_info("peername")
        log.debug("closing a connection from %s: no complete request head in %gs", peer, self._head_timeout)
        transport.write(head_timed_out(self._head_timeout, silent=not self._heard))
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp reads what is left of a body after the answer (lingering close): a
        compressed body that does not inflate fails there, after a 415 or a 401, and
        aiohttp logged it as an "Unhandled exception" with a traceback at ERROR level,
        for any client that sends `Content-Encoding: gzip` and junk. The client's
        mistake, answered already: a debug line."""
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError):
            log.debug("dropped the rest of a request body that could not be read: %s", exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's refusals before any handler ran (and errors outside our middleware)
        as problem documents. Client mistakes are logged at debug level, without a
        traceback; anything else is a bug of ours and keeps its traceback."""
        if isinstance(exc, HttpProcessingError) or (exc is None and 400 <= status < 500):
            status, code, detail = _refusal(status, exc, message)
            log.debug(
                "refused a request from %s: %s %s", request.remote, status, _hidden(str(exc or message))
            )
        elif isinstance(exc, ConnectionError | RequestPayloadError):
            status, code, detail = 400, "incomplete_request", "the connection ended before the request did"
            log.debug("client %s went away: %s", request.remote, exc)
        elif status == 504:
            code, detail = "timeout", "the request took too long"
            log.warning("request handler timed out: %s %s", request.method, request.path)
        else:
            log.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
            code, detail = "internal", "internal error; the broker logged it"
        if request.writer.output_size > 0:  # a response began already: nothing to add
            raise ConnectionError("response already started")
        resp = problem(status, code, detail)
        resp.force_close()
        return resp


def head_timed_out(timeout: float, *, silent: bool) -> bytes:
    """The whole 408 response to a request head that did not arrive in time.

    `silent`: the connection sent not one byte. Browsers open connections ahead of need
    (preconnect), as do load balancers and the load tester (prewarm), and leave some
    unused: those are no refused requests, so they are counted apart
    (`pushauth_http_silent_connections_total`), not in `pushauth_http_rejected_total`,
    where they would read as hundreds of refusals after every clean run. They still get
    the 408, which tells a client that does reuse one why it was closed."""
    if silent:
        metrics.SILENT_CONNECTIONS.inc()
    body = orjson.dumps(
        problem_document(
            408,
            "request_timeout",
            f"the request head did not arrive within {timeout:g} s",
            counted=not silent,
        )
    )
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/problem+json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def body_timed_out(timeout: float) -> ApiError:
    """The refusal of a request whose body did not arrive in time: 408, and the
    connection is not kept (what is still on its way would read as the next request)."""
    return ApiError(
        408,
        "request_timeout",
        f"the request body did not arrive within {timeout:g} s",
        {"Connection": "close"},
    )


# aiohttp's parse errors quote the bytes they stopped at, which may run through the whole
# head: the Authorization header's API key went into the debug log line and the detail.
_CREDENTIAL = re.compile(r"(?i)(authorization:[ \t]*(?:[!#$%&'*+.^_`|~0-9a-z-]+[ \t]+)?)[^\s'\\]+")


def _hidden(text: str) -> str:
    """`text` with the value of any Authorization header it quotes hidden."""
    return _CREDENTIAL.sub(r"\1[hidden]", text)


def _refusal(status: int, exc: BaseException | None, message: str | None) -> tuple[int, str, str]:
    text = _hidden(str(getattr(exc, "message", "") or message or "bad request"))
    if isinstance(exc, LineTooLong) or "too long" in text.lower() or "too large" in text.lower():
        return 431, "header_too_large", "the request line or a header is too long (at most 8190 bytes each)"
    if isinstance(exc, BadHttpMessage) and "headers" in text.lower() and "many" in text.lower():
        return 431, "header_too_large", "too many headers"
    if status == 400 or isinstance(exc, BadHttpMessage):
        return 400, "bad_request", f"malformed HTTP request: {text[:120]}"
    return status, "http_error", text[:120]


class GuardedSite(web.TCPSite):
    """web.TCPSite serving through GuardedRequestHandler, on host:port or on a listening
    socket that was passed in (`sock`: socket activation, broker/activation.py)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        timeouts: Timeouts,
        sock: socket.socket | None = None,
        lane: Lane | None = None,
        gate: ConnectionGate | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._timeouts = timeouts
        self._gate = gate
        self._sock = sock
        self._lane = lane
        self._handler_kwargs: dict[str, Any] = {}

    def handler_args(self, **kwargs: Any) -> GuardedSite:
        """RequestHandler options (access_log, logger...), as AppRunner would pass them."""
        self._handler_kwargs = kwargs
        return self

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def guarded(slot: Slot | None = None) -> GuardedRequestHandler:
            return GuardedRequestHandler(
                server,
                loop=loop,
                head_timeout=self._timeouts.head_s,
                write_timeout=self._timeouts.write_s,
                keepalive_timeout=self._timeouts.keepalive_s,
                gate=self._gate,
                slot=slot,
                **self._handler_kwargs,
            )

        lane = self._lane

        def make() -> asyncio.Protocol:
            # Every connection starts in the RP lane when there is one; it hands itself
            # to aiohttp at the first request the lane does not serve.
            return guarded() if lane is None else lane.connection(guarded)

        if self._sock is not None:
            # The event loop calls listen() again: without a backlog, asyncio's default
            # of 100 would replace the owner's and overflow when thousands reconnect.
            self._server = await loop.create_server(
                make, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
            )
            return
        self._server = await loop.create_server(
            make,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )

    async def stop(self) -> None:
        await super().stop()
        if self._lane is not None:  # as aiohttp does its idle connections at shutdown
            self._lane.close()


async def read_body(request: ApiRequest, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (else 413), within the body timeout (else
    408, and the connection is not kept). A client that goes away midway raises
    ConnectionError, which problems.problem_middleware logs at debug level. The RP
    lane read its requests' bodies before the handler ran, within the same timeout."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")
    # Bodies are small: none is compressed. Refused rather than read as it came (the
    # lane) or inflated (aiohttp), so that every node reads a body the same way.
    if any(v.strip().lower() != "identity" for v in request.headers.getall("Content-Encoding", [])):
        raise ApiError(415, "unsupported_media_type", "send the body without Content-Encoding")
    if isinstance(request, LaneRequest):
        return request.body
    timeouts = request.app.get(TIMEOUTS) or Timeouts()
    body = b""
    try:
        async with asyncio.timeout(timeouts.body_s):
            while len(body) <= limit and not request.content.at_eof():
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        raise body_timed_out(timeouts.body_s) from None
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")
    return body


def require_json(request: ApiRequest, body: bytes) -> None:
    """A JSON endpoint takes application/json (or a +json type): anything else is 415,
    so a form post or a text/plain "simple request" from a browser page is refused."""
    if not body:
        return
    ctype = request.content_type  # aiohttp: application/octet-stream when absent
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
