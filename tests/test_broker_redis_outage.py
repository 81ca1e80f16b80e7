"""Redis goes away under a running broker: devices are told (close 1011) instead of
being left waiting, /healthz says so, nothing is lost, and all works again once
Redis is back (append-only persistence, as in production)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from shared_broker import new_rp
from support import BrokerProcess, RedisServer, http_status, wait_until
from test_broker_device_ws import CTX, Device, online_device

from protocol.frames import AnswerResult, Challenge
from relying_party.errors import BrokerUnavailable
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


async def test_a_redis_that_takes_no_writes_is_unhealthy(
    redis_factory: Callable[..., RedisServer], broker_factory: Callable[..., BrokerProcess]
) -> None:
    """A plain redis:// URL whose server became a replica (a Sentinel failover behind the
    broker's back): PING still answers, every sign-in fails. /healthz says so, so that a
    load balancer takes the node out, and says healthy again once it takes writes."""
    redis_server, master = redis_factory(), redis_factory()
    broker = broker_factory(redis_url=redis_server.url)
    assert broker.health()[0] == 200
    replica = redis_server.client()
    replica.replicaof("127.0.0.1", master.port)
    try:
        # Polled: the node's Redis check answers for a quarter of a second (broker/health.py).
        wait_until(lambda: broker.health()[0] == 503, message="/healthz 503 on a replica")
        status, body = broker.health()
        assert status == 503, body
        assert body["code"] == "unavailable" and "read only replica" in body["detail"], body
    finally:
        replica.replicaof("NO", "ONE")
    wait_until(lambda: broker.health()[0] == 200, message="/healthz 200 once Redis takes writes")
