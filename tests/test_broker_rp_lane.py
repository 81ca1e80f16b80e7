"""The RP lane (broker/rp_lane.py, broker/http_head.py): a sign-in's RP requests served
off aiohttp on the broker's one port. What it must hold, checked on real broker
processes with raw sockets:

- its parser takes only the plain form and hands everything else to aiohttp;
- it answers as aiohttp does: the same statuses, problem codes and content types for
  the same requests, against a node started with --no-rp-lane on the same Redis;
- one connection can mix lane and aiohttp requests, one after another or pipelined,
  and is answered in order;
- the streamed create works on it, keep-alive after it, and an RP leaving mid-stream
  leaves the challenge answerable;
- its time limits (head, body, idle) answer as aiohttp's guard does, and a stopping
  node closes its idle connections.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import HttpVersion11
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shared_broker import new_rp
from support import BrokerProcess, RedisServer, free_port, wait_until
from support.metrics import scrape, value
from test_broker_device_ws import CTX, approve_push, online_device

from broker.http_head import HAND_OFF, MAX_BODY, Head, parse_head
from relying_party.models import Challenge as RpChallenge
from relying_party.sdk import PushAuthClient

DEADLINE_S = 20.0


# -- the parser ---------------------------------------------------------------------

PLAIN_CREATE = (
    b"POST /v1/challenges HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer k\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


def test_the_plain_forms_are_lane_requests() -> None:
    head = parse_head(PLAIN_CREATE)
    assert isinstance(head, Head)
    assert (head.route, head.method, head.path, head.content_length) == (
        "create",
        "POST",
        "/v1/challenges",
        2,
    )
    assert head.length == len(PLAIN_CREATE) - 2 and head.keep_alive
    assert ("Authorization", "Bearer k") in head.headers

    get = b"GET /v1/challenges/ch_abcdefgh0123456789-_ABCDEFGH?wait=25 HTTP/1.1\r\n"
    get += b"Host: b\r\nConnection: close\r\n\r\n"
    head = parse_head(get)
    assert isinstance(head, Head)
    assert head.route == "result" and head.params == {"id": "ch_abcdefgh0123456789-_ABCDEFGH"}
    assert head.query == "wait=25" and not head.keep_alive and head.length == len(get)
    # Host is the one header HTTP/1.1 requires (RFC 9112, 3.2).
    assert isinstance(parse_head(b"GET /v1/challenges/x HTTP/1.1\r\nHost: b\r\n\r\n"), Head)
    # A device's WebSocket upgrade (its handshake is checked by the lane, not the parser).
    head = parse_head(UPGRADE + b"\x89\x80abcd")  # (a ping sent along: not the head's)
    assert isinstance(head, Head)
    assert (head.route, head.method, head.path, head.length) == ("device", "GET", "/v1/device", len(UPGRADE))
    assert ("Upgrade", "websocket") in head.headers and ("Connection", "Upgrade") in head.headers
    for cut in range(len(UPGRADE)):
        assert parse_head(UPGRADE[:cut]) is None


UPGRADE = (
    b"GET /v1/device HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: pushauth.v2\r\n\r\n"
)


@pytest.mark.parametrize("cut", [0, 5, 30, len(PLAIN_CREATE) - 5])
def test_an_incomplete_head_waits_for_more(cut: int) -> None:
    assert parse_head(PLAIN_CREATE[:cut]) is None


HANDED_OFF = {
    "another route": b"GET /v1/rp HTTP/1.1\r\n\r\n",
    "a device upgrade with two Upgrade headers": UPGRADE.replace(b"Upgrade:", b"Upgrade: x\r\nUpgrade:"),
    "a device upgrade with two keys": UPGRADE.replace(
        b"Sec-WebSocket-Key:", b"Sec-WebSocket-Key: a\r\nsec-websocket-key:"
    ),
    "a device upgrade with a body": UPGRADE.replace(b"Host: b", b"Host: b\r\nContent-Length: 1"),
    "a device upgrade over HTTP/1.0": UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"),
    "a trailing slash": b"POST /v1/challenges/ HTTP/1.1\r\n\r\n",
    "another method": b"DELETE /v1/challenges/ch_x HTTP/1.1\r\n\r\n",
    "HEAD": b"HEAD /v1/challenges/ch_x HTTP/1.1\r\n\r\n",
    "HTTP/1.0": b"GET /v1/challenges/ch_x HTTP/1.0\r\n\r\n",
    "a percent-encoded id": b"GET /v1/challenges/ch%5Fx HTTP/1.1\r\n\r\n",
    "a percent-encoded query": b"GET /v1/challenges/ch_x?wait=1%30 HTTP/1.1\r\n\r\n",
    "two spaces": b"GET  /v1/challenges/ch_x HTTP/1.1\r\n\r\n",
    "a bare LF": b"GET /v1/challenges/ch_x HTTP/1.1\nHost: b\n\n\r\n\r\n",
    # Without a CRLF anywhere the head would never end here: waiting for it held the
    # connection to the head timeout (408) where aiohttp answers 400 at once.
    "bare LFs only": b"GET /v1/challenges/ch_x HTTP/1.1\nHost: b\n\n",
    "a bare LF after the request line": b"POST /v1/challenges HTTP/1.1\r\nHost: b\nX-A: 1\n\n",
    "a chunked body": b"POST /v1/challenges HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "Expect": b"POST /v1/challenges HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    "Upgrade": b"GET /v1/challenges/ch_x HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
    "Connection: upgrade": b"GET /v1/challenges/ch_x HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
    "a folded line": b"GET /v1/challenges/ch_x HTTP/1.1\r\nX-A: 1\r\n  2\r\n\r\n",
    "a space before the colon": b"GET /v1/challenges/ch_x HTTP/1.1\r\nHost : b\r\n\r\n",
    "no colon": b"GET /v1/challenges/ch_x HTTP/1.1\r\nHost\r\n\r\n",
    "a NUL": b"GET /v1/challenges/ch_x HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    "a bare CR": b"GET /v1/challenges/ch_x HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
    "a non-ASCII byte": b"GET /v1/challenges/ch_x HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n",
    "two Content-Lengths": b"POST /v1/challenges HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
    "a signed Content-Length": b"POST /v1/challenges HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
    "a body over the limit": b"POST /v1/challenges HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1),
    "a GET with a body": b"GET /v1/challenges/ch_x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
    "a head too long": b"GET /v1/challenges/ch_x HTTP/1.1\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
    "a request line never ending": b"GET /v1/challenges/" + b"a" * 9000,
    "too many headers": b"GET /v1/challenges/ch_x HTTP/1.1\r\n" + b"X-A: 1\r\n" * 65 + b"\r\n",
    "no Host": b"GET /v1/challenges/ch_x HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "two Hosts": b"GET /v1/challenges/ch_x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}


@pytest.mark.parametrize("raw", HANDED_OFF.values(), ids=HANDED_OFF.keys())
def test_anything_else_goes_to_aiohttp(raw: bytes) -> None:
    assert parse_head(raw) is HAND_OFF


# What the lane takes, aiohttp's own parser (llhttp, the one that answers every other
# request) must read the same way: the same method, target, headers, body length and
# keep-alive. Requests are built mostly of plain pieces, with the ones parsers are known
# to disagree on, one at most in each; only those the lane takes are compared (assume), and there
# must be enough of them for Hypothesis's health check.
_PLAIN_HEADERS = [("Content-Length", "2"), ("content-length", "0"), ("Connection", "close")]
_PLAIN_HEADERS += [("Connection", "keep-alive"), ("connection", "Keep-Alive, Close"), ("X-A", "a\tb")]
_PLAIN_HEADERS += [("X-A", ""), ("Accept", "application/json"), ("Authorization", "Bearer " + "k" * 40)]
_ODD_NAMES = [
    "Host",
    "Transfer-Encoding",
    "Expect",
    "Upgrade",
    " X-A",
    "X-A ",
    "X\x00A",
    "X A",
    "Content-Length",
]
_ODD_VALUES = ["+2", "02", " 2", "2,2", "chunked", "Upgrade", "a\x00b", "a\x7fb", "caf\u00e9", "a\rb", "a\nb"]
_TARGETS = [
    "/v1/challenges",
    "/v1/challenges?wait=1",
    "/v1/challenges/ch_a1",
    "/v1/challenges/ch_a1?wait=5&x=",
]
_ODD_TARGETS = [
    "/v1/challenges/",
    "/v1/rp",
    "/v1/challenges/%41",
    "*",
    "/v1/challenges/ch_a1#f",
    "/v1/challenges/a/b",
]


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    headers = draw(st.integers(0, 4))
    pieces = 5 + 3 * headers
    odd = draw(st.integers(0, 3 * pieces))  # the one odd piece, if any (two times in three: none)
    index = iter(range(pieces))

    def pick(plain: list[str], odds: list[str]) -> str:
        return draw(st.sampled_from(odds if next(index) == odd else plain))

    method = draw(st.sampled_from(["POST", "GET"]))
    plain_targets = _TARGETS[:2] if method == "POST" else _TARGETS[2:]
    method = pick([method], ["HEAD", "post", "PUT", "GET "])
    target = pick(plain_targets, _ODD_TARGETS)
    version = pick(["HTTP/1.1"], ["HTTP/1.0", "http/1.1", "HTTP/1.1 ", "HTTP/2"])
    eol = pick(["\r\n"], ["\n", "\r"])
    lines = [f"{method} {target} {version}"]
    for _ in range(headers):
        name, value = draw(st.sampled_from(_PLAIN_HEADERS))
        if name.lower() == "content-length" and method != "POST":
            value = "0"
        name = pick([name], _ODD_NAMES)
        sep = pick([": ", ":"], [" :", ":\t", "", ":  "])
        lines.append(name + sep + pick([value], _ODD_VALUES))
    if next(index) != odd:  # the one header HTTP/1.1 requires (its absence: an odd piece)
        lines.insert(draw(st.integers(1, len(lines))), "Host: b")
    body = draw(st.sampled_from([b"", b"{}", b"0\r\n\r\n"]))
    return (eol.join(lines) + eol + eol).encode() + body


@settings(max_examples=200, deadline=None)
@given(_requests())
def test_what_the_lane_takes_aiohttp_reads_alike(raw: bytes) -> None:
    head = parse_head(raw)
    assume(isinstance(head, Head))
    assert isinstance(head, Head)
    for cut in range(head.length):  # fed piece by piece, it is incomplete until its end
        assert parse_head(raw[:cut]) is None
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(BaseProtocol(loop), loop, 2**16, max_line_size=8190, max_field_size=8190)
        # This request's bytes (bytes past its body are another request, for both).
        messages, upgraded, _ = parser.feed_data(raw[: head.length + head.content_length])
    finally:
        loop.close()
    message = messages[0][0]
    assert (message.method, message.path, message.version) == (head.method, head.target, HttpVersion11)
    # (aiohttp spells the names it knows its own way; the lane's headers are case-blind too)
    assert [(k.lower(), v) for k, v in message.headers.items()] == [(k.lower(), v) for k, v in head.headers]
    assert int(message.headers.get("Content-Length", 0)) == head.content_length
    assert (message.should_close, message.chunked, message.upgrade, upgraded) == (
        not head.keep_alive,
        False,
        False,
        False,
    )


# -- on real broker processes -------------------------------------------------------


@pytest.fixture
def nodes(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> tuple[BrokerProcess, BrokerProcess]:
    """Two nodes on one Redis: the lane's (short time limits), and one serving every
    request through aiohttp."""
    limits = [
        "--head-timeout",
        "1",
        "--body-timeout",
        "1",
        "--keepalive-timeout",
        "1",
        "--log-level",
        "DEBUG",
        "--access-log",
        # Device upgrades: four from one address, then 429 (test_device_upgrades_on_the_lane).
        "--device-connects-per-ip",
        "0.001:4",
    ]
    METRICS["lane"] = free_port()
    lane = broker_factory(
        redis_url=redis_server.url, node="lane", extra_args=[*limits, "--metrics-port", str(METRICS["lane"])]
    )
    plain = broker_factory(redis_url=redis_server.url, node="plain", extra_args=[*limits, "--no-rp-lane"])
    return lane, plain


# The metrics port of the `nodes` fixture's lane node, by node name.
METRICS: dict[str, int] = {}


def timeouts_counted(node: BrokerProcess) -> tuple[float, float]:
    """(408s counted as refused requests, silent connections closed) on `node`."""
    samples = scrape(METRICS[node.node])
    return (
        value(samples, "pushauth_http_rejected_total", status="408", code="request_timeout"),
        value(samples, "pushauth_http_silent_connections_total"),
    )


class Conn:
    """A raw keep-alive HTTP/1.1 connection, read one response at a time."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=DEADLINE_S)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self) -> tuple[int, dict[str, str]]:
        status_line = self.file.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def response(self) -> tuple[int, dict[str, str], Any]:
        status, headers = self.head()
        if headers.get("transfer-encoding") == "chunked":
            body = b"".join(iter(self.chunk, b""))
        else:
            body = self.file.read(int(headers["content-length"]))
        return status, headers, json.loads(body) if body else None

    def chunk(self) -> bytes:
        size = int(self.file.readline(), 16)
        data = self.file.read(size)
        assert self.file.read(2) == b"\r\n"
        return data

    def closed(self) -> bool:
        """True when the broker closed the connection (nothing more to read)."""
        return self.file.read(1) == b""


