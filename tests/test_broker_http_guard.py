"""Client behaviour the broker must survive without a 500, a traceback or a held
resource (issue 11, findings 5 and 6; DESIGN invariants 9 and 13), checked with raw
sockets against a real broker process and its log:

- every refusal is a problem document with a stable code: an oversized head 431, a
  NUL in a header 400, a wrong Content-Type 415, duplicate JSON keys 400;
- a client that goes away mid-body gets no 500 and leaves no traceback;
- a client that half-closes after its requests gets their answers;
- a half-sent head, a half-sent body and a socket that proves no credential are
  closed within their timeouts while sign-ins go on;
- unauthenticated endpoints are rate limited per address (429 + Retry-After), the
  backup store has a per-address daily quota and a total cap (429 / 507), and a
  recovery with an unknown, revoked or wrong credential gets one and the same 403.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import websockets
from aiohttp import web
from shared_broker import new_rp
from support import BrokerProcess, RedisServer, http_status, serving, wait_until
from test_agent_recovery import signed_blob
from test_broker_device_ws import CTX, Device, approve_push, online_device

from broker.app import create_app
from device_agent import broker_http
from protocol import SUBPROTOCOLS, b64, signing
from protocol.frames import Challenge
from relying_party.sdk import PushAuthClient

DEADLINE_S = 20.0  # far beyond every timeout under test (1 s): "closed before this"


def exchange(broker: BrokerProcess, data: bytes, *, timeout: float = DEADLINE_S) -> bytes:
    """Send raw bytes, read everything the broker answers until it closes (requests made
    by `request` say Connection: close; a refused one is closed by the broker)."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def problem_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers.get("content-type", "").startswith("application/problem+json"), raw[:400]
    doc = json.loads(body)
    assert doc["status"] == status and isinstance(doc["code"], str), doc
    return status, doc


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: broker", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def strict_broker(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> Iterator[BrokerProcess]:
    args = ["--head-timeout", "1", "--body-timeout", "1", "--auth-timeout", "1", "--log-level", "DEBUG"]
    node = broker_factory(redis_url=redis_server.url, node="strict", extra_args=args)
    yield node
    assert_clean_log(node)


def assert_clean_log(node: BrokerProcess) -> None:
    node.terminate()
    log = node.stderr_path.read_text()
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log, log[-4000:]
    assert " 500 " not in log


