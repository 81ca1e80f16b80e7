"""`pushauth-broker rp remove`: an RP removed leaves nothing that still works.

Its API key and policy go first (Store.remove_rp), so no enrollment of it completes
any more (lua.COMPLETE_ENROLLMENT checks the RP) and its key stops working within
bounds.RP_CACHE_S on every node. Then every credential of its users is revoked, as
the RP itself would (each online device is told `revoked` at once and cannot
authenticate again), its pending challenges end `withdrawn`, so nothing it sent
can be approved, and its users' push fatigue state goes. Revoked credentials stay
(as the RP's own revocations do) for store.REVOKED_RETENTION_MS, so a device that comes
back learns it was removed, and then expire: what is left of the RP's users all has an
expiry (docs/operations.md, "Personal data"); an RP that wants its users gone at once
erases each one first (DELETE /v1/users/{user}).
An operator command: it SCANs the RP's per-user keys, which is fine for a rare
administrative step and costs the hot path nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.challenge import Status
from protocol.frames import RevokeReason

from . import keys
from .store import Store, now_ms


@dataclass(frozen=True, slots=True)
class Removal:
    revoked: int  # credentials revoked
    ended: int  # pending challenges ended


async def remove_rp(store: Store, rp_id: str) -> Removal | None:
    """Remove RP `rp_id` (None: there is no such RP). Safe to run again: a second
    run after an interrupted one finishes the revocations."""
    removed = await store.remove_rp(rp_id)
    revoked = ended = 0
    async for key in store.redis.scan_iter(match=keys.rp_user_keys("uc", rp_id), count=1000):
        for cid in await store.redis.hkeys(key):
            if await store.revoke_credential(rp_id, cid.decode(), RevokeReason.RP_REMOVED.value):
                revoked += 1
    now = now_ms()
    async for key in store.redis.scan_iter(match=keys.rp_user_keys("pend", rp_id), count=1000):
        for ch in await store.redis.zrange(key, 0, -1):
            record = await store.get_challenge(ch.decode())
            if (
                record is not None
                and record.rp == rp_id
                and await store.cancel_challenge(record, now, Status.WITHDRAWN) == "ok"
            ):
                ended += 1
    # Its users' push fatigue state (counts, rate window, mutes) serves no one any more:
    # left, it would stay in Redis for good (these keys have no expiry).
    for kind in ("guard", "recent"):
        async for key in store.redis.scan_iter(match=keys.rp_user_keys(kind, rp_id), count=1000):
            await store.redis.delete(key)
    if not removed and not revoked and not ended:
        return None
    return Removal(revoked, ended)
