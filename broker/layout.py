"""The store's key layout: its version, and the move from layout 1 to layout 2.

Layout 2 (broker/keys.py) puts each user's keys in one Redis Cluster hash slot and
publishes events on per-user shard channels. A broker of this release runs `ensure`
before it serves (and before any `rp` / `policy` command): it checks that the server
has sharded pub/sub (Redis 7.0 or later), and on a store of layout 1 it renames every
key to its layout-2 name once (docs/operations.md, "Key layout and migration"):

- each layout-1 id (credentials are durable, and devices keep their cid; challenges,
  enrollments, tokens and recovery notices that are still alive) gets an entry
  pa:lid:{id} -> its user's tag, with the lifetime of what it names, so the id keeps
  working (Store.resolve_tags reads it, for ids without a tag only);
- then every key is renamed (RENAME keeps its TTL).

Idempotent and restartable: layout-1 names never begin with "pa:{", an interrupted
run leaves the remaining layout-1 keys for the next one, and pa:layout is set only at
the end. One node migrates (a lock key); the others wait for it. Layout 1 is moved on
the Redis it lives on, a single server or Sentinel's master (RENAME across slots is
no Cluster command): migrate first, then move the data to a cluster.

Layout 3 adds each user's index (keys.user_index): the keys of the user that no other
record names, which erasure and export read instead of walking the keyspace
(broker/user_data.py). Every write of this release indexes its key in the same step;
the move from layout 2 indexes what older releases wrote, by one SCAN (on a Redis
Cluster, of every master): enrollments, tokens, challenges, Idempotency-Keys and
revoked credentials (active ones are named by the user's credential hash). Adding to
an index twice changes nothing, so an interrupted run is simply run again. It needs
no older node writing meanwhile (its keys would not be indexed): the layout number
makes older brokers refuse the store at start (docs/operations.md, "Upgrading").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisClusterException, ResponseError

from . import keys, lua
from .clock import now_ms

log = logging.getLogger(__name__)

MIN_REDIS = (7, 0)
LOCK = "pa:layout:lock"
LOCK_MS = 120_000
_BATCH = 500

# Layout-1 prefixes of the keys that name an object with an id, its kind, and whether
# the object's own hash holds rp and user.
_OBJECTS = {"pa:cred:": "cred", "pa:ch:": "ch", "pa:enr:": "enr", "pa:rn:": "rn"}
_USER_KINDS = ("uc", "ucn", "guard", "recent", "pend")


class LayoutError(Exception):
    """The store cannot be used by this release (a message for the operator)."""


@dataclass
class Migration:
    renamed: int = 0
    indexed: int = 0  # layout-1 ids recorded in pa:lid
    by_kind: dict[str, int] = field(default_factory=dict)
    user_keys: int = 0  # keys added to their users' indexes (layout 3)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


async def check_server(redis: Redis) -> None:
    info = await redis.info("server")
    version = str(info.get("redis_version", "0"))
    if _version(version) < MIN_REDIS:
        raise LayoutError(
            f"pushauth needs Redis 7.0 or later (sharded pub/sub: SPUBLISH/SSUBSCRIBE route each "
            f"event to the nodes that serve its user); this server is Redis {version}"
        )
    await _check_channels(redis)
    policy = str((await redis.info("memory")).get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        # Not refused: it works until Redis is full. Then a cache's policy drops what
        # the broker cannot lose, where noeviction refuses writes (the broker: 503).
        log.warning(
            "Redis evicts keys when it is full (maxmemory-policy %s): it would drop pending "
            "challenges and enrollment links (allkeys-*: credentials and API keys too) without a "
            "word; set maxmemory-policy noeviction",
            policy,
        )


# No user's channel: a tag is 8 base32 characters (keys.user_tag).
PROBE_CHANNEL = keys.channel("probe")


async def _check_channels(redis: Redis) -> None:
    """Refuse a Redis user that may touch the keys but not the event channels.

    Redis 7 gives an ACL user made without `&pattern` no channel at all
    (acl-pubsub-default resetchannels): such a node would start and answer /healthz,
    then answer 503 to every challenge and enrollment (their scripts SPUBLISH) and
    never hold a subscription. One publish to a channel nobody listens on tells.
    """
    try:
        await redis.execute_command("SPUBLISH", PROBE_CHANNEL, b"")
    except NoPermissionError as exc:
        raise LayoutError(
            f"the Redis user may not publish to the broker's event channels ({exc}): give it "
            "the channels as well as the keys, e.g. ACL SETUSER USER ~pa:* &pa:* +@all"
        ) from None


async def ensure(redis: Redis, *, wait_s: float = 60.0) -> Migration | None:
    """Make sure the store has this release's layout; the Migration if this call moved it."""
    await check_server(redis)
    marker = await redis.get(keys.LAYOUT)
    if marker == keys.LAYOUT_VERSION.encode():
        return None
    if marker not in (None, b"2"):  # layout 1 had no marker: a newer broker's store, or not ours
        raise LayoutError(
            f"the store has key layout {marker.decode(errors='replace')!r} ({keys.LAYOUT}), which this "
            f"broker (layout {keys.LAYOUT_VERSION}) does not know: a newer broker's store? "
            "Nothing was changed"
        )
    if not await redis.set(LOCK, str(time.time()), nx=True, px=LOCK_MS):
        deadline = time.monotonic() + wait_s
        while await redis.get(keys.LAYOUT) != keys.LAYOUT_VERSION.encode():
            if time.monotonic() > deadline:
                raise LayoutError(
                    f"another broker has been moving the store to key layout {keys.LAYOUT_VERSION} "
                    f"for {wait_s:.0f}s (lock {LOCK}); if none is, delete that key and start again"
                )
            await asyncio.sleep(0.2)  # a node start, not a test: polls a key another writes
        return None
    try:
        result = await migrate(redis) if marker is None else Migration()
        await redis.set(keys.LAYOUT, "2")  # the renames are done: a rerun only indexes
        result.user_keys = await index_users(redis)
        await redis.set(keys.LAYOUT, keys.LAYOUT_VERSION)
    finally:
        await redis.delete(LOCK)
    if result.user_keys:
        log.warning(
            "moved the store to key layout %s: %d keys indexed by user", keys.LAYOUT_VERSION, result.user_keys
        )
    if result.renamed:
        log.warning(
            "moved the store to key layout %s: %d keys renamed, %d old ids indexed (%s)",
            keys.LAYOUT_VERSION,
            result.renamed,
            result.indexed,
            ", ".join(f"{k} {n}" for k, n in sorted(result.by_kind.items())),
        )
    return result