async def test_refusals_are_problem_documents_and_leave_no_traceback(strict_broker: BrokerProcess) -> None:
    broker = strict_broker
    rp = await new_rp(broker)
    auth = {"Authorization": f"Bearer {rp['api_key']}"}

    status, doc = problem_of(exchange(broker, request("GET", "/v1/rp?" + "a" * 9000)))
    assert (status, doc["code"]) == (431, "header_too_large")
    status, doc = problem_of(exchange(broker, request("GET", "/v1/rp", X_Big="b" * 9000)))
    assert (status, doc["code"]) == (431, "header_too_large")
    status, doc = problem_of(exchange(broker, request("GET", "/v1/rp", X_Nul="a\x00b")))
    assert (status, doc["code"]) == (400, "bad_request")
    status, doc = problem_of(exchange(broker, b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 400

    body = json.dumps({"user": "alice", "context": CTX}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**auth, **({"Content-Type": ctype} if ctype else {})}
        raw = exchange(broker, request("POST", "/v1/challenges", body, **_h(headers)))
        status, doc = problem_of(raw)
        assert (status, doc["code"]) == (415, "unsupported_media_type"), (ctype, doc)
    dup = b'{"user": "alice", "user": "mallory", "context": {}}'
    raw = exchange(
        broker, request("POST", "/v1/challenges", dup, Content_Type="application/json", **_h(auth))
    )
    status, doc = problem_of(raw)
    assert (status, doc["code"]) == (400, "duplicate_key") and "'user'" in doc["detail"]
    nested = b'{"user": "alice", "context": {"app": "a", "app": "b"}}'
    raw = exchange(
        broker, request("POST", "/v1/challenges", nested, Content_Type="application/json", **_h(auth))
    )
    assert problem_of(raw)[1]["code"] == "duplicate_key"
    raw = exchange(
        broker, request("POST", "/v1/recoveries", b'{"cid": 1, "cid": 2}', Content_Type="application/json")
    )
    assert problem_of(raw)[1]["code"] == "duplicate_key"

    # aiohttp quotes the head it could not parse (here one with bare LFs), API key and
    # all: it is hidden in the answer and in the debug log line.
    key = rp["api_key"]
    raw = exchange(broker, f"GET / HTTP/1.1\nAuthorization: Bearer {key}\n\n".encode())
    status, doc = problem_of(raw)
    assert (status, doc["code"]) == (400, "bad_request") and key[:12] not in doc["detail"], doc
    await asyncio.to_thread(
        wait_until, lambda: "Bearer [hidden]" in broker.stderr(), message="the refusal's debug line"
    )
    assert key[4:12] not in broker.stderr()

    # Clients that go away mid-body, on endpoints with and without an API key.
    for path, headers in (("/v1/challenges", auth), ("/v1/recoveries", {}), ("/v1/enrollments", auth)):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=DEADLINE_S) as sock:
            head = request("POST", path, Content_Type="application/json", **_h(headers))
            sock.sendall(head.replace(b"Content-Length: 0", b"Content-Length: 1000") + b'{"user": "al')
    # The broker still serves, and (checked at teardown) logged no traceback, no 500.
    assert http_status(broker.http_url + "/healthz") == 200


async def test_deeply_nested_json_bodies_are_refused_as_400(strict_broker: BrokerProcess) -> None:
    """orjson parses up to 1,024 levels; the duplicate-key check after it (the standard
    library's parser) ran out of recursion below that: a body of 1,000 nested arrays or
    objects was a RecursionError, a 500 and a traceback, on the RP lane and elsewhere."""
    broker = strict_broker
    rp = await new_rp(broker)
    auth = {"Authorization": f"Bearer {rp['api_key']}", "Content-Type": "application/json"}
    depth = 1000
    arrays = b"[" * depth + b"]" * depth
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    for path, headers in (
        ("/v1/challenges", auth),
        ("/v1/enrollments", auth),
        ("/v1/recoveries", {"Content-Type": "application/json"}),
    ):
        for body in (arrays, objects):
            status, doc = problem_of(exchange(broker, request("POST", path, body, **_h(headers))))
            assert (status, doc["code"]) == (400, "invalid_json"), (path, doc)
    async with (
        aiohttp.ClientSession(headers={"Authorization": auth["Authorization"]}) as http,
        http.get(f"{broker.http_url}/v1/users/a/data") as got,
    ):
        assert (await got.json())["enrollments"] == []  # nothing was made
    # strict_broker's teardown: no traceback, no ERROR line, no 500 in the log.


async def test_a_compressed_body_that_does_not_inflate_is_no_error_in_the_log(
    strict_broker: BrokerProcess,
) -> None:
    """A body sent with Content-Encoding: gzip is refused (415) before it is read, or
    not read at all (401); aiohttp then reads the rest of it to keep the connection, and
    junk that does not inflate was an "Unhandled exception" traceback at ERROR level."""
    broker = strict_broker
    junk = b"junk that is not gzip" * 10
    gz = {"Content_Type": "application/json", "Content_Encoding": "gzip"}
    for path, status in (("/v1/recoveries", 415), ("/v1/enrollments", 401), ("/v1/rp", 405)):
        assert problem_of(exchange(broker, request("POST", path, junk, **gz)))[0] == status, path
    await asyncio.to_thread(
        wait_until,
        lambda: broker.stderr().count("dropped the rest of a request body") == 3,
        message="a debug line for each",
    )
    assert http_status(broker.http_url + "/healthz") == 200
    # strict_broker's teardown: no traceback, no ERROR line, no 500 in the log.


async def test_header_bytes_that_are_not_utf8_get_4xx_and_their_log_lines(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """aiohttp hands a header's bytes that are not UTF-8 on as lone surrogates. In an API
    key, a Sec-WebSocket-Key or (for a new enrollment's link) the Host, they were a 500
    and a traceback, the enrollment stored all the same; in any logged header (User-Agent,
    a subprotocol) the JSON log line was lost to a "Logging error" traceback."""
    args = ["--access-log", "--log-format", "json", "--log-level", "INFO"]
    node = broker_factory(redis_url=redis_server.url, node="bytes", extra_args=args)
    rp = await new_rp(node)
    auth = {"Authorization": f"Bearer {rp['api_key']}"}
    bad = b"\xff\xfe\xc3"

    def raw(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
        return request(method, path, body, **_h(headers)).replace(b"BAD", bad)

    for method, path, body in (("GET", "/v1/rp", b""), ("POST", "/v1/challenges", b'{"user": "u"}')):
        got = exchange(
            node, raw(method, path, body, Authorization="Bearer BAD", Content_Type="application/json")
        )
        assert problem_of(got)[1]["code"] == "unauthorized", got
    upgrade = "GET /v1/device HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n"
    upgrade += "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: BAD\r\n\r\n"
    status, doc = problem_of(exchange(node, upgrade.encode().replace(b"BAD", bad)))
    assert (status, doc["code"]) == (400, "invalid_request") and "Sec-WebSocket-Key" in doc["detail"]
    enroll = raw(
        "POST", "/v1/enrollments", b'{"user": "u", "account": "a"}', Content_Type="application/json", **auth
    )
    status, doc = problem_of(
        exchange(node, enroll.replace(b"Host: broker", b"Host: BAD").replace(b"BAD", bad))
    )
    assert (status, doc["code"]) == (400, "invalid_request") and "Host" in doc["detail"]
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.get(f"{node.http_url}/v1/users/u/data") as got,
    ):
        assert (await got.json())["enrollments"] == []  # refused before it was made

    got = exchange(node, raw("GET", "/v1/rp?last", User_Agent="BAD", Referer="BAD", **auth))
    assert got.startswith(b"HTTP/1.1 200 ")
    await asyncio.to_thread(
        wait_until, lambda: "GET /v1/rp?last HTTP/1.1" in node.stderr(), message="its access log line"
    )
    node.terminate()
    log = node.stderr()
    assert "Logging error" not in log and "Traceback" not in log, log[-4000:]
    assert '"level":"ERROR"' not in log and '" 500 ' not in log, log[-4000:]
    assert log.count('GET /v1/rp HTTP/1.1\\" 401') == 1, log[-4000:]  # the bad key's line is there too


def half_closed_exchange(broker: BrokerProcess, data: bytes) -> list[int]:
    """Send raw bytes, shut down the sending side (as `nc -N` and some scripts do), and
    read until the broker closes: the statuses of the responses, in order."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=DEADLINE_S) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        raw = _read_all(sock)
    statuses = []
    while raw:  # each response: a head, then Content-Length bytes of body
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        statuses.append(int(lines[0].split()[1]))
        length = next(
            int(v) for k, _, v in (line.partition(":") for line in lines) if k.lower() == "content-length"
        )
        raw = raw[length:]
    return statuses


async def test_a_client_that_half_closes_after_its_requests_gets_their_answers(
    strict_broker: BrokerProcess,
) -> None:
    """asyncio closes a connection at the client's end of stream unless its protocol
    says otherwise, and neither aiohttp nor the RP lane did: `GET /healthz` followed by
    a shutdown got no answer at all, a malformed request no 400. Keep-alive requests,
    pipelined, on both paths (the lane's routes and aiohttp's)."""
    broker = strict_broker
    rp = await new_rp(broker)
    key = rp["api_key"]

    def get(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {key}\r\n\r\n".encode()

    lane, aiohttp_route = get("/v1/challenges/no-such-challenge"), get("/v1/openapi.json")
    for _ in range(3):  # end of stream with the request, or in another read: any timing
        assert half_closed_exchange(broker, get("/healthz")) == [200]
        assert half_closed_exchange(broker, aiohttp_route) == [200]
        assert half_closed_exchange(broker, lane) == [404]
        assert half_closed_exchange(broker, lane + lane + aiohttp_route + get("/healthz")) == [
            404,
            404,
            200,
            200,
        ]
        assert half_closed_exchange(broker, aiohttp_route + lane + aiohttp_route) == [200, 404, 200]
        assert half_closed_exchange(broker, b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n") == [400]
        body = json.dumps({"user": "alice", "context": CTX}).encode()
        create = (
            f"POST /v1/challenges HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        assert half_closed_exchange(broker, create + body) == [409]  # no devices: answered
        # What never became a whole request ends with the connection, unanswered.
        assert half_closed_exchange(broker, create + body[:5]) == []
        assert half_closed_exchange(broker, b"GET /heal") == []
        assert half_closed_exchange(broker, b"") == []


def _h(headers: dict[str, str]) -> dict[str, str]:
    return {k.replace("-", "_"): v for k, v in headers.items()}


async def test_slow_clients_are_closed_in_time_while_sign_ins_go_on(strict_broker: BrokerProcess) -> None:
    broker = strict_broker
    rp = await new_rp(broker)
    half_head = socket.create_connection(("127.0.0.1", broker.port), timeout=DEADLINE_S)
    half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Slow: ")
    silent = socket.create_connection(("127.0.0.1", broker.port), timeout=DEADLINE_S)
    half_body = socket.create_connection(("127.0.0.1", broker.port), timeout=DEADLINE_S)
    half_body.sendall(
        b"POST /v1/recoveries HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
        b'Content-Length: 500\r\n\r\n{"cid": "'
    )
    nobody = await websockets.connect(broker.ws_url, subprotocols=list(SUBPROTOCOLS), open_timeout=DEADLINE_S)

    # A whole sign-in meanwhile.
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url)
        ch = await client.create_challenge("alice", CTX)
        await approve_push(dev, ch)

        # Each slow client is closed (reads end) well before the deadline.
        got = await asyncio.to_thread(_read_all, half_head)
        assert problem_of(got)[1]["code"] == "request_timeout"
        assert problem_of(await asyncio.to_thread(_read_all, silent))[0] == 408
        got = await asyncio.to_thread(_read_all, half_body)
        assert problem_of(got)[1]["code"] == "request_timeout"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(_drain(nobody), DEADLINE_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "auth_timeout"
        # The authenticated device is still there.
        ch2 = await client.create_challenge("alice", CTX)
        assert isinstance(await dev.frame(), Challenge) and ch2.id
        await dev.close()
    for sock in (half_head, silent, half_body):
        sock.close()


async def _drain(ws: websockets.ClientConnection) -> None:
    while True:
        await ws.recv()


# -- limits on clients without an API key ------------------------------------------------


async def test_unauthenticated_endpoints_are_rate_limited_per_address(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    args = ["--backup-requests-per-ip", "1:3", "--recovery-requests-per-ip", "1:2"]
    args += ["--device-connects-per-ip", "1:2", "--trusted-proxy", "127.0.0.1"]
    broker = broker_factory(redis_url=redis_server.url, node="limited", extra_args=args)
    blob = "A" * 43
    statuses = [exchange(broker, request("GET", f"/v1/backups/{blob}")) for _ in range(4)]
    assert [problem_of(s)[0] for s in statuses[:3]] != [429] * 3
    status, doc = problem_of(statuses[3])
    assert (status, doc["code"]) == (429, "rate_limited")
    assert b"Retry-After: " in statuses[3]
    # Another address (named by the trusted proxy) has its own bucket.
    other = exchange(broker, request("GET", f"/v1/backups/{blob}", X_Forwarded_For="198.51.100.7"))
    assert problem_of(other)[0] != 429
    # An IPv6 client is counted by its /64: it may pick any address in it for each request.
    v6 = [f"2001:db8:0:1::{i}" for i in range(1, 5)]
    statuses = [exchange(broker, request("GET", f"/v1/backups/{blob}", X_Forwarded_For=a)) for a in v6]
    assert [problem_of(s)[0] == 429 for s in statuses] == [False, False, False, True]
    other = exchange(broker, request("GET", f"/v1/backups/{blob}", X_Forwarded_For="2001:db8:0:2::1"))
    assert problem_of(other)[0] != 429

    # The web authenticator on its own origin asks first (CORS preflight): answered
    # before the limits, so asking costs none of the address's recoveries.
    origin = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    for _ in range(4):
        asked = exchange(broker, request("OPTIONS", "/v1/recoveries", **origin))
        assert asked.startswith(b"HTTP/1.1 204"), asked[:200]
        assert (
            b"Access-Control-Allow-Origin: *" in asked
            and b"Access-Control-Allow-Headers: Content-Type, X-Pushauth-Time, X-Pushauth-Signature" in asked
        )
    body = b'{"cid": "x"}'
    raw = [
        exchange(broker, request("POST", "/v1/recoveries", body, Content_Type="application/json", **origin))
        for _ in range(3)
    ]
    assert [problem_of(r)[0] for r in raw] == [400, 400, 429]
    # Its refusals are readable there too; the RP API (an API key) is not open to pages.
    assert all(b"Access-Control-Allow-Origin: *" in r for r in raw)
    rp_api = exchange(broker, request("OPTIONS", "/v1/challenges", **origin))
    assert b"Access-Control-Allow-Origin" not in rp_api

    ok = [await websockets.connect(broker.ws_url, subprotocols=list(SUBPROTOCOLS)) for _ in range(2)]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(broker.ws_url, subprotocols=list(SUBPROTOCOLS))
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"]
    for ws in ok:
        await ws.close()
    assert_clean_log(broker)


def test_the_backup_store_has_a_daily_quota_per_address_and_a_total_cap(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    args = ["--new-backups-per-ip", "2", "--backup-store-max-blobs", "3", "--trusted-proxy", "127.0.0.1"]
    broker = broker_factory(redis_url=redis_server.url, node="quota", extra_args=args)
    now = broker_http.now_ms()
    seeds = [signing.new_seed() for _ in range(5)]

    def put(i: int, data: bytes, ts: int, address: str = "203.0.113.1") -> tuple[int, bytes]:
        return signed_blob(broker, seeds[i], "put", data, ts, **{"X-Forwarded-For": address})

    assert put(0, b"one", now)[0] == 204
    assert put(1, b"two", now + 1)[0] == 204
    status, raw = put(2, b"three", now + 2)
    assert status == 429 and json.loads(raw)["code"] == "quota_exceeded"
    assert put(0, b"one, again", now + 3)[0] == 204  # overwriting one's own is free
    assert put(2, b"three", now + 4, "203.0.113.2")[0] == 204  # another address
    status, raw = put(3, b"four", now + 5, "203.0.113.3")
    assert status == 507 and json.loads(raw)["code"] == "backup_store_full"
    assert signed_blob(broker, seeds[1], "delete", b"", now + 6)[0] == 204  # room again
    assert put(3, b"four", now + 7, "203.0.113.3")[0] == 204
    # One IPv6 client's /64 is one address here: a fresh address of it is no fresh quota.
    for i in (2, 3):
        assert signed_blob(broker, seeds[i], "delete", b"", now + 8)[0] == 204
    assert put(2, b"three", now + 9, "2001:db8::a")[0] == 204
    assert put(3, b"four", now + 10, "2001:db8::b")[0] == 204
    status, raw = put(4, b"five", now + 11, "2001:db8::c")
    assert status == 429 and json.loads(raw)["code"] == "quota_exceeded"
    assert_clean_log(broker)


async def test_a_recovery_says_nothing_about_a_credential_it_cannot_prove(
    strict_broker: BrokerProcess,
) -> None:
    """Unknown, revoked, not recoverable or another key: the same 403 problem."""
    broker = strict_broker
    rp = await new_rp(broker)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        plain = await online_device(client, broker.ws_url)
        revoked = await online_device(client, broker.ws_url, user="bob")
        await client.revoke_credential(revoked.cid)
    answers = []
    for cid in ("cr_no_such_credential", plain.cid, revoked.cid):
        seed, new = signing.new_seed(), signing.new_seed()
        ts = broker_http.now_ms()
        message = signing.recover_bytes(
            rp["id"], cid, signing.public_key(new), "x", signing.public_key(new), ts
        )
        body = {
            "cid": cid,
            "pk": _b64(signing.public_key(new)),
            "name": "x",
            "recovery_pk": _b64(signing.public_key(new)),
            "ts": ts,
            "recovery_sig": _b64(signing.sign(seed, message)),
            "sig": _b64(signing.sign(new, message)),
        }
        raw = exchange(
            broker,
            request("POST", "/v1/recoveries", json.dumps(body).encode(), Content_Type="application/json"),
        )
        status, doc = problem_of(raw)
        answers.append((status, doc["code"], doc["detail"]))
    assert answers[0][0] == 403 and answers.count(answers[0]) == 3, answers
    assert isinstance(plain, Device)


def _b64(data: bytes) -> str:
    return b64.encode(data)


async def test_refused_recoveries_leave_nothing_behind(redis_server: RedisServer) -> None:
    # The refusal was one exception object raised again and again: each raise added the
    # refused request's frames to its traceback, keeping every such request (headers and
    # all) alive for good, about 20 KB each, from clients with no key at all.
    redis = aioredis.Redis.from_url(redis_server.url)
    app = create_app(redis, node="local")
    served: list[weakref.ref[web.Request]] = []

    @web.middleware
    async def remember(request: web.Request, handler: Any) -> web.StreamResponse:
        served.append(weakref.ref(request))
        return await handler(request)

    app.middlewares.append(remember)
    ts, key, sig = broker_http.now_ms(), "A" * 43, "A" * 86
    recover = {"cid": "cr_no_such_credential", "pk": key, "name": "x", "recovery_pk": key, "ts": ts}
    refused = {
        "/v1/recoveries": recover | {"recovery_sig": sig, "sig": sig},
        "/v1/credentials/cr_no_such_credential/recovery-key": {"recovery_pk": key, "ts": ts, "sig": sig},
    }
    try:
        async with serving(app) as url, aiohttp.ClientSession() as http:
            for path, body in refused.items():
                for _ in range(3):
                    async with http.post(url + path, json=body) as r:
                        assert r.status == 403 and (await r.json())["code"] == "recovery_refused"
    finally:
        await redis.aclose()
    gc.collect()
    assert len(served) == 6 and not [ref for ref in served if ref() is not None]
