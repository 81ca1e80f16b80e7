"""The RP SDK's HTTP side: typed errors, strict parsing of what the broker sends, URIs, waiting.

The broker here is a small real aiohttp server written by the test, because these
tests are about answers our real broker never gives (a crashed proxy, junk JSON, a
lying enrollment URI) and about exact error mapping. The SDK against the real broker
is tests/test_sdk_e2e.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support import DEADLINE, free_port, serving

from protocol import signing
from protocol import uri as enrollment_uri
from relying_party import (
    BadBrokerResponse,
    BrokerError,
    BrokerUnavailable,
    Conflict,
    Credential,
    Enrollment,
    EnrollmentRefusal,
    EnrollmentStatus,
    InvalidRequest,
    NoDevices,
    NotFound,
    PushAuthClient,
    PushBlocked,
    RateLimited,
    ServiceUnavailable,
    TooManyCredentials,
    Unauthorized,
    VerificationFailed,
    VerificationReason,
    new_totp,
)
from relying_party.wire import b64decode, b64encode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN = "tok_" + "A" * 28


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def problem(status: int, code: str | None, detail: str = "it went wrong") -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": "Error", "status": status, "detail": detail}
    if code is not None:
        body["code"] = code
    return web.json_response(body, status=status, content_type="application/problem+json")


@dataclass
class Scripted:
    """A broker whose every route answers with what the test put in `routes`."""

    url: str = ""
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[web.Request] = field(default_factory=list)
    # Set before the server stops: handlers that hang (a node that holds a request) end then.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def asked(self, route: str) -> int:
        """How many requests reached `route` ("POST v1/challenges")."""
        method, path = route.split(" ", 1)
        return sum(1 for r in self.seen if r.method == method and r.path.lstrip("/") == path)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        # The raw path, so a test sees exactly how the SDK quoted it.
        handler = self.routes.get(f"{request.method} {request.raw_path.split('?')[0].lstrip('/')}")
        if handler is None:
            return problem(404, "not_found")
        return await handler(request)


@pytest.fixture
async def broker() -> AsyncIterator[Scripted]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.dispatch)
    async with serving(app) as url:
        scripted.url = url
        yield scripted
        scripted.released.set()


def answer(status: int, body: Any) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    return handler


def raw(status: int, text: bytes, content_type: str = "text/html") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=text, content_type=content_type)

    return handler


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (400, "validation", InvalidRequest),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Unauthorized),
        (404, "not_found", NotFound),
        (409, "no_devices", NoDevices),
        (409, "push_blocked", PushBlocked),
        (409, "too_many_credentials", TooManyCredentials),
        (409, "some_new_conflict", Conflict),
        (429, "rate_limited", RateLimited),
        (503, "unavailable", ServiceUnavailable),
    ],
)
async def test_problem_json_becomes_a_typed_error(
    broker: Scripted, status: int, code: str, error_type: type[BrokerError]
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return problem(status, code, "the broker says no")

    broker.routes["POST v1/challenges"] = refuse
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(error_type) as caught:
            await client.create_challenge("alice")
    assert type(caught.value) is error_type
    if status == 503:  # "try again shortly", as for a broker the RP cannot reach
        assert isinstance(caught.value, BrokerUnavailable)
    assert (caught.value.status, caught.value.code, caught.value.detail) == (
        status,
        code,
        "the broker says no",
    )
    assert "the broker says no" in str(caught.value)


@pytest.mark.parametrize(
    ("header", "seconds"), [("7", 7), (" 12 ", 12), ("soon", None), ("-3", None), (None, None)]
)
async def test_retry_after_seconds_come_with_the_error(
    broker: Scripted, header: str | None, seconds: int | None
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        response = problem(429, "rate_limited", "too many")
        if header is not None:
            response.headers["Retry-After"] = header
        return response

    broker.routes["POST v1/challenges"] = refuse
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(RateLimited) as caught:
            await client.create_challenge("alice")
    assert caught.value.retry_after == seconds


@pytest.mark.parametrize(("said", "limit"), [(3, 3), ("3", None), (0, None), (True, None), (None, None)])
async def test_too_many_credentials_says_the_limit_only_when_it_is_one(
    broker: Scripted, said: Any, limit: int | None
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        body = {"title": "Conflict", "status": 409, "code": "too_many_credentials", "detail": "no more"}
        if said is not None:
            body["max_credentials"] = said
        return web.json_response(body, status=409, content_type="application/problem+json")

    broker.routes["POST v1/enrollments"] = refuse
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(TooManyCredentials) as caught:
            await client.create_enrollment("alice", "alice@example.com")
    assert isinstance(caught.value, Conflict) and caught.value.max_credentials == limit


async def test_error_without_a_problem_body_still_has_status_and_code(broker: Scripted) -> None:
    broker.routes["GET v1/rp"] = raw(502, b"<html>Bad Gateway</html>")
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(BrokerError) as caught:
            await client.rp()
    assert (caught.value.status, caught.value.code) == (502, "http_502")


async def test_unreachable_broker_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with PushAuthClient(url, "key") as client:
        with pytest.raises(BrokerUnavailable, match=f"cannot reach the pushauth broker at {url}") as caught:
            await client.health()
    # Every SDK error has a stable code, not only the broker's refusals: an RP logs
    # `exc.code` for any PushAuthError (an outsider's trial found this one without).
    assert caught.value.code == "broker_unavailable"


def test_every_error_type_has_a_stable_code() -> None:
    import relying_party
    from relying_party import PushAuthError

    types = [getattr(relying_party, n) for n in relying_party.__all__]
    errors = [t for t in types if isinstance(t, type) and issubclass(t, PushAuthError)]
    assert len(errors) == 14
    for error in errors:
        assert isinstance(error.code, str) and error.code, error
    reason = VerificationReason.BAD_SIGNATURE
    assert (VerificationFailed(reason, "x").code, VerificationFailed(reason, "x").reason) == (
        "verification_failed",
        reason,
    )
    assert ServiceUnavailable(503, "unavailable", "no Redis").code == "unavailable"


async def test_broker_that_does_not_answer_in_time_is_unavailable(broker: Scripted) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    broker.routes["GET v1/rp"] = slow
    async with PushAuthClient(broker.url, "key", request_timeout=0.3) as client:
        with pytest.raises(BrokerUnavailable, match=r"cannot reach .*: no answer within 0\.3 s") as caught:
            await client.rp()
    assert caught.value.code == "broker_unavailable"


@pytest.mark.parametrize(
    "handler",
    [
        raw(200, b"not json", "application/json"),
        answer(200, ["a", "list"]),
        answer(200, {"id": 7, "name": "Acme"}),
        answer(200, {"name": "Acme"}),
        raw(200, b'{"id": "x", "name": "' + b"x" * (2 << 20) + b'"}', "application/json"),
        # A RecursionError from the JSON parser before: no PushAuthError, a traceback in the RP.
        raw(200, b"[" * 5000 + b"]" * 5000, "application/json"),
    ],
    ids=["not json", "not an object", "wrong type", "missing field", "oversized", "nested too deep"],
)
async def test_malformed_success_is_a_bad_broker_response(broker: Scripted, handler: Handler) -> None:
    broker.routes["GET v1/rp"] = handler
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(BadBrokerResponse) as caught:
            await client.rp()
    assert caught.value.code == "bad_broker_response"


async def test_a_streamed_line_nested_too_deep_is_a_bad_broker_response(broker: Scripted) -> None:
    """The one-request sign-in's first line, arrays nested past the parser's recursion
    limit: a RecursionError escaped the SDK before."""
    deep = b"[" * 5000 + b"]" * 5000 + b"\n"
    broker.routes["POST v1/challenges"] = raw(201, deep, "application/x-ndjson")
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(BadBrokerResponse):
            await client.sign_in("alice", {"app": "x"})


@pytest.mark.parametrize("url", ["ftp://broker", "broker.example", "http://"])
def test_bad_broker_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        PushAuthClient(url, "key")


def test_bad_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="API key"):
        PushAuthClient("http://broker", "two words")


# -- requests ------------------------------------------------------------------------


async def test_requests_carry_the_api_key_and_quote_path_segments(broker: Scripted) -> None:
    broker.routes["GET v1/users/a%2Fb%20c/credentials"] = answer(200, {"credentials": []})
    broker.routes["GET v1/users/%2E%2E/credentials"] = answer(200, {"credentials": []})
    async with PushAuthClient(broker.url + "/", "secret-key") as client:
        assert await client.list_credentials("a/b c") == []
        assert await client.list_credentials("..") == []
    assert [r.headers["Authorization"] for r in broker.seen] == ["Bearer secret-key"] * 2


async def test_a_session_passed_in_is_used_and_left_open(broker: Scripted) -> None:
    broker.routes["GET v1/rp"] = answer(200, {"id": "rp_1", "name": "Acme"})
    async with aiohttp.ClientSession() as session:
        async with PushAuthClient(broker.url, "key", session=session) as client:
            first = await client.rp()
            assert await client.rp() is first  # cached: one request
        assert not session.closed
    assert len(broker.seen) == 1


async def test_credentials_are_parsed_and_round_trip(broker: Scripted) -> None:
    pk = signing.public_key(signing.new_seed())
    cred = {"id": "cred_1", "user": "alice", "name": "Pixel", "public_key": b64encode(pk)}
    cred |= {"created_at": 1_700_000_000_000, "last_used_at": None}
    broker.routes["GET v1/users/alice/credentials"] = answer(200, {"credentials": [cred]})
    broker.routes["DELETE v1/credentials/cred_1"] = raw(204, b"")
    async with PushAuthClient(broker.url, "key") as client:
        [got] = await client.list_credentials("alice")
        assert got.public_key == pk
        assert Credential.from_json(got.to_json()) == got
        assert await client.revoke_credential("cred_1") is None


async def test_credential_with_a_short_public_key_is_refused(broker: Scripted) -> None:
    cred = {"id": "c", "user": "alice", "name": "P", "public_key": b64encode(b"\x01" * 31), "created_at": 1}
    broker.routes["GET v1/users/alice/credentials"] = answer(200, {"credentials": [cred]})
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(BadBrokerResponse, match="32 bytes"):
            await client.list_credentials("alice")


async def test_health_reports_a_broker_without_redis(broker: Scripted) -> None:
    async def down(request: web.Request) -> web.Response:
        return problem(503, "unavailable", "redis: ConnectionError")

    broker.routes["GET healthz"] = down
    async with PushAuthClient(broker.url, "key") as client:
        health = await client.health()
    assert (health.ok, health.status, health.redis) == (False, "unavailable", "redis: ConnectionError")


async def test_challenge_with_a_number_of_the_wrong_length_is_refused(broker: Scripted) -> None:
    now = _now_ms()
    body = {"id": "ch_1", "user": "alice", "number": "123", "digits": 2, "nonce": b64encode(b"n" * 32)}
    body |= {"context": {}, "created_at": now, "expires_at": now + 60_000, "devices": 1}
    broker.routes["POST v1/challenges"] = answer(201, body)
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(BadBrokerResponse, match="digits"):
            await client.create_challenge("alice")


async def test_challenge_request_body(broker: Scripted) -> None:
    received: list[dict[str, Any]] = []

    async def create(request: web.Request) -> web.Response:
        received.append(await request.json())
        return problem(409, "no_devices")

    broker.routes["POST v1/challenges"] = create
    async with PushAuthClient(broker.url, "key") as client:
        for _ in range(2):
            with pytest.raises(NoDevices):
                await client.create_challenge("alice", {"app": "Payroll"}, ttl=120, digits=6)
        # Neither ttl nor digits named: neither is sent, the RP's policy at the broker decides.
        with pytest.raises(NoDevices):
            await client.create_challenge("alice")
        with pytest.raises(NoDevices):
            await client.sign_in("alice", {"app": "Payroll"}, digits=8)
    # The SDK's own fresh value for each challenge: 32 random bytes, a new one each time.
    nonces = [b64decode(body.pop("rp_nonce")) for body in received]
    assert [len(n) for n in nonces] == [32] * 4 and len(set(nonces)) == 4
    assert received == [
        {"user": "alice", "context": {"app": "Payroll"}, "ttl": 120, "digits": 6},
        {"user": "alice", "context": {"app": "Payroll"}, "ttl": 120, "digits": 6},
        {"user": "alice", "context": {}},
        {"user": "alice", "context": {"app": "Payroll"}, "digits": 8},
    ]


# -- enrollment ------------------------------------------------------------------------


def enrollment_body(uri: str | None, *, status: str = "pending", expires_in: int = 600_000) -> dict[str, Any]:
    return {
        "id": "enr_1",
        "user": "alice",
        "account": "alice@acme",
        "status": status,
        "expires_at": _now_ms() + expires_in,
        "credential": None,
        "token": TOKEN,
        "broker_url": "wss://broker.example/v1/device",
        "uri": uri,
    }


BROKER_URI = enrollment_uri.EnrollmentURI(
    "wss://broker.example/v1/device", TOKEN, "rp_1", "Acme", "alice@acme"
).build()
RP = answer(200, {"id": "rp_1", "name": "Acme"})  # create_enrollment checks the link names this RP


async def started(broker: Scripted, client: PushAuthClient) -> Enrollment:
    """A pending enrollment as create_enrollment returns it (with the link's secret)."""
    broker.routes["GET v1/rp"] = RP
    broker.routes["POST v1/enrollments"] = answer(201, enrollment_body(BROKER_URI))
    enrollment = await client.create_enrollment("alice", "alice@acme")
    broker.seen.clear()
    return enrollment


def bound_credential(enrollment: Enrollment, seed: bytes, *, secret: bytes | None = None) -> dict[str, Any]:
    """The credential JSON of a device that enrolled with `seed` from the enrollment's link
    (its binding over the link's secret, or over `secret` if given)."""
    pk = signing.public_key(seed)
    es = enrollment.binding_secret if secret is None else secret
    assert es is not None
    binding = signing.sign(seed, signing.binding_bytes("rp_1", TOKEN, es, pk, "Pixel", None))
    return {
        "id": "cred_1",
        "user": "alice",
        "name": "Pixel",
        "public_key": b64encode(pk),
        "created_at": 1,
        "last_used_at": None,
        "binding": b64encode(binding),
    }


async def test_enrollment_uri_gets_the_rps_own_totp_secret(broker: Scripted) -> None:
    received: list[dict[str, Any]] = []

    async def create(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response(enrollment_body(BROKER_URI), status=201)

    broker.routes["POST v1/enrollments"] = create
    broker.routes["GET v1/rp"] = RP
    totp = new_totp(algorithm="SHA256", digits=8)
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await client.create_enrollment("alice", "alice@acme", totp=totp, recoverable=True)
    assert received == [{"user": "alice", "account": "alice@acme", "recoverable": True}]
    assert enrollment.uri is not None
    parsed = enrollment_uri.parse(enrollment.uri)
    assert parsed.totp == totp
    assert (parsed.token, parsed.rp, parsed.account) == (TOKEN, "rp_1", "alice@acme")
    assert enrollment.totp == totp
    assert len(base64.b32decode(totp.secret)) == 20  # a 160-bit secret


async def test_enrollment_without_totp_adds_only_the_rps_link_secret(broker: Scripted) -> None:
    broker.routes["POST v1/enrollments"] = answer(201, enrollment_body(BROKER_URI))
    broker.routes["GET v1/rp"] = RP
    async with PushAuthClient(broker.url, "key") as client:
        first = await client.create_enrollment("alice", "alice@acme")
        second = await client.create_enrollment("alice", "alice@acme")
    assert first.uri is not None and first.binding_secret is not None
    parsed = enrollment_uri.parse(first.uri)
    assert parsed.binding_secret == first.binding_secret and len(first.binding_secret) == 32
    assert parsed == enrollment_uri.parse(BROKER_URI).with_binding_secret(first.binding_secret)
    assert second.binding_secret != first.binding_secret  # a fresh secret per link
    # The secret never goes to the broker (only into the link the RP shows).
    for request in broker.seen:
        assert b64encode(first.binding_secret) not in str(request.rel_url)


async def test_a_link_secret_planted_by_the_broker_is_replaced(broker: Scripted) -> None:
    """A broker that writes an `es` of its own into the link (so it would know the secret)
    does not get it used: the SDK's own secret replaces it."""
    planted = enrollment_uri.parse(BROKER_URI).with_binding_secret(b"\x07" * 32).build()
    broker.routes["POST v1/enrollments"] = answer(201, enrollment_body(planted))
    broker.routes["GET v1/rp"] = RP
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await client.create_enrollment("alice", "alice@acme")
    assert enrollment.uri is not None
    assert enrollment.binding_secret not in (None, b"\x07" * 32)
    assert enrollment_uri.parse(enrollment.uri).binding_secret == enrollment.binding_secret


async def test_the_link_says_what_the_rp_chose_not_what_the_broker_wrote(broker: Scripted) -> None:
    """A broker that marks the link recoverable, or plants a TOTP secret it knows, for an RP
    that asked for neither, gets neither shown to the device."""
    planted = replace(enrollment_uri.parse(BROKER_URI), recoverable=True, totp=new_totp()).build()
    broker.routes["POST v1/enrollments"] = answer(201, enrollment_body(planted))
    broker.routes["GET v1/rp"] = RP
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await client.create_enrollment("alice", "alice@acme")
    assert enrollment.uri is not None
    parsed = enrollment_uri.parse(enrollment.uri)
    assert parsed.recoverable is False and parsed.totp is None
    assert enrollment.recoverable is False


async def test_a_recovery_key_on_an_enrollment_not_made_recoverable_is_refused(broker: Scripted) -> None:
    seed, recovery_seed = signing.new_seed(), signing.new_seed()
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)  # not recoverable
        rpk = signing.public_key(recovery_seed)
        pk = signing.public_key(seed)
        assert enrollment.binding_secret is not None
        binding = signing.sign(
            seed, signing.binding_bytes("rp_1", TOKEN, enrollment.binding_secret, pk, "Pixel", rpk)
        )
        credential = {
            **bound_credential(enrollment, seed),
            "binding": b64encode(binding),
            "recovery_key": {"public_key": b64encode(rpk), "ts": None, "signature": None},
        }
        body = {**enrollment_body(None, status="completed"), "credential": credential}
        # The broker's word that the enrollment was recoverable changes nothing either:
        # that choice is the RP's, kept with the Enrollment it made.
        for claim in ({}, {"recoverable": False}, {"recoverable": True}):
            broker.routes["GET v1/enrollments/enr_1"] = answer(200, {**body, **claim})
            with pytest.raises(VerificationFailed) as failure:
                await client.wait_enrollment(enrollment, timeout=5)
            assert failure.value.reason is VerificationReason.BAD_BINDING
            assert "recoverable" in str(failure.value)


async def test_a_recovery_key_named_at_enrollment_with_a_rotation_signature_is_refused(
    broker: Scripted,
) -> None:
    """The binding covers a new credential's recovery key, not a `ts` and `signature` the
    broker adds to it (which would set the floor later rotations must pass)."""
    seed, recovery_seed = signing.new_seed(), signing.new_seed()
    async with PushAuthClient(broker.url, "key") as client:
        broker.routes["GET v1/rp"] = RP
        broker.routes["POST v1/enrollments"] = answer(201, enrollment_body(BROKER_URI))
        enrollment = await client.create_enrollment("alice", "alice@acme", recoverable=True)
        rpk, pk = signing.public_key(recovery_seed), signing.public_key(seed)
        assert enrollment.binding_secret is not None
        binding = signing.sign(
            seed, signing.binding_bytes("rp_1", TOKEN, enrollment.binding_secret, pk, "Pixel", rpk)
        )
        bound = {
            **bound_credential(enrollment, seed),
            "binding": b64encode(binding),
            "recovery_key": {"public_key": b64encode(rpk), "ts": None, "signature": None},
        }
        body = {**enrollment_body(None, status="completed"), "credential": bound}
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, body)
        done = await client.wait_enrollment(enrollment, timeout=5)  # as the device bound it
        assert done.credential is not None and done.credential.recovery_key is not None
        ts = _now_ms() + 10**9
        signed = {
            "public_key": b64encode(rpk),
            "ts": ts,
            "signature": b64encode(signing.sign(seed, signing.recovery_key_bytes("cred_1", rpk, ts))),
        }
        broker.routes["GET v1/enrollments/enr_1"] = answer(
            200, {**body, "credential": {**bound, "recovery_key": signed}}
        )
        with pytest.raises(VerificationFailed) as failure:
            await client.wait_enrollment(enrollment, timeout=5)
    assert failure.value.reason is VerificationReason.BAD_BINDING