def req(method: str, path: str, key: str = "", body: Any = None, **headers: str) -> bytes:
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: broker"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if data:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def answer(broker: BrokerProcess, data: bytes) -> tuple[int, str, str | None, dict[str, str]]:
    """Status, content type, problem code (if any) and the other headers of one answer
    (but those that differ by the moment or by server: Date, Server, Content-Length)."""
    with Conn(broker) as conn:
        conn.send(data)
        status, headers, body = conn.response()
    code = body.get("code") if isinstance(body, dict) else None
    rest = {k: v for k, v in headers.items() if k not in ("date", "server", "content-length", "content-type")}
    return status, headers.get("content-type", ""), code, rest


def answer_body(broker: BrokerProcess, data: bytes) -> Any:
    with Conn(broker) as conn:
        conn.send(data)
        return conn.response()[2]


async def test_the_lane_answers_as_aiohttp_does(nodes: tuple[BrokerProcess, BrokerProcess]) -> None:
    lane, plain = nodes
    rp = await new_rp(lane)
    key = rp["api_key"]
    async with PushAuthClient(lane.http_url, key) as client:
        await online_device(client, lane.ws_url)  # alice can be asked
        made = await client.create_challenge("alice", CTX)
    cases = {
        "no devices": req("POST", "/v1/challenges", key, {"user": "bob", "context": CTX}),
        "no key": req("POST", "/v1/challenges", "", {"user": "alice"}),
        "unknown key": req("POST", "/v1/challenges", "pak_nope", {"user": "alice"}),
        "bad JSON": req("POST", "/v1/challenges", key, b'{"user": '),
        "not an object": req("POST", "/v1/challenges", key, b"[1]"),
        "unknown field": req("POST", "/v1/challenges", key, {"user": "alice", "colour": 1}),
        "bad digits": req("POST", "/v1/challenges", key, {"user": "alice", "digits": 99}),
        "bad wait": req("POST", "/v1/challenges?wait=soon", key, {"user": "alice"}),
        "wrong type": req("POST", "/v1/challenges", key, b"user=alice").replace(
            b"application/json", b"application/x-www-form-urlencoded"
        ),
        "no body": req("POST", "/v1/challenges", key),
        "bad idempotency key": req(
            "POST", "/v1/challenges", key, {"user": "alice"}, Idempotency_Key="no spaces"
        ),
        "unknown challenge": req("GET", "/v1/challenges/ch_aaaaaaaa0123456789012345678901", key),
        "another RP's key": req("GET", f"/v1/challenges/{made.id}", "pak_nope"),
        "read": req("GET", f"/v1/challenges/{made.id}", key),
        "bad wait on read": req("GET", f"/v1/challenges/{made.id}?wait=61", key),
    }
    for name, data in cases.items():
        got, expected = answer(lane, data), answer(plain, data)
        assert got == expected, name
        assert got[0] != 500 and (got[0] < 400) == (got[2] is None), (name, got)


