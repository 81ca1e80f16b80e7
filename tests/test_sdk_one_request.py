"""The one-request sign-in (docs/http-api.md, "One request"): POST /v1/challenges with
`Accept: application/x-ndjson` streams the challenge, then its result, in one response.

Real parts throughout: a redis-server, `pushauth-broker serve` as a subprocess, devices
simulated with protocol.session over a real WebSocket (tests/test_sdk_e2e.py), the RP
SDK, and a raw aiohttp client where the test checks the wire itself.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from shared_broker import broker, rp  # noqa: F401 - fixtures
from support import BrokerProcess
from test_sdk_e2e import CONTEXT, FRAME_WAIT_S, enroll_device, wrong_number

from protocol.challenge import MIN_TTL_S
from protocol.frames import AnswerResult, Cancel, Decision
from protocol.frames import Challenge as ChallengeFrame
from relying_party import InvalidRequest, NoDevices, PushAuthClient, Status, Unauthorized
from relying_party.wire import b64encode

NDJSON = "application/x-ndjson"


@pytest.fixture
async def client(broker: BrokerProcess, rp: dict[str, Any]) -> AsyncIterator[PushAuthClient]:
    async with PushAuthClient(broker.http_url, rp["api_key"]) as sdk:
        yield sdk


@pytest.fixture
async def http(rp: dict[str, Any]) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {rp['api_key']}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


def _body(user: str, **extra: Any) -> dict[str, Any]:
    return {"user": user, "context": CONTEXT, "rp_nonce": b64encode(b"\x01" * 32), **extra}


async def _line(response: aiohttp.ClientResponse) -> Any:
    raw = await asyncio.wait_for(response.content.readline(), FRAME_WAIT_S)
    assert raw.endswith(b"\n"), f"a line ends with LF: {raw!r}"
    return json.loads(raw)


@pytest.mark.parametrize(
    ("decision", "typed", "status"),
    [
        (Decision.APPROVE, "right", Status.APPROVED),
        (Decision.APPROVE, "wrong", Status.NUMBER_MISMATCH),
        (Decision.DENY, "", Status.DENIED),
    ],
)
async def test_sign_in_in_one_request_is_verified_end_to_end(
    client: PushAuthClient,
    broker: BrokerProcess,
    decision: str,
    typed: str,
    status: Status,
) -> None:
    device, cred = await enroll_device(client, broker, f"alice-{status}")
    async with device.ws, await client.sign_in(f"alice-{status}", CONTEXT, digits=6) as pending:
        # The number is there before anyone answered: the page can show it now.
        assert pending.streamed
        challenge = pending.challenge
        assert len(challenge.number) == 6
        pushed = await device.recv_type(ChallengeFrame)
        assert (pushed.ch, pushed.cid) == (challenge.id, cred.id)
        number = {"right": challenge.number, "wrong": wrong_number(challenge.number)}.get(typed, typed)
        reply = await device.answer(pushed, decision, number)
        assert isinstance(reply, AnswerResult)
        result = await pending.result({cred.id: cred.public_key})
    assert result.status is status
    assert result.approved is (status is Status.APPROVED)
    assert result.credential_id == cred.id


async def test_the_wire_number_first_then_the_long_polls_body(
    client: PushAuthClient,
    http: aiohttp.ClientSession,
    broker: BrokerProcess,
) -> None:
    device, cred = await enroll_device(client, broker, "bob")
    async with device.ws:
        url = f"{broker.http_url}/v1/challenges?wait=30"
        async with http.post(url, json=_body("bob"), headers={"Accept": NDJSON}) as response:
            assert response.status == 201
            assert response.headers["Content-Type"] == NDJSON
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert response.headers["Cache-Control"] == "no-store"
            created = await _line(response)  # before the device answered: flushed at once
            assert set(created) >= {"id", "number", "digits", "nonce", "rp_nonce", "expires_at", "devices"}
            assert created["devices"] == 1
            pushed = await device.recv_type(ChallengeFrame)
            assert pushed.ch == created["id"]
            assert isinstance(await device.answer(pushed, Decision.APPROVE, created["number"]), AnswerResult)
            result = await _line(response)
            assert await response.content.read() == b"", "two lines, then the end"
        async with http.get(f"{broker.http_url}/v1/challenges/{created['id']}") as polled:
            assert polled.status == 200
            assert result == await polled.json()  # the very body the long-poll gives
    assert result["status"] == "approved"
    assert result["answer"]["credential_id"] == cred.id


async def test_expiry_inside_the_stream(client: PushAuthClient, broker: BrokerProcess) -> None:
    device, cred = await enroll_device(client, broker, "erin")
    async with device.ws:
        pending = await client.sign_in("erin", CONTEXT, ttl=MIN_TTL_S)
        await device.recv_type(ChallengeFrame)
        result = await pending.result({cred.id: cred.public_key})
        assert result.status is Status.EXPIRED
        cancel = await device.recv_type(Cancel)
        assert (cancel.ch, cancel.reason) == (pending.challenge.id, "expired")


async def test_rp_going_away_mid_stream_leaves_the_challenge_answerable(
    client: PushAuthClient,
    http: aiohttp.ClientSession,
    broker: BrokerProcess,
) -> None:
    device, cred = await enroll_device(client, broker, "carol")
    async with device.ws:
        url = f"{broker.http_url}/v1/challenges"
        response = await http.post(url, json=_body("carol"), headers={"Accept": NDJSON})
        created = await _line(response)
        response.close()  # the RP's connection is gone, its second line never read
        pushed = await device.recv_type(ChallengeFrame)
        reply = await device.answer(pushed, Decision.APPROVE, created["number"])
        assert isinstance(reply, AnswerResult)
        assert reply.outcome == Status.APPROVED
        # The long-poll reads it as always (the SDK's own Challenge, as the RP keeps it).
        async with http.get(f"{url}/{created['id']}?wait=5") as polled:
            body = await polled.json()
        assert (polled.status, body["status"], body["answer"]["credential_id"]) == (200, "approved", cred.id)
    async with http.get(f"{broker.http_url}/healthz") as health:
        assert health.status == 200


async def test_sdk_stream_given_up_before_the_result_then_read_by_long_poll(
    client: PushAuthClient,
    broker: BrokerProcess,
) -> None:
    """An RP that closes its PendingSignIn (say, the page went away) may read the result later."""
    device, cred = await enroll_device(client, broker, "gina")
    async with device.ws:
        async with await client.sign_in("gina", CONTEXT) as pending:
            challenge = pending.challenge
        pushed = await device.recv_type(ChallengeFrame)
        assert isinstance(await device.answer(pushed, Decision.APPROVE, challenge.number), AnswerResult)
        result = await client.wait_result(challenge, {cred.id: cred.public_key}, timeout=FRAME_WAIT_S)
    assert result.approved


@pytest.mark.parametrize(
    ("body", "query", "headers", "status", "code"),
    [
        ({"user": "x", "colour": "red"}, "", {}, 400, "invalid_request"),
        ({"user": "x", "ttl": 1}, "", {}, 400, "invalid_request"),
        ({"user": "dora"}, "?wait=61", {}, 400, "invalid_request"),
        ({"user": "dora"}, "?wait=soon", {}, 400, "invalid_request"),
        # checked in the plain form too (it does not wait), as the OpenAPI document says
        ({"user": "dora"}, "?wait=-1", {"Accept": "application/json"}, 400, "invalid_request"),
        ({"user": "dora"}, "", {"Authorization": "Bearer nope"}, 401, "unauthorized"),
        ({"user": "nobody"}, "", {}, 409, "no_devices"),
    ],
)
async def test_refusals_are_problems_not_streams(
    http: aiohttp.ClientSession,
    broker: BrokerProcess,
    body: dict[str, Any],
    query: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    url = f"{broker.http_url}/v1/challenges{query}"
    async with http.post(url, json=body, headers={"Accept": NDJSON, **headers}) as response:
        assert response.status == status
        assert response.content_type == "application/problem+json"
        assert (await response.json())["code"] == code


async def test_sdk_refusals_are_the_usual_errors(client: PushAuthClient, rp: dict[str, Any]) -> None:
    with pytest.raises(NoDevices):
        await client.sign_in("nobody", CONTEXT)
    with pytest.raises(InvalidRequest):
        await client.sign_in("nobody", CONTEXT, ttl=1)
    async with PushAuthClient(client.broker_url, "wrong-key") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.sign_in("nobody", CONTEXT)


async def test_plain_json_is_answered_without_ndjson_in_accept(
    client: PushAuthClient,
    http: aiohttp.ClientSession,
    broker: BrokerProcess,
) -> None:
    """What an older RP sends (and an Accept that refuses ndjson) gets the one JSON body."""
    device, _cred = await enroll_device(client, broker, "hal")
    async with device.ws:
        for accept in ("application/json", f"{NDJSON};q=0, application/json", "*/*"):
            url = f"{broker.http_url}/v1/challenges"
            async with http.post(url, json=_body("hal"), headers={"Accept": accept}) as response:
                assert (response.status, response.content_type) == (201, "application/json")
                assert "number" in await response.json()


async def test_a_node_shutting_down_ends_the_stream_with_what_it_has(
    client: PushAuthClient,
    http: aiohttp.ClientSession,
    broker: BrokerProcess,
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    """SIGTERM to the node holding the stream: the second line comes at once with the
    challenge as it stands (pending), as a long-poll answers; the RP then reads the
    result from another node, and the challenge is still answerable there."""
    leaving = broker_factory(redis_url=broker.redis_url, node="leaving")
    device, cred = await enroll_device(client, broker, "ivan")  # the device stays on `broker`
    async with device.ws:
        url = f"{leaving.http_url}/v1/challenges"
        async with http.post(url, json=_body("ivan"), headers={"Accept": NDJSON}) as response:
            created = await _line(response)
            pushed = await device.recv_type(ChallengeFrame)
            stopping = asyncio.create_task(asyncio.to_thread(leaving.kill, signal.SIGTERM))
            held = await _line(response)
            assert (held["id"], held["status"], held["answer"]) == (created["id"], "pending", None)
            assert await response.content.read() == b""
        assert await stopping == 0
        reply = await device.answer(pushed, Decision.APPROVE, created["number"])
        assert isinstance(reply, AnswerResult) and reply.outcome == Status.APPROVED
        async with http.get(f"{broker.http_url}/v1/challenges/{created['id']}?wait=5") as polled:
            body = await polled.json()
    assert (body["status"], body["answer"]["credential_id"]) == ("approved", cred.id)


async def test_the_wait_passing_gives_a_pending_line_and_the_long_poll_carries_on(
    client: PushAuthClient,
    http: aiohttp.ClientSession,
    broker: BrokerProcess,
) -> None:
    """`?wait=0`: the second line at once, pending; the challenge goes on and the
    long-poll reads its answer."""
    device, cred = await enroll_device(client, broker, "judy")
    async with device.ws:
        url = f"{broker.http_url}/v1/challenges"
        async with http.post(f"{url}?wait=0", json=_body("judy"), headers={"Accept": NDJSON}) as response:
            created = await _line(response)
            held = await _line(response)
            assert await response.content.read() == b""
        assert (held["id"], held["status"], held["answer"]) == (created["id"], "pending", None)
        pushed = await device.recv_type(ChallengeFrame)
        assert isinstance(await device.answer(pushed, Decision.APPROVE, created["number"]), AnswerResult)
        async with http.get(f"{url}/{created['id']}?wait=5") as polled:
            body = await polled.json()
    assert (body["status"], body["answer"]["credential_id"]) == ("approved", cred.id)