@pytest.mark.parametrize(
    "uri",
    [
        None,
        "https://evil.example/enroll",
        BROKER_URI.replace("v=2", "v=3"),
        BROKER_URI.replace("rp=rp_1", "rp=rp_other"),  # a link for another RP
        BROKER_URI.replace(f"token={TOKEN}", "token=tok_other"),  # a token other than the answer's
    ],
    ids=["none", "not pushauth", "another version", "another rp", "another token"],
)
async def test_enrollment_with_a_bad_uri_is_refused(broker: Scripted, uri: str | None) -> None:
    broker.routes["POST v1/enrollments"] = answer(201, enrollment_body(uri))
    broker.routes["GET v1/rp"] = RP
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(BadBrokerResponse, match=r"URI|link"):
            await client.create_enrollment("alice", "alice@acme")


async def test_wait_enrollment_returns_the_bound_credential(broker: Scripted) -> None:
    seed = signing.new_seed()
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        body = enrollment_body(None, status="completed")
        body["credential"] = bound_credential(enrollment, seed)
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, body)
        done = await client.wait_enrollment(enrollment, timeout=5)
        # What an RP keeps between requests checks the binding just as well.
        stored = Enrollment.from_stored(json.loads(json.dumps(enrollment.to_json())))
        again = await client.get_enrollment(stored)
    assert done.completed
    assert done.credential is not None
    assert done.credential.public_key == signing.public_key(seed)
    assert again.credential == done.credential
    assert broker.seen[0].query["wait"] in ("4", "5")  # a long-poll within the timeout


