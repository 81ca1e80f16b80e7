"""The broker behind Redis Sentinel: it finds the master through the sentinel, and
after a failover (the master killed, its replica promoted) it serves again from the
new master with nothing lost: real redis-server processes as master, replica and
sentinel."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets
from support import (
    LOCALHOST,
    BrokerProcess,
    ManagedProcess,
    RedisServer,
    add_rp,
    assert_cli_error,
    free_port,
    ping,
    redis_executable,
    run_cli,
    until,
    wait_until,
)
from support.broker import BROKER
from test_broker_device_ws import CTX, Device, approve_push, online_device

from broker.sentinel import SentinelURL, parse
from protocol.frames import AnswerResult, Challenge
from relying_party import models
from relying_party.errors import BrokerUnavailable
from relying_party.sdk import PushAuthClient

SERVICE = "pushauth-test"


def test_sentinel_urls_are_parsed() -> None:
    assert parse("redis+sentinel://10.0.0.1:26380,sentinel-b/main/2") == SentinelURL(
        sentinels=(("10.0.0.1", 26380), ("sentinel-b", 26379)),
        service="main",
        db=2,
        username=None,
        password=None,
    )
    assert parse("redis+sentinel://app:s3cr%40t@h:1/svc").password == "s3cr@t"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:1",  # no service
        "redis+sentinel://h:port/svc",
        "redis+sentinel://h:1/svc/zero",
        "redis+sentinel:///svc",
        "redis+sentinel://h:99999/svc",  # a ValueError traceback from redis-py before
        "redis+sentinel://h:0/svc",
        "redis+sentinel://h:1/svc?socket_timeout=1",  # ignored in silence before
    ],
)
def test_a_bad_sentinel_url_is_a_clear_cli_error(url: str, tmp_path: Path) -> None:
    result = run_cli([BROKER, "rp", "add", "X", "--redis-url", url, "--data-dir", tmp_path])
    assert_cli_error(result, contains="bad --redis-url")


def _sentinel(directory: Path, master_port: int) -> ManagedProcess:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "sentinel.conf"  # the sentinel rewrites it: its own file
    conf.write_text(
        f"port {port}\nbind {LOCALHOST}\ndir {directory}\n"
        f"sentinel monitor {SERVICE} {LOCALHOST} {master_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
    )
    proc = ManagedProcess(
        [redis_executable(), conf, "--sentinel"],
        log_dir=directory,
        name="sentinel",
        ready=lambda _proc: ping(port),
    )
    proc.port = port  # type: ignore[attr-defined]
    return proc.start()


def _master_port(sentinel_port: int) -> int | None:
    with redis.Redis(host=LOCALHOST, port=sentinel_port, socket_timeout=1) as s:
        addr = s.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
    return int(addr[1]) if addr else None


def _replicas_known(sentinel_port: int) -> int:
    with redis.Redis(host=LOCALHOST, port=sentinel_port, socket_timeout=1) as s:
        return len(s.execute_command("SENTINEL", "replicas", SERVICE))


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, ManagedProcess]]:
    # No 5 s pause before the replica's first full sync (the default, to batch replicas).
    master = RedisServer(
        tmp_path / "master", name="master", extra_args=("--repl-diskless-sync-delay", "0")
    ).start()
    replica = RedisServer(
        tmp_path / "replica", name="replica", extra_args=("--replicaof", LOCALHOST, str(master.port))
    ).start()
    sentinel: ManagedProcess | None = None
    try:
        wait_until(
            lambda: replica.client().info("replication").get("master_link_status") == "up",
            timeout=15,
            message="the replica in sync with the master",
        )
        sentinel = _sentinel(tmp_path / "sentinel", master.port)
        wait_until(
            lambda: _replicas_known(sentinel.port) == 1, timeout=15, message="the sentinel sees the replica"
        )
        yield master, replica, sentinel
    finally:
        if sentinel is not None:
            sentinel.cleanup()
        replica.cleanup()
        master.cleanup()


async def reconnected(node: BrokerProcess, dev: Device) -> tuple[Device, Any]:
    """`dev`'s credential on a new connection (its socket may have met the failover,
    1011): the new device and what `authenticate` answered (welcome, pending)."""
    back = await Device.connect(node.ws_url, seed=dev.seed)
    back.cid = dev.cid
    return back, await back.authenticate()


def sentinel_url(sentinel: ManagedProcess) -> str:
    """The brokers' --redis-url: the master of SERVICE, as the sentinel names it."""
    return f"redis+sentinel://{LOCALHOST}:{sentinel.port}/{SERVICE}"  # type: ignore[attr-defined]


async def promoted(sentinel: ManagedProcess, replica: RedisServer) -> None:
    await asyncio.to_thread(
        wait_until,
        lambda: _master_port(sentinel.port) == replica.port,  # type: ignore[attr-defined]
        timeout=30,
        message="the sentinel promoted the replica",
    )


