"""Recovery notices: "was this you?" to the old device after a recovery (DESIGN flow 5).

When a new device registers credential NEW with the recovery key of credential OLD
(broker/recovery.py), the broker keeps a notice for OLD in Redis and tells OLD's
device: at once if it is connected (on any node: the NoticeCreated event goes over
pub/sub), else on its next `authenticate`. The device answers with a signed
`recovery_answer`: "confirm" drops the notice; "disown" revokes NEW, mutes push for
the user exactly as a fraud report does, and drops the notice, in one atomic step.

A notice ends when it is answered, or when OLD or NEW is revoked (then it is
withdrawn: dropped the next time it is read, and a connected old device is told
at once by the hub). Unanswered, it lives NOTICE_TTL_MS.

The atomic steps are Lua scripts in broker/lua.py (CREATE_NOTICE, ANSWER_NOTICE,
PRUNE_NOTICES).
"""

from __future__ import annotations

from redis.asyncio.client import Pipeline

from protocol.challenge import Status
from protocol.frames import NoticeDecision, NoticeOutcome, RevokeReason

from . import events, keys, lua
from .models import Credential, Notice
from .store import REVOKED_RETENTION_MS, Store

# 30 days: long enough for an old phone that sits switched off in a drawer or on a
# holiday to still be asked when it comes back (an attacker who restored a stolen
# backup hopes the question is never seen), yet bounded, so the notices of an old
# device that never reconnects (lost, wiped) do not stay in Redis for ever. After
# that the RP's device list still shows the new device with `recovered_from`.
NOTICE_TTL_MS = 30 * 24 * 3600 * 1000


def queue_create(pipe: Pipeline, store: Store, notice: Notice) -> None:
    """Add the notice's creation to `pipe` (a MULTI that first registers NEW, so the
    recovery and its notice are made together or not at all)."""
    event = events.encode(store.node, events.NoticeCreated(notice))
    pipe.eval(
        lua.CREATE_NOTICE,
        4,
        keys.credential(notice.new_cid),
        keys.recovery_notice(notice.id),
        keys.recovery_notices(notice.old_cid),
        keys.credential(notice.old_cid),
        notice.id,
        notice.old_cid,
        notice.created,
        NOTICE_TTL_MS,
        keys.user_channel(notice.rp, notice.user),
        event,
        *notice.to_fields(),
    )


async def announce(store: Store, *evts: events.Event) -> None:
    """Act on this node's own events at once (other nodes get them over pub/sub)."""
    if store.on_event is not None:
        for event in evts:
            await store.on_event(event)


async def get(store: Store, notice_id: str) -> Notice | None:
    await store.resolve_tags([notice_id])
    h = await store.redis.hgetall(keys.recovery_notice(notice_id))
    return Notice.from_hash(notice_id, h) if h else None


async def open_notices(store: Store, creds: list[Credential], now: int) -> list[Notice]:
    """The open notices of these (authenticated, active) credentials, oldest first.

    Only credentials flagged `has_notices` cost a Redis round trip, so authenticating
    a device without notices reads nothing more than before. Notices whose new
    credential was revoked meanwhile, or that expired, are dropped here.
    """
    flagged = [c for c in creds if c.has_notices]
    if not flagged:
        return []
    oldest = now - NOTICE_TTL_MS
    async with store.redis.pipeline(transaction=False) as p:
        for cred in flagged:
            p.zrangebyscore(keys.recovery_notices(cred.id), oldest, "+inf")
        id_lists = await p.execute()
    ids = {cred.id: [i.decode() for i in lst] for cred, lst in zip(flagged, id_lists, strict=True)}
    await store.resolve_tags([nid for lst in ids.values() for nid in lst])
    async with store.redis.pipeline(transaction=False) as p:
        for nid in (nid for lst in ids.values() for nid in lst):
            p.hgetall(keys.recovery_notice(nid))
        hashes = iter(await p.execute())
    found = {cid: [(nid, next(hashes)) for nid in lst] for cid, lst in ids.items()}
    notices = [Notice.from_hash(nid, h) for lst in found.values() for nid, h in lst if h]
    new_creds = await store.get_credentials(sorted({n.new_cid for n in notices}))
    live = [n for n in notices if (c := new_creds.get(n.new_cid)) is not None and c.active]
    live_ids = {n.id for n in live}
    for cid, lst in found.items():
        stale = [nid for nid, _ in lst if nid not in live_ids]
        if stale or not lst:
            await store.redis.eval(
                lua.PRUNE_NOTICES,
                2 + len(stale),
                keys.recovery_notices(cid),
                keys.credential(cid),
                *(keys.recovery_notice(nid) for nid in stale),
                *stale,
                oldest,
            )
    return sorted(live, key=lambda n: (n.created, n.id))


async def answer(store: Store, notice: Notice, decision: NoticeDecision, now: int) -> str:
    """Record the old device's answer atomically; returns lua.ANSWER_NOTICE's result."""
    outcome = NoticeOutcome.DISOWNED if decision is NoticeDecision.DISOWN else NoticeOutcome.CONFIRMED
    answered = events.NoticeAnswered(notice.id, notice.old_cid, outcome.value)
    revoked = events.CredentialRevoked(notice.new_cid, notice.rp, notice.user, RevokeReason.DISOWNED.value)
    reply = await store.redis.eval(
        lua.ANSWER_NOTICE,
        8,
        keys.recovery_notice(notice.id),
        keys.recovery_notices(notice.old_cid),
        keys.credential(notice.old_cid),
        keys.credential(notice.new_cid),
        keys.user_credentials(notice.rp, notice.user),
        keys.push_guard(notice.rp, notice.user),
        keys.pending(notice.rp, notice.user),
        keys.user_index(notice.rp, notice.user),
        notice.id,
        notice.old_cid,
        notice.new_cid,
        decision.value,
        now,
        (await store.policies.get(notice.rp)).muted_until(now),
        keys.user_channel(notice.rp, notice.user),
        events.encode(store.node, answered),
        events.encode(store.node, revoked),
        store.node,
        notice.rp,
        notice.user,
        keys.challenge_prefix(keys.user_tag(notice.rp, notice.user)),
        REVOKED_RETENTION_MS,
    )
    # {'ok', ids withdrawn by a disown...} or a refusal string
    result, *withdrawn = reply if isinstance(reply, list) else [reply]
    result = result.decode() if isinstance(result, bytes) else str(result)
    if result == "ok":
        await announce(store, answered, *([revoked] if decision is NoticeDecision.DISOWN else []))
        if decision is NoticeDecision.DISOWN:
            await store.forget_push_subscription(notice.new_cid)
        if withdrawn:
            ids = tuple(i.decode() for i in withdrawn)
            await announce(store, events.ChallengesEnded(notice.rp, notice.user, Status.WITHDRAWN, ids))
    return result