async def test_a_credential_not_bound_to_the_link_is_refused(broker: Scripted) -> None:
    """A key the broker substitutes (bound to a secret it made up, or not bound at all)."""
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        body = enrollment_body(None, status="completed")
        for credential in (
            bound_credential(enrollment, signing.new_seed(), secret=b"\x01" * 32),
            {**bound_credential(enrollment, signing.new_seed()), "binding": None},
            {**bound_credential(enrollment, signing.new_seed()), "name": "Renamed"},
        ):
            broker.routes["GET v1/enrollments/enr_1"] = answer(200, {**body, "credential": credential})
            with pytest.raises(VerificationFailed) as failure:
                await client.wait_enrollment(enrollment, timeout=5)
            assert failure.value.reason is VerificationReason.BAD_BINDING


async def test_wait_enrollment_needs_the_enrollment_object(broker: Scripted) -> None:
    async with PushAuthClient(broker.url, "key") as client:
        with pytest.raises(TypeError, match="Enrollment"):
            await client.wait_enrollment("enr_1", timeout=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "match"),
    [({"id": "enr_2"}, "another enrollment"), ({"user": "mallory"}, "another enrollment or user")],
)
async def test_an_answer_about_another_enrollment_is_refused(
    broker: Scripted, change: dict[str, str], match: str
) -> None:
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, {**enrollment_body(None), **change})
        with pytest.raises(BadBrokerResponse, match=match):
            await client.wait_enrollment(enrollment, timeout=5)


