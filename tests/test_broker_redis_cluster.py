"""The broker on a real Redis Cluster (three masters, three replicas, redis-server
processes started here): sign-ins across two broker nodes, and the SIGKILL of the
master that holds a user's slot while sign-ins run, with nothing lost (credentials,
enrollments, a pending challenge made just before the kill) and sign-ins going on
after the failover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from e2e_helpers import agent_env, agent_ok, enroll  # noqa: F401 - agent_env: autouse fixture
from support import (
    BROKER,
    BrokerProcess,
    RedisServer,
    add_rp,
    assert_cli_error,
    free_port,
    run_cli,
    wait_until,
)
from support.metrics import scrape, value
from support.redis_cluster import RedisCluster
from test_broker_device_ws import CTX, Device, online_device

from broker import keys
from protocol.frames import AnswerResult, Cancel, Challenge, Revoked
from relying_party.errors import BrokerUnavailable, PushAuthError
from relying_party.sdk import PushAuthClient

# Generous: a failover takes cluster-node-timeout (2 s here) plus an election, and a
# loaded two-core machine can take several times that. Only a failing test waits it.
FAILOVER_BOUND_S = 60.0


@dataclass
class Nodes:
    cluster: RedisCluster
    a: BrokerProcess
    b: BrokerProcess
    rp: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def nodes(redis_cluster: RedisCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """Two broker nodes on the module's cluster, and one RP (started once: seconds)."""
    logs = tmp_path_factory.mktemp("cluster-brokers")
    url = redis_cluster.url
    a = BrokerProcess(log_dir=logs, redis_url=url, node="a").start()
    b = BrokerProcess(log_dir=logs, redis_url=url, node="b").start()
    try:
        yield Nodes(redis_cluster, a, b, add_rp("Cluster RP", redis_url=url))
    finally:
        b.cleanup()
        a.cleanup()


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://h:1/0", "redis+cluster://h:port", "redis+cluster://:7000"],
)
def test_a_bad_cluster_url_is_a_clear_cli_error(url: str, tmp_path: Path) -> None:
    result = run_cli([BROKER, "rp", "add", "X", "--redis-url", url, "--data-dir", tmp_path])
    assert_cli_error(result, contains="bad --redis-url")


def test_an_unreachable_cluster_is_a_clear_cli_error(tmp_path: Path) -> None:
    result = run_cli([BROKER, "rp", "add", "X", "--redis-url", "redis+cluster://127.0.0.1:9", "--json"])
    assert_cli_error(result, contains="cannot reach Redis")


async def test_sign_ins_across_two_nodes_on_a_cluster(nodes: Nodes, tmp_path: Path) -> None:
    """A device on node A gets a push the RP made on node B, live, over the user's shard
    channel, and B's waiting RP gets A's answer; the real agent, enrolled through B,
    answers a challenge the RP made on A."""
    async with (
        PushAuthClient(nodes.a.http_url, nodes.rp["api_key"]) as on_a,
        PushAuthClient(nodes.b.http_url, nodes.rp["api_key"]) as on_b,
    ):
        dev = await online_device(on_b, nodes.a.ws_url, user="dave")
        keys_ = {c.id: c.public_key for c in await on_b.list_credentials("dave")}
        ch = await on_b.create_challenge("dave", CTX)
        waiting = asyncio.ensure_future(on_b.wait_result(ch, keys_, timeout=20))
        pushed = await dev.frame(timeout=20)
        assert isinstance(pushed, Challenge) and pushed.ch == ch.id
        await dev.send(dev.answer(pushed, number=ch.number))
        assert await dev.frame(timeout=20) == AnswerResult(ch=ch.id, outcome="approved")
        assert (await waiting).approved
        # Aimed at two of dave's devices (credential_ids), one offline: the event from B
        # reaches A, which shows it to the online one alone; the device left out gets
        # neither the prompt nor its end (superseded by the next): its next frame is the
        # one aimed at it.
        offline = await online_device(on_b, nodes.b.ws_url, user="dave")
        await offline.close()
        left_out = await online_device(on_b, nodes.a.ws_url, user="dave")
        aimed = await on_b.create_challenge("dave", CTX, credential_ids=[dev.cid, offline.cid])
        assert aimed.devices == 2
        pushed = await dev.frame(timeout=20)
        assert isinstance(pushed, Challenge) and pushed.ch == aimed.id
        own = await on_b.create_challenge("dave", CTX, credential_ids=[left_out.cid])
        assert await dev.frame(timeout=20) == Cancel(ch=aimed.id, reason="superseded")
        pushed = await left_out.frame(timeout=20)
        assert isinstance(pushed, Challenge) and pushed.ch == own.id, pushed
        await left_out.close()
        await dev.close()

        home = tmp_path / "agent"
        cred = await enroll(on_b, home, user="carol")
        ch = await on_a.create_challenge("carol", CTX)
        waiting = asyncio.ensure_future(on_a.wait_result(ch, {cred.id: cred.public_key}, timeout=30))
        (listed,) = json.loads(agent_ok(home, "pending", "--json"))
        assert listed["id"] == ch.id
        assert f"Request {ch.id}: approved" in agent_ok(home, "approve", ch.id, "--number", ch.number)
        assert (await waiting).approved


