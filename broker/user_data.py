"""What the broker holds about one user of one RP: `GET /v1/users/{user}/data` reads it
all (the right of access, GDPR art. 15), `DELETE /v1/users/{user}` erases it all (the
right to erasure, art. 17); docs/operations.md, "Personal data".

The user's keys are found from the user's own records, never by walking the keyspace,
so both cost what the user holds, whatever else Redis holds (10 million devices or
one), on a single Redis, Sentinel and a Redis Cluster alike (broker/keys.py):

- the per-user keys, named by RP and user: active credentials (uc), unconfirmed ones
  (ucn), pending challenges (pend), fatigue state (guard, recent);
- the user's index (own): every enrollment, token, challenge and Idempotency-Key, and
  each credential once revoked, written in the same atomic step as the key itself
  (lua.index_keys), so a key exists only once its index entry does; layout 3's
  migration indexed what older releases wrote (broker/layout.py);
- through those, the credentials' recovery notices (rns names the rn hashes).

The index is per RP and user, so a user that shares the 40-bit tag (another user, of
this RP or another) is never touched: RP isolation holds.

Before the keys go, what is live ends as the RP's own calls would end it: pending
enrollments are withdrawn (a device's link is refused, a long-poll answers expired),
active credentials are revoked (an online device is told at once, removed_by_rp),
pending challenges end withdrawn (devices drop the prompt, a long-poll answers).
Then one script (lua.ERASE_USER) deletes every key of the user in one step (one slot:
atomic on a Redis Cluster too), reading the records again as it does: a key written
meanwhile is in them, so none is left behind. A setup or recovery that completed, or a
challenge or enrollment the RP made, after the first look is still live: the script
refuses, and the erasure ends it and tries again (a few times; then it deletes it all
the same, and a device of a credential so deleted hears unknown_credential when it
comes back). A device that comes back later is refused as unknown_credential, which
the agents treat as removed, like a revoked one.

Not in the slot, deleted after the script: the credentials' Web Push subscriptions and
presence, and the layout-1 index entries of old ids. An erasure interrupted (a node
stops, Redis fails over) is finished by calling again: every step is idempotent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from protocol.challenge import Status
from protocol.frames import RevokeReason

from . import keys, lua, notices
from .models import ChallengeRecord, Credential, Enrollment, Notice
from .store import Store, now_ms

_BY_ID = ("enr", "cred", "ch", "rn")  # the kinds of records with an id
# How often the erasure ends what was made live meanwhile before it deletes it anyway
# (an RP that keeps making sign-ins for the user while erasing it).
_ROUNDS = 4


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
    revoked = ended = 0
    found = _Found()
    for round_ in range(_ROUNDS):
        found = await _find(store, rp_id, user)
        now_revoked, now_ended = await _end_live(store, rp_id, user, found)
        revoked, ended = revoked + now_revoked, ended + now_ended
        reply = await store.redis.eval(
            lua.ERASE_USER,
            6,
            *_user_keys(rp_id, user),
            now_ms(),
            _prefix(rp_id, user),
            "1" if round_ == _ROUNDS - 1 else "0",
        )
        if reply[0] != b"live":
            break
    _, deleted, *cids = reply
    return Erasure(
        revoked, ended, int(deleted) + await _delete_outside(store, found, [c.decode() for c in cids])
    )


@dataclass(slots=True)
class _Found:
    """The ids of the user's records, as the user's own records name them."""

    ids: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in _BY_ID})
    pending_enrollments: int = 0


def _prefix(rp_id: str, user: str) -> str:
    return f"pa:{{{keys.user_tag(rp_id, user)}}}:"


def _user_keys(rp_id: str, user: str) -> list[str]:
    """lua.ERASE_USER's KEYS."""
    return [
        keys.user_index(rp_id, user),
        keys.user_credentials(rp_id, user),
        keys.unconfirmed(rp_id, user),
        keys.pending(rp_id, user),
        keys.push_guard(rp_id, user),
        keys.recent_pushes(rp_id, user),
    ]


async def _find(store: Store, rp_id: str, user: str) -> _Found:
    """Reads the user's index, active credentials and pending challenges, then the
    recovery notices of those credentials: a handful of commands, however big Redis is."""
    prefix = _prefix(rp_id, user)
    async with store.redis.pipeline(transaction=False) as p:
        p.zrange(keys.user_index(rp_id, user), 0, -1)
        p.hkeys(keys.user_credentials(rp_id, user))
        p.zrange(keys.pending(rp_id, user), 0, -1)
        indexed, active, pending = await p.execute()
    found = _Found()
    ids = found.ids
    for raw in indexed:
        kind, _, id_ = raw.decode()[len(prefix) :].partition(":")
        if kind in ids:
            ids[kind].append(id_)
    ids["cred"] = list(dict.fromkeys([c.decode() for c in active] + ids["cred"]))
    ids["ch"] = list(dict.fromkeys(ids["ch"] + [c.decode() for c in pending]))
    if ids["cred"]:
        async with store.redis.pipeline(transaction=False) as p:
            for cid in ids["cred"]:
                p.zrange(f"{prefix}rns:{cid}", 0, -1)
            ids["rn"] = [n.decode() for lst in await p.execute() for n in lst]
    if ids["enr"]:
        async with store.redis.pipeline(transaction=False) as p:
            for eid in ids["enr"]:
                p.hget(f"{prefix}enr:{eid}", "status")
            found.pending_enrollments = sum(s == b"pending" for s in await p.execute())
    return found


async def _end_live(store: Store, rp_id: str, user: str, found: _Found) -> tuple[int, int]:
    """End what is live before its keys go, so that no device or long-poll is left
    waiting on keys that vanish under it: (credentials revoked, challenges ended)."""
    if found.pending_enrollments:
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
        if (
            record is None
            or record.rp != rp_id
            or record.user != user
            or record.status_at(now) is not Status.PENDING
        ):
            continue
        if await store.cancel_challenge(record, now, Status.WITHDRAWN) == "ok":
            ended += 1
    return revoked, ended


async def _delete_outside(store: Store, found: _Found, cids: list[str]) -> int:
    """What is not in the user's slot: the credentials' Web Push keys, and the
    layout-1 index entries of old ids (broker/layout.py)."""
    cids = list(dict.fromkeys(cids + found.ids["cred"]))
    outside = [keys.push_subscription(cid) for cid in cids] + [keys.push_presence(cid) for cid in cids]
    ids = [*cids, *(i for kind in ("enr", "ch", "rn") for i in found.ids[kind])]
    outside += [keys.legacy_index(i) for i in ids if not keys.carries_tag(i)]
    deleted = 0
    for key in outside:  # one slot each: no multi-key command on a cluster
        deleted += int(await store.redis.delete(key))
    return deleted