async def test_a_completed_credential_of_another_user_is_refused(broker: Scripted) -> None:
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        body = enrollment_body(None, status="completed")
        body["credential"] = {**bound_credential(enrollment, signing.new_seed()), "user": "mallory"}
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, body)
        with pytest.raises(BadBrokerResponse, match="another user"):
            await client.wait_enrollment(enrollment, timeout=5)


async def test_completed_enrollment_without_credential_is_refused(broker: Scripted) -> None:
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, enrollment_body(None, status="completed"))
        with pytest.raises(BadBrokerResponse, match="without a credential"):
            await client.wait_enrollment(enrollment, timeout=5)


async def test_wait_enrollment_past_expiry_is_expired(broker: Scripted) -> None:
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, enrollment_body(None, expires_in=-1))
        enrollment = await client.wait_enrollment(enrollment, timeout=5)
    assert enrollment.status is EnrollmentStatus.EXPIRED
    assert not enrollment.completed


async def test_wait_enrollment_timeout_returns_pending(broker: Scripted) -> None:
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, enrollment_body(None))
        enrollment = await client.wait_enrollment(enrollment, timeout=0)
    assert enrollment.status is EnrollmentStatus.PENDING


REFUSAL = {"code": "too_many_credentials", "at": 1_700_000_000_000, "max_credentials": 3}


