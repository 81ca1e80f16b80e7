"""The event channel is robust (issue 11, finding 4; DESIGN invariant 10).

Two real broker nodes on one real Redis; node A reaches Redis through a TCP proxy,
so the test can make A deaf to the channel while B and Redis carry on. Garbage on the
channel is skipped and counted, never fatal; what A missed while it was not
subscribed (a challenge made on B, one cancelled on B) reaches A's device and A's
long-poll once A is back; /healthz says 503 while A is deaf past its grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack
from shared_broker import new_rp
from support import DEADLINE, BrokerProcess, RedisServer, TcpProxy, store_policy, wait_until
from test_broker_credential_cap import send_enroll
from test_broker_device_ws import CTX, Device, online_device

from broker import keys
from protocol.frames import Cancel, Challenge, Error
from relying_party.sdk import PushAuthClient

GARBAGE = [
    b"",
    b"\xc1",  # never valid msgpack
    b"garbage",
    msgpack.packb("just a string"),
    msgpack.packb(["evil", "c", [1, 2, 3]]),  # a challenge of the wrong shape
    msgpack.packb(["evil", "x", "rp", ["unhashable"], "cancelled", ["ch_1"]]),  # dispatch used to raise
    msgpack.packb(["evil", "e", "ch", "rp", "user", "no-such-status", None]),
    msgpack.packb(["evil", "r", "cid"]),
    msgpack.packb([["nested"] * 3, "k", "cid"]),
    msgpack.packb(["evil", "zz"]),
    b"\x91" * 5000,  # deeply nested arrays
]


async def test_garbage_is_skipped_and_what_a_deaf_node_missed_reaches_its_devices(
    redis_factory: Callable[..., RedisServer],
    broker_factory: Callable[..., BrokerProcess],
    tcp_proxy: Callable[..., TcpProxy],
) -> None:
    redis_server = redis_factory(appendonly=True, appendfsync="always")
    proxy = tcp_proxy([redis_server.port])
    a = broker_factory(
        redis_url=f"redis://127.0.0.1:{proxy.port}/0", node="a", extra_args=["--events-grace", "1"]
    )
    b = broker_factory(redis_url=redis_server.url, node="b")
    rp = await new_rp(b, "Events RP")
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as via_a,
        PushAuthClient(b.http_url, rp["api_key"]) as via_b,
    ):
        dev = await online_device(via_b, a.ws_url)  # the device stays on node A throughout

        # Garbage on alice's channel: every node listening (A for its device, B for the
        # challenge it made) skips it and keeps listening.
        channel = keys.user_channel(rp["id"], "alice")
        live = await via_b.create_challenge("alice", CTX, ttl=120)
        got = await dev.frame()
        assert isinstance(got, Challenge) and got.ch == live.id
        publisher = redis_server.client()
        for junk in GARBAGE:
            publisher.spublish(channel, junk)
        for node in (a, b):
            await asyncio.to_thread(
                wait_until,
                lambda node=node: node.health()[1]["events"]["malformed_skipped"] >= len(GARBAGE) - 1,
                message=f"node {node.node} to skip the garbage",
            )
            assert node.health()[0] == 200
        await via_b.cancel_challenge(live)
        assert await dev.frame() == Cancel(ch=live.id, reason="cancelled")

        # A long-poll on A for a challenge made on A that will end while A is deaf.
        waited = await via_a.create_challenge("alice", CTX, ttl=120)
        got = await dev.frame()
        assert isinstance(got, Challenge) and got.ch == waited.id
        async with aiohttp.ClientSession() as http:
            poll = asyncio.create_task(
                _get_json(http, f"{a.http_url}/v1/challenges/{waited.id}?wait=60", rp["api_key"])
            )
            await asyncio.to_thread(wait_until, lambda: a.long_polls() == 1, message="the long-poll on A")

            # A goes deaf: its Redis connections are cut and cannot come back; then
            # Redis itself is killed and restarted (persistence on, as in production).
            proxy.set_backends([])
            proxy.drop_connections()
            # The long-poll can hear its event no more, nor read Redis: it is answered
            # 503 at once (well before its 60 s), and the RP asks again, on another
            # node or later (a deaf node no longer holds it to the end of its wait).
            status, problem = await asyncio.wait_for(poll, 30)
            assert (status, problem["status"]) == (503, 503), problem
            redis_server.kill()
            redis_server.restart()
            await asyncio.to_thread(
                wait_until, lambda: a.health()[0] == 503, message="A's /healthz to say 503 while deaf"
            )
            # Meanwhile, on B: a new challenge, and the long-polled one cancelled.
            await asyncio.to_thread(wait_until, lambda: b.health()[0] == 200, message="B healthy again")
            publisher = redis_server.client()
            for junk in GARBAGE[:3]:
                publisher.spublish(channel, junk)
            missed = await via_b.create_challenge("alice", CTX, ttl=120, supersede=False)
            await via_b.cancel_challenge(waited)

            # A hears again: it catches up from Redis.
            proxy.set_backends([redis_server.port])
            got = await dev.frame(timeout=30)
            frames = [got, await dev.frame(timeout=30)]
            assert Cancel(ch=waited.id, reason="cancelled") in frames
            assert any(isinstance(f, Challenge) and f.ch == missed.id for f in frames), frames
            status, result = await _get_json(http, f"{a.http_url}/v1/challenges/{waited.id}", rp["api_key"])
            assert (status, result["status"]) == (200, "cancelled")
        await asyncio.to_thread(wait_until, lambda: a.health()[0] == 200, message="A healthy again")
        assert a.health()[1]["events"]["resubscriptions"] >= 1
        # And it keeps hearing live events after that.
        await via_b.cancel_challenge(missed)
        assert await dev.frame() == Cancel(ch=missed.id, reason="cancelled")
        await dev.close()
    for node in (a, b):
        node.terminate()
        err = node.stderr_path.read_text()
        assert "skipped a malformed event" in err
        assert "Traceback" not in err, err


async def test_a_refusal_published_while_a_node_resubscribes_answers_its_long_poll(
    redis_factory: Callable[..., RedisServer],
    broker_factory: Callable[..., BrokerProcess],
    tcp_proxy: Callable[..., TcpProxy],
) -> None:
    """A long-poll on an enrollment that starts while its node is reconnecting to the
    event channel (it reads Redis and waits) hears of a device refused at the cap on
    another node meanwhile: once its node is subscribed again, the catch-up answers it,
    as it does a completion, instead of leaving it to its wait's end.

    Node A is a Redis user of its own, so that only A's subscription is cut; it reaches
    Redis through a proxy that holds A's reconnection (at its AUTH) until the test lets
    it through, while A's open connections go on working."""
    redis_server = redis_factory()
    admin = redis_server.client()
    admin.acl_setuser(
        "node-a", enabled=True, passwords=["+a-secret"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    proxy = tcp_proxy([redis_server.port])
    a = broker_factory(redis_url=f"redis://node-a:a-secret@127.0.0.1:{proxy.port}/0", node="a")
    b = broker_factory(redis_url=redis_server.url, node="b")
    rp = await new_rp(b, "Resync RP")
    await store_policy(b, rp["id"], max_credentials=1)
    async with PushAuthClient(b.http_url, rp["api_key"]) as via_b, aiohttp.ClientSession() as http:
        setups = [await via_b.create_enrollment("erin", "erin@example.com") for _ in range(2)]
        first = await Device.connect(a.ws_url)  # A listens on erin's channel for it
        await first.enroll(setups[0].uri or "")

        # A's subscription is cut, and its new connection hangs before it subscribes.
        proxy.hold_new_connections()
        admin.execute_command("CLIENT", "KILL", "USER", "node-a", "TYPE", "pubsub")
        await asyncio.to_thread(wait_until, lambda: proxy.waiting >= 1, message="A to reconnect")
        assert not a.health()[1]["events"]["subscribed"]
        url = f"{a.http_url}/v1/enrollments/{setups[1].id}?wait=60"
        poll = asyncio.create_task(_get_json(http, url, rp["api_key"]))
        await asyncio.to_thread(wait_until, lambda: a.long_polls() == 1, message="the long-poll on A")

        # The second device is refused on B: B's event goes by A.
        second = await Device.connect(b.ws_url)
        error = await send_enroll(second, setups[1])
        assert isinstance(error, Error) and error.code == "too_many_credentials", error
        assert (await via_b.get_enrollment(setups[1])).refused is not None

        # A subscribes and catches up: the long-poll answers, well before its 60 s.
        proxy.let_through()
        status, answered = await asyncio.wait_for(poll, DEADLINE)
        assert status == 200, answered
        assert answered["status"] == "pending"
        assert answered["refused"]["code"] == "too_many_credentials"
        assert a.health()[1]["events"]["resubscriptions"] == 1
        for dev in (first, second):
            await dev.close()
    for node in (a, b):
        node.terminate()
        assert "Traceback" not in node.stderr_path.read_text()


async def _get_json(http: aiohttp.ClientSession, url: str, key: str) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
        return resp.status, await resp.json(content_type=None)
