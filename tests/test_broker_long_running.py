"""A node that runs for months keeps in memory and in Redis only what is alive.

Found by a soak run (docs/operations.md, "Long-running nodes"): each check here is a
structure that grew with every enrollment, sign-in or user and never shrank.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from support import RedisServer

from broker import keys
from broker.store import Store
from protocol import signing


async def test_enrollments_leave_nothing_in_the_process(redis_server: RedisServer) -> None:
    """The in-process table of layout-1 ids (keys._legacy) holds only ids without a tag:
    completing an enrollment of this layout must not add its id (it did, for each one)."""
    redis = aioredis.Redis.from_url(redis_server.url)
    store = Store(redis, node="test")
    try:
        rp, _ = await store.add_rp("Long RP")
        before = dict(keys._legacy)
        for i in range(3):
            new = await store.create_enrollment(rp, f"user{i}", "acct", recoverable=False)
            seed = signing.new_seed()
            cred = await store.complete_enrollment(new.token, signing.public_key(seed), "phone")
            assert cred.user == f"user{i}"
        assert keys._legacy == before
    finally:
        store.close()
        await redis.aclose()