async def test_a_refusal_is_read_and_a_new_one_ends_the_wait(broker: Scripted) -> None:
    """API 1.11: a pending enrollment's `refused` is read (absent from an older broker:
    None); wait_enrollment returns on one other than the Enrollment it was given carries."""
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        assert enrollment.refused is None
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, {**enrollment_body(None), "refused": REFUSAL})
        # At once, not at the end of its wait (the test's deadline is half of it).
        refused = await asyncio.wait_for(client.wait_enrollment(enrollment, timeout=2 * DEADLINE), DEADLINE)
        assert refused.status is EnrollmentStatus.PENDING
        assert refused.refused == EnrollmentRefusal("too_many_credentials", 1_700_000_000_000, 3)
        assert refused.uri == enrollment.uri and refused.binding_secret == enrollment.binding_secret
        # Told once: given the refused one, the same refusal is no news (it times out pending).
        again = await client.wait_enrollment(refused, timeout=0)
        assert again.status is EnrollmentStatus.PENDING and again.refused == refused.refused
        assert broker.asked("GET v1/enrollments/enr_1") == 2
        newer = {**REFUSAL, "at": REFUSAL["at"] + 1}
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, {**enrollment_body(None), "refused": newer})
        waited = asyncio.wait_for(client.wait_enrollment(refused, timeout=2 * DEADLINE), DEADLINE)
        assert (await waited).refused == replace(refused.refused, at=newer["at"])
        for body in ({**enrollment_body(None), "refused": None}, enrollment_body(None)):
            broker.routes["GET v1/enrollments/enr_1"] = answer(200, body)
            assert (await client.get_enrollment(enrollment)).refused is None
        # A later broker's reason is read, not a bad response: the RP can still say a
        # device was refused (and could not read the enrollment at all otherwise).
        later = {"code": "some_new_reason", "at": 5}
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, {**enrollment_body(None), "refused": later})
        assert (await client.get_enrollment(enrollment)).refused == EnrollmentRefusal("some_new_reason", 5)


