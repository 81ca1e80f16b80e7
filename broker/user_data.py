"""What the broker holds about one user of one RP: `GET /v1/users/{user}/data` reads it
all (the right of access, GDPR art. 15), `DELETE /v1/users/{user}` erases it all (the
right to erasure, art. 17); docs/operations.md, "Personal data".

The user's keys all carry the user's hash tag {T} (broker/keys.py), so they are found
by one SCAN for `pa:{T}:*` and deleted in one MULTI (one slot: atomic on a Redis
Cluster too). A tag is 40 bits of a hash, so another user (of this RP or another)
may share it: a key is erased only when it names this RP and user, in its name (the
per-user keys) or in its hash (enrollments, credentials, challenges, notices), or
belongs to one of those (tokens, notice indexes). RP isolation holds: nothing of
another RP is read out or touched.

Before the keys go, what is live ends as the RP's own calls would end it: pending
enrollments are withdrawn (a device's link is refused, a long-poll answers expired),
active credentials are revoked (an online device is told at once, removed_by_rp),
pending challenges end withdrawn (devices drop the prompt, a long-poll answers).
A device that comes back later is refused as unknown_credential, which the agents
treat as removed, like a revoked one.

Not in the slot, deleted after the MULTI: the credentials' Web Push subscriptions and
presence, and the layout-1 index entries of old ids. An erasure interrupted (a node
stops, Redis fails over) is finished by calling again: every step is idempotent.

On one Redis the SCAN walks the whole keyspace (a Redis has no index by tag), twice
when the user has devices or a pending setup (see _erase): fine for a rare request, so
one erasure runs at a time per process. A Redis Cluster keeps the user's keys in one
slot: its master is asked for that slot's keys only (CLUSTER GETKEYSINSLOT), so there
the cost does not grow with the keyspace (at 10 million devices, a SCAN of every
primary would read some 50 million names for each erasure).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import RedisCluster

from protocol.challenge import Status
from protocol.frames import RevokeReason

from . import keys, notices
from .models import ChallengeRecord, Credential, Enrollment, Notice
from .store import Store, now_ms

_ONE_AT_A_TIME = asyncio.Lock()
_BY_ID = ("enr", "cred", "ch", "rn")  # hashes with rp and user fields


@dataclass(frozen=True, slots=True)
class Erasure:
    revoked: int  # active credentials revoked
    ended: int  # pending challenges ended (withdrawn)
    deleted: int  # Redis keys deleted


@dataclass(frozen=True, slots=True)
class UserData:
    """Everything found, as the broker's records (the API shapes them)."""

    credentials: list[Credential]  # active and revoked (revoked ones expire, store.py)
    enrollments: list[Enrollment]
    challenges: list[ChallengeRecord]
    notices: list[Notice]
    push_endpoints: dict[str, str]  # credential id -> its Web Push endpoint URL


async def export_user(store: Store, rp_id: str, user: str) -> UserData:
    async with _ONE_AT_A_TIME:
        found = await _find(store, rp_id, user)
    ids = found.ids
    creds = await store.get_credentials(ids["cred"])
    enrollments = [e for e in [await store.get_enrollment(rp_id, i) for i in ids["enr"]] if e is not None]
    challenges = [c for c in [await store.get_challenge(i) for i in ids["ch"]] if c is not None]
    found_notices = [n for n in [await notices.get(store, i) for i in ids["rn"]] if n is not None]
    endpoints: dict[str, str] = {}
    for cid in creds:
        raw = await store.redis.get(keys.push_subscription(cid))
        if raw is not None:
            endpoints[cid] = str(json.loads(raw).get("endpoint", ""))
    mine = [c for c in creds.values() if c.rp == rp_id and c.user == user]
    return UserData(
        sorted(mine, key=lambda c: (c.created, c.id)),
        sorted((e for e in enrollments if e.user == user), key=lambda e: (e.expires, e.id)),
        sorted((c for c in challenges if c.rp == rp_id and c.user == user), key=lambda c: (c.created, c.id)),
        sorted(
            (n for n in found_notices if n.rp == rp_id and n.user == user), key=lambda n: (n.created, n.id)
        ),
        endpoints,
    )


async def erase_user(store: Store, rp_id: str, user: str) -> Erasure:
    async with _ONE_AT_A_TIME:
        return await _erase(store, rp_id, user)


