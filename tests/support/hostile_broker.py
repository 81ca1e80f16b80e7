"""HostileBroker: a compromised broker, made of a real one and a proxy that lies.

The trust model (docs/protocol.md, DESIGN.md invariant 11) says the broker's word
alone never approves a sign-in or plants a key the RP trusts. To show it, this proxy
sits in front of a real broker process (real Redis, real device WebSockets) and can
change anything on the way:

- every RP API request and response is recorded (`exchanges`);
- a rule can change the RP's JSON request before the broker gets it (`rewrite_request`),
  rewrite the broker's JSON before the SDK sees it (`rewrite`), answer in
  the broker's place (`answer`), or answer a new request with a recorded response
  (`replay`);
- a streamed answer (the one-request sign-in, application/x-ndjson) is passed on line
  by line as it comes, each line recorded and open to a rule (`rewrite_stream`);
- the device WebSocket is passed through frame by frame (the subprotocol the device
  offers goes to the broker, the broker's pick comes back), every frame is decoded
  with protocol.codec and recorded, and a rule can replace or drop frames in either
  direction (`on_device_frame`, `on_broker_frame`), e.g. swap the key in `enroll` and
  re-sign what the broker checks with the hello nonce it saw (`DeviceLink.hello`).

The broker builds enrollment links from the request's Host, which the proxy passes
on, so devices enrolled through the proxy keep talking through it.

Like TcpProxy, it runs its own event loop in a thread (ThreadedServer), so a test may block on a CLI
subprocess (an agent talking through the proxy) without stalling it. Rules run in
that thread; they are plain functions. A rule that raises is recorded in `errors`
(the client gets a 500, or the WebSocket closes 1011) and `check()` fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from protocol.codec import decode, encode
from protocol.errors import ProtocolError
from protocol.frames import Frame, Hello

from .ports import LOCALHOST
from .threaded_server import DEVICE_PATH, ThreadedServer

# Answer the SDK in the broker's place: (status, JSON body), or None to ask the broker.
Responder = Callable[["Exchange"], tuple[int, Any] | None]
# The broker's JSON body -> what the SDK gets.
Rewriter = Callable[["Exchange", Any], Any]
# One line of a streamed answer: (exchange, its index from 0, the broker's JSON) -> what the SDK gets.
LineRewriter = Callable[["Exchange", int, Any], Any]
NDJSON = "application/x-ndjson"
# A device frame in flight -> the frame (or raw bytes) passed on, or None to drop it.
FrameRule = Callable[[Frame, "DeviceLink"], Frame | bytes | None]

# Headers that belong to one hop (RFC 9110 7.6.1) or that the proxy sets itself.
_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Content-Encoding",
        "Accept-Encoding",
    )
)
_WS_HEADERS = frozenset(
    h.lower()
    for h in (
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
    )
)
_UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=300)  # long-polls hold up to 60 s


@dataclass
class Exchange:
    """One RP API request through the proxy and the response the client got."""

    method: str
    path: str  # the raw (still percent-encoded) path, without the query
    query: dict[str, str]
    request_body: bytes
    match: dict[str, str] = field(default_factory=dict)  # named groups of the rule's pattern
    status: int = 0
    response_body: bytes = b""
    # What the real broker answered; None when a rule answered in its place.
    upstream_status: int | None = None
    upstream_body: bytes | None = None
    rules: list[str] = field(default_factory=list)  # which kinds of rule touched it
    # A streamed answer: each line the client got, parsed, in order.
    lines: list[Any] = field(default_factory=list)

    @property
    def request_json(self) -> Any:
        return _json(self.request_body)

    @property
    def json(self) -> Any:
        """The body the client got, parsed."""
        return _json(self.response_body)

    @property
    def upstream_json(self) -> Any:
        return None if self.upstream_body is None else _json(self.upstream_body)

    @property
    def forwarded(self) -> bool:
        return self.upstream_status is not None


@dataclass
class FrameRecord:
    sender: Literal["device", "broker"]
    data: bytes  # as received
    frame: Frame | None  # decoded (None: not a valid frame)
    sent: bytes | None  # as passed on (None: dropped)

    @property
    def tampered(self) -> bool:
        return self.sent != self.data


@dataclass
class DeviceLink:
    """One device WebSocket through the proxy: what a frame rule knows of it."""

    subprotocol: str | None = None
    hello: Hello | None = None  # the broker's hello: its nonce is what enroll/authenticate sign
    frames: list[FrameRecord] = field(default_factory=list)
    close: tuple[int | None, str] | None = None  # (code, reason) that ended it, and from whom
    closed_by: str | None = None


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    kind: Literal["answer", "rewrite", "rewrite_line", "rewrite_request"]
    fn: Any


class HostileBroker(ThreadedServer):
    run_timeout = 15.0

    def __init__(self, upstream: str, *, port: int | None = None) -> None:
        super().__init__("hostile-broker", port=port)
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[Exchange] = []
        self.links: list[DeviceLink] = []
        self.errors: list[str] = []
        self._rules: list[_Rule] = []
        self._device_rules: list[FrameRule] = []
        self._broker_rules: list[FrameRule] = []
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sockets: set[web.WebSocketResponse | aiohttp.ClientWebSocketResponse] = set()
        # False: the RP's Accept header loses application/x-ndjson on the way, so the
        # broker answers as one that does not stream (plain JSON, then the long-poll).
        self.streaming = True

    # -- rules (from the test's thread) ------------------------------------------

    def answer(self, method: str, path: str, fn: Responder) -> None:
        """Answer requests whose raw path fully matches the regex `path` with fn(exchange)
        (status, JSON body), without asking the broker; fn returns None to ask it."""
        self._add(_Rule(method.upper(), re.compile(path), "answer", fn))

    def rewrite(self, method: str, path: str, fn: Rewriter) -> None:
        """Pass the broker's JSON answer to matching requests through fn(exchange, body)."""
        self._add(_Rule(method.upper(), re.compile(path), "rewrite", fn))

    def rewrite_request(self, method: str, path: str, fn: Rewriter) -> None:
        """Pass the RP's JSON request body to matching requests through fn(exchange, body)
        on its way to the broker (the exchange keeps what the RP sent)."""
        self._add(_Rule(method.upper(), re.compile(path), "rewrite_request", fn))

    def rewrite_stream(self, method: str, path: str, fn: LineRewriter) -> None:
        """Pass each line of the broker's streamed answer through fn(exchange, index, body)."""
        self._add(_Rule(method.upper(), re.compile(path), "rewrite_line", fn))

    def replay(self, method: str, path: str, recorded: Exchange, edit: Rewriter | None = None) -> None:
        """Answer matching requests with a response recorded earlier (edited by `edit`)."""

        def respond(exchange: Exchange) -> tuple[int, Any]:
            body = recorded.json
            return recorded.status, body if edit is None else edit(exchange, body)

        self.answer(method, path, respond)

    def edit_credential_list(self, fn: Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        """GET /v1/users/{user}/credentials: fn(user, the broker's list) -> the list the SDK gets."""

        def edit(exchange: Exchange, body: Any) -> Any:
            if not (isinstance(body, dict) and isinstance(body.get("credentials"), list)):
                return body  # an error answer: left as it is
            return {**body, "credentials": fn(exchange.match["user"], list(body["credentials"]))}

        self.rewrite("GET", r"/v1/users/(?P<user>[^/]+)/credentials", edit)

    def edit_enrolled_credential(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """GET /v1/enrollments/{id}: fn(the completed enrollment's credential) -> what the SDK gets."""

        def edit(exchange: Exchange, body: Any) -> Any:
            if isinstance(body, dict) and isinstance(body.get("credential"), dict):
                return {**body, "credential": fn(dict(body["credential"]))}
            return body

        self.rewrite("GET", r"/v1/enrollments/(?P<id>[^/]+)", edit)

    def on_device_frame(self, fn: FrameRule) -> None:
        """Frames from devices to the broker pass through fn (in the order rules were added)."""
        with self._lock:
            self._device_rules.append(fn)

    def on_broker_frame(self, fn: FrameRule) -> None:
        """Frames from the broker to devices pass through fn."""
        with self._lock:
            self._broker_rules.append(fn)

    def clear(self) -> None:
        """Back to an honest proxy (the recordings stay)."""
        with self._lock:
            self._rules.clear()
            self._device_rules.clear()
            self._broker_rules.clear()

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    # -- what happened ------------------------------------------------------------

    def recorded(self, method: str | None = None, path: str | None = None) -> list[Exchange]:
        """Recorded exchanges, optionally of one method and a raw path fully matching `path`."""
        with self._lock:
            found = list(self.exchanges)
        return [
            e
            for e in found
            if (method is None or e.method == method.upper())
            and (path is None or re.fullmatch(path, e.path) is not None)
        ]

    def last(self, method: str, path: str) -> Exchange:
        found = self.recorded(method, path)
        assert found, f"no {method} {path} went through the proxy"
        return found[-1]

    def device_frames(self, kind: type[Frame] | None = None) -> list[FrameRecord]:
        with self._lock:
            records = [r for link in self.links for r in link.frames]
        return [r for r in records if r.sender == "device" and (kind is None or isinstance(r.frame, kind))]

    def check(self) -> None:
        """Fail if a rule raised (the test's own attack code must not fail silently)."""
        with self._lock:
            errors = list(self.errors)
        assert not errors, "a hostile broker rule raised:\n" + "\n".join(errors)

    # -- life (start, close, `with`: ThreadedServer) --------------------------------

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=_UPSTREAM_TIMEOUT)
        app = web.Application(client_max_size=4 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOCALHOST, self.port, reuse_address=True).start()

    async def _close(self) -> None:
        for sock in list(self._sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.close(code=1001, message=b"proxy stopping"), 2)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- HTTP ---------------------------------------------------------------------

    def _rule_for(self, method: str, path: str, kind: str) -> tuple[_Rule, dict[str, str]] | None:
        with self._lock:
            rules = list(self._rules)
        for rule in reversed(rules):  # the latest rule for a route wins
            if rule.kind != kind or rule.method != method:
                continue
            found = rule.pattern.fullmatch(path)
            if found is not None:
                return rule, {k: v for k, v in found.groupdict().items() if v is not None}
        return None

    def _failed(self, what: str) -> None:
        with self._lock:
            self.errors.append(f"{what}:\n{traceback.format_exc()}")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        if path == DEVICE_PATH and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        exchange = Exchange(
            method=request.method,
            path=path,
            query=dict(request.query),
            request_body=await request.read(),
        )
        with self._lock:
            self.exchanges.append(exchange)
        try:
            answered = self._rule_for(request.method, path, "answer")
            reply = None
            if answered is not None:
                rule, exchange.match = answered
                reply = rule.fn(exchange)
            if reply is not None:
                exchange.rules.append("answer")
                status, body = reply
                exchange.status, exchange.response_body = status, _dump(body)
                return web.Response(
                    status=status, body=exchange.response_body, content_type="application/json"
                )
            return await self._forward(request, exchange)
        except Exception:  # noqa: BLE001 - a rule's bug is the test's failure, reported by check()
            self._failed(f"{request.method} {path}")
            exchange.status = 500
            return web.json_response({"code": "hostile_rule_failed", "status": 500}, status=500)

    async def _forward(self, request: web.Request, exchange: Exchange) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Accept-Encoding"] = "identity"  # bodies stay readable for rewrites
        if not self.streaming and "Accept" in headers:
            headers["Accept"] = "application/json"
        url = URL(self.upstream + request.raw_path, encoded=True)
        sent = self._rewritten(request, exchange, "rewrite_request", exchange.request_body)
        async with self._session.request(
            request.method, url, headers=headers, data=sent or None, allow_redirects=False
        ) as upstream:
            exchange.upstream_status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if upstream.content_type == NDJSON:
                return await self._forward_stream(request, exchange, upstream, out_headers)
            exchange.upstream_body = received = await upstream.read()
        body = self._rewritten(request, exchange, "rewrite", received)
        exchange.status, exchange.response_body = upstream.status, body
        return web.Response(status=upstream.status, body=body, headers=out_headers)

    def _rewritten(self, request: web.Request, exchange: Exchange, kind: str, body: bytes) -> bytes:
        """`body` (a request's or a response's JSON) as the `kind` rule for this route
        rewrites it, or as it is."""
        found = self._rule_for(request.method, exchange.path, kind)
        if found is None or not body:
            return body
        rule, exchange.match = found
        exchange.rules.append(kind)
        return _dump(rule.fn(exchange, _json(body)))

    async def _forward_stream(
        self,
        request: web.Request,
        exchange: Exchange,
        upstream: aiohttp.ClientResponse,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        """Each line on to the client as it comes (the number must not wait for the result)."""
        exchange.status = upstream.status
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        rewritten = self._rule_for(request.method, exchange.path, "rewrite_line")
        got, sent = bytearray(), bytearray()
        async for raw in upstream.content:  # line by line
            got += raw
            line = raw
            if raw.strip():
                if rewritten is not None:
                    rule, exchange.match = rewritten
                    line = _dump(rule.fn(exchange, len(exchange.lines), _json(raw))) + b"\n"
                    exchange.rules.append("rewrite_line")
                exchange.lines.append(_json(line))
            sent += line
            await response.write(line)
        exchange.upstream_body, exchange.response_body = bytes(got), bytes(sent)
        await response.write_eof()
        return response

    # -- the device WebSocket --------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        offered = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in _HOP and k.lower() not in _WS_HEADERS
        }
        url = URL(self.upstream.replace("http", "ws", 1) + request.raw_path, encoded=True)
        try:
            upstream = await self._session.ws_connect(
                url, protocols=offered, headers=headers, max_msg_size=0, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text=exc.message)
        link = DeviceLink(subprotocol=upstream.protocol)
        with self._lock:
            self.links.append(link)
        # The broker's pick, and nothing else: aiohttp answers with the first of these
        # that the device offered.
        device = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (), max_msg_size=0, autoping=True
        )
        await device.prepare(request)
        self._sockets.update((device, upstream))
        try:
            pumps = [
                asyncio.create_task(self._pump(device, upstream, link, "device")),
                asyncio.create_task(self._pump(upstream, device, link, "broker")),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._sockets.difference_update((device, upstream))
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await device.close()
        return device

    async def _pump(
        self,
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        link: DeviceLink,
        sender: Literal["device", "broker"],
    ) -> None:
        while True:
            msg = await source.receive()
            if msg.type is WSMsgType.BINARY:
                try:
                    out = self._tamper(msg.data, link, sender)
                except Exception:  # noqa: BLE001 - reported by check(); end the link
                    self._failed(f"a {sender} frame rule")
                    await sink.close(code=1011, message=b"hostile rule failed")
                    await source.close(code=1011, message=b"hostile rule failed")
                    return
                if out is not None:
                    await sink.send_bytes(out)
            elif msg.type is WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                code, reason = msg.data, msg.extra or ""
                link.close, link.closed_by = (code, reason), sender
                await sink.close(code=code, message=reason.encode())
                return
            else:  # CLOSING, CLOSED, ERROR: the other side goes too
                if link.close is None:
                    link.close, link.closed_by = (source.close_code, ""), sender
                await sink.close(code=source.close_code or 1011)
                return

    def _tamper(self, data: bytes, link: DeviceLink, sender: Literal["device", "broker"]) -> bytes | None:
        try:
            frame: Frame | None = decode(data, max_size=len(data) + 1)
        except ProtocolError:
            frame = None  # not a frame: passed on as it came
        if sender == "broker" and isinstance(frame, Hello) and link.hello is None:
            link.hello = frame
        out: bytes | None = data
        if frame is not None:
            with self._lock:
                rules = list(self._device_rules if sender == "device" else self._broker_rules)
            current: Frame | bytes | None = frame
            for rule in rules:
                if not isinstance(current, Frame):
                    break  # dropped, or raw bytes: later rules have no frame to look at
                current = rule(current, link)
            if current is None:
                out = None
            elif isinstance(current, bytes):
                out = current
            elif current is not frame:
                out = encode(current)
        record = FrameRecord(sender=sender, data=data, frame=frame, sent=out)
        with self._lock:
            link.frames.append(record)
        return out


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _dump(body: Any) -> bytes:
    return json.dumps(body).encode()