@pytest.mark.parametrize(
    "refused",
    [
        "too_many_credentials",
        [REFUSAL],
        {**REFUSAL, "code": "Not A Code"},
        {**REFUSAL, "code": ""},
        {**REFUSAL, "code": None},
        {"code": "some_new_reason", "at": 1, "max_credentials": 0},
        {**REFUSAL, "at": "1700000000000"},
        {**REFUSAL, "at": True},
        {**REFUSAL, "max_credentials": 0},
        {**REFUSAL, "max_credentials": 2.5},
        {k: v for k, v in REFUSAL.items() if k != "max_credentials"},
    ],
)
async def test_a_malformed_refusal_is_a_bad_response(broker: Scripted, refused: Any) -> None:
    async with PushAuthClient(broker.url, "key") as client:
        enrollment = await started(broker, client)
        broker.routes["GET v1/enrollments/enr_1"] = answer(200, {**enrollment_body(None), "refused": refused})
        with pytest.raises(BadBrokerResponse, match="refused"):
            await client.wait_enrollment(enrollment, timeout=5)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"digits": 7}, "digits"), ({"algorithm": "MD5"}, "algorithm")]
)
def test_new_totp_refuses_bad_parameters(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        new_totp(**kwargs)


def test_base64url_is_strict() -> None:
    assert b64decode(b64encode(b"\xff\xfe")) == b"\xff\xfe"
    for bad in ("a", "ab=", "a+b/", "a b"):
        with pytest.raises(ValueError, match="base64url"):
            b64decode(bad)
    json.dumps(b64encode(b"x"))  # plain ASCII, JSON-safe


# -- a create sent again ----------------------------------------------------------------


def made(request_body: dict[str, Any], n: int) -> dict[str, Any]:
    """The 201 body of challenge `n` made as `request_body` asked."""
    now = _now_ms()
    return {
        "id": f"ch_{n}", "user": request_body["user"], "number": "42",
        "digits": request_body.get("digits", 2),
        "nonce": b64encode(bytes([n]) * 32), "rp_nonce": request_body["rp_nonce"],
        "context": request_body["context"], "created_at": now, "expires_at": now + 60_000, "devices": 1,
    }  # fmt: skip


@dataclass
class HeldFirst:
    """A create route whose first request is held until the test ends (a node that hangs
    holding it); later ones make a challenge. `keys`: each request's Idempotency-Key."""

    broker: Scripted
    keys: list[str | None] = field(default_factory=list)

    async def __call__(self, request: web.Request) -> web.Response:
        self.keys.append(request.headers.get("Idempotency-Key"))
        body = await request.json()
        if len(self.keys) == 1:
            await self.broker.released.wait()
        return web.json_response(made(body, len(self.keys)), status=201)


def openapi(version: Any) -> Handler:
    return answer(200, {"openapi": "3.1.0", "info": {"title": "pushauth broker", "version": version}})


@pytest.mark.parametrize("version", ["1.2", "1.10", "2.0", "1.2.3"])
async def test_a_create_that_keeps_other_prompts_is_sent_again_to_a_keyed_broker(
    broker: Scripted, version: str
) -> None:
    """RP API 1.2 answers a create sent again with the challenge the first made, so even a
    create with supersede=False goes again, with the same key; the version is read once."""
    create = HeldFirst(broker)
    broker.routes |= {"POST v1/challenges": create, "GET v1/openapi.json": openapi(version)}
    async with PushAuthClient(broker.url, "key", request_timeout=10, answer_timeout=1.5) as client:
        challenge = await client.create_challenge("alice", {"app": "Payroll"}, supersede=False)
        assert challenge.id == "ch_2" and client.creates_sent_again == 1
        await client.create_challenge("alice", supersede=False)
    keys = create.keys
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]
    assert broker.asked("GET v1/openapi.json") == 1


