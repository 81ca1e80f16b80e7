"""A store of key layout 1 (before hash tags) keeps working under layout 2 (issue 15).

The test writes the keys exactly as the previous release stored them (names and
fields), with ids in the old format (no tag), then starts a real broker on it: the
broker moves the store to layout 2 at start (broker/layout.py). Afterwards the old
credential authenticates with its old cid and gets the challenge that was pending,
the RP reads that challenge by its old id, the old API key works, new sign-ins work,
an old enrollment token still enrolls, and a second migration changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from support import BrokerProcess, RedisServer
from test_broker_device_ws import CTX, Device

from broker import keys, layout, lua, user_data
from broker.models import ChallengeRecord
from broker.store import Store, now_ms
from protocol import signing
from protocol.challenge import Status
from protocol.frames import AnswerResult, Challenge, Enrolled
from protocol.signing import context_hash
from relying_party.sdk import PushAuthClient

USER = "ali:ce 7"  # a colon and a space: the old per-user key format is parsed back


def _v1_user(kind: str, rp_id: str, user: str) -> str:
    return f"pa:{kind}:{rp_id}:{len(user)}:{user}"


def write_layout_1(r: Any) -> dict[str, Any]:
    """An RP, a confirmed credential, a pending challenge and a pending enrollment, as
    the release before layout 2 wrote them."""
    now = int(time.time() * 1000)
    rp_id, api_key = "rp_" + secrets.token_urlsafe(9), "pak_" + secrets.token_urlsafe(32)
    key_hash = hashlib.sha256(api_key.encode()).hexdigest()
    r.hset(f"pa:rp:{rp_id}", mapping={"name": "Old RP", "key_hash": key_hash, "created": now})
    r.set(f"pa:rpkey:{key_hash}", rp_id)
    r.sadd("pa:rps", rp_id)
    r.hset(f"pa:rpp:{rp_id}", mapping={"digits": 2})
    seed = signing.new_seed()
    cid = "cr_" + secrets.token_urlsafe(16)
    r.hset(
        f"pa:cred:{cid}",
        mapping={
            "rp": rp_id, "user": USER, "account": "alice@old", "name": "old phone",
            "pk": signing.public_key(seed), "created": now - 1000, "status": "active",
            "enrollment": "en_x", "recoverable": "0",
        },
    )  # fmt: skip
    r.hset(_v1_user("uc", rp_id, USER), cid, "alice@old")
    r.hset(_v1_user("guard", rp_id, USER), mapping={"since": 1})
    r.zadd(_v1_user("recent", rp_id, USER), {"ch_old": now})
    ch = "ch_" + secrets.token_urlsafe(16)
    ctx = dict(CTX)
    expires = now + 120_000
    r.hset(
        f"pa:ch:{ch}",
        mapping={
            "rp": rp_id, "rp_name": "Old RP", "user": USER, "number": "42", "digits": 2,
            "nonce": secrets.token_bytes(32), "rp_nonce": secrets.token_bytes(32),
            "ctx": json.dumps(ctx), "ctx_hash": context_hash(ctx), "created": now,
            "expires": expires, "status": "pending",
        },
    )  # fmt: skip
    r.pexpireat(f"pa:ch:{ch}", expires + 15 * 60_000)
    r.zadd(_v1_user("pend", rp_id, USER), {ch: expires})
    eid, token = "en_" + secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    r.hset(
        f"pa:enr:{eid}",
        mapping={
            "rp": rp_id, "user": USER, "account": "alice@new", "recoverable": "0",
            "status": "pending", "expires": now + 600_000,
        },
    )  # fmt: skip
    r.pexpireat(f"pa:enr:{eid}", now + 600_000 + 15 * 60_000)
    r.set(f"pa:tok:{hashlib.sha256(token.encode()).hexdigest()}", eid, pxat=now + 600_000)
    return {"rp": rp_id, "api_key": api_key, "cid": cid, "seed": seed, "ch": ch, "eid": eid, "token": token}


_V1_PREFIXES = ("pa:rp:", "pa:rpkey:", "pa:rps", "pa:rpp:", "pa:cred:", "pa:uc:", "pa:ch:", "pa:pend:")
_V1_PREFIXES += ("pa:guard:", "pa:recent:", "pa:enr:", "pa:tok:")


async def test_a_store_of_layout_1_is_moved_and_its_ids_keep_working(
    redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    r = redis_server.client()
    old = write_layout_1(r)
    broker = broker_factory(redis_url=redis_server.url, node="new")

    assert r.get(keys.LAYOUT) == keys.LAYOUT_VERSION.encode()
    names = [k.decode() for k in r.scan_iter("pa:*")]
    assert not [n for n in names if n.startswith(_V1_PREFIXES)], names
    assert r.exists(keys.credential(old["cid"])) or r.get(keys.legacy_index(old["cid"])) is not None

    # The old credential authenticates with its old cid and gets the pending challenge.
    dev = await Device.connect(broker.ws_url, seed=old["seed"])
    dev.cid = old["cid"]
    welcome, pending = await dev.authenticate()
    assert welcome.accepted == (old["cid"],) and [p.ch for p in pending] == [old["ch"]]
    await dev.send(dev.answer(pending[0], number="42"))
    assert await dev.frame() == AnswerResult(ch=old["ch"], outcome="approved")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {old['api_key']}"}) as http:
        async with http.get(f"{broker.http_url}/v1/challenges/{old['ch']}") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "approved"

        # New sign-ins, with the old API key, reach the old credential.
        async with PushAuthClient(broker.http_url, old["api_key"]) as client:
            creds = {c.id: c.public_key for c in await client.list_credentials(USER)}
            assert list(creds) == [old["cid"]]
            ch = await client.create_challenge(USER, CTX, ttl=120)
            pushed = await dev.frame()
            assert isinstance(pushed, Challenge) and pushed.ch == ch.id
            await dev.send(dev.answer(pushed, number=ch.number))
            assert await dev.frame() == AnswerResult(ch=ch.id, outcome="approved")
            assert (await client.wait_result(ch, creds, timeout=30)).status.value == "approved"

        # The old enrollment token still enrolls a new device; the RP sees it by the old id.
        new = await Device.connect(broker.ws_url)
        await new.send(new.session.enroll_frame(rid=1, token=old["token"], seed=new.seed, name="new"))
        enrolled = await new.frame()
        assert isinstance(enrolled, Enrolled) and enrolled.user == USER and keys.carries_tag(enrolled.cid)
        async with http.get(f"{broker.http_url}/v1/enrollments/{old['eid']}") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "completed", body
        await new.close()
    await dev.close()

    # Once moved, the migration is a no-op.
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await layout.ensure(client) is None
        again = await layout.migrate(client)
        assert again.renamed == 0, again
    finally:
        await client.aclose()

    # The old user's erasure finds what layout 1 wrote (the old challenge, ended, and the
    # old enrollment and its token are named by no other record: the move indexed them).
    async with PushAuthClient(broker.http_url, old["api_key"]) as client:
        await client.erase_user(USER)
    tag = keys.user_tag(old["rp"], USER)
    assert [k for k in r.scan_iter(match=f"pa:{{{tag}}}:*")] == []
    broker.terminate()
    assert "Traceback" not in broker.stderr_path.read_text()


async def test_a_store_of_layout_2_gets_each_users_index_and_erasure_finds_the_older_data(
    redis_server: RedisServer,
) -> None:
    """Layout 3 indexes each user's keys as they are written (broker/user_data.py erases
    from the index, with no keyspace walk); what a layout-2 release wrote has no index,
    and the move to layout 3 makes it: an erasure then leaves nothing of the user."""
    client = aioredis.Redis.from_url(redis_server.url)
    store = Store(client, "upgrade")
    try:
        await layout.ensure(client)
        rp, _ = await store.add_rp("RP")
        rp_id = rp.id
        for user in (USER, "bob"):
            await _user_with_history(store, rp_id, user)
        # As a layout-2 release left it: the same keys, no index.
        indexes = [keys.user_index(rp_id, u) for u in (USER, "bob")]
        assert [await client.delete(i) for i in indexes] == [1, 1]
        await client.set(keys.LAYOUT, "2")

        moved = await layout.ensure(client)
        # Each user: three enrollments and their tokens, two challenges, an Idempotency-Key
        # and the revoked credential (the active one is named by the user's credential hash).
        assert moved is not None and moved.user_keys == 2 * 10, moved
        assert await client.get(keys.LAYOUT) == keys.LAYOUT_VERSION.encode()

        # The deleting script refuses while something is live (here all of it: an active
        # credential, a pending sign-in and setup) and deletes nothing: a setup completed
        # or a sign-in made after the erasure's first look is ended before its keys go.
        args = (now_ms(), f"pa:{{{keys.user_tag(rp_id, USER)}}}:", "0")
        user_keys = [keys.user_index(rp_id, USER), keys.user_credentials(rp_id, USER)]
        user_keys += [keys.unconfirmed(rp_id, USER), keys.pending(rp_id, USER)]
        user_keys += [keys.push_guard(rp_id, USER), keys.recent_pushes(rp_id, USER)]
        assert await client.eval(lua.ERASE_USER, 6, *user_keys, *args) == [b"live"]
        erased = await user_data.erase_user(store, rp_id, USER)
        assert (erased.revoked, erased.ended) == (1, 1), erased
        tag = keys.user_tag(rp_id, USER)
        assert [k async for k in client.scan_iter(match=f"pa:{{{tag}}}:*")] == []
        assert len([k async for k in client.scan_iter(match=f"pa:{{{keys.user_tag(rp_id, 'bob')}}}:*")]) > 10
    finally:
        store.close()
        await client.aclose()


async def _user_with_history(store: Store, rp_id: str, user: str) -> None:
    """A device, a removed one, a pending setup, an ended and a pending sign-in (one made
    with an Idempotency-Key): what only the user's index names, and what it need not."""
    rp = await store.get_rp(rp_id)
    assert rp is not None
    cids = []
    for _ in range(2):
        made = await store.create_enrollment(rp, user, "acct", False)
        cred = await store.complete_enrollment(made.token, secrets.token_bytes(32), "phone")
        assert await store.confirm_credential(rp_id, cred.id) == "ok"
        cids.append(cred.id)
    assert await store.revoke_credential(rp_id, cids[1], "removed_by_rp")
    await store.create_enrollment(rp, user, "acct", False)
    for idempotency_key in ("k1", None):
        now = now_ms()
        record = ChallengeRecord(
            keys.mint("ch", keys.user_tag(rp_id, user)), rp_id, rp.name, user, "42", 2,
            secrets.token_bytes(32), secrets.token_bytes(32), dict(CTX), context_hash(CTX), now, now + 60_000,
        )  # fmt: skip
        assert (await store.create_challenge(record, idempotency_key=idempotency_key)).devices == 1
        if idempotency_key:
            assert await store.cancel_challenge(record, now_ms(), Status.CANCELLED) == "ok"
