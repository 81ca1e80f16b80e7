"""The RP lane: a sign-in's two RP requests served from protocol callbacks, off
aiohttp's per-request machinery, on the broker's one port.

Why: measured on this machine, aiohttp spends about 0.13 ms of CPU on each request
beyond what the work needs (a hello-world handler, 1,500 requests/s: 0.173 ms a
request through aiohttp, 0.043 ms through a plain protocol), and a sign-in makes one
or two RP requests. The device sockets left aiohttp after their handshake for the
same reason (broker/device_ws.py).

How: every connection starts here. `POST /v1/challenges` and `GET /v1/challenges/{id}`
in the plain form broker/http_head.py accepts are answered by the same code as
through aiohttp (api_stream.created and stream, api.challenge_view, problems.problem_for),
with the same limits: the head within `Timeouts.head_s`, the body within `body_s`, an
idle connection closed after `keepalive_s`, a 408 problem when a limit is missed. A
request whose head comes without its body has its API key judged at once, as aiohttp's
handlers judge it before they read a body: without a valid one it is answered then,
and the connection ends (its unread body would read as the next request). The
first request the lane does not serve (any other path or form) hands the connection to
aiohttp with every byte it sent: the transport gets aiohttp's protocol and the lane is
out of the way for good.

A device's WebSocket upgrade (`GET /v1/device`) is served here too, since 2026-12-07:
through aiohttp, its connection handler, request object, two tasks and four middlewares
came before the socket was taken over (broker/device_ws.py), the largest share of the
broker's CPU for a device's return after a restart that was not the device's own work
(docs/performance.md, section 24). The lane applies the device connect limits
(broker/limits.py: the same buckets, the same 429 problem), hands the socket to a
device connection with the connection's count (broker/connections.py), and writes the
access line aiohttp wrote (101, 0 bytes); an invalid handshake, one with no protocol
version in common and an upgrade during shutdown go to aiohttp, as before. Requests on one connection
are answered in order; bytes that come while one is handled, or while the client reads
none of the answers (writes paused), wait: at most MAX_WAITING, then reading pauses
until no more than that wait. At shutdown idle connections close and busy ones after their
response, as aiohttp does its own. The RP routes are not in a rate-limited class
(broker/limits.py: RP requests carry an API key); the device upgrade is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from protocol import SUBPROTOCOLS

from . import api, api_stream, device_ws, wsframes
from .access_log import DURATION, client_address, duration_ms
from .clock import http_date
from .connections import ConnectionGate, Slot, write_deadline
from .context import NODE
from .http_guard import Timeouts, body_timed_out, head_timed_out
from .http_head import HAND_OFF, MAX_BODY, MAX_HEAD, Head, LaneRequest, parse_head
from .limits import LIMITER, refusal
from .problems import PROBLEM_JSON, ApiError, problem_document, problem_for
from .tasks import spawn

log = logging.getLogger(__name__)

# Bytes a client may send ahead while its request is handled (a pipelined next one).
MAX_WAITING = MAX_HEAD + MAX_BODY
JSON = "application/json; charset=utf-8"  # as aiohttp's json_response says it
PROBLEM = PROBLEM_JSON + "; charset=utf-8"


class Reply:
    """The response to one lane request: one JSON body, or a chunked stream of lines."""

    __slots__ = ("_conn", "close", "complete", "size", "started", "status")

    def __init__(self, conn: LaneConnection, keep_alive: bool) -> None:
        self._conn = conn
        self.close = not keep_alive
        self.started = self.complete = False
        self.status, self.size = 0, 0

    def send(self, status: int, data: Any, headers: dict[str, str] | None = None, ctype: str = JSON) -> None:
        body = orjson.dumps(data)
        head = self._head(status, ctype, headers)
        self._write(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body), gone_ok=True)
        self.complete = True

    def lines(self, status: int, headers: dict[str, str]) -> ReplyLines:
        return ReplyLines(self, status, headers)

    def _head(self, status: int, ctype: str, headers: dict[str, str] | None) -> bytes:
        self.started, self.status = True, status
        self.close = self.close or self._conn.lane.closing or (headers or {}).get("Connection") == "close"
        out = [b"HTTP/1.1 %d %s\r\n" % (status, _phrase(status))]
        out.append(b"Content-Type: %s\r\nDate: %s\r\n" % (ctype.encode(), http_date()))
        for name, value in (headers or {}).items():
            if name.lower() not in ("connection", "content-type"):
                out.append(b"%s: %s\r\n" % (name.encode(), value.encode()))
        if self.close:
            out.append(b"Connection: close\r\n")
        return b"".join(out)

    def _write(self, data: bytes, *, gone_ok: bool = False) -> None:
        transport = self._conn.transport
        if transport is None or transport.is_closing():
            if gone_ok:  # a plain answer to an RP that left: nothing to tell anyone
                return
            raise ConnectionResetError("the RP closed the connection")
        self.size += len(data)
        transport.write(data)


class ReplyLines:
    """api_stream.Lines on a lane connection: a chunked 201, a line per chunk."""

    __slots__ = ("_headers", "_reply", "_status")

    def __init__(self, reply: Reply, status: int, headers: dict[str, str]) -> None:
        self._reply, self._status, self._headers = reply, status, headers

    async def first(self, line: bytes) -> None:
        ctype = self._headers["Content-Type"]
        head = self._reply._head(self._status, ctype, self._headers) + b"Transfer-Encoding: chunked\r\n\r\n"
        self._reply._write(head + _chunk(line))

    async def last(self, line: bytes) -> None:
        self._reply._write((_chunk(line) if line else b"") + b"0\r\n\r\n")
        self._reply.complete = True


Route = Callable[[LaneRequest, Reply], Awaitable[None]]


async def _create(request: LaneRequest, reply: Reply) -> None:
    made = await api_stream.created(request)
    if not made.streamed:
        reply.send(201, made.body)
        return
    await api_stream.stream(request, made, reply.lines(201, api_stream.STREAM_HEADERS))


async def _result(request: LaneRequest, reply: Reply) -> None:
    reply.send(200, await api.challenge_view(request))


ROUTES: dict[str, Route] = {"create": _create, "result": _result}


class Lane:
    """The lane of one listening site: its settings and its open connections."""

    def __init__(
        self,
        app: web.Application,
        timeouts: Timeouts,
        access_log: logging.Logger | None = None,
        gate: ConnectionGate | None = None,
    ) -> None:
        self.app = app
        self.timeouts = timeouts
        self.access_log = access_log
        self.gate = gate  # counts open connections (broker/connections.py)
        self.connections: set[LaneConnection] = set()
        self.closing = False

    def connection(self, fallback: Callable[[Slot | None], asyncio.Protocol]) -> LaneConnection:
        return LaneConnection(self, fallback)

    def close(self) -> None:
        """Shutdown: idle connections close now, busy ones after their response."""
        self.closing = True
        for conn in list(self.connections):
            if not conn.busy and conn.transport is not None:
                conn.transport.close()


# What a connection's one timer is waiting for.
_HEAD, _BODY, _IDLE = "head", "body", "idle"


class LaneConnection(asyncio.Protocol):
    __slots__ = (
        "_eof",
        "_fallback",
        "_key_check",
        "_read_paused",
        "_timer",
        "_timer_kind",
        "_write_paused",
        "_write_timer",
        "buf",
        "busy",
        "lane",
        "remote",
        "slot",
        "transport",
    )

    def __init__(self, lane: Lane, fallback: Callable[[Slot | None], asyncio.Protocol]) -> None:
        self.lane = lane
        self._fallback = fallback  # aiohttp's protocol, made when it is handed the connection
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.slot: Slot | None = None  # the connection's count, handed on with it
        self.buf = bytearray()
        self.busy = False  # a request is being handled
        self._eof = False  # the client half-closed: answer what it sent, then close
        self._key_check: LaneRequest | None = None  # the request whose body is awaited, its key judged
        self._read_paused = self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._write_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.lane.gate is not None:
            self.slot = self.lane.gate.admit(transport)
            if self.slot is None:
                return  # refused: the transport has the refusal's protocol now
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as aiohttp does
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        self.lane.connections.add(self)
        self._arm(_HEAD, self.lane.timeouts.head_s)  # a connection that sends nothing is closed too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lane.connections.discard(self)
        self._disarm()
        self._write_resumed()
        if self.slot is not None:
            self.slot.release()
        self.transport = None  # a handler still running writes nothing more

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()  # (which takes nothing while writes are paused)
        # Reading pauses while more than MAX_WAITING bytes wait, and resumes (_next) once
        # no more do. It paused only while a request was in hand, and _next resumed it at
        # every answer: pipelined requests answered at once (a 401, a 404) kept the lane
        # reading as fast as they came, and while the client read none of the answers
        # (writes paused) nothing was taken off the buffer at all. A client with no key
        # had a broker buffer 120 MB in 3 s on loopback, until the write timeout.
        if len(self.buf) > MAX_WAITING and not self._read_paused and self.transport is not None:
            self.transport.pause_reading()
            self._read_paused = True

    def eof_received(self) -> bool:
        """The client shut down its sending side after its request (`nc -N`, scripts,
        some HTTP/1.0 tools): its requests are still answered, then the connection is
        closed (asyncio's default, closing now, dropped the answer unsent)."""
        self._eof = True
        if not self.busy:
            self._next()  # a whole request is answered; an incomplete one ends with the connection
        return True

    def pause_writing(self) -> None:
        self._write_paused = True  # no next request is read until the client reads ours
        if self._write_timer is None:
            self._write_timer = write_deadline(self.transport, self.lane.timeouts.write_s, self.lane.gate)

    def resume_writing(self) -> None:
        self._write_resumed()
        if not self.busy:
            self._next()

    def _write_resumed(self) -> None:
        self._write_paused = False
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # -- requests ---------------------------------------------------------------

    def _next(self) -> None:
        """With no request in hand: start on what the buffer holds, or wait for more."""
        transport = self.transport
        if transport is None or self._write_paused:
            return
        if len(self.buf) <= MAX_WAITING:
            self._resume_reading(transport)
        if not self.buf:
            if self.lane.closing or self._eof:
                transport.close()
            elif self._timer_kind != _HEAD:  # (a new connection's head timer stays)
                self._arm(_IDLE, self.lane.timeouts.keepalive_s)
            return
        head = parse_head(self.buf)
        if head is None:
            if self._eof:  # the rest of the head never comes
                transport.close()
            elif self._timer_kind != _HEAD:  # the first bytes of a request head
                self._arm(_HEAD, self.lane.timeouts.head_s)
            return
        if head is HAND_OFF:
            self._hand_off(transport)
            return
        end = head.length + head.content_length
        if len(self.buf) < end:
            if self._eof:  # nor the rest of the body
                transport.close()
                return
            if self._timer_kind != _BODY:
                self._arm(_BODY, self.lane.timeouts.body_s)
            if self._key_check is None:
                self._check_key(head)
            return
        if head.route == "device":
            self._upgrade(transport, head)
            return
        body = bytes(self.buf[head.length : end])
        del self.buf[:end]
        self._key_check = None
        self._disarm()
        self.busy = True
        # Read once per request for the access log's duration (as aiohttp reads its loop's clock).
        spawn(self._serve(LaneRequest(head, body, self.lane.app, self.remote, self.slot), time.monotonic()))

    def _resume_reading(self, transport: asyncio.Transport) -> None:
        if self._read_paused:
            transport.resume_reading()
            self._read_paused = False

    async def _serve(self, request: LaneRequest, started: float) -> None:
        reply = Reply(self, request.head.keep_alive)
        inflight = self.lane.app[NODE].inflight  # a stopping node finishes these first
        inflight.enter()
        try:
            await ROUTES[request.head.route](request, reply)
        except Exception as exc:  # noqa: BLE001 - mapped as problems.problem_middleware maps them
            parts = problem_for(exc, request.method, request.path, request.remote)
            if reply.started or parts is None:
                reply.close = True  # a response began: the connection cannot carry on
            else:
                status, code, detail, headers, extra = parts
                reply.send(status, problem_document(status, code, detail, extra=extra), headers, PROBLEM)
        finally:
            inflight.leave()
            self._finished(request, reply, started)

    def _finished(self, request: LaneRequest, reply: Reply, started: float) -> None:
        self.busy = False
        if self.lane.access_log is not None:
            _access(self.lane.access_log, request, reply, duration_ms(time.monotonic() - started))
        if self.transport is None:
            return
        if reply.close or not reply.complete:
            self.transport.close()
            return
        self._next()

    def _check_key(self, head: Head) -> None:
        """A request whose head came without its body (most clients send both at once,
        which never comes here): its API key is judged now, so that a request without a
        valid one is refused at once rather than after the body, or the body timeout."""
        request = LaneRequest(head, b"", self.lane.app, self.remote, self.slot)
        self._key_check = request
        spawn(self._refuse_unauthorized(request, time.monotonic()))

    async def _refuse_unauthorized(self, request: LaneRequest, started: float) -> None:
        try:
            await api.authenticate(request)  # (a cache hit for a key in use)
            return  # valid: the request is served once its body is in
        except ApiError as exc:  # 401, or 400 for two Authorization headers
            refusal = exc
        except Exception as exc:  # noqa: BLE001 - Redis trouble: judged again with the body (503)
            log.debug("API key of %s not checked before its body: %s", self.remote, exc)
            return
        transport = self.transport
        if transport is None or self._key_check is not request:
            return  # gone, or its body came meanwhile: answered in full as any request
        self._key_check = None
        self._disarm()
        parts = problem_for(refusal, request.method, request.path, request.remote)
        assert parts is not None  # (an ApiError always maps)
        status, code, detail, headers, _extra = parts
        # The body was not read, and would read as the next request: the connection
        # ends after this answer. The client may be sending that body still, so the
        # end lingers (as a refused connection's does): a close now could reset the
        # connection before the client read the answer.
        reply = Reply(self, keep_alive=False)
        reply.send(status, problem_document(status, code, detail), headers, PROBLEM)
        if self.lane.access_log is not None:
            _access(self.lane.access_log, request, reply, duration_ms(time.monotonic() - started))
        self.lane.connections.discard(self)
        self.transport, self.buf = None, bytearray()
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        if self.lane.gate is None:
            transport.close()
        else:
            self.lane.gate.linger(transport)

    def _upgrade(self, transport: asyncio.Transport, head: Head) -> None:
        """A device's WebSocket upgrade (GET /v1/device): the per-address and per-node
        connect limits, then the socket goes to its device connection, as through aiohttp
        (broker/device_ws.py device_socket) but without its connection handler, request,
        tasks and middlewares for every device that connects. A handshake that is not
        valid, one with no protocol version in common (answered with close 4406) and any
        upgrade during shutdown are handed to aiohttp instead, to be answered there as
        before (the limits are checked there too: each upgrade takes one token either way)."""
        started = time.monotonic()
        app = self.lane.app
        request = LaneRequest(head, b"", app, self.remote, self.slot)
        try:
            accept, version = wsframes.handshake(request.headers, SUBPROTOCOLS)
        except wsframes.HandshakeError:
            version = None
        if version is None or self.lane.closing:
            self._hand_off(transport)
            return
        self._disarm()
        wait = app[LIMITER].check("device", request)
        if wait:
            del self.buf[: head.length]
            self.busy = True  # (as a request served: _finished goes on with the next)
            status, code, detail, headers = refusal("device", wait)
            reply = Reply(self, head.keep_alive)
            reply.send(status, problem_document(status, code, detail), headers, PROBLEM)
            self._finished(request, reply, started)
            return
        self.lane.connections.discard(self)
        self.transport = None
        tail, self.buf = bytes(self.buf[head.length :]), bytearray()
        self._resume_reading(transport)  # (the device connection pauses it as it needs)
        sock = device_ws.new_connection(app)
        # The connection's count goes with it (WsSocket.connection_slot).
        sock.connection_slot, self.slot = self.slot, None
        device_ws.take_over(transport, sock, wsframes.switching_protocols(accept, version), tail)
        if self._eof and not sock.eof_received():
            transport.close()
        if self.lane.access_log is not None:
            reply = Reply(self, keep_alive=False)
            reply.status = 101  # (aiohttp logs the upgrade so: 101, 0 bytes)
            _access(self.lane.access_log, request, reply, duration_ms(time.monotonic() - started))

    def _hand_off(self, transport: asyncio.Transport) -> None:
        """aiohttp serves this connection from here on, from the bytes of this request."""
        self._disarm()
        self.lane.connections.discard(self)
        self.transport = None
        data, self.buf = bytes(self.buf), bytearray()
        self._resume_reading(transport)  # (aiohttp pauses it as it needs)
        handler = self._fallback(self.slot)
        self.slot = None  # aiohttp's handler gives it back
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)
        if self._eof and not handler.eof_received():
            transport.close()

    # -- timers -----------------------------------------------------------------

    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._timed_out)
            self._timer_kind = kind

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_kind = ""

    def _timed_out(self) -> None:
        kind, self._timer, self._timer_kind = self._timer_kind, None, ""
        transport = self.transport
        if transport is None or self.busy:
            return
        timeouts = self.lane.timeouts
        if kind == _HEAD:
            log.debug("closing %s's connection: no request head in %gs", self.remote, timeouts.head_s)
            # An empty buffer at the head timeout: not one byte came since the connection
            # was made (after a request the timer is the idle one, and a head's first bytes
            # stay in the buffer).
            transport.write(head_timed_out(timeouts.head_s, silent=not self.buf))
        elif kind == _BODY:
            refusal = body_timed_out(timeouts.body_s)
            reply = Reply(self, keep_alive=False)
            reply.send(
                refusal.status, problem_document(refusal.status, refusal.code, refusal.detail), None, PROBLEM
            )
        transport.close()


def _access(logger: logging.Logger, request: LaneRequest, reply: Reply, duration: float) -> None:
    """One access log line in access_log.LOG_FORMAT and with the fields aiohttp's lines
    have, so that a request reads the same in the log whichever way it was served."""
    line = f"{request.method} {request.head.target} HTTP/1.1"
    when = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime())
    referer = request.headers.get("Referer", "-")
    agent = request.headers.get("User-Agent", "-")
    client = client_address(request)
    fields = {
        "remote_address": client,
        "request_start_time": when,
        "first_request_line": line,
        "response_status": reply.status,
        "response_size": reply.size,
        "request_header": {"Referer": referer, "User-Agent": agent},
        DURATION: duration,
    }
    logger.info(
        '%s %s "%s" %s %s "%s" "%s" %sms',
        client,
        when,
        line,
        reply.status,
        reply.size,
        referer,
        agent,
        duration,
        extra=fields,
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"