@pytest.mark.parametrize(
    "document",
    [
        openapi("1.1"),
        openapi("0.9"),
        openapi(12),
        openapi("one.two"),
        answer(200, {"openapi": "3.1.0"}),
        answer(200, ["not", "a", "document"]),
        raw(200, b"not json", "application/json"),
        None,  # no document at all: 404
    ],
)
async def test_a_create_that_keeps_other_prompts_is_sent_once_to_an_older_broker(
    broker: Scripted, document: Handler | None
) -> None:
    """Without keyed creates a second create would leave two prompts: one attempt, with the
    whole request timeout, and the version is not read again."""
    create = HeldFirst(broker)
    broker.routes["POST v1/challenges"] = create
    if document is not None:
        broker.routes["GET v1/openapi.json"] = document
    async with PushAuthClient(broker.url, "key", request_timeout=1.5, answer_timeout=1.5) as client:
        # One attempt with (nearly) all of the request timeout.
        with pytest.raises(BrokerUnavailable, match=r"no answer within 1\.[45]\d? s"):
            await client.create_challenge("alice", supersede=False)
        assert client.creates_sent_again == 0
        await client.create_challenge("alice", supersede=False)  # answered, and the version not read again
    assert broker.asked("POST v1/challenges") == 2
    assert broker.asked("GET v1/openapi.json") == 1


