"""A node whose Redis hangs or goes away answers what it holds at once, with a
retryable 503, instead of letting RPs wait for their own timeouts (docs/operations.md,
"Load balancer"): real broker processes, a real Redis (stopped with SIGSTOP: a hung
server that neither answers nor closes), and a real TCP path to it that is cut.

The client timeouts below are generous bounds that only a broker that holds the
request would reach; nothing here measures how fast the answer comes."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable

import aiohttp
from support import BrokerProcess, RedisServer, TcpProxy, add_rp, wait_until
from test_broker_device_ws import CTX, Device, approve_push, keys_of, online_device

from protocol.challenge import Status
from protocol.frames import AnswerResult, Challenge
from relying_party.models import Challenge as RpChallenge
from relying_party.models import SignInResult
from relying_party.sdk import PushAuthClient

# Longer than the broker's REPLY_TIMEOUT_S (5 s) with room for a slow machine, and
# shorter than the waits the requests ask for: reaching it means the broker held on.
HELD = 20.0
WAIT = 25  # the long-polls' and streams' own wait, seconds


async def test_a_hung_redis_costs_a_create_a_503_and_the_broker_recovers_when_it_wakes(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(redis_url=redis_server.url)
    rp = add_rp("Hang RP", redis_url=redis_server.url)
    async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, broker.ws_url)
        headers = {"Authorization": f"Bearer {rp['api_key']}"}
        body = {"user": "alice", "context": CTX}
        redis_server.process.kill(signal.SIGSTOP)  # hung: the connection stays open, silent
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HELD)) as http,
                http.post(f"{broker.http_url}/v1/challenges", json=body, headers=headers) as resp,
            ):
                problem = await resp.json(content_type=None)
                assert resp.status == 503, problem
                assert resp.headers["Content-Type"].startswith("application/problem+json")
                assert resp.headers["Retry-After"] == "1"
                assert problem["status"] == 503 and "store is unavailable" in problem["detail"]
        finally:
            redis_server.process.kill(signal.SIGCONT)
        # Awake again: the next sign-in goes through on a new connection to Redis (the
        # hung one was given up), and it is the device's next prompt: nothing was
        # created meanwhile.
        ch = await client.create_challenge("alice", CTX)
        await approve_push(dev, ch)
        result = await client.wait_result(ch, await keys_of(client, "alice"), timeout=10)
        assert result.status is Status.APPROVED
        await dev.close()


async def test_waiting_long_polls_and_streams_are_answered_when_redis_is_cut(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    with TcpProxy([redis_server.port]) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        broker = broker_factory(redis_url=url)
        rp = add_rp("Cut RP", redis_url=redis_server.url)
        headers = {"Authorization": f"Bearer {rp['api_key']}"}
        async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
            dev = await online_device(client, broker.ws_url)
            polled = await client.create_challenge("alice", CTX, supersede=False)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HELD)) as http:
                poll = asyncio.ensure_future(
                    http.get(f"{broker.http_url}/v1/challenges/{polled.id}?wait={WAIT}", headers=headers)
                )
                stream = await http.post(
                    f"{broker.http_url}/v1/challenges?wait={WAIT}",
                    json={"user": "alice", "context": CTX, "supersede": False},
                    headers={**headers, "Accept": "application/x-ndjson"},
                )
                assert stream.status == 201 and stream.headers["Content-Type"] == "application/x-ndjson"
                first = json.loads(await stream.content.readline())
                assert first["number"] and first["user"] == "alice"
                await asyncio.to_thread(wait_until, lambda: broker.long_polls() == 2, message="both waiting")

                proxy.set_backends([])  # new connections refused ...
                proxy.drop_connections()  # ... and the broker's open ones reset

                # The long-poll: a 503 problem (the state cannot be read), which a load
                # balancer sends on to another node, not a hold until its wait ends.
                resp = await poll
                problem = await resp.json(content_type=None)
                assert resp.status == 503 and problem["status"] == 503, problem
                assert resp.headers["Retry-After"] == "1"
                # The stream ends after its first line: the RP reads the result by
                # long-poll (docs/http-api.md, "One request").
                assert await stream.content.read() == b""
                stream.release()
            proxy.set_backends([redis_server.port])
            await asyncio.to_thread(
                wait_until, lambda: broker.health()[1]["events"]["subscribed"], message="resubscribed"
            )
            # The challenges stood the cut: still pending, answerable.
            result = await client.get_result(polled, await keys_of(client, "alice"))
            assert result.status is Status.PENDING
            await dev.close()


async def sdk_waiting(
    client: PushAuthClient, dev: Device, broker: BrokerProcess
) -> tuple[RpChallenge, Challenge, asyncio.Future[SignInResult]]:
    """A sign-in pushed to `dev`, and the SDK's wait_result for it waiting at the broker."""
    keys = await keys_of(client, "alice")
    ch = await client.create_challenge("alice", CTX, ttl=120)
    pushed = await dev.frame()
    assert isinstance(pushed, Challenge) and pushed.ch == ch.id
    waiting = asyncio.ensure_future(client.wait_result(ch, keys, timeout=90))
    await asyncio.to_thread(wait_until, lambda: broker.long_polls() == 1, message="the long-poll")
    return ch, pushed, waiting