async def test_device_upgrades_on_the_lane_are_answered_as_through_aiohttp(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """The lane serves device upgrades itself (broker/rp_lane.py, LaneConnection._upgrade):
    the same 101 and hello, frames sent along with the request served after it, the
    same per-address limit and 429 problem (counted as a rejected request), the same
    access line, and an invalid handshake still answered by aiohttp."""
    answers: dict[str, list[Any]] = {}
    for node in nodes:
        got = answers[node.node] = []
        for _ in range(2):  # two of the four upgrades the limit allows
            with Conn(node) as conn:
                conn.send(UPGRADE + bytes([0x89, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]))
                status, headers = conn.head()
                hello = conn.file.read(2)  # a binary frame: opcode, length (< 126)
                conn.file.read(hello[1])
                got.append((status, headers, hello[0], conn.file.read(4)))  # then the pong to the ping
        bad = UPGRADE.replace(b"Version: 13", b"Version: 8")
        got.append(answer(node, bad))  # aiohttp's 400 (the third token)
        with Conn(node) as conn:  # no version in common: aiohttp's 101, then close 4406
            conn.send(UPGRADE.replace(b"pushauth.v2", b"pushauth.v9"))
            got.append((conn.head()[0], conn.file.read(4)))
        rejected = value(
            scrape(METRICS["lane"]), "pushauth_http_rejected_total", status="429", code="rate_limited"
        )
        status, ctype, code, rest = answer(node, UPGRADE)  # the fifth
        assert int(rest.pop("retry-after")) > 60, rest  # (the two nodes' may differ by a second)
        got.append((status, ctype, code, rest))
        if node.node == "lane":  # the refusal is counted as aiohttp's are
            after = value(
                scrape(METRICS["lane"]), "pushauth_http_rejected_total", status="429", code="rate_limited"
            )
            assert after == rejected + 1
    lane, plain = answers["lane"], answers["plain"]
    assert lane == plain
    assert lane[0][:3] == (
        101,
        {
            "upgrade": "websocket",
            "connection": "upgrade",
            "sec-websocket-accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "sec-websocket-protocol": "pushauth.v2",
        },
        0x82,
    )
    assert lane[0][3] == b"\x8a\x02hi"
    assert lane[2][0] == 400 and lane[2][2] == "invalid_request"
    assert lane[3] == (101, b"\x88\x35\x11\x36")
    assert lane[4][:3] == (429, "application/problem+json; charset=utf-8", "rate_limited")
    for node in nodes:  # the same access lines (aiohttp writes its own after the answer)

        def statuses(node: BrokerProcess = node) -> list[str]:
            marker = '"GET /v1/device HTTP/1.1" '
            log = node.stderr_path.read_text().splitlines()
            return [line.split(marker)[1].split()[0] for line in log if marker in line]

        wait_until(lambda: len(statuses()) >= 5, message=f"{node.node}'s access lines")
        assert statuses() == ["101", "101", "400", "101", "429"], node.node


async def test_one_connection_mixes_lane_and_aiohttp_requests(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    lane, _ = nodes
    rp = await new_rp(lane)
    key = rp["api_key"]
    async with PushAuthClient(lane.http_url, key) as client:
        await online_device(client, lane.ws_url)
    create = req("POST", "/v1/challenges", key, {"user": "alice", "context": CTX, "supersede": False})
    with Conn(lane) as conn:
        # One after another: the lane, then aiohttp (the hand-off), then aiohttp still.
        conn.send(create)
        status, _, made = conn.response()
        assert status == 201 and made["number"]
        conn.send(req("GET", "/v1/rp", key))
        assert conn.response()[2] == {"id": rp["id"], "name": rp["name"]}
        conn.send(req("GET", f"/v1/challenges/{made['id']}", key))
        assert conn.response()[2]["status"] == "pending"
    with Conn(lane) as conn:
        # Pipelined in one write: answered in order, each exactly once.
        conn.send(create + req("GET", "/v1/challenges/ch_aaaaaaaa0123456789012345678901", key) + create)
        first, missing, second = conn.response(), conn.response(), conn.response()
        assert (first[0], missing[0], second[0]) == (201, 404, 201)
        assert first[2]["id"] != second[2]["id"]
        conn.send(req("GET", "/v1/rp", key) + req("GET", f"/v1/challenges/{first[2]['id']}", key))
        assert conn.response()[0] == 200 and conn.response()[2]["id"] == first[2]["id"]
    # A chunked body and HTTP/1.0 are aiohttp's to read, and are served.
    body = json.dumps({"user": "alice", "context": CTX, "supersede": False}).encode()
    chunked = req("POST", "/v1/challenges", key, body).replace(
        b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"
    )
    chunked = chunked[: -len(body)] + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    assert answer(lane, chunked)[0] == 201
    old = req("GET", f"/v1/challenges/{made['id']}", key).replace(b"HTTP/1.1", b"HTTP/1.0")
    with Conn(lane) as conn:
        conn.send(old)
        assert conn.file.readline().split()[1] == b"200"


async def test_streamed_create_on_the_lane(nodes: tuple[BrokerProcess, BrokerProcess]) -> None:
    lane, _ = nodes
    rp = await new_rp(lane)
    key = rp["api_key"]
    async with PushAuthClient(lane.http_url, key) as client:
        dev = await online_device(client, lane.ws_url)
        stream = req(
            "POST", "/v1/challenges", key, {"user": "alice", "context": CTX}, Accept="application/x-ndjson"
        )
        with Conn(lane) as conn:
            conn.send(stream)
            status, headers = await asyncio.to_thread(conn.head)
            assert (status, headers["content-type"], headers["transfer-encoding"]) == (
                201,
                "application/x-ndjson",
                "chunked",
            )
            created = json.loads(await asyncio.to_thread(conn.chunk))
            await approve_push(dev, _rp_challenge(created))
            result = json.loads(await asyncio.to_thread(conn.chunk))
            assert result["status"] == "approved" and result["id"] == created["id"]
            assert await asyncio.to_thread(conn.chunk) == b""  # the end of the stream
            # The connection carries on.
            conn.send(req("GET", f"/v1/challenges/{created['id']}", key))
            assert (await asyncio.to_thread(conn.response))[2]["status"] == "approved"

        # An RP that leaves after the number: the challenge stays answerable.
        with Conn(lane) as conn:
            conn.send(stream)
            await asyncio.to_thread(conn.head)
            created = json.loads(await asyncio.to_thread(conn.chunk))
        await approve_push(dev, _rp_challenge(created))
        assert (
            await asyncio.to_thread(answer_body, lane, req("GET", f"/v1/challenges/{created['id']}", key))
        )["status"] == "approved"
        await dev.close()


def _rp_challenge(body: dict[str, Any]) -> RpChallenge:
    """What approve_push reads of the RP's challenge: its id and number."""
    return cast(RpChallenge, SimpleNamespace(id=body["id"], number=body["number"]))


async def test_time_limits_and_shutdown(nodes: tuple[BrokerProcess, BrokerProcess]) -> None:
    lane, _ = nodes
    rp = await new_rp(lane)
    key = rp["api_key"]
    read = req("GET", "/v1/challenges/ch_aaaaaaaa0123456789012345678901", key)
    before = timeouts_counted(lane)
    with Conn(lane) as idle, Conn(lane) as half_head, Conn(lane) as half_body, Conn(lane) as silent:
        idle.send(read)
        assert idle.response()[0] == 404
        half_head.send(read[:30])
        create = req("POST", "/v1/challenges", key, {"user": "alice", "context": CTX})
        half_body.send(create[:-5])
        # Each is answered or closed within its 1 s limit (read blocks until then).
        assert idle.closed()  # idle past --keepalive-timeout: closed without a word
        status, headers, doc = half_head.response()
        assert (status, doc["code"], headers["connection"]) == (408, "request_timeout", "close")
        assert "head" in doc["detail"] and half_head.closed()
        status, headers, doc = half_body.response()
        assert (status, doc["code"], headers["connection"]) == (408, "request_timeout", "close")
        assert "body" in doc["detail"] and half_body.closed()
        # A connection that sent nothing gets its 408 too, but is no refused request:
        # browsers, load balancers and the load tester open connections ahead of need.
        assert silent.response()[0] == 408 and silent.closed()
    assert timeouts_counted(lane) == (before[0] + 2, before[1] + 1)

    # Connection: close is honoured; a stopping node closes idle connections.
    with Conn(lane) as conn:
        conn.send(read.replace(b"Host: broker", b"Host: broker\r\nConnection: close"))
        assert conn.response()[1]["connection"] == "close" and conn.closed()
    with Conn(lane) as conn:
        conn.send(read)
        assert conn.response()[0] == 404
        lane.send_signal(signal.SIGTERM)
        assert conn.closed()
    lane.wait(DEADLINE_S)
    log = lane.stderr_path.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