async def _scan(redis: Redis, match: str) -> list[str]:
    return sorted({k.decode() async for k in redis.scan_iter(match=match, count=1000)})


def _user_key(key: str, kind: str) -> tuple[str, str] | None:
    """(rp, user) of a layout-1 per-user key "pa:{kind}:{rp}:{len}:{user}"."""
    rest = key[len(f"pa:{kind}:") :]
    rp_id, _, rest = rest.partition(":")
    length, _, user = rest.partition(":")
    if not length.isdigit() or len(user) != int(length):
        return None
    return rp_id, user


async def migrate(redis: Redis) -> Migration:
    result = Migration()
    tags: dict[str, str] = {}  # layout-1 id -> tag

    # 1. The tag of every object with an id, recorded under pa:lid with its lifetime.
    for prefix in _OBJECTS:
        names = await _scan(redis, prefix + "*")
        for i in range(0, len(names), _BATCH):
            batch = names[i : i + _BATCH]
            async with redis.pipeline(transaction=False) as p:
                for name in batch:
                    p.hmget(name, "rp", "user")
                    p.pttl(name)
                replies = await p.execute()
            async with redis.pipeline(transaction=False) as p:
                for j, name in enumerate(batch):
                    (rp_id, user), ttl = replies[2 * j], replies[2 * j + 1]
                    if rp_id is None or user is None:
                        continue
                    id_ = name[len(prefix) :]
                    tag = keys.user_tag(rp_id.decode(), user.decode())
                    tags[id_] = tag
                    p.set(keys.legacy_index(id_), tag, px=ttl if ttl > 0 else None)
                    result.indexed += 1
                await p.execute()

    async def tag_of(id_: str) -> str | None:
        if id_ not in tags:  # indexed by an earlier, interrupted run
            found = await redis.get(keys.legacy_index(id_))
            if found is None:
                return None
            tags[id_] = found.decode()
        return tags[id_]

    # 2. Tokens: their enrollment's tag, recorded under the token's hash.
    for name in await _scan(redis, "pa:tok:*"):
        token_hash = name[len("pa:tok:") :]
        eid, ttl = await redis.get(name), await redis.pttl(name)
        tag = await tag_of(eid.decode()) if eid is not None else None
        if tag is not None:
            await redis.set(
                keys.legacy_index(keys.legacy_token_id(token_hash)), tag, px=ttl if ttl > 0 else None
            )
            result.indexed += 1
            await _rename(redis, name, keys.token(tag, token_hash), "tok", result)

    # 3. Every key to its layout-2 name.
    for prefix, kind in _OBJECTS.items():
        for name in await _scan(redis, prefix + "*"):
            id_ = name[len(prefix) :]
            tag = await tag_of(id_)
            if tag is not None:
                new = {
                    "cred": keys.credential,
                    "ch": keys.challenge,
                    "enr": keys.enrollment,
                    "rn": keys.recovery_notice,
                }[kind]
                keys.remember_legacy(id_, tag)
                await _rename(redis, name, new(id_), kind, result)
    for kind in _USER_KINDS:
        for name in await _scan(redis, f"pa:{kind}:*"):
            owner = _user_key(name, kind)
            if owner is not None:
                await _rename(redis, name, keys.user_key(kind, *owner), kind, result)
    for name in await _scan(redis, "pa:rns:*"):
        old_cid = name[len("pa:rns:") :]
        tag = await tag_of(old_cid)
        if tag is not None:
            keys.remember_legacy(old_cid, tag)
            await _rename(redis, name, keys.recovery_notices(old_cid), "rns", result)
    simple: list[tuple[str, Callable[[str], str]]] = [
        ("pa:rp:", keys.rp),
        ("pa:rpkey:", keys.rp_key),
        ("pa:rpp:", keys.rp_policy),
        ("pa:blob:", keys.backup_blob),
        ("pa:blobq:", _quota_key),
    ]
    for prefix, new_name in simple:
        for name in await _scan(redis, prefix + "*"):
            await _rename(redis, name, new_name(name[len(prefix) :]), prefix[3:-1], result)
    for old, new in (
        ("pa:rps", keys.RPS),
        ("pa:blobs", keys.BACKUP_INDEX),
        ("pa:blobsz", keys.BACKUP_SIZES),
        ("pa:blobbytes", keys.BACKUP_BYTES),
    ):
        await _rename(redis, old, new, old[3:], result)
    return result


