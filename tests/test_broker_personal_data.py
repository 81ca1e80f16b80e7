"""Personal data at the broker (docs/operations.md, "Personal data").

The right of access: GET /v1/users/{user}/data shows all of it, for this RP's user only.

The right to erasure (docs/http-api.md, "Erasing a user"): an RP erases one user with
DELETE /v1/users/{user}, and the real Redis holds nothing of that user afterwards,
while other users and other RPs' users with the same name keep all theirs. A revoked
credential's Web Push subscription does not stay behind. Log lines at INFO (the
access log on) carry no user id, API key or context value."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import redis
from support import BROKER, BrokerProcess, RedisServer, add_rp, free_port, run_cli, wait_until
from test_broker_device_ws import CTX, Device, online_device

from broker import keys
from protocol.frames import AnswerResult, Cancel, Challenge, PushSubscribe, PushSubscribed, Revoked
from relying_party.errors import NotFound
from relying_party.sdk import PushAuthClient

# Nothing listens there: a wake-up fails, which is not these tests' business.
PUSH_SERVICE = f"http://127.0.0.1:{free_port()}"
SUB_KEYS = {"p256dh": b"\x04" + bytes(64), "auth": bytes(16)}


def all_keys(url: str) -> set[str]:
    with redis.Redis.from_url(url) as r:
        return {k.decode() for k in r.scan_iter(match="pa:*", count=1000)}


UNRELATED = 20_000


def commands(r: redis.Redis) -> dict[str, int]:
    """How many times the server ran each command (INFO commandstats), less this INFO."""
    stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}
    stats["info"] = stats.get("info", 0) + 1
    return stats


def assert_no_walk(url: str, before: dict[str, int]) -> None:
    """Since `before`, the server ran a few dozen commands at most, and none that lists
    keys: the cost is the user's, not the keyspace's."""
    with redis.Redis.from_url(url) as r:
        ran = {k: n - before.get(k, 0) for k, n in commands(r).items() if n > before.get(k, 0)}
    ran.pop("ping", None)  # the nodes' heartbeats on their subscriptions, one a second each
    assert not {"scan", "keys", "cluster|getkeysinslot", "cluster|countkeysinslot"} & set(ran), ran
    assert sum(ran.values()) < 100, ran


def keys_of(found: set[str], rp_id: str, user: str, cids: list[str]) -> set[str]:
    """Of `found`, the keys that are about `user` at `rp_id`: in the user's slot, or
    naming one of the user's credentials."""
    tag = keys.user_tag(rp_id, user)
    return {k for k in found if k.startswith(f"pa:{{{tag}}}:") or any(k.endswith(c) for c in cids)}


@pytest.fixture
def push_broker(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess], tmp_path: Path
) -> BrokerProcess:
    args = ["--push-key", str(tmp_path / "vapid.pem"), "--push-service", PUSH_SERVICE]
    return broker_factory(redis_url=redis_server.url, node="erase", extra_args=args)


async def subscribed(dev: Device) -> None:
    await dev.send(
        PushSubscribe(rid=3, cids=(dev.cid,), endpoint=f"{PUSH_SERVICE}/sub/{dev.cid}", **SUB_KEYS)
    )
    assert isinstance(await dev.frame(), PushSubscribed)


