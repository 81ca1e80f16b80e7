"""Every atomic step touches one Redis Cluster hash slot (issue 15, key layout 2).

A real Redis started as a cluster of one node that serves all 16384 slots: the
broker talks to it as to one Redis, and it refuses, as every cluster node does, a
command, MULTI or script whose keys span slots (CROSSSLOT), and a script that
publishes on a shard channel outside its keys' slot. So every flow below passing
is the proof, for each Lua script of broker/lua.py and each multi-key command it
runs: enrollment (token, enrollment, credential), confirm, sign-in, wrong number,
fraud report (ends the user's other prompts), lifting the block, cancel, expiry,
revocation, a recovery with its "was this you?" notice and its answer, backups,
the RP's policy, a user's export and erasure, and `rp remove`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from support import BROKER, BrokerProcess, RedisServer, run_cli, set_policy
from test_broker_device_ws import CTX, online_device
from test_broker_recovery_notice import answer, recovered

from broker import keys
from broker.store import Store
from device_agent import broker_http
from protocol.frames import AnswerResult, Cancel, Challenge, RecoveryResult
from relying_party.errors import PushBlocked
from relying_party.sdk import PushAuthClient


@pytest.fixture(scope="module")
def cluster_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("key-slots")
    with RedisServer(base / "redis", cluster=True) as redis_server:
        node = BrokerProcess(log_dir=base / "logs", redis_url=redis_server.url, node="slots").start()
        yield node
        node.cleanup()


def test_the_store_is_a_cluster_node_that_refuses_cross_slot_steps(cluster_broker: BrokerProcess) -> None:
    assert cluster_broker.redis_url is not None
    r = redis.Redis.from_url(cluster_broker.redis_url)
    try:
        assert b"cluster_state:ok" in r.execute_command("CLUSTER", "INFO")
        with pytest.raises(redis.ResponseError, match="same slot"):
            r.delete("pa:{a}:x", "pa:{b}:x")
    finally:
        r.close()


async def test_every_flow_runs_on_one_slot_per_step(cluster_broker: BrokerProcess) -> None:
    url = cluster_broker.redis_url
    assert url is not None
    rp = cluster_broker.add_rp("Slots RP")  # MULTI over the {rp} keys
    set_policy(rp["id"], "--max-pushes", "50", redis_url=url)
    async with PushAuthClient(cluster_broker.http_url, rp["api_key"]) as client:
        dev = await online_device(client, cluster_broker.ws_url)  # enroll + confirm
        creds = {c.id: c.public_key for c in await client.list_credentials("alice")}

        ch = await client.create_challenge("alice", CTX, ttl=60)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge)
        await dev.send(dev.answer(pushed, number=ch.number))
        assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")
        assert (await client.wait_result(ch, creds, timeout=30)).approved

        wrong = await client.create_challenge("alice", CTX, ttl=60)
        pushed = await dev.frame()
        assert isinstance(pushed, Challenge)
        await dev.send(
            dev.answer(
                pushed, number=str((int(wrong.number) + 1) % 10 ** len(wrong.number)).zfill(len(wrong.number))
            )
        )
        assert await dev.frame() == AnswerResult(ch=wrong.id, outcome="number_mismatch")

        cancelled = await client.create_challenge("alice", CTX, ttl=60)
        assert isinstance(await dev.frame(), Challenge)
        assert await client.cancel_challenge(cancelled)
        assert await dev.frame() == Cancel(ch=cancelled.id, reason="cancelled")

        # Two prompts; the report on one withdraws the other in the same script.
        first = await client.create_challenge("alice", CTX, ttl=60)
        second = await client.create_challenge("alice", CTX, ttl=60, supersede=False)
        got = [await dev.frame(), await dev.frame()]
        reported = next(f for f in got if isinstance(f, Challenge) and f.ch == first.id)
        await dev.send(dev.answer(reported, decision="fraud"))
        frames = [await dev.frame(), await dev.frame()]
        assert Cancel(ch=second.id, reason="withdrawn") in frames, frames
        with pytest.raises(PushBlocked):
            await client.create_challenge("alice", CTX)
        await client.lift_push_block("alice")

        # Expiry, as the node's timer runs it (the store's own call, on this Redis).
        ending = await client.create_challenge("alice", CTX, ttl=60)
        assert isinstance(await dev.frame(), Challenge)
        redis = aioredis.Redis.from_url(url)
        try:
            store = Store(redis, node="test")
            record = await store.get_challenge(ending.id)
            assert record is not None
            assert await store.expire_challenge(record, record.expires)
            assert await dev.frame() == Cancel(ch=ending.id, reason="expired")
        finally:
            store.close()
            await redis.aclose()

        # A recovery, its notice, and a "no, not me" (revoke, mute, withdraw: one script).
        r = await recovered(client, cluster_broker.ws_url)
        await r.old.send(answer(r, "disown", rid=3))
        assert (await r.old.next_of(RecoveryResult)).outcome == "disowned"
        await r.old.close()
        await client.lift_push_block("alice")

        # Backups: the blob, its quota index and sizes ({blob}).
        seed = secrets.token_bytes(32)
        await asyncio.to_thread(broker_http.put_backup, cluster_broker.ws_url, seed, b"ciphertext" * 10)
        assert (
            await asyncio.to_thread(broker_http.get_backup, cluster_broker.ws_url, seed) == b"ciphertext" * 10
        )
        assert await asyncio.to_thread(broker_http.delete_backup, cluster_broker.ws_url, seed)

        await client.revoke_credential(dev.cid)
        await dev.close()
        other = await online_device(client, cluster_broker.ws_url, "bob")
        # alice's data read, then erased in one script: from her index, credentials,
        # recovery notices (revoked ones, ended challenges, the notice of the recovery).
        data = await client.user_data("alice")
        assert len(data["credentials"]) == 1 and len(data["revoked_credentials"]) == 2, data
        await client.erase_user("alice")
        data = await client.user_data("alice")
        assert data["credentials"] == data["revoked_credentials"] == data["challenges"] == [], data
    # The RP removed: its keys go, its users' credentials are revoked.
    removed = run_cli([BROKER, "rp", "remove", rp["id"], "--redis-url", url])
    assert removed.returncode == 0, removed.stderr
    await other.close()
    err = cluster_broker.stderr_path.read_text()
    assert "slot" not in err.lower() and "Traceback" not in err, err


def test_ids_name_their_slot() -> None:
    tag = keys.user_tag("rp_x", "alice")
    for kind in ("ch", "cr", "en", "rn"):
        minted = keys.mint(kind, tag)
        assert len(minted) <= 64 and keys.tag_of(minted) == tag
    assert keys.token_tag(keys.mint_token(tag), "h") == tag
    assert keys.tag_of("ch_" + secrets.token_urlsafe(16)) is None  # layout 1: no tag
    # Every per-user key and the channel share the tag (so: the slot).
    names = [
        keys.user_credentials("rp_x", "alice"),
        keys.pending("rp_x", "alice"),
        keys.push_guard("rp_x", "alice"),
        keys.recent_pushes("rp_x", "alice"),
        keys.unconfirmed("rp_x", "alice"),
        keys.challenge(keys.mint("ch", tag)),
        keys.credential(keys.mint("cr", tag)),
        keys.enrollment(keys.mint("en", tag)),
        keys.recovery_notice(keys.mint("rn", tag)),
        keys.token(tag, "h"),
        keys.user_channel("rp_x", "alice"),
    ]
    assert {n[n.index("{") + 1 : n.index("}")] for n in names} == {tag}