_INDEXED = ("enr", "tok", "ch", "idem", "cred")  # the kinds a user's index names


async def index_users(redis: Redis) -> int:
    """Layout 2 -> 3: add every key an index names to its user's index (keys.user_index),
    with its expiry as score; the number added. Keeps the migration's lock while it runs."""
    added = 0
    batch: list[str] = []

    async def flush() -> int:
        await redis.pexpire(LOCK, LOCK_MS)  # still at it
        owners = await _owners(redis, batch)
        at = now_ms()
        async with redis.pipeline(transaction=False) as p:
            for key, (rp_id, user, ttl) in owners.items():
                # A key without expiry (none should be) is kept for the longest a
                # record is, and then dropped from the index, not the index kept for good.
                untl = at + (ttl if ttl > 0 else 180 * 24 * 3600 * 1000)
                p.eval(lua.INDEX_KEYS, 1, keys.user_index(rp_id, user), at, untl, key)
            await p.execute()
        batch.clear()
        return len(owners)

    async for raw in redis.scan_iter(match="pa:{*", count=1000):
        key = raw.decode()
        if key.split(":", 3)[2:3] and key.split(":", 3)[2] in _INDEXED:
            batch.append(key)
            if len(batch) >= _BATCH:
                added += await flush()
    if batch:
        added += await flush()
    return added