async def test_erase_user_removes_every_key_of_that_user_and_nothing_else(
    push_broker: BrokerProcess, redis_server: RedisServer
) -> None:
    url = redis_server.url
    a, b = add_rp("Erasing RP", redis_url=url), add_rp("Other RP", redis_url=url)
    async with (
        PushAuthClient(push_broker.http_url, a["api_key"]) as client,
        PushAuthClient(push_broker.http_url, b["api_key"]) as other,
    ):
        # alice at A: an online device with a push subscription, a removed device, a
        # pending setup, a denied sign-in (fatigue counts) and a pending one with context.
        dev = await online_device(client, push_broker.ws_url, user="alice")
        await subscribed(dev)
        gone = await online_device(client, push_broker.ws_url, user="alice")
        await client.revoke_credential(gone.cid)
        await client.create_enrollment("alice", "alice@example.com")
        first = await client.create_challenge("alice", CTX)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge) and pushed.ch == first.id, pushed
        await dev.send(dev.answer(pushed, decision="deny"))
        assert isinstance(await dev.frame(), AnswerResult)
        pending = await client.create_challenge("alice", CTX)
        assert isinstance(await dev.frame(), Challenge)
        # bob at A, and another "alice" at B: they must keep everything.
        bob = await online_device(client, push_broker.ws_url, user="bob")
        await client.create_challenge("bob", CTX)
        twin = await online_device(other, push_broker.ws_url, user="alice")
        await subscribed(twin)
        await other.create_challenge("alice", CTX)

        # Many keys of nobody in particular: what the broker reads to find alice's must
        # not grow with them (no SCAN, no slot listing: broker/user_data.py).
        with redis.Redis.from_url(url) as r:
            with r.pipeline(transaction=False) as p:  # one key a command: a cluster node takes it
                for i in range(UNRELATED):
                    p.set(f"unrelated:{i}", i)
                p.execute()
            counts = commands(r)

        # The right of access: all of it, and only this RP's alice.
        data = await client.user_data("alice")
        assert_no_walk(url, counts)
        assert [c["id"] for c in data["credentials"]] == [dev.cid]
        assert [c["id"] for c in data["revoked_credentials"]] == [gone.cid]
        assert [c["name"] for c in data["revoked_credentials"]] == ["dev"]
        assert [e["status"] for e in data["enrollments"]] == ["completed", "completed", "pending"]
        assert [(c["id"], c["status"]) for c in data["challenges"]] == [
            (first.id, "denied"),
            (pending.id, "pending"),
        ]
        assert (
            data["challenges"][0]["context"] == CTX and data["challenges"][0]["answer"]["decision"] == "deny"
        )
        assert data["push_subscriptions"] == [
            {"credential_id": dev.cid, "endpoint": f"{PUSH_SERVICE}/sub/{dev.cid}"}
        ]
        assert data["push_block"]["pushes_since_sign_in"] == 2 and data["recovery_notices"] == []
        assert [c["id"] for c in (await other.user_data("alice"))["credentials"]] == [twin.cid]
        before = all_keys(url)
        alice_keys = keys_of(before, a["id"], "alice", [dev.cid, gone.cid])
        kept = before - alice_keys
        # What the erasure is about: credentials, challenges, enrollment, fatigue state,
        # the push subscription (this test's own Redis, as SCAN sees it).
        kinds = {k.split(":")[2] for k in alice_keys if k.startswith("pa:{")}
        assert {"cred", "ch", "enr", "tok", "uc", "pend", "guard", "own"} <= kinds, sorted(alice_keys)
        assert keys.push_subscription(dev.cid) in alice_keys

        with redis.Redis.from_url(url) as r:
            counts = commands(r)
        await client.erase_user("alice")
        assert_no_walk(url, counts)

        # The online device is told at once, and its prompt ends.
        told = [await dev.frame(), await dev.frame()]
        assert Revoked(cid=dev.cid, reason="removed_by_rp", rid=None) in told, told
        assert any(isinstance(f, Cancel) and f.ch == pending.id for f in told), told
        after = all_keys(url)
        assert keys_of(after, a["id"], "alice", [dev.cid, gone.cid]) == set()
        # A's count of pending enrollments goes too: its one pending enrollment was alice's,
        # withdrawn by the erasure, and a count of none is no key (broker/enrollment_quota.py).
        count = keys.rp_pending_enrollments(a["id"])
        assert kept - after <= {
            k for k in kept if k.startswith("pa:wp:live:") or k.startswith("pa:health") or k == count
        }
        assert await client.list_credentials("alice") == []
        assert (await client.push_block("alice"))["pushes_since_sign_in"] == 0
        after_data = await client.user_data("alice")
        assert all(after_data[k] == [] for k in after_data if isinstance(after_data[k], list)), after_data
        with pytest.raises(NotFound):
            await client.get_result(pending, {})
        # Idempotent: a second call finds nothing and says so the same way.
        await client.erase_user("alice")
        # The device that comes back is refused as unknown: the agents treat it as removed.
        back = await Device.connect(push_broker.ws_url, seed=dev.seed)
        back.cid = dev.cid
        welcome, _ = await back.authenticate()
        assert welcome.rejected == ({"cid": dev.cid, "code": "unknown_credential"},)
        # Others are untouched and still work.
        assert [c.id for c in await client.list_credentials("bob")] == [bob.cid]
        assert [c.id for c in await other.list_credentials("alice")] == [twin.cid]
        assert isinstance(await twin.frame(), Challenge)
        await other.create_challenge("alice", CTX)  # supersedes: twin gets a Cancel and the new one
        frames = [await twin.frame(), await twin.frame()]
        assert any(isinstance(f, Challenge) for f in frames), frames


