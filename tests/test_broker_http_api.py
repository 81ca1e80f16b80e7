"""The RP HTTP API of a real broker: bad input gets a 4xx problem document and
changes nothing; RP isolation; the OpenAPI document matches what the server does."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import redis.asyncio as aioredis
import websockets
from multidict import CIMultiDict
from shared_broker import broker, new_rp, rp  # noqa: F401 - fixtures
from support import DEADLINE, BrokerProcess, wait_until
from test_broker_rp_lane import Conn

from broker.app import create_app
from broker.bounds import BODY_TIMEOUT_S
from broker.openapi import DOCUMENT
from protocol import SUBPROTOCOLS, signing
from protocol.session import ClientSession
from protocol.uri import parse

HTTP_API_DOC = Path(__file__).resolve().parents[1] / "docs" / "http-api.md"


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        self.session, self.base, self.key = session, base, key

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        key: str | None = None,
        **kw: Any,
    ) -> tuple[int, Any, str]:
        headers = {"Authorization": f"Bearer {key or self.key}"} if (key or self.key) else {}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = "application/json"  # a JSON API: anything else is 415
        async with self.session.request(method, self.base + path, data=data, headers=headers, **kw) as r:
            text = await r.text()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = text
            return r.status, parsed, r.headers.get("Content-Type", "")


@pytest.fixture
async def api(broker: BrokerProcess, rp: dict[str, Any]) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, broker.http_url, rp["api_key"])


def assert_problem(status: int, body: Any, ctype: str, expected: int, code: str | None = None) -> None:
    assert status == expected, body
    assert ctype.startswith("application/problem+json"), ctype
    jsonschema.validate(body, DOCUMENT["components"]["schemas"]["Problem"])
    assert body["status"] == expected
    if code is not None:
        assert body["code"] == code, body


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", "/v1/challenges", {"raw": b"{not json"}, 400, "invalid_json"),
    ("POST", "/v1/challenges", {"raw": b""}, 400, "invalid_json"),
    ("POST", "/v1/challenges", {"body": ["alice"]}, 400, "invalid_json"),
    ("POST", "/v1/challenges", {"body": {}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": 7}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": "a\x00b"}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": "x" * 129}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": "alice", "ttl": "60"}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": "alice", "ttl": 601}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": "alice", "digits": 9}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": "alice", "digits": True}}, 400, "invalid_request"),
    ("POST", "/v1/challenges", {"body": {"user": "alice", "context": {"k": 1}}}, 400, "invalid_request"),
    (
        "POST",
        "/v1/challenges",
        {"body": {"user": "alice", "context": {str(i): "" for i in range(17)}}},
        400,
        None,
    ),
    ("POST", "/v1/challenges", {"body": {"user": "alice", "sneaky": 1}}, 400, "invalid_request"),
    # Whom it is aimed at (RP API 1.8): a list of 1 to 32 ids, each once, not with credential_id.
    *(
        ("POST", "/v1/challenges", {"body": {"user": "alice", **aim}}, 400, "invalid_request")
        for aim in (
            {"credential_ids": []},
            {"credential_ids": "cr_a"},
            {"credential_ids": {"cr_a": 1}},
            {"credential_ids": [7]},
            {"credential_ids": [["cr_a"]]},
            {"credential_ids": ["cr_a", "cr_b", "cr_a"]},
            {"credential_ids": [f"cr_{i}" for i in range(33)]},
            {"credential_ids": ["cr_a cr_b"]},  # not an id (the store joins them with a space)
            {"credential_ids": ["x" * 65]},
            {"credential_id": "cr_a cr_b"},
            {"credential_id": 7},
            {"credential_id": "cr_a", "credential_ids": ["cr_b"]},
        )
    ),
    ("POST", "/v1/challenges", {"raw": b'{"user": "' + b"a" * 20000 + b'"}'}, 413, "payload_too_large"),
    ("POST", "/v1/enrollments", {"body": {"user": "alice"}}, 400, "invalid_request"),
    ("POST", "/v1/enrollments", {"body": {"user": "alice", "account": "a", "recoverable": "yes"}}, 400, None),
    ("GET", "/v1/challenges/nope", {}, 404, "not_found"),
    ("GET", "/v1/challenges/nope?wait=abc", {}, 400, "invalid_request"),
    ("GET", "/v1/challenges/nope?wait=61", {}, 400, "invalid_request"),
    ("GET", "/v1/enrollments/nope", {}, 404, "not_found"),
    ("DELETE", "/v1/credentials/nope", {}, 404, "not_found"),
    ("GET", "/v1/no-such-route", {}, 404, "not_found"),
    ("PUT", "/v1/challenges", {"body": {}}, 405, "method_not_allowed"),
    ("GET", "/v1/device", {}, 400, None),  # a WebSocket endpoint asked without an upgrade
]


@pytest.mark.parametrize(("method", "path", "kw", "status", "code"), BAD_REQUESTS)
async def test_bad_requests_get_a_problem_and_change_nothing(
    api: Api, method: str, path: str, kw: dict[str, Any], status: int, code: str | None
) -> None:
    enrolled_before = await api.call("GET", "/v1/users/alice/credentials")
    got = await api.call(method, path, **kw)
    assert_problem(*got, status, code)
    assert await api.call("GET", "/v1/users/alice/credentials") == enrolled_before
    health = await api.call("GET", "/healthz")
    assert health[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "extra", "status", "detail"),
    [
        # Two values of a header that must come once: servers differ on which one counts.
        ("POST", "/v1/challenges", [("Authorization", "Bearer x")], 400, "send one Authorization header"),
        ("GET", "/v1/users/alice/credentials", [("Authorization", "Bearer x")], 400, "one Authorization"),
        (
            "POST",
            "/v1/challenges",
            [("Idempotency-Key", "k1"), ("Idempotency-Key", "k2")],
            400,
            "send one Idempotency-Key header",
        ),
        # A compressed body (here: plain JSON said to be gzip), on the lane and on aiohttp.
        ("POST", "/v1/challenges", [("Content-Encoding", "gzip")], 415, "without Content-Encoding"),
        ("POST", "/v1/enrollments", [("Content-Encoding", "gzip")], 415, "without Content-Encoding"),
    ],
)
async def test_ambiguous_requests_are_refused(
    api: Api, method: str, path: str, extra: list[tuple[str, str]], status: int, detail: str
) -> None:
    headers = CIMultiDict(
        [("Authorization", f"Bearer {api.key}"), ("Content-Type", "application/json"), *extra]
    )
    fields = {"user": "alice", **({"account": "alice@example.com"} if path == "/v1/enrollments" else {})}
    body = json.dumps(fields).encode() if method == "POST" else None
    before = await api.call("GET", "/v1/users/alice/credentials")
    async with api.session.request(method, api.base + path, data=body, headers=headers) as r:
        problem = await r.json(content_type=None)
        assert_problem(r.status, problem, r.headers["Content-Type"], status)
        assert detail in problem["detail"]
    assert await api.call("GET", "/v1/users/alice/credentials") == before


async def test_a_backup_must_be_sent_as_octet_stream(api: Api) -> None:
    blob_id = "A" * 43  # the content type is checked before the id and the signature
    async with api.session.put(
        f"{api.base}/v1/backups/{blob_id}", data=b'{"a": 1}', headers={"Content-Type": "application/json"}
    ) as r:
        problem = await r.json(content_type=None)
        assert_problem(r.status, problem, r.headers["Content-Type"], 415, "unsupported_media_type")
        assert "application/octet-stream" in problem["detail"]


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer wrong-key", "Basic dXNlcjpwYXNz", "Bearer " + "k" * 300]
)
async def test_requests_without_a_valid_key_are_unauthorized(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with api.session.post(api.base + "/v1/challenges", json={"user": "alice"}, headers=headers) as r:
        body = await r.json(content_type=None)
        assert_problem(r.status, body, r.headers["Content-Type"], 401, "unauthorized")
        assert r.headers.get("WWW-Authenticate") == "Bearer"


async def test_a_request_without_a_valid_key_is_refused_at_its_head(api: Api, broker: BrokerProcess) -> None:
    """A POST's key is judged from its head: no wait for a body that may never come.

    Each head comes alone and is answered with a 401 within a read timeout well under
    the body timeout (the broker's default), after which the answer would be a 408. The
    body, sent after the answer, is itself a request: a broker that read it as the next
    one would answer it."""
    read_timeout = 10.0
    assert read_timeout < BODY_TIMEOUT_S / 2
    smuggled = f"GET /v1/rp HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {api.key}\r\n\r\n".encode()
    probe = f"GET /v1/challenges/nope HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {api.key}\r\n\r\n"
    for auth in ("", "Authorization: Bearer pak_wrong\r\n"):
        for path in ("/v1/challenges", "/v1/enrollments"):  # served by the RP lane, by aiohttp
            head = (
                f"POST {path} HTTP/1.1\r\nHost: broker\r\n{auth}Content-Type: application/json\r\n"
                f"Content-Length: {len(smuggled)}\r\n\r\n"
            )
            with Conn(broker) as conn:
                conn.sock.settimeout(read_timeout)
                conn.send(head.encode())
                status, headers, doc = await asyncio.to_thread(conn.response)
                assert_problem(status, doc, headers["content-type"], 401, "unauthorized")
                assert headers["www-authenticate"] == "Bearer"
                if path == "/v1/challenges":
                    # The lane closes the connection: its unread body would read as a request.
                    assert headers["connection"] == "close", (auth, headers)
                    conn.send(smuggled)
                    assert await asyncio.to_thread(conn.closed)
                else:
                    # aiohttp reads the body it was told of and drops it; the next request is served.
                    conn.send(smuggled + probe.encode())
                    assert (await asyncio.to_thread(conn.response))[0] == 404
    # A valid key's request sent in two parts is served whole, and the connection kept.
    body = b'{"user": "nobody"}'
    with Conn(broker) as conn:
        conn.sock.settimeout(read_timeout)
        conn.send(
            f"POST /v1/challenges HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {api.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        conn.send(body)
        status, headers, doc = await asyncio.to_thread(conn.response)
        assert_problem(status, doc, headers["content-type"], 409, "no_devices")
        conn.send(probe.encode())
        assert (await asyncio.to_thread(conn.response))[0] == 404


async def test_no_devices_is_a_conflict(api: Api) -> None:
    assert_problem(*await api.call("POST", "/v1/challenges", body={"user": "nobody"}), 409, "no_devices")


async def test_rp_isolation(api: Api, broker: BrokerProcess) -> None:
    """Invariant 5: another RP's key reaches none of this RP's objects."""
    other = await new_rp(broker, "Other RP")
    enrollment = await api.call("POST", "/v1/enrollments", body={"user": "alice", "account": "alice"})
    assert enrollment[0] == 201
    eid = enrollment[1]["id"]
    key = other["api_key"]
    assert_problem(*await api.call("GET", f"/v1/enrollments/{eid}", key=key), 404, "not_found")
    # Its own user "alice" is another person: no credentials, no pushes.
    assert await api.call("GET", "/v1/users/alice/credentials", key=key) == (
        200,
        {"credentials": []},
        "application/json; charset=utf-8",
    )
    assert_problem(
        *await api.call("POST", "/v1/challenges", body={"user": "alice"}, key=key), 409, "no_devices"
    )


async def test_openapi_document_covers_exactly_the_routes(api: Api) -> None:
    status, doc, _ = await api.call("GET", "/v1/openapi.json")
    assert status == 200
    assert doc == json.loads(json.dumps(DOCUMENT))
    served = set()
    # The app's own route table (an unconnected Redis client: nothing is sent).
    probe = create_app(aioredis.Redis(), node="probe")
    for route in probe.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path not in ("/v1/device", "/v1/openapi.json"):
            served.add((path, route.method.lower()))
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented


async def test_responses_match_the_openapi_schemas(api: Api, broker: BrokerProcess) -> None:
    """Real responses, validated against the served document's schemas."""
    schemas = DOCUMENT["components"]["schemas"]

    def check(body: Any, name: str) -> None:
        resolver = {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
        jsonschema.validate(body, resolver)

    status, enrollment, _ = await api.call("POST", "/v1/enrollments", body={"user": "alice", "account": "A"})
    assert status == 201
    check(enrollment, "Enrollment")
    async with websockets.connect(broker.ws_url, subprotocols=list(SUBPROTOCOLS)) as ws:
        session = ClientSession()
        session.receive(await ws.recv())
        await ws.send(
            session.enroll_frame(
                rid=1, token=parse(enrollment["uri"]).token, seed=signing.new_seed(), name="d"
            )
        )
        session.receive(await ws.recv())
    status, done, _ = await api.call("GET", f"/v1/enrollments/{enrollment['id']}")
    check(done, "Enrollment")
    assert done["status"] == "completed"
    cid = done["credential"]["id"]
    status, test, _ = await api.call("POST", "/v1/challenges", body={"user": "alice", "credential_id": cid})
    assert status == 201
    check(test, "Challenge")
    status, _, _ = await api.call("POST", f"/v1/credentials/{cid}/confirm")
    assert status == 204
    status, ch, _ = await api.call("POST", "/v1/challenges", body={"user": "alice", "context": {"app": "x"}})
    assert status == 201
    check(ch, "Challenge")
    assert ch["superseded"] == [test["id"]]
    status, result, _ = await api.call("GET", f"/v1/challenges/{ch['id']}")
    check(result, "ChallengeResult")
    status, cancelled, _ = await api.call("DELETE", f"/v1/challenges/{ch['id']}")
    assert status == 200 and cancelled["status"] == "cancelled"
    check(cancelled, "ChallengeResult")
    status, creds, _ = await api.call("GET", "/v1/users/alice/credentials")
    check(creds, "CredentialList")
    status, me, _ = await api.call("GET", "/v1/rp")
    check(me, "RelyingParty")
    status, health, _ = await api.call("GET", "/healthz")
    check(health, "Health")
    # docs/http-api.md names each field of its events, as the node shows them.
    row = next(line for line in HTTP_API_DOC.read_text().splitlines() if line.startswith("| `GET /healthz`"))
    named = re.search(r'"events": \{([^}]*)\}', row)
    assert named is not None, row
    assert {f.strip().strip('"') for f in named.group(1).split(",")} == set(health["events"])
    assert set(schemas) >= {"Enrollment", "Challenge", "ChallengeResult", "CredentialList", "Problem"}


async def _enroll_over_ws(broker: BrokerProcess, uri: str, name: str = "d") -> Any:
    """A device registers with the enrollment link's token: the broker's reply frame."""
    async with websockets.connect(broker.ws_url, subprotocols=list(SUBPROTOCOLS)) as ws:
        session = ClientSession()
        session.receive(await ws.recv())
        await ws.send(session.enroll_frame(rid=1, token=parse(uri).token, seed=signing.new_seed(), name=name))
        reply = await ws.recv()
    return session.receive(reply)  # Enrolled, or the broker's Error frame


async def test_links_no_device_can_use_are_named_in_the_log(api: Api, broker: BrokerProcess) -> None:
    """A node behind a TLS balancer started without --public-url makes its links from the
    Host header: ws://, which every device refuses away from loopback (docs/protocol.md
    2.1). The RP still gets its link; the operator reads why in the node's log."""
    headers = {"Authorization": f"Bearer {api.key}", "Host": "push.example.com"}
    body = {"user": "alice", "account": "A"}
    async with api.session.post(api.base + "/v1/enrollments", json=body, headers=headers) as response:
        assert response.status == 201
        link = parse((await response.json())["uri"])
    assert link.broker == "ws://push.example.com/v1/device"
    wait_until(
        lambda: "ws://push.example.com/v1/device, which devices refuse" in broker.stderr(),
        message="the warning about links devices refuse",
    )
    assert "--public-url https://" in broker.stderr()


async def test_a_cancelled_enrollment_refuses_its_link(api: Api, broker: BrokerProcess) -> None:
    """DELETE /v1/enrollments/{id}: RP-scoped, idempotent, and a device using the link
    afterwards is refused (bad_token); the enrollment reads as expired."""
    other = await new_rp(broker, "Other RP")
    status, enrollment, _ = await api.call("POST", "/v1/enrollments", body={"user": "alice", "account": "A"})
    assert status == 201
    eid = enrollment["id"]
    # Another RP's key cannot withdraw it (and cannot tell it exists), nor can an unknown id.
    assert_problem(
        *await api.call("DELETE", f"/v1/enrollments/{eid}", key=other["api_key"]), 404, "not_found"
    )
    assert_problem(*await api.call("DELETE", "/v1/enrollments/en_nope"), 404, "not_found")
    assert (await api.call("GET", f"/v1/enrollments/{eid}"))[1]["status"] == "pending"
    for _ in range(2):  # a retried call is harmless
        status, body, _ = await api.call("DELETE", f"/v1/enrollments/{eid}")
        assert (status, body) == (204, None)
    status, after, _ = await api.call("GET", f"/v1/enrollments/{eid}")
    assert status == 200 and after["status"] == "expired" and after["credential"] is None
    assert after["expires_at"] <= int(time.time() * 1000)
    refused = await _enroll_over_ws(broker, enrollment["uri"])
    assert getattr(refused, "code", None) == "bad_token", refused
    assert (await api.call("GET", "/v1/users/alice/credentials"))[1] == {"credentials": []}

    # A completed enrollment keeps its credential: DELETE answers 204 and changes nothing.
    status, done_before, _ = await api.call("POST", "/v1/enrollments", body={"user": "alice", "account": "A"})
    await _enroll_over_ws(broker, done_before["uri"], "phone")
    status, body, _ = await api.call("DELETE", f"/v1/enrollments/{done_before['id']}")
    assert (status, body) == (204, None)
    status, done, _ = await api.call("GET", f"/v1/enrollments/{done_before['id']}")
    assert done["status"] == "completed" and done["credential"]["name"] == "phone"
    assert [c["id"] for c in (await api.call("GET", "/v1/users/alice/credentials"))[1]["credentials"]] == [
        done["credential"]["id"]
    ]


async def test_a_long_poll_on_an_enrollment_answers_when_it_is_cancelled(
    api: Api, broker: BrokerProcess
) -> None:
    """The setup page's long-poll ends with the cancellation (another tab's Cancel, a newer
    setup), not when its wait runs out (MAX_WAIT_S: 60 s, twice the deadline here)."""
    status, enrollment, _ = await api.call("POST", "/v1/enrollments", body={"user": "ivy", "account": "I"})
    assert status == 201
    poll = asyncio.ensure_future(api.call("GET", f"/v1/enrollments/{enrollment['id']}?wait=60"))
    await asyncio.to_thread(wait_until, lambda: broker.long_polls() == 1, message="the long-poll waiting")
    assert (await api.call("DELETE", f"/v1/enrollments/{enrollment['id']}"))[0] == 204
    status, after, _ = await asyncio.wait_for(poll, DEADLINE)
    assert status == 200 and after["status"] == "expired" and after["credential"] is None


def test_openapi_answer_schema_states_the_answer_frames_constraints() -> None:
    """An RP generating its checks from the OpenAPI document gets the answer frame's
    rules (docs/protocol.md section 5): the typed number is 0..8 ASCII digits and ts an
    ms time in 0..2^53. The verdict vectors' well-formed answers pass it."""
    resolver = {"$ref": "#/components/schemas/Answer", "components": DOCUMENT["components"]}
    vectors = json.loads((Path(__file__).parent.parent / "docs" / "test-vectors.json").read_text())
    good = vectors["rp"]["verify"][0]["result"]["answer"]
    jsonschema.validate(good, resolver)
    jsonschema.validate({**good, "decision": "deny", "number": ""}, resolver)
    for bad in (
        {"number": "4a"},
        {"number": "123456789"},
        {"number": "\uff14\uff12"},
        {"ts": -1},
        {"ts": 2**53 + 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, **bad}, resolver)
