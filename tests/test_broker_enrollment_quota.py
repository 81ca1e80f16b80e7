"""The RP's enrollment quota (DESIGN invariant 13; docs/http-api.md, "Enrollment quota").

One RP key could fill the Redis every RP shares with pending enrollments (3,000 in under
a second, 2.5 GB in ten minutes). Two settings of the RP's policy bound it, counted in
Redis so that they hold across nodes: pending enrollments at once, and enrollments made
a minute. On two real broker nodes sharing one real Redis, with the real CLI: a refused
create is 429 with Retry-After and stores nothing; completing, withdrawing or expiring
frees a place; another RP is not touched; a change reaches every node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from shared_broker import two_nodes_on_one_redis
from support import BROKER, BrokerProcess, new_rp, run_cli, set_policy, until
from test_broker_device_ws import Device

from broker import keys
from broker.store import Store
from relying_party.errors import RateLimited
from relying_party.sdk import PushAuthClient


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """Two broker nodes on one Redis, for the module (each test has RPs of its own)."""
    yield from two_nodes_on_one_redis(tmp_path_factory, "quota")


def stored(url: str, rp_id: str) -> tuple[set[bytes], list[Any], dict[bytes, bytes]]:
    """Every key, the RP's pending-enrollment count and its rate bucket, as they are."""
    with redis.Redis.from_url(url) as r:
        return (
            set(r.scan_iter(match="pa:*", count=1000)),
            r.zrange(keys.rp_pending_enrollments(rp_id), 0, -1, withscores=True),
            r.hgetall(keys.rp_enrollment_bucket(rp_id)),
        )


async def refused(client: PushAuthClient, code: str, user: str = "eve") -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await client.create_enrollment(user, f"{user}@example.com")
    assert caught.value.code == code, caught.value
    assert caught.value.retry_after is not None
    return caught.value


async def created(client: PushAuthClient, user: str) -> bool:
    try:
        await client.create_enrollment(user, f"{user}@example.com")
    except RateLimited:
        return False
    return True


async def test_the_cap_holds_across_nodes_and_frees_on_complete_withdraw_and_expiry(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    a, b = nodes
    url = a.redis_url or ""
    rp, other = await new_rp(a, "Capped"), await new_rp(a, "Other")
    set_policy(rp["id"], "--max-pending-enrollments", "3", redis_url=url)
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as on_a,
        PushAuthClient(b.http_url, rp["api_key"]) as on_b,
        PushAuthClient(b.http_url, other["api_key"]) as other_rp,
    ):
        first = await on_a.create_enrollment("alice", "alice@example.com")
        second = await on_b.create_enrollment("alice", "alice@example.com")  # a setup again
        await on_a.create_enrollment("bob", "bob@example.com")
        # Either node alone saw fewer than 3; the count is the RP's, in Redis.
        before = stored(url, rp["id"])
        for node in (on_b, on_a):
            over = await refused(node, "too_many_enrollments")
            assert "3 enrollments of this service are pending" in over.detail
            assert 1 <= (over.retry_after or 0) <= 600  # when the oldest expires at the latest
        assert stored(url, rp["id"]) == before, "a refused create stored something"
        # Another RP is not touched by this one's quota.
        for user in ("alice", "bob", "carol", "dave"):
            await other_rp.create_enrollment(user, f"{user}@example.com")

        # Withdrawn: its place is free at once (on the other node too).
        await on_b.cancel_enrollment(first.id)
        await on_b.create_enrollment("carol", "carol@example.com")
        await refused(on_a, "too_many_enrollments")

        # Completed by a device: free as well.
        dev = await Device.connect(a.ws_url)
        await dev.enroll(second.uri or "")
        await dev.close()
        await on_a.create_enrollment("dave", "dave@example.com")
        await refused(on_b, "too_many_enrollments")

    # Expired: a place frees itself when its enrollment expires, with no call. Made here
    # by the broker's own Store with a lifetime of 50 ms, for an RP at its cap of 1.
    short = await new_rp(a, "Expiring")
    set_policy(short["id"], "--max-pending-enrollments", "1", redis_url=url)
    r = aioredis.Redis.from_url(url)
    try:
        store = Store(r, node="test", enrollment_ttl_ms=50)
        brief = await store.get_rp(short["id"])
        assert brief is not None
        await store.create_enrollment(brief, "erin", "erin@example.com", False)
    finally:
        await r.aclose()
    async with PushAuthClient(b.http_url, short["api_key"]) as client:
        await until(lambda: created(client, "frank"), message="the expired enrollment's place freed")
        await refused(client, "too_many_enrollments")


async def test_the_rate_bounds_create_and_withdraw_and_refuses_with_nothing_stored(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """A withdrawn enrollment is kept for reading (15 minutes after its expiry): without a
    rate, create-and-withdraw would grow Redis all the same."""
    a, b = nodes
    url = a.redis_url or ""
    rp = await new_rp(a, "Churning")
    set_policy(rp["id"], "--enrollments-per-minute", "2", redis_url=url)
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as on_a,
        PushAuthClient(b.http_url, rp["api_key"]) as on_b,
    ):
        made = [await on_a.create_enrollment("alice", "alice@example.com")]
        made.append(await on_b.create_enrollment("alice", "alice@example.com"))
        for enrollment in made:
            await on_a.cancel_enrollment(enrollment.id)
        before = stored(url, rp["id"])
        over = await refused(on_b, "rate_limited")
        assert "more than 2 enrollments a minute" in over.detail
        assert 1 <= (over.retry_after or 0) <= 30  # a token every 30 s
        assert stored(url, rp["id"]) == before, "a refused create stored something"


async def test_a_policy_change_reaches_every_node(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    a, b = nodes
    url = a.redis_url or ""
    rp = await new_rp(a, "Growing")
    shown = set_policy(rp["id"], "--max-pending-enrollments", "2", redis_url=url)
    assert (shown["max_pending_enrollments"], shown["enrollments_per_minute"]) == (2, 600)
    async with (
        PushAuthClient(a.http_url, rp["api_key"]) as on_a,
        PushAuthClient(b.http_url, rp["api_key"]) as on_b,
    ):
        for node in (on_a, on_b):
            await node.create_enrollment("alice", "alice@example.com")
        for node in (on_a, on_b):
            await refused(node, "too_many_enrollments")
        policy = await on_b.policy()
        assert (policy.get("max_pending_enrollments"), policy.get("enrollments_per_minute")) == (2, 600)
        set_policy(rp["id"], "--max-pending-enrollments", "4", redis_url=url)
        # Each node within its policy cache's 2 s: one more on each, then both refuse.
        await until(lambda: created(on_a, "bob"), message="node a applies the new cap")
        await until(lambda: created(on_b, "carol"), message="node b applies the new cap")
        for node in (on_a, on_b):
            await refused(node, "too_many_enrollments")

    # (The CLI's refusals of bad values: tests/test_broker_policy.py.)
    helped = run_cli([BROKER, "rp", "set", "--help"])
    assert "--max-pending-enrollments N" in helped.stdout and "--enrollments-per-minute N" in helped.stdout