# -- a master dies under load --------------------------------------------------------------


def _users_per_master(nodes: Nodes, rp_id: str, per_master: int) -> dict[int, list[str]]:
    """User names whose slots sit on each master (per_master of them each)."""
    found: dict[int, list[str]] = {m.port: [] for m in nodes.cluster.masters()}
    i = 0
    while any(len(v) < per_master for v in found.values()):
        user = f"user{i}"
        port = nodes.cluster.master_of_key("{" + keys.user_tag(rp_id, user) + "}").port
        if len(found[port]) < per_master:
            found[port].append(user)
        i += 1
    return found


@dataclass
class SignIns:
    """Sign-ins in a loop for one user (its device answering), counted by wall time."""

    client: PushAuthClient
    url: str
    dev: Device
    user: str
    keys: dict[str, bytes]
    ok: list[float] = field(default_factory=list)
    failed: int = 0
    reconnects: int = 0

    async def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self.dev.close()
        back = await Device.connect(self.url, seed=self.dev.seed)
        back.cid = self.dev.cid
        await back.authenticate()
        self.dev = back
        self.reconnects += 1

    async def _one(self) -> None:
        ch = await self.client.create_challenge(self.user, CTX)
        while True:  # skip what is not this push (cancels of earlier attempts, re-deliveries)
            pushed = await self.dev.frame(timeout=15)
            if isinstance(pushed, Challenge) and pushed.ch == ch.id:
                break
        await self.dev.send(self.dev.answer(pushed, number=ch.number))
        result = await self.client.wait_result(ch, self.keys, timeout=15)
        assert result.approved, result
        self.ok.append(time.monotonic())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._one()
            except (BrokerUnavailable, PushAuthError, TimeoutError, websockets.ConnectionClosed):
                # The failover: a 503, a push that came while this node was resubscribing
                # (caught up later), a device connection closed with 1011. Try again.
                self.failed += 1
                with contextlib.suppress(Exception):
                    await self._reconnect()
                await asyncio.sleep(0.1)