async def test_erase_user_refuses_bad_input_and_other_keys(push_broker: BrokerProcess) -> None:
    a = push_broker.add_rp("RP")
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {a['api_key']}"}
        async with http.delete(f"{push_broker.http_url}/v1/users/alice") as resp:
            assert resp.status == 401
        async with http.delete(f"{push_broker.http_url}/v1/users/a%01b", headers=auth) as resp:
            assert resp.status == 400
            assert (await resp.json())["code"] == "invalid_request"
        async with http.delete(f"{push_broker.http_url}/v1/users/nobody", headers=auth) as resp:
            assert resp.status == 204
        async with http.get(f"{push_broker.http_url}/v1/openapi.json") as resp:
            doc = await resp.json()
        assert doc["paths"]["/v1/users/{user}"]["delete"]["operationId"] == "eraseUser"
        assert doc["paths"]["/v1/users/{user}/data"]["get"]["operationId"] == "exportUser"
        async with http.get(f"{push_broker.http_url}/v1/users/a%01b/data", headers=auth) as resp:
            assert resp.status == 400
        async with http.get(f"{push_broker.http_url}/v1/users/alice/data") as resp:
            assert resp.status == 401


async def test_a_revoked_credentials_push_subscription_is_deleted(
    push_broker: BrokerProcess, redis_server: RedisServer
) -> None:
    a = push_broker.add_rp("RP")
    async with PushAuthClient(push_broker.http_url, a["api_key"]) as client:
        dev = await online_device(client, push_broker.ws_url, user="carol")
        await subscribed(dev)
        with redis.Redis.from_url(redis_server.url) as r:
            assert r.exists(keys.push_subscription(dev.cid))
            await client.revoke_credential(dev.cid)  # 204 once it is done
            assert not r.exists(keys.push_subscription(dev.cid))


async def test_logs_carry_no_user_id_api_key_or_context(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    args = ["--access-log", "--log-format", "json", "--log-level", "INFO"]
    node = broker_factory(redis_url=redis_server.url, node="logs", extra_args=args)
    a = node.add_rp("RP")
    user = "alice.private@example.com"
    async with PushAuthClient(node.http_url, a["api_key"]) as client:
        dev = await online_device(client, node.ws_url, user=user)
        ch = await client.create_challenge(
            user, {"app": "Portal", "ip": "203.0.113.77", "location": "Reykjavik"}
        )
        assert isinstance(await dev.frame(), Challenge)
        await client.push_block(user)
        await client.list_credentials(user)
        await client.cancel_challenge(ch)
        await client.erase_user(user)
    await asyncio.to_thread(
        wait_until, lambda: "DELETE /v1/users/" in node.stderr(), message="the erasure's access log line"
    )
    log = node.stderr()
    assert "GET /v1/users/…/credentials" in log and "GET /v1/users/…/push-block" in log, log
    for secret_or_personal in ("alice", "example.com", a["api_key"], "203.0.113.77", "Reykjavik"):
        assert secret_or_personal not in log, (secret_or_personal, log)


async def test_a_revoked_credential_expires_and_an_active_one_does_not(
    push_broker: BrokerProcess, redis_server: RedisServer
) -> None:
    """Revoked, a credential (device name, user id, keys) is kept 180 days, no longer."""
    rp = push_broker.add_rp("RP")
    async with PushAuthClient(push_broker.http_url, rp["api_key"]) as client:
        kept = await online_device(client, push_broker.ws_url, user="dora")
        gone = await online_device(client, push_broker.ws_url, user="dora")
        await client.revoke_credential(gone.cid)
        with redis.Redis.from_url(redis_server.url) as r:
            assert r.pttl(keys.credential(kept.cid)) == -1
            left = r.pttl(keys.credential(gone.cid))
            # The user's index names it now (erasure finds it there), and lasts as long.
            index = keys.user_index(rp["id"], "dora")
            assert r.zscore(index, keys.credential(gone.cid)) is not None
            index_left = r.pttl(index)
        assert 179 * DAY_MS < left <= 180 * DAY_MS, left
        assert left <= index_left <= 180 * DAY_MS + 2 * 60_000, index_left


async def test_rp_remove_leaves_nothing_of_its_users_without_an_expiry(
    push_broker: BrokerProcess, redis_server: RedisServer
) -> None:
    rp = push_broker.add_rp("Leaving RP")
    async with PushAuthClient(push_broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, push_broker.ws_url, user="erik")
        await subscribed(dev)
        await client.create_enrollment("erik", "erik@example.com")
        await client.create_challenge("erik", CTX)
    result = run_cli([BROKER, "rp", "remove", rp["id"], "--redis-url", redis_server.url])
    assert result.returncode == 0, result.stderr
    tag = keys.user_tag(rp["id"], "erik")
    with redis.Redis.from_url(redis_server.url) as r:
        left = {k.decode(): r.pttl(k) for k in r.scan_iter(match=f"pa:{{{tag}}}:*")}
        assert left and all(ttl > 0 for ttl in left.values()), left
        assert not r.exists(keys.push_subscription(dev.cid))
    await dev.close()


DAY_MS = 24 * 3600 * 1000
