"""Redis goes away under a running broker, or answers but refuses writes (full, unable
to persist, a replica): devices are told (close 1011) instead of being left waiting,
RPs get 503 `unavailable`, /healthz says so, nothing is lost, and all works again once
Redis is back (append-only persistence, as in production). docs/operations.md,
"Redis full or not persisting"."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from shared_broker import new_rp
from support import BrokerProcess, RedisServer, http_status, until, wait_until
from test_broker_device_ws import CTX, Device, online_device

from protocol.frames import AnswerResult, Challenge
from relying_party.errors import BrokerUnavailable
from relying_party.models import Challenge as RpChallenge
from relying_party.sdk import PushAuthClient


async def test_redis_outage_and_recovery(
    redis_factory: Callable[..., RedisServer], broker_factory: Callable[..., BrokerProcess]
) -> None:
    redis_server = redis_factory(appendonly=True, appendfsync="always")
    broker = broker_factory(redis_url=redis_server.url)
    rp = await new_rp(broker, "Outage RP")
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url)
        ch = await client.create_challenge("alice", CTX)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge)

        redis_server.kill()
        await dev.send(dev.answer(pushed, number=ch.number))
        assert await dev.closed() == (1011, "internal")
        # Polled: the node's Redis check answers for a quarter of a second (broker/health.py).
        await asyncio.to_thread(
            wait_until, lambda: http_status(broker.http_url + "/healthz") == 503, message="/healthz 503"
        )
        # The RP API says "unavailable, try again" (503 problem), never a 500.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                broker.http_url + "/v1/challenges",
                json={"user": "alice", "context": CTX},
                headers={"Authorization": f"Bearer {rp['api_key']}"},
            ) as resp,
        ):
            assert resp.status == 503
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            assert resp.headers["Retry-After"] == "1"
            assert (await resp.json(content_type=None))["code"] == "unavailable"
        # The SDK's type for "try again shortly", as for a broker it cannot reach.
        with pytest.raises(BrokerUnavailable, match="store is unavailable"):
            await client.create_challenge("alice", CTX)
        # One line for the failed requests, not one each (broker/logs.py STORE_UNAVAILABLE).
        assert broker.stderr().count("store unavailable in POST /v1/challenges") == 1

        redis_server.restart()
        # Healthy, and done catching up from Redis: a catch-up still running when the
        # device comes back would deliver its pending challenge a second time.
        await asyncio.to_thread(
            wait_until,
            lambda: (h := broker.health())[0] == 200 and h[1]["events"]["catch_ups"] >= 1,
            message="healthy and caught up",
        )
        # The device comes back, gets the still-pending challenge again and answers it.
        back = await Device.connect(broker.ws_url, seed=dev.seed)
        back.cid = dev.cid
        welcome, pending = await back.authenticate()
        assert welcome.accepted == (dev.cid,)
        assert [p.ch for p in pending] == [ch.id]
        await back.send(back.answer(pending[0], number=ch.number))
        assert await back.frame() == AnswerResult(ch=ch.id, outcome="approved")
        keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
        assert (await client.wait_result(ch, keys, timeout=5)).approved


async def test_a_redis_that_takes_no_writes_fails_requests_clearly_and_recovers(
    redis_factory: Callable[..., RedisServer], broker_factory: Callable[..., BrokerProcess]
) -> None:
    """Redis answers but refuses writes: its server became a replica (a Sentinel failover
    behind a plain redis:// URL), it is full (maxmemory, noeviction), or it cannot
    persist (a failed BGSAVE, stop-writes-on-bgsave-error). Each time: /healthz says
    so and what to do, a sign-in cannot be created (503 `unavailable`, Retry-After,
    never a 201 for a challenge no device could answer), a device's answer is closed
    with 1011 `internal`, the log says it once (not once a request), and all works
    again once Redis takes writes, the challenge made before included."""
    redis_server, master = redis_factory(), redis_factory()
    broker = broker_factory(redis_url=redis_server.url)
    rp = await new_rp(broker, "Refusals RP")
    admin = redis_server.client()

    async def health(status: int) -> dict[str, object]:
        # Polled: the node's Redis check answers for a quarter of a second (broker/health.py).
        got = await until(lambda: asyncio.to_thread(lambda: (h := broker.health())[0] == status and h[1]))
        return got  # type: ignore[return-value]

    async def refused(dev: Device, pushed: Challenge, ch: RpChallenge, says: str) -> None:
        body = await health(503)
        assert body["code"] == "unavailable" and says in body["detail"], body
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(
                    broker.http_url + "/v1/challenges",
                    json={"user": "bob", "context": CTX},
                    headers={"Authorization": f"Bearer {rp['api_key']}"},
                ) as resp:
                    problem = await resp.json(content_type=None)
                    assert (resp.status, problem.get("code")) == (503, "unavailable"), problem
                    assert resp.headers["Retry-After"] == "1"
        await dev.send(dev.answer(pushed, number=ch.number))
        assert await dev.closed() == (1011, "internal")
        # Three refused writes, one line (broker/redis_refusals.py), with what to do.
        lines = [x for x in broker.stderr().splitlines() if "Redis refuses writes" in x and says in x]
        assert len(lines) == 1 and " WARNING " in lines[0], lines
        assert "store unavailable" not in broker.stderr()

    async def recovered(client: PushAuthClient, dev: Device, ch: RpChallenge) -> None:
        await health(200)
        back = await Device.connect(broker.ws_url, seed=dev.seed)
        back.cid = dev.cid
        _, pending = await back.authenticate()
        assert [p.ch for p in pending] == [ch.id]  # nothing lost
        await back.send(back.answer(pending[0], number=ch.number))
        assert await back.frame() == AnswerResult(ch=ch.id, outcome="approved")
        keys = {c.id: c.public_key for c in await client.list_credentials(ch.user)}
        assert (await client.wait_result(ch, keys, timeout=5)).approved
        await back.close()

    async def signing_in(client: PushAuthClient, user: str) -> tuple[Device, Challenge, RpChallenge]:
        dev = await online_device(client, broker.ws_url, user=user)
        ch = await client.create_challenge(user, CTX)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge)
        return dev, pushed, ch

    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        bob = await online_device(client, broker.ws_url, user="bob")  # the refused sign-ins' user
        # Full: any write past maxmemory is refused (the default policy, noeviction).
        dev, pushed, ch = await signing_in(client, "alice")
        try:
            admin.config_set("maxmemory", 1)
            await refused(dev, pushed, ch, "out of memory")
        finally:
            admin.config_set("maxmemory", 0)
        await recovered(client, dev, ch)

        # Cannot persist: a snapshot that cannot be written (its file is a directory).
        dev, pushed, ch = await signing_in(client, "carol")
        admin.config_set("save", "3600 1")
        blocker = redis_server.directory / "dump.rdb"
        blocker.mkdir()
        try:
            admin.bgsave()
            wait_until(lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "err")
            await refused(dev, pushed, ch, "cannot persist")
        finally:
            blocker.rmdir()
            admin.bgsave()  # what the operator does once the disk is fixed
        await recovered(client, dev, ch)
        await bob.close()

    # A replica: PING still answers, every write fails.
    admin.replicaof("127.0.0.1", master.port)
    try:
        body = await health(503)
        assert "read only replica" in body["detail"] and "--redis-url" in body["detail"], body
    finally:
        admin.replicaof("NO", "ONE")
    await health(200)
