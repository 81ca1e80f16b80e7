"""broker/cluster_pipe.py against a real Redis Cluster (three masters, three replicas):
commands reach the master of their slot, follow a manual failover (MOVED), load their
scripts where they are missing (NOSCRIPT), durable writes are on a replica before they
return, and sharded subscriptions (broker/subscriber.py's interface) and commands survive the
SIGKILL of a master, and follow a slot to its new master."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError
from support import LOCALHOST, RedisServer, wait_until
from support.redis_cluster import RedisCluster

from broker.cluster_pipe import ClusterPipe, ClusterSubscriber, command_slot
from broker.redis_cluster import ClusterURL, parse

# Keys whose slots are spread over the three masters (hash tags pick the slot).
KEYS = [f"t:{{u{i}}}:k" for i in range(12)]


def _on(node: RedisServer, *command: object) -> object:
    with redis.Redis(host=LOCALHOST, port=node.port, socket_timeout=2) as r:
        return r.execute_command(*command)


def _seeds(cluster: RedisCluster) -> list[tuple[str, int]]:
    return parse(cluster.url).seeds  # type: ignore[return-value]


@pytest.fixture
async def pipe(redis_cluster: RedisCluster) -> AsyncIterator[ClusterPipe]:
    redis_cluster.heal()
    p = ClusterPipe(_seeds(redis_cluster), auth=[])
    yield p
    p.close()


def test_cluster_urls_are_parsed() -> None:
    assert parse("redis+cluster://10.0.0.1:7001,node-b,[::1]:7003/") == ClusterURL(
        seeds=(("10.0.0.1", 7001), ("node-b", 6379), ("::1", 7003)), username=None, password=None
    )
    assert parse("redis+cluster://h:1/?wait_ms=250").wait_ms == 250
    assert parse("redis+cluster://h:1").wait_ms == 1000
    where = parse("redis+cluster://app:s3cr%40t@h:1")
    assert (where.username, where.password) == ("app", "s3cr@t")
    assert parse("redis+cluster://:pw@h:1").username is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://h:1/0", "only database 0"),
        ("redis+cluster://h:port", "port must be a number"),
        ("redis+cluster://h:70000", "port must be a number"),
        ("redis+cluster://:1", "missing its host"),
        ("redis+cluster://h:1,", "missing its host"),
        ("redis+cluster://h:1?x=1", "unknown option 'x'"),
        ("redis+cluster://h:1?wait_ms=-1", "wait_ms must be 0 to 60000"),
        ("redis+cluster://h:1?wait_ms=soon", "wait_ms must be 0 to 60000"),
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse(url)


def test_the_slot_of_a_command_is_its_first_key() -> None:
    assert command_slot(("GET", "{a}x")) == command_slot(("HGETALL", "{a}y"))
    assert command_slot(("EVALSHA", "f" * 40, 2, "{a}x", "{b}y", "arg")) == command_slot(("GET", "{a}z"))
    assert command_slot(("EVALSHA", "f" * 40, 0, "arg")) is None
    assert command_slot(("PING",)) is None


async def test_commands_reach_the_master_of_their_slot(
    pipe: ClusterPipe, redis_cluster: RedisCluster
) -> None:
    for i, key in enumerate(KEYS):
        assert await pipe.execute("SET", key, i) == b"OK"
    owners = {redis_cluster.master_of_key(k).port for k in KEYS}
    assert len(owners) == 3  # the keys really are spread over every master
    for i, key in enumerate(KEYS):
        # Stored on the master of its slot (a plain connection, no redirection).
        assert _on(redis_cluster.master_of_key(key), "GET", key) == str(i).encode()
    # Many at once: grouped per master, answered in the commands' order.
    replies = await pipe.execute_many([("GET", k) for k in reversed(KEYS)])
    assert replies == [str(i).encode() for i in reversed(range(len(KEYS)))]
    assert pipe.redirects == 0


async def test_commands_follow_a_manual_failover(pipe: ClusterPipe, redis_cluster: RedisCluster) -> None:
    key = KEYS[0]
    await pipe.execute("SET", key, "before")
    for i, other in enumerate(KEYS[1:3], start=1):  # its own values: tests run in any order
        await pipe.execute("SET", other, i)
    master = redis_cluster.master_of_key(key)
    (replica,) = redis_cluster.replicas_of(master)
    redis_cluster.failover(replica)
    assert redis_cluster.master_of_key(key).port == replica.port
    # The pipe still sends to the old master, which now answers MOVED.
    assert await pipe.execute("GET", key) == b"before"
    assert await pipe.execute("SET", key, "after") == b"OK"
    assert pipe.redirects >= 1
    assert _on(replica, "GET", key) == b"after"
    assert await pipe.execute_many([("GET", k) for k in KEYS[:3]]) == [b"after", b"1", b"2"]


async def test_a_script_is_loaded_where_it_is_missing(pipe: ClusterPipe, redis_cluster: RedisCluster) -> None:
    sha = pipe.script("return redis.call('INCR', KEYS[1])")
    key = "t:{script}:n"
    assert await pipe.evalsha(sha, [key], []) == 1
    master = redis_cluster.master_of_key(key)
    _on(master, "SCRIPT", "FLUSH")  # as after a restart or a failover to a fresh node
    assert await pipe.evalsha(sha, [key], []) == 2
    # Ran once per call, never twice: NOSCRIPT means it did not run.
    assert _on(master, "GET", key) == b"2"


async def test_a_durable_write_is_on_the_replica_when_it_returns(
    pipe: ClusterPipe, redis_cluster: RedisCluster
) -> None:
    sha = pipe.script("return redis.call('SET', KEYS[1], ARGV[1])", idempotent=False, durable=True)
    keys = [f"t:{{d{i}}}:x" for i in range(300)]

    async def write(i: int, key: str) -> None:
        for _ in range(i % 10):  # spread over several event-loop iterations: while one
            await asyncio.sleep(0)  # WAIT is out, the next writes join the following one
        await pipe.evalsha(sha, [key], [key])

    # Many at once, each acknowledged by a replica before it returns.
    await asyncio.gather(*(write(i, k) for i, k in enumerate(keys)))
    assert pipe.unreplicated == 0, (pipe._replica_count, pipe.unreplicated)
    for key in keys:
        (replica,) = redis_cluster.replicas_of(redis_cluster.master_of_key(key))
        with redis.Redis(host=LOCALHOST, port=replica.port) as r:
            r.execute_command("READONLY")
            assert r.get(key) == key.encode()


class Listener:
    """What broker/event_listener.py does with a subscriber: listen until the messages
    end with ConnectionError, then listen again (a fresh slot map, every held channel
    subscribed where it is now)."""

    def __init__(self, sub: ClusterSubscriber) -> None:
        self.sub = sub
        self.got: asyncio.Queue[bytes] = asyncio.Queue()
        self.subscriptions = 0
        self.task = asyncio.ensure_future(self._run())

    def _subscribed(self) -> None:
        self.subscriptions += 1

    async def _run(self) -> None:
        while True:
            try:
                async for data in self.sub.messages(self._subscribed):
                    self.got.put_nowait(data)
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.05)

    async def resubscribed(self, after: int) -> None:
        await asyncio.to_thread(
            wait_until,
            lambda: self.subscriptions > after,
            message="subscribed again after the slot map changed",
        )

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _hold(sub: ClusterSubscriber, channels: list[str]) -> None:
    for ch in channels:
        sub.hold(ch)
    await sub.ready(channels)


async def test_commands_and_subscriptions_survive_a_master_kill(
    pipe: ClusterPipe, redis_cluster: RedisCluster
) -> None:
    channels = [f"t:{{c{i}}}:ev" for i in range(12)]
    sub = pipe.subscriber()
    listener = Listener(sub)
    await listener.resubscribed(0)
    await _hold(sub, channels)
    for ch in channels:
        assert await pipe.execute("SPUBLISH", ch, ch + ":one") == 1
        assert await asyncio.wait_for(listener.got.get(), 10) == (ch + ":one").encode()

    victim_key = KEYS[5]
    await pipe.execute("SET", victim_key, "kept")
    await pipe.durable("SET", "t:{u5}:durable", "kept")
    victim = redis_cluster.master_of_key(victim_key)

    # Reads keep coming while the master dies: each one gets its answer, none is lost.
    stop = asyncio.Event()

    async def reader() -> int:
        n = 0
        while not stop.is_set():
            assert await pipe.execute("GET", victim_key) == b"kept"
            n += 1
        return n

    reading = asyncio.ensure_future(reader())
    before = listener.subscriptions
    promoted = await asyncio.to_thread(redis_cluster.kill_master, victim)
    await listener.resubscribed(before)  # every held channel, at the promoted replica too
    stop.set()
    assert await asyncio.wait_for(reading, 30) > 0
    assert await pipe.execute("GET", "t:{u5}:durable") == b"kept"  # it was on the replica
    for ch in channels:
        assert await pipe.execute("SPUBLISH", ch, ch + ":two") == 1
        assert await asyncio.wait_for(listener.got.get(), 10) == (ch + ":two").encode()
    assert redis_cluster.master_of_key(victim_key).port == promoted.port

    # The promoted master has no replica now: a durable write does not wait for one.
    unreplicated = pipe.unreplicated
    assert await pipe.durable("SET", victim_key, "alone") == b"OK"
    assert pipe.unreplicated == unreplicated + 1
    await asyncio.to_thread(redis_cluster.restart, victim)  # back, as a replica
    await pipe.refresh()
    assert await pipe.durable("SET", victim_key, "replicated") == b"OK"
    assert pipe.unreplicated == unreplicated + 1
    await listener.stop()


async def test_a_subscription_moves_with_its_slot(pipe: ClusterPipe, redis_cluster: RedisCluster) -> None:
    """A manual failover demotes the master: the server drops its sharded subscribers'
    channels (`sunsubscribe`), and they are subscribed again at the new master."""
    channel = "t:{moving}:ev"
    sub = pipe.subscriber()
    listener = Listener(sub)
    await listener.resubscribed(0)
    await _hold(sub, [channel])
    master = redis_cluster.master_of_key(channel)
    (replica,) = redis_cluster.replicas_of(master)
    before = listener.subscriptions
    await asyncio.to_thread(redis_cluster.failover, replica)
    await listener.resubscribed(before)
    await sub.ready([channel])
    assert await pipe.execute("SPUBLISH", channel, b"after") == 1
    assert await asyncio.wait_for(listener.got.get(), 10) == b"after"
    await listener.stop()


async def test_a_subscription_leaves_a_hung_master_for_the_promoted_one(
    pipe: ClusterPipe, redis_cluster: RedisCluster
) -> None:
    """A master that hangs (SIGSTOP: its connections stay open, nothing is closed, no
    `sunsubscribe` comes) is failed over by the cluster; the events of its slots are
    published at the promoted replica from then on. The subscription finds out by its
    PINGs going unanswered and subscribes there, while the old master still hangs."""
    channel = "t:{hung}:ev"
    sub = pipe.subscriber()
    listener = Listener(sub)
    await listener.resubscribed(0)
    await _hold(sub, [channel])
    master = redis_cluster.master_of_key(channel)
    before = listener.subscriptions
    promoted = await asyncio.to_thread(redis_cluster.hang_master, master)
    try:
        await listener.resubscribed(before)
        await sub.ready([channel])
        assert await pipe.execute("SPUBLISH", channel, b"while it hangs") == 1
        assert await asyncio.wait_for(listener.got.get(), 10) == b"while it hangs"
        assert redis_cluster.master_of_key(channel).port == promoted.port
    finally:
        await listener.stop()
        await asyncio.to_thread(redis_cluster.wake, master)


async def test_the_slot_map_is_read_past_a_hung_master(redis_cluster: RedisCluster) -> None:
    """A master that hangs (SIGSTOP) is failed over; the pipe then reads the slot map
    again, asking its masters first, the hung one among them. It does not wait for the
    hung one's timeout: another node is asked meanwhile and its answer (the promoted
    replica) is taken while the master still hangs; and the next read does not ask the
    hung master first at all."""
    redis_cluster.heal()
    key = KEYS[0]
    master = redis_cluster.master_of_key(key)
    hung = (LOCALHOST, master.port)
    # The hung master is the first node the pipe knows, so the first it asks for the map.
    seeds = [hung, *(s for s in _seeds(redis_cluster) if s != hung)]
    pipe = ClusterPipe(seeds, auth=[])
    try:
        await pipe.execute_many([("SET", k, "before") for k in KEYS])  # a connection to every master
        assert pipe.map_sources()[0] == hung
        promoted = await asyncio.to_thread(redis_cluster.hang_master, master)
        try:
            await pipe.refresh()
            read = pipe.last_map_read
            assert next(iter(read)) == hung and read[hung] == "passed over", read
            answered = [a for a, what in read.items() if what == "answered"]
            assert len(answered) == 1 and answered[0] != hung, read
            # The new map is in force while the old master still hangs: the write goes to
            # the promoted replica.
            assert await pipe.execute("SET", key, "while it hangs") == b"OK"
            assert _on(promoted, "GET", key) == b"while it hangs"
            # And the next read asks a live node first.
            await pipe.refresh()
            assert hung not in pipe.last_map_read and list(pipe.last_map_read.values()) == ["answered"]
            assert pipe.map_sources()[-1] == hung
        finally:
            await asyncio.to_thread(redis_cluster.wake, master)
    finally:
        pipe.close()


async def test_a_transaction_is_atomic_and_durable(pipe: ClusterPipe, redis_cluster: RedisCluster) -> None:
    replies = await pipe.transaction(
        [("HSET", "t:{tx}:h", "a", "1"), ("SET", "t:{tx}:s", "x"), ("PEXPIRE", "t:{tx}:s", 60000)],
        durable=True,
    )
    assert replies == [1, b"OK", 1]
    assert pipe.unreplicated == 0, (pipe._replica_count, pipe.unreplicated)
    (replica,) = redis_cluster.replicas_of(redis_cluster.master_of_key("t:{tx}:h"))
    with redis.Redis(host=LOCALHOST, port=replica.port) as r:
        r.execute_command("READONLY")
        assert r.get("t:{tx}:s") == b"x"


async def test_a_pipe_for_redis_pys_cluster_client(redis_cluster: RedisCluster) -> None:
    from broker.redis_cluster import cluster_client

    client = cluster_client(redis_cluster.url)
    try:
        await client.ping()
        p = ClusterPipe.for_client(client)
        assert p is not None
        assert (p.durable_replicas, p.durable_wait_ms) == (1, 1000)
        assert await p.execute("SET", "t:{fc}:x", "1") == b"OK"
        assert await client.get("t:{fc}:x") == b"1"
        p.close()
    finally:
        await client.aclose()
    # ?wait_ms=0: durable writes do not wait for a replica (and are not counted as missed).
    client = cluster_client(redis_cluster.url + "/?wait_ms=0")
    try:
        await client.ping()
        p = ClusterPipe.for_client(client)
        assert p is not None and p.durable_replicas == 0
        assert await p.durable("SET", "t:{fc}:y", "1") == b"OK"
        assert p.unreplicated == 0
        p.close()
    finally:
        await client.aclose()


async def test_a_master_that_hangs_before_it_answers_auth_is_given_up(tmp_path: Path) -> None:
    """The subscription's connection to a master authenticates before it subscribes; a
    master that hangs just then (SIGSTOP: the connection is accepted, nothing answers)
    costs the subscriber a ConnectionError after REPLY_TIMEOUT_S, so the event listener
    reads the slot map again, instead of a wait as long as the hang."""
    server = RedisServer(tmp_path / "hung", name="hung").start()
    try:
        server.client().config_set("requirepass", "pw")
        server.process.kill(signal.SIGSTOP)
        sub = ClusterPipe([(LOCALHOST, server.port)], auth=["pw"]).subscriber()
        with pytest.raises(ConnectionError, match="answered no AUTH within 5 s"):
            await asyncio.wait_for(sub._connect((LOCALHOST, server.port)), 30)
    finally:
        server.process.kill(signal.SIGCONT)
        server.cleanup()