async def test_a_master_killed_under_load_loses_nothing(nodes: Nodes) -> None:
    cluster = nodes.cluster
    cluster.heal()
    rp_id = nodes.rp["id"]
    by_master = _users_per_master(nodes, rp_id, per_master=2)
    users = [u for us in by_master.values() for u in us]
    async with PushAuthClient(nodes.b.http_url, nodes.rp["api_key"]) as client:
        devices = {u: await online_device(client, nodes.a.ws_url, user=u) for u in users}
        creds = {u: {c.id: c.public_key for c in await client.list_credentials(u)} for u in users}
        # The victim: a user whose master will die, with a challenge that stays pending.
        victim_master = next(iter(by_master))
        victim = by_master[victim_master][0]
        loops = {u: SignIns(client, nodes.a.ws_url, devices[u], u, creds[u]) for u in users if u != victim}
        stop = asyncio.Event()
        running = [asyncio.ensure_future(s.run(stop)) for s in loops.values()]
        try:
            await asyncio.wait_for(_until(lambda: all(s.ok for s in loops.values())), FAILOVER_BOUND_S)
            # Written just before the kill, with no wait of the test's own: the broker's
            # durable writes are what keeps them.
            enrollments = {u: await client.create_enrollment(u, f"{u}@phone2") for u in users}
            pending = await client.create_challenge(victim, CTX)
            master = cluster.node_at(victim_master)
            killed_at = time.monotonic()
            promoted = await asyncio.to_thread(cluster.kill_master, master, FAILOVER_BOUND_S)
            assert cluster.master_of_key("{" + keys.user_tag(rp_id, victim) + "}").port == promoted.port
            # Sign-ins go on after the failover, for users of every master, the dead one's too.
            after = {u: len(s.ok) for u, s in loops.items()}
            await asyncio.wait_for(
                _until(lambda: all(len(s.ok) >= after[u] + 2 for u, s in loops.items())), FAILOVER_BOUND_S
            )
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)

        # Every credential is still there, and every enrollment made just before the kill.
        for u in users:
            assert {c.id for c in await client.list_credentials(u)} == set(creds[u])
            assert (await client.get_enrollment(enrollments[u])).status == "pending"
        # The challenge made just before the kill is still pending and answerable.
        dev = devices[victim]
        with contextlib.suppress(Exception):
            await dev.close()
        back = await Device.connect(nodes.a.ws_url, seed=dev.seed)
        back.cid = dev.cid
        _welcome, waiting = await back.authenticate()
        assert [c.ch for c in waiting] == [pending.id]
        await back.send(back.answer(waiting[0], number=pending.number))
        assert await back.frame(timeout=20) == AnswerResult(ch=pending.id, outcome="approved")
        assert (await client.wait_result(pending, creds[victim], timeout=20)).approved
        await back.close()
        after_kill = sum(1 for s in loops.values() for t in s.ok if t > killed_at)
        assert after_kill >= 2 * len(loops)
        for s in loops.values():
            with contextlib.suppress(Exception):
                await s.dev.close()
    await asyncio.to_thread(cluster.restart, master)


async def _until(condition: Any) -> None:
    """Poll a condition on the test's own counters (set by its own tasks)."""
    while not condition():  # noqa: ASYNC110 - several tasks' counters, no single event to wait on
        await asyncio.sleep(0.05)


async def test_writes_on_a_master_without_a_replica_are_counted_in_the_metrics(
    nodes: Nodes, tmp_path: Path
) -> None:
    """A master whose replica is dead serves its durable writes unconfirmed rather than
    refusing them (docs/operations.md, "Durability"): the operator learns it from
    pushauth_redis_unreplicated_writes_total, not only from a log line a minute."""
    cluster = nodes.cluster
    cluster.heal()
    port = free_port()
    broker = BrokerProcess(
        log_dir=tmp_path, redis_url=cluster.url, node="m", extra_args=["--metrics-port", str(port)]
    ).start()
    try:
        assert value(scrape(port), "pushauth_redis_unreplicated_writes_total") == 0
        by_master = _users_per_master(nodes, nodes.rp["id"], per_master=1)
        master_port, (user,) = next(iter(by_master.items()))
        async with PushAuthClient(broker.http_url, nodes.rp["api_key"]) as client:
            dev = await online_device(client, broker.ws_url, user=user)
            (replica,) = cluster.replicas_of(cluster.node_at(master_port))
            replica.kill()
            await client.create_challenge(user, CTX)  # durable: a WAIT no replica answers
            await dev.close()
        wait_until(
            lambda: value(scrape(port), "pushauth_redis_unreplicated_writes_total") >= 1,
            message="the unconfirmed write counted",
        )
    finally:
        broker.cleanup()
        await asyncio.to_thread(cluster.heal)