@dataclass(slots=True)
class _Found:
    """One SCAN's view of the user's keys."""

    owned: list[str] = field(default_factory=list)  # keys to delete, all in the user's slot
    ids: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in _BY_ID})
    pending_enrollments: int = 0


async def _erase(store: Store, rp_id: str, user: str) -> Erasure:
    revoked = ended = 0
    # A setup or a recovery that completes between the SCAN and the revocations adds a
    # credential the SCAN did not see: when the first pass met something that could do
    # that (a pending enrollment, an active credential), a second one finds it.
    for _ in range(2):
        found = await _find(store, rp_id, user)
        now_revoked, now_ended = await _end_live(store, rp_id, user, found)
        revoked, ended = revoked + now_revoked, ended + now_ended
        if not now_revoked and not found.pending_enrollments:
            break
    return Erasure(revoked, ended, await _delete(store, found))


async def _keys_with(store: Store, prefix: str) -> AsyncIterator[bytes | str]:
    """Every key whose name starts with `prefix` (`pa:{T}:`: all in one slot)."""
    client = store.redis
    if not isinstance(client, RedisCluster):
        async for raw in client.scan_iter(match=f"{prefix}*", count=1000):
            yield raw
        return
    slot = client.keyslot(prefix)
    count = await client.cluster_countkeysinslot(slot)
    # A few more than counted: keys added meanwhile (what is missed, the second pass of
    # _erase or the RP's next call finds).
    for raw in await client.cluster_get_keys_in_slot(slot, count + 100) if count else []:
        key = raw.decode() if isinstance(raw, bytes) else raw
        if key.startswith(prefix):
            yield raw


async def _find(store: Store, rp_id: str, user: str) -> _Found:
    prefix = f"pa:{{{keys.user_tag(rp_id, user)}}}:"
    own_keys = {keys.user_key(kind, rp_id, user) for kind in ("uc", "pend", "guard", "recent", "ucn")}
    idem_prefix = f"{keys.user_key('idem', rp_id, user)}:"
    found = _Found()
    tokens: list[tuple[str, bytes | None]] = []
    notice_indexes: list[tuple[str, str]] = []
    async for raw in _keys_with(store, prefix):
        key = raw.decode() if isinstance(raw, bytes) else raw
        kind, _, rest = key[len(prefix) :].partition(":")
        if kind in _BY_ID:
            rp, owner, status = await store.redis.hmget(key, ["rp", "user", "status"])
            if rp == rp_id.encode() and owner == user.encode():
                found.owned.append(key)
                found.ids[kind].append(rest)
                found.pending_enrollments += kind == "enr" and status == b"pending"
        elif kind == "tok":
            tokens.append((key, await store.redis.get(key)))
        elif kind == "rns":
            notice_indexes.append((key, rest))
        elif key in own_keys or key.startswith(idem_prefix):
            found.owned.append(key)
    enrollments = set(found.ids["enr"])
    found.owned += [k for k, eid in tokens if eid is not None and eid.decode() in enrollments]
    found.owned += [k for k, cid in notice_indexes if cid in found.ids["cred"]]
    return found


async def _end_live(store: Store, rp_id: str, user: str, found: _Found) -> tuple[int, int]:
    """End what is live before its keys go, so that no device or long-poll is left
    waiting on keys that vanish under it: (credentials revoked, challenges ended)."""
    for eid in found.ids["enr"]:
        await store.cancel_enrollment(rp_id, eid)
    revoked = 0
    for cid in found.ids["cred"]:
        if await store.revoke_credential(rp_id, cid, RevokeReason.BY_RP.value):
            revoked += 1
    ended = 0
    now = now_ms()
    for ch in found.ids["ch"]:
        record = await store.get_challenge(ch)
        if record is None or record.rp != rp_id or record.user != user:
            continue
        if await store.cancel_challenge(record, now, Status.WITHDRAWN) == "ok":
            ended += 1
    return revoked, ended


async def _delete(store: Store, found: _Found) -> int:
    deleted = 0
    if found.owned:
        owned = found.owned
        (deleted,) = await store.atomic(lambda p: p.execute_command("DEL", *owned), durable=True)
    cids = found.ids["cred"]
    outside = [keys.push_subscription(cid) for cid in cids] + [keys.push_presence(cid) for cid in cids]
    outside += [keys.legacy_index(i) for kind in _BY_ID for i in found.ids[kind] if not keys.carries_tag(i)]
    for key in outside:  # one slot each: no multi-key command on a cluster
        deleted += int(await store.redis.delete(key))
    return int(deleted)