@pytest.mark.parametrize("first", ["hangs", 429, 503, 401])
async def test_a_version_that_cannot_be_read_is_asked_again_next_time(
    broker: Scripted, first: str | int
) -> None:
    """A read of the document that gets no answer, or an answer about this moment (rate
    limited, unavailable, a key being rotated), sends that create once (within the
    request timeout still) and learns nothing: the next such create reads it again."""
    reads = 0

    async def document(request: web.Request) -> web.Response:
        nonlocal reads
        reads += 1
        if reads == 1:
            if first == "hangs":
                await broker.released.wait()
            else:
                return problem(int(first), None)
        return await openapi("1.2")(request)

    create = HeldFirst(broker)
    broker.routes |= {"POST v1/challenges": create, "GET v1/openapi.json": document}
    async with PushAuthClient(broker.url, "key", request_timeout=10, answer_timeout=1.5) as client:
        create.keys.append(None)  # the first create is not held
        challenge = await client.create_challenge("alice", supersede=False)
        assert challenge.id == "ch_2" and client.creates_sent_again == 0
        create.keys.clear()  # the next is held: sent again now that the version is read
        challenge = await client.create_challenge("alice", supersede=False)
        assert challenge.id == "ch_2" and client.creates_sent_again == 1
    assert reads == 2


async def test_creates_that_supersede_do_not_read_the_version(broker: Scripted) -> None:
    create = HeldFirst(broker)
    broker.routes["POST v1/challenges"] = create
    async with PushAuthClient(broker.url, "key", request_timeout=10, answer_timeout=1.5) as client:
        challenge = await client.create_challenge("alice")
        assert challenge.id == "ch_2" and client.creates_sent_again == 1
    assert broker.asked("GET v1/openapi.json") == 0
