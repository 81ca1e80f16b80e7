"""broker/redis_pipe.py, the broker's auto-pipelined Redis connection (made for the load
tests' hot path), against a real redis-server: replies reach the right caller under
concurrency, scripts load themselves, errors and lost connections are contained."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, ResponseError
from support import RedisServer, wait_until

from broker.redis_pipe import RedisPipe
from broker.subscriber import RawSubscriber


def pipe_for(url: str) -> RedisPipe:
    pipe = RedisPipe.for_client(aioredis.Redis.from_url(url))
    assert pipe is not None
    return pipe


async def test_concurrent_callers_each_get_their_own_reply(redis_server: RedisServer) -> None:
    pipe = pipe_for(redis_server.url)
    try:
        await asyncio.gather(*(pipe.execute("SET", f"k{i}", f"v{i}") for i in range(300)))
        # Many tasks at once, mixed commands and reply types, all on one connection.
        replies = await asyncio.gather(
            *(pipe.execute("GET", f"k{i}") if i % 2 else pipe.execute("STRLEN", f"k{i}") for i in range(300))
        )
        assert replies == [f"v{i}".encode() if i % 2 else len(f"v{i}") for i in range(300)]
        many = await pipe.execute_many([("HSET", "h", "a", "1"), ("HGETALL", "h"), ("GET", "missing")])
        assert many == [1, [b"a", b"1"], None]
        clients = await pipe.execute("CLIENT", "LIST")
        assert clients.count(b"cmd=") == 1  # one connection did it all
    finally:
        pipe.close()


async def test_a_script_loads_itself_also_after_a_flush(redis_server: RedisServer) -> None:
    pipe = pipe_for(redis_server.url)
    try:
        sha = pipe.script("return {KEYS[1], ARGV[1]}")
        assert await pipe.evalsha(sha, ["key"], ["arg"]) == [b"key", b"arg"]
        await pipe.execute("SCRIPT", "FLUSH")
        assert await pipe.evalsha(sha, ["k2"], [7]) == [b"k2", b"7"]
    finally:
        pipe.close()


async def test_an_error_reply_goes_to_its_caller_only(redis_server: RedisServer) -> None:
    pipe = pipe_for(redis_server.url)
    try:
        await pipe.execute("SET", "s", "x")
        ok, bad, after = await asyncio.gather(
            pipe.execute("GET", "s"),
            pipe.execute("HGETALL", "s"),
            pipe.execute("GET", "s"),
            return_exceptions=True,
        )
        assert ok == after == b"x"
        assert isinstance(bad, ResponseError)
        assert "WRONGTYPE" in str(bad)
    finally:
        pipe.close()


async def test_a_lost_connection_fails_its_callers_and_the_next_call_reconnects(
    redis_server: RedisServer,
) -> None:
    pipe = pipe_for(redis_server.url)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await pipe.execute("PING") == b"PONG"
        blocked = asyncio.ensure_future(pipe.execute("BLPOP", "never", 0))
        # The BLPOP is at the server: killing its connection must fail it.
        watch = redis_server.client()
        await asyncio.to_thread(
            wait_until, lambda: watch.info("clients")["blocked_clients"] == 1, message="the BLPOP at Redis"
        )
        watch.close()
        await admin.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(ConnectionError):
            await blocked
        assert await pipe.execute("PING") == b"PONG"
    finally:
        pipe.close()
        await admin.aclose()


async def test_no_server_is_a_connection_error(tmp_path: Path) -> None:
    from support.ports import free_port

    pipe = pipe_for(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ConnectionError, match="cannot connect"):
        await pipe.execute("PING")


async def test_password_and_database_from_the_url(redis_server: RedisServer) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.config_set("requirepass", "s3cret")  # set after start: the fixture pings without one
    await admin.aclose()
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/5"
    pipe = pipe_for(url)
    try:
        await pipe.execute("SET", "where", "db5")
        client = aioredis.Redis.from_url(url)
        assert await client.get("where") == b"db5"
        await client.aclose()
        other_db = aioredis.Redis.from_url(url.replace("/5", "/0"))
        assert await other_db.get("where") is None
        await other_db.aclose()
        with pytest.raises(ConnectionError):  # a wrong password is refused at connect
            await pipe_for(url.replace("s3cret", "wrong")).execute("PING")
    finally:
        pipe.close()


def test_only_plain_connections_are_pipelined() -> None:
    assert RedisPipe.for_client(aioredis.Redis.from_url("redis://127.0.0.1:1/0")) is not None
    assert RedisPipe.for_client(aioredis.Redis.from_url("unix:///tmp/x.sock?db=2")) is not None
    assert RedisPipe.for_client(aioredis.Redis.from_url("rediss://127.0.0.1:1/0")) is None


async def test_subscription_delivers_every_message_in_order_until_the_connection_breaks(
    redis_server: RedisServer,
) -> None:
    """broker/subscriber.py on the pipe's server: the held shard channels only, in
    order; a channel held later counts once `ready`; a broken connection ends it."""
    pipe = pipe_for(redis_server.url)
    sub = RawSubscriber(pipe)
    admin = aioredis.Redis.from_url(redis_server.url)
    subscribed = asyncio.Event()
    got: list[bytes] = []

    async def listen() -> None:
        async for data in sub.messages(subscribed.set):
            got.append(data)

    assert sub.hold("events") is False  # not connected yet: sent on connect
    task = asyncio.ensure_future(listen())
    try:
        await asyncio.wait_for(subscribed.wait(), 5)
        assert sub.hold("events") is True and sub.channels() == 1  # a second hold: confirmed
        for i in range(200):
            await admin.spublish("events", f"m{i}".encode())
            await admin.spublish("other", b"not for us")
        assert sub.hold("later") is False
        await asyncio.wait_for(sub.ready(["later"]), 5)
        await admin.spublish("later", b"now heard")
        for _ in range(100):
            if len(got) == 201:
                break
            await asyncio.sleep(0.02)
        assert got == [f"m{i}".encode() for i in range(200)] + [b"now heard"]
        assert sub.received == 201
        sub.release("events")
        sub.release("events")
        assert sub.channels() == 1
        await admin.client_kill_filter(_type="pubsub")
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(task, 5)
    finally:
        task.cancel()
        pipe.close()
        await admin.aclose()