async def _owners(redis: Redis, names: list[str]) -> dict[str, tuple[str, str, int]]:
    """key -> (rp, user, ms it lives) for the keys of `names` that an index names: an
    active credential is not one (the user's credential hash names it)."""
    async with redis.pipeline(transaction=False) as p:
        for name in names:
            kind = name.split(":", 3)[2]
            if kind in ("enr", "ch", "cred"):
                p.hmget(name, "rp", "user", "status")
            else:
                p.get(name)  # a token: its enrollment id; an Idempotency-Key: unused
            p.pttl(name)
        replies = await p.execute()
    owners: dict[str, tuple[str, str, int]] = {}
    tokens: list[tuple[str, str, int]] = []
    for j, name in enumerate(names):
        value, ttl = replies[2 * j], replies[2 * j + 1]
        _, tag, kind, rest = name.split(":", 3)
        if ttl == -2:
            continue  # expired meanwhile
        if kind in ("enr", "ch", "cred"):
            rp_id, user, status = value
            if rp_id is None or user is None or (kind == "cred" and status == b"active"):
                continue
            owners[name] = (rp_id.decode(), user.decode(), ttl)
        elif kind == "tok" and value is not None:
            tokens.append((name, f"pa:{tag}:enr:{value.decode()}", ttl))
        elif kind == "idem" and (owner := _idempotency_owner(rest)) is not None:
            owners[name] = (*owner, ttl)
    if tokens:
        async with redis.pipeline(transaction=False) as p:
            for _, enrollment, _ in tokens:
                p.hmget(enrollment, "rp", "user")
            for (name, _, ttl), (rp_id, user) in zip(tokens, await p.execute(), strict=True):
                if rp_id is not None and user is not None:
                    owners[name] = (rp_id.decode(), user.decode(), ttl)
    return owners


def _idempotency_owner(rest: str) -> tuple[str, str] | None:
    """(rp, user) of an Idempotency-Key's key, from its "{rp}:{len}:{user}:{key}"."""
    rp_id, _, rest = rest.partition(":")
    length, _, rest = rest.partition(":")
    if not length.isdigit() or rest[int(length) : int(length) + 1] != ":":
        return None
    return rp_id, rest[: int(length)]


def _quota_key(rest: str) -> str:
    address, _, day = rest.rpartition(":")
    return keys.backup_quota(address, int(day)) if day.isdigit() else f"pa:{{blob}}:blobq:{rest}"


async def _rename(redis: Redis, old: str, new: str, kind: str, result: Migration) -> None:
    if not await redis.exists(old):
        return  # none (a new store), expired meanwhile, or moved by an earlier run
    try:
        await redis.rename(old, new)
    except (ResponseError, RedisClusterException) as exc:  # the latter: redis-py's RedisCluster
        if "no such key" in str(exc).lower():
            return
        if "slot" in str(exc).lower():
            raise LayoutError(
                "this store has keys of layout 1 and is a Redis Cluster, where keys cannot be "
                "renamed across slots: run this release once on the single Redis the data came "
                "from (it moves the keys at start), then move the data to the cluster"
            ) from None
        raise
    result.renamed += 1
    result.by_kind[kind] = result.by_kind.get(kind, 0) + 1
