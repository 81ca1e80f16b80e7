"""POST /v1/challenges with an Idempotency-Key (RP API 1.2, docs/http-api.md): a create
sent again with the same key gets the challenge the first made, in the same 201 form,
whatever its state now; nothing more is pushed, counted or superseded. Keys are per RP
and user; a key used for another request is 409, a malformed one 400, and neither
changes anything. A real broker, a real device on its WebSocket."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from shared_broker import broker  # noqa: F401  (a fixture: one broker for the module)
from support import BrokerProcess, new_rp
from test_broker_device_ws import CTX, Device, online_device
from test_broker_http_api import assert_problem

from protocol.frames import AnswerResult, Cancel, Challenge
from relying_party.sdk import PushAuthClient


async def create(
    http: aiohttp.ClientSession, broker: BrokerProcess, key: str, body: dict[str, Any], idem: str | None
) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    async with http.post(f"{broker.http_url}/v1/challenges", json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None), r.headers.get("Content-Type", "")


async def next_challenge_frames(dev: Device, until: str) -> list[Any]:
    """The device's frames up to and including the Challenge for `until`."""
    frames = []
    while True:
        frame = await dev.frame()
        frames.append(frame)
        if isinstance(frame, Challenge) and frame.ch == until:
            return frames


@pytest.fixture
async def world(broker: BrokerProcess) -> Any:  # (broker, rp, device, http)
    rp = await new_rp(broker, "Idempotent RP")  # an RP of its own: keys are per RP and user
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client, aiohttp.ClientSession() as http:
        dev = await online_device(client, broker.ws_url, "alice")
        yield broker, rp, dev, http
        await dev.close()


async def test_the_same_key_gets_the_same_challenge_and_pushes_once(world: Any) -> None:
    broker, rp, dev, http = world
    body = {"user": "alice", "context": CTX}
    status, first, _ = await create(http, broker, rp["api_key"], body, "k-1")
    assert status == 201
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge) and pushed.ch == first["id"]
    status, again, _ = await create(http, broker, rp["api_key"], body, "k-1")
    assert status == 201
    assert again["superseded"] == []
    assert {k: again[k] for k in ("id", "number", "expires_at", "rp_nonce", "devices")} == {
        k: first[k] for k in ("id", "number", "expires_at", "rp_nonce", "devices")
    }
    # Another key is a new create: it supersedes the first. Until its challenge, the
    # device got no second copy of the first and no other frame but the first's end.
    status, other, _ = await create(http, broker, rp["api_key"], body, "k-2")
    assert status == 201 and other["superseded"] == [first["id"]]
    frames = await next_challenge_frames(dev, other["id"])
    assert [f for f in frames if isinstance(f, Challenge)] == [frames[-1]]
    assert all(isinstance(f, Cancel) and f.ch == first["id"] for f in frames[:-1]), frames


async def test_a_key_gives_its_challenge_after_it_ended(world: Any) -> None:
    broker, rp, dev, http = world
    body = {"user": "alice", "context": CTX}
    _, first, _ = await create(http, broker, rp["api_key"], body, "answered")
    pushed = await dev.frame()
    await dev.send(dev.answer(pushed, number=first["number"]))
    assert await dev.frame() == AnswerResult(ch=first["id"], outcome="approved")
    status, again, _ = await create(http, broker, rp["api_key"], body, "answered")
    assert status == 201 and again["id"] == first["id"]  # its result says approved
    headers = {"Authorization": f"Bearer {rp['api_key']}"}
    async with http.get(f"{broker.http_url}/v1/challenges/{first['id']}", headers=headers) as r:
        assert (await r.json())["status"] == "approved"


@pytest.mark.parametrize(
    ("change", "idem"),
    [
        ({"context": {**CTX, "app": "Other"}}, "reused"),
        ({"digits": 6}, "reused"),
        ({"rp_nonce": "A" * 43}, "reused"),
    ],
)
async def test_a_key_used_for_another_request_is_409_and_changes_nothing(
    world: Any, change: dict[str, Any], idem: str
) -> None:
    broker, rp, dev, http = world
    body = {"user": "alice", "context": CTX, "rp_nonce": "B" * 42 + "A"}  # canonical base64url: 32 bytes
    _, first, _ = await create(http, broker, rp["api_key"], body, idem)
    assert isinstance(await dev.frame(), Challenge)
    status, problem, ctype = await create(http, broker, rp["api_key"], {**body, **change}, idem)
    assert_problem(status, problem, ctype, 409, "idempotency_key_reused")
    # Nothing happened: a create with a fresh key supersedes the first, which was live.
    _, other, _ = await create(http, broker, rp["api_key"], body, "fresh")
    assert other["superseded"] == [first["id"]]


@pytest.mark.parametrize("idem", ["", "a b", "x" * 65, "ключ", "a/b"])
async def test_a_malformed_key_is_400_and_creates_nothing(world: Any, idem: str) -> None:
    broker, rp, _, http = world
    status, problem, ctype = await create(
        http, broker, rp["api_key"], {"user": "alice", "context": CTX}, idem
    )
    assert_problem(status, problem, ctype, 400, "invalid_request")
    assert "Idempotency-Key" in problem["detail"]
    _, other, _ = await create(http, broker, rp["api_key"], {"user": "alice", "context": CTX}, None)
    assert other["superseded"] == []  # no challenge was made before it


async def test_keys_are_per_user(world: Any) -> None:
    broker, rp, dev, http = world
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        bob = await online_device(client, broker.ws_url, "bob")
        _, alices, _ = await create(http, broker, rp["api_key"], {"user": "alice", "context": CTX}, "same")
        _, bobs, _ = await create(http, broker, rp["api_key"], {"user": "bob", "context": CTX}, "same")
        assert alices["id"] != bobs["id"]
        assert (await dev.frame()).ch == alices["id"]
        assert (await bob.frame()).ch == bobs["id"]
        await bob.close()