async def test_rp_remove_finds_its_users_on_every_master(nodes: Nodes) -> None:
    """`rp remove` SCANs every master for the RP's users: all their credentials are
    revoked and their pending challenges withdrawn, wherever their slots are."""
    rp = add_rp("Going away", redis_url=nodes.cluster.url)
    by_master = _users_per_master(nodes, rp["id"], per_master=1)
    users = [u for us in by_master.values() for u in us]
    async with PushAuthClient(nodes.a.http_url, rp["api_key"]) as client:
        devices = [await online_device(client, nodes.a.ws_url, user=u) for u in users]
        for u in users:
            await client.create_challenge(u, CTX)
    removed = run_cli([BROKER, "rp", "remove", rp["id"], "--redis-url", nodes.cluster.url])
    assert removed.returncode == 0, removed.stderr
    n = len(users)
    assert f"{n} credential(s) revoked, {n} pending challenge(s) withdrawn" in removed.stdout
    for dev in devices:
        await dev.close()


async def test_erase_user_on_a_cluster_leaves_no_key_of_the_user_on_any_master(nodes: Nodes) -> None:
    """DELETE /v1/users/{user} through node a: the device on node b is told, and no
    master holds a key of the user's slot any more; a user on another master keeps his.
    The user's keys are found from the user's own records (broker/user_data.py): no
    master's keyspace is walked, nor the slot's keys listed (at 10 million devices, some
    50 million names for each erasure, or every user sharing the slot)."""
    rp = add_rp("Erasing on a cluster", redis_url=nodes.cluster.url)
    by_master = _users_per_master(nodes, rp["id"], per_master=1)
    gone, kept = [us[0] for us in by_master.values()][:2]
    async with PushAuthClient(nodes.a.http_url, rp["api_key"]) as client:
        dev = await online_device(client, nodes.b.ws_url, user=gone)
        other = await online_device(client, nodes.b.ws_url, user=kept)
        ch = await client.create_challenge(gone, CTX)
        assert isinstance(await dev.frame(), Challenge)
        listings = ("scan", "cluster|getkeysinslot", "cluster|countkeysinslot")
        scans = {(m.port, c): _calls(m, c) for m in nodes.cluster.masters() for c in listings}
        await client.erase_user(gone)
        assert {(m.port, c): _calls(m, c) for m in nodes.cluster.masters() for c in listings} == scans
        told = [await dev.frame(), await dev.frame()]
        assert Revoked(cid=dev.cid, reason="removed_by_rp", rid=None) in told, told
        assert Cancel(ch=ch.id, reason="revoked") in told, told
        assert await client.list_credentials(gone) == []
        assert [c.id for c in await client.list_credentials(kept)] == [other.cid]
    for user, left in ((gone, 0), (kept, 1)):
        tag = keys.user_tag(rp["id"], user)
        on_masters = [
            k for m in nodes.cluster.masters() for k in m.client().scan_iter(match=f"pa:{{{tag}}}:*")
        ]
        assert (len(on_masters) > 0) == bool(left), (user, on_masters)
    for d in (dev, other):
        await d.close()


def _calls(node: RedisServer, command: str) -> int:
    """How many times `node` ran `command` (INFO commandstats)."""
    stats = node.client().info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def test_a_layout_1_store_on_a_cluster_is_refused_with_a_message(nodes: Nodes) -> None:
    """Keys of the old layout cannot be renamed across slots: the operator is told to
    migrate on the single Redis first (broker/layout.py), nothing is half moved."""
    client = nodes.cluster.client()
    try:
        client.delete(keys.LAYOUT)
        client.sadd("pa:rps", "rp_old")  # a layout-1 key
        result = run_cli([BROKER, "rp", "list", "--redis-url", nodes.cluster.url])
        assert_cli_error(result, contains="run this release once on the single Redis")
    finally:
        client.delete("pa:rps")
        client.set(keys.LAYOUT, keys.LAYOUT_VERSION)
        client.close()


def test_a_plain_url_to_a_cluster_node_says_to_name_the_cluster(nodes: Nodes) -> None:
    """redis://one-node of a cluster answers PING, then MOVED for most keys: the
    operator is told what to give instead of a MovedError traceback."""
    one_node = nodes.cluster.nodes[0].url
    for argv in (["rp", "list"], ["serve", "--port", "0"]):
        result = run_cli([BROKER, *argv, "--redis-url", one_node])
        assert_cli_error(
            result, contains="is a node of a Redis Cluster: give all of it as --redis-url redis+cluster://"
        )