async def test_the_sdk_asks_again_through_a_redis_outage_and_gets_the_approval(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """PushAuthClient.wait_result while the broker's Redis is cut and restored: the
    long-poll answered 503 is asked again (it is only a read), not raised to the RP."""
    with TcpProxy([redis_server.port]) as proxy:
        # At debug level: a repeated "store unavailable" line is held back to one a
        # minute at the default level (broker/logs.py RepeatFilter), kept at debug.
        broker = broker_factory(
            redis_url=f"redis://127.0.0.1:{proxy.port}/0", extra_args=["--log-level", "DEBUG"]
        )
        rp = add_rp("Outage RP", redis_url=redis_server.url)
        async with PushAuthClient(broker.http_url, rp["api_key"]) as client:
            dev = await online_device(client, broker.ws_url)
            ch, pushed, waiting = await sdk_waiting(client, dev, broker)
            proxy.set_backends([])
            proxy.drop_connections()
            # Refused while Redis is away: the SDK asks again after each 503, and keeps
            # waiting (the broker logs each refusal, at debug level after the first).
            refused = f"store unavailable in GET /v1/challenges/{ch.id}"
            await asyncio.to_thread(
                wait_until,
                lambda: broker.stderr_path.read_text().count(refused) >= 3,
                message="the long-poll refused three times",
            )
            assert not waiting.done()
            proxy.set_backends([redis_server.port])
            await asyncio.to_thread(wait_until, lambda: broker.health()[0] == 200, message="the node back")
            await dev.send(dev.answer(pushed, number=ch.number))
            while not isinstance(got := await dev.frame(timeout=30), AnswerResult):
                assert isinstance(got, Challenge) and got.ch == ch.id  # the catch-up's re-delivery
            assert got == AnswerResult(ch=ch.id, outcome="approved")
            result = await asyncio.wait_for(waiting, 60)
            assert result.status is Status.APPROVED
            await dev.close()


async def test_the_sdk_asks_again_when_its_long_poll_connection_breaks(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """The RP's connection to the broker breaks while its long-poll waits (a node or a
    balancer that died holding it): wait_result asks again, and gets the approval."""
    broker = broker_factory(redis_url=redis_server.url)
    rp = add_rp("Path RP", redis_url=redis_server.url)
    with TcpProxy([broker.port]) as proxy:
        async with (
            PushAuthClient(broker.http_url, rp["api_key"]) as direct,
            PushAuthClient(f"http://127.0.0.1:{proxy.port}", rp["api_key"]) as client,
        ):
            dev = await online_device(direct, broker.ws_url)
            ch, pushed, waiting = await sdk_waiting(client, dev, broker)
            # The long-poll's connection is reset under it, twice (aiohttp itself sends a
            # GET again once when a reused connection breaks; not a fresh one).
            for polls in (2, 3):
                proxy.drop_connections()
                # The SDK is back on a new connection, waiting for the same challenge (the
                # broker still holds the orphaned long-polls too: they end at their wait).
                await asyncio.to_thread(
                    wait_until, lambda polls=polls: broker.long_polls() == polls, message="asked again"
                )
            assert not waiting.done()
            await dev.send(dev.answer(pushed, number=ch.number))
            assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")
            result = await asyncio.wait_for(waiting, 60)
            assert result.status is Status.APPROVED
            await dev.close()


async def test_a_silent_path_to_redis_does_not_leave_a_node_deaf_for_good(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    """Node A's connections to Redis stop carrying Redis's replies and nothing closes
    them (a path that drops packets without a reset: a firewall's state lost, a stalled
    host). Its subscription carries nothing while no one publishes, so only a PING that
    goes unanswered tells: A subscribes again on a new connection and catches up, and
    a challenge made on node B meanwhile reaches A's device. Without the PINGs A stayed
    subscribed to nothing for good, /healthz saying all was well."""
    with TcpProxy([redis_server.port]) as proxy:
        a = broker_factory(redis_url=f"redis://127.0.0.1:{proxy.port}/0", node="a")
        b = broker_factory(redis_url=redis_server.url, node="b")
        rp = add_rp("Silent RP", redis_url=redis_server.url)
        async with PushAuthClient(b.http_url, rp["api_key"]) as via_b:
            dev = await online_device(via_b, a.ws_url)
            proxy.lose_replies()  # A's open connections; new ones work
            missed = await via_b.create_challenge("alice", CTX, ttl=120)
            # A PING unanswered for 5 s, then A's catch-up reads through its own
            # connection, which gives up after 5 s too: a generous bound on both.
            got = await dev.frame(timeout=60)
            assert isinstance(got, Challenge) and got.ch == missed.id
            assert a.health()[1]["events"]["resubscriptions"] >= 1
            await dev.close()
        a.terminate()
        err = a.stderr_path.read_text()
        assert "answered no PING" in err, err
        assert "Traceback" not in err, err