async def create_once_reachable(client: PushAuthClient, timeout: float) -> models.Challenge:
    """alice's next challenge: 503 (BrokerUnavailable) until the broker reaches the new master."""

    async def create() -> models.Challenge | None:
        try:
            return await client.create_challenge("alice", CTX)
        except BrokerUnavailable:
            return None

    made = await until(create, timeout=timeout, interval=0.2, message="a challenge made on the new master")
    assert isinstance(made, models.Challenge)
    return made


async def test_the_broker_follows_a_sentinel_failover(
    sentinel_setup: tuple[RedisServer, RedisServer, ManagedProcess],
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    master, replica, sentinel = sentinel_setup
    url = sentinel_url(sentinel)
    node = broker_factory(redis_url=url, node="a")
    rp = add_rp("Sentinel RP", redis_url=url)
    async with PushAuthClient(node.http_url, rp["api_key"]) as client:
        dev = await online_device(client, node.ws_url)
        ch = await client.create_challenge("alice", CTX)
        await approve_push(dev, ch)
        keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
        assert (await client.wait_result(ch, keys, timeout=5)).approved
        # Let the replica catch up, then crash the master: the sentinel promotes the replica.
        await asyncio.to_thread(master.client().execute_command, "WAIT", 1, 2000)
        master.kill()
        await promoted(sentinel, replica)
        again = await create_once_reachable(client, 20)
        # The device's connection may have met the failover (1011): it reconnects.
        back, (welcome, pending) = await reconnected(node, dev)
        assert welcome.accepted == (dev.cid,)  # the credential survived on the new master
        assert [p.ch for p in pending] == [again.id]
        await back.send(back.answer(pending[0], number=again.number))
        assert await back.frame() == AnswerResult(ch=again.id, outcome="approved")
        assert (await client.wait_result(again, keys, timeout=5)).approved


async def test_two_nodes_through_sentinel_share_events(
    sentinel_setup: tuple[RedisServer, RedisServer, ManagedProcess],
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    """Through Sentinel the event channel runs on redis-py's pub/sub: a challenge made on
    node B reaches a device on node A live, and B's waiting RP gets A's answer."""
    _master, _replica, sentinel = sentinel_setup
    url = sentinel_url(sentinel)
    a = broker_factory(redis_url=url, node="a")
    b = broker_factory(redis_url=url, node="b")
    rp = add_rp("Sentinel RP", redis_url=url)
    async with PushAuthClient(b.http_url, rp["api_key"]) as client:
        dev = await online_device(client, a.ws_url)
        keys = {c.id: c.public_key for c in await client.list_credentials("alice")}
        ch = await client.create_challenge("alice", CTX)
        waiting = asyncio.ensure_future(client.wait_result(ch, keys, timeout=10))
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge) and pushed.ch == ch.id
        await dev.send(dev.answer(pushed, number=ch.number))
        assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")
        assert (await waiting).approved


async def test_the_nodes_follow_a_sentinel_failover_of_a_hung_master(
    sentinel_setup: tuple[RedisServer, RedisServer, ManagedProcess],
    broker_factory: Callable[..., BrokerProcess],
) -> None:
    """A master that hangs (a stalled host, a network path that drops without a reset)
    rather than dies: the sentinel promotes the replica, and the nodes must leave their
    silent connections for the new master. Node A, whose device waits for sign-ins, must
    leave its event subscription too, for the master where node B now publishes: it
    carries nothing while no one publishes, so only an unanswered PING tells. The
    challenge made on B reaches A's device (live, or at its reconnection if the socket
    met the failover), A records the answer, and B's RP gets it verified."""
    master, replica, sentinel = sentinel_setup
    url = sentinel_url(sentinel)
    a = broker_factory(redis_url=url, node="a")
    b = broker_factory(redis_url=url, node="b")
    rp = add_rp("Sentinel RP", redis_url=url)
    async with PushAuthClient(b.http_url, rp["api_key"]) as via_b:
        dev = await online_device(via_b, a.ws_url)
        keys = {c.id: c.public_key for c in await via_b.list_credentials("alice")}
        await asyncio.to_thread(master.client().execute_command, "WAIT", 1, 2000)
        master.process.kill(signal.SIGSTOP)
        try:
            await promoted(sentinel, replica)
            again = await create_once_reachable(via_b, 30)
            try:
                pushed = await dev.frame(timeout=60)
                assert isinstance(pushed, Challenge) and pushed.ch == again.id, pushed
                await dev.send(dev.answer(pushed, number=again.number))
                assert await dev.frame() == AnswerResult(ch=again.id, outcome="approved")
            except websockets.ConnectionClosed:  # A's socket met the failover: 1011
                back, (_, pending) = await reconnected(a, dev)
                assert [p.ch for p in pending] == [again.id]
                await back.send(back.answer(pending[0], number=again.number))
            assert (await via_b.wait_result(again, keys, timeout=10)).approved
        finally:
            master.process.kill(signal.SIGCONT)
