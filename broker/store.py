"""The broker's state in Redis: every read and write of it goes through here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from protocol.challenge import Status
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import RevokeReason

from . import credential_cap, enrollment_quota, events, keys, lua
from .bounds import RP_CACHE_S
from .clock import now_ms  # the broker clock, Redis's (its users import it from here)
from .cluster_pipe import ClusterPipe
from .fatigue import refusal
from .models import TARGET_SEP, Answer, ChallengeRecord, Credential, Enrollment, RelyingParty
from .policy import PolicyCache
from .redis_pipe import RedisPipe

log = logging.getLogger(__name__)

ENROLLMENT_TTL_MS = 10 * 60 * 1000  # DESIGN: enrollment tokens live 10 minutes
RETENTION_MS = 15 * 60 * 1000  # results stay readable this long after expiry
# A revoked credential is kept this long, then expires: long enough that a device that
# comes back, or a backup restored (a backup on the broker lives 180 days after its last
# write), learns "credential_revoked"; later it is "unknown_credential", which the
# agents treat the same. Its name, user id and keys are personal data that no one needs
# for good (docs/operations.md, "Personal data").
REVOKED_RETENTION_MS = 180 * 24 * 3600 * 1000


def new_id(prefix: str, nbytes: int = 16) -> str:
    """A random id with a type prefix ("ch_...", "cr_..."): people can tell ids
    apart, and an id never starts with "-" (a command line would read an option)."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class UnknownTarget(Exception):
    """A challenge aimed at credentials that are not active ones of its user: `cids`."""

    def __init__(self, cids: tuple[str, ...]) -> None:
        super().__init__(", ".join(cids))
        self.cids = cids


CREATED_BEFORE = -6  # CREATE_CHALLENGE's answer when its Idempotency-Key made one already


@dataclass(frozen=True, slots=True)
class NewChallenge:
    devices: int  # credentials it was sent to (0: none, and nothing was stored)
    unconfirmed: int  # when 0: the user's credentials still waiting for the RP's confirm
    superseded: tuple[str, ...]  # the user's older pending challenges it ended
    made_before: str | None = None  # the challenge its Idempotency-Key made (nothing new)


@dataclass(frozen=True, slots=True)
class NewEnrollment:
    enrollment: Enrollment
    token: str


class _Queued:
    """What Store.atomic's `fill` adds, as commands for ClusterPipe.transaction."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> None:
        self.commands.append(("EVAL", script, numkeys, *keys_and_args))


class Store:
    def __init__(
        self,
        redis: Redis,
        node: str,
        *,
        enrollment_ttl_ms: int = ENROLLMENT_TTL_MS,
    ) -> None:
        self.redis = redis
        self.node = node
        self.enrollment_ttl_ms = enrollment_ttl_ms
        # Each RP's policy (broker/policy.py): read from Redis, cached briefly.
        self.policies = PolicyCache(self.stored_policy)
        # Events this node publishes are acted on here at once (other nodes get
        # them over pub/sub): set by the app to Hub.dispatch.
        self.on_event: Callable[[events.Event], Awaitable[None]] | None = None
        self._rp_cache: dict[str, tuple[float, RelyingParty | None]] = {}
        self._rp_lookups: dict[str, asyncio.Future[RelyingParty | None]] = {}
        # The hot path (challenges, answers, device authentication) goes over one
        # auto-pipelined connection where the server allows it (redis_pipe.py), on a
        # Redis Cluster one per master (cluster_pipe.py).
        self._pipe: RedisPipe | ClusterPipe | None = ClusterPipe.for_client(redis) or RedisPipe.for_client(
            redis
        )
        self.clustered = isinstance(self._pipe, ClusterPipe)
        # On a cluster a creation is durable (on a replica before anyone hears of it),
        # and is not resent after a lost connection: it may have run (cluster_pipe.py).
        self._create = self._script(lua.CREATE_CHALLENGE, idempotent=False, durable=True)
        self._answer = self._script(lua.RECORD_ANSWER)
        self._expire = self._script(lua.EXPIRE_CHALLENGE)
        self._end = self._script(lua.END_CHALLENGE)
        # Credentials: on a cluster over the pipe as well, durable. A second run finds
        # the token used, the credential revoked or confirmed, and changes nothing.
        admin = self._script if self.clustered else (lambda source, **_: redis.register_script(source))
        self._enroll = admin(lua.COMPLETE_ENROLLMENT, durable=True)
        self._revoke = admin(lua.REVOKE_CREDENTIAL, durable=True)
        self._confirm = admin(lua.CONFIRM_CREDENTIAL, durable=True)
        self._cancel_enrollment = admin(lua.CANCEL_ENROLLMENT, durable=True)
        self._lift = redis.register_script(lua.LIFT_PUSH_BLOCK)
        # Taking a place twice (resent after a lost connection) only errs high, for the
        # enrollment's 10 minutes at most (broker/enrollment_quota.py).
        self._reserve_enrollment = self._script(lua.RESERVE_ENROLLMENT)

    def _script(
        self, source: str, *, idempotent: bool = True, durable: bool = False
    ) -> Callable[..., Awaitable[Any]]:
        """`await run(keys=[...], args=[...])`, on the pipe or else on redis-py.
        `idempotent` and `durable` matter on a Redis Cluster only (ClusterPipe.script)."""
        pipe = self._pipe
        if pipe is None:
            return self.redis.register_script(source)
        if isinstance(pipe, ClusterPipe):
            sha = pipe.script(source, idempotent=idempotent, durable=durable)
        else:
            sha = pipe.script(source)

        async def run(*, keys: list[Any], args: list[Any], on_reply: Any = None) -> Any:
            if on_reply is not None and isinstance(pipe, ClusterPipe):
                return await pipe.evalsha(sha, keys, args, on_reply=on_reply)
            reply = await pipe.evalsha(sha, keys, args)
            if on_reply is not None:
                await on_reply(reply)
            return reply

        return run

    async def _many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Read-only commands in one round trip (replies as bytes, lists and ints)."""
        if self._pipe is not None:
            return await self._pipe.execute_many(commands)
        async with self.redis.pipeline(transaction=False) as p:
            for command in commands:
                p.execute_command(*command)
            return list(await p.execute())

    async def _hgetall_many(self, keys_: list[str]) -> list[dict[bytes, bytes]]:
        replies = await self._many([("HGETALL", k) for k in keys_])
        # redis-py's pipeline already pairs them up; the pipe gives the flat list.
        return [r if isinstance(r, dict) else dict(zip(r[::2], r[1::2], strict=True)) for r in replies]

    async def atomic(self, fill: Callable[[Any], object], *, durable: bool = False) -> list[Any]:
        """A MULTI/EXEC of the commands `fill` adds to the pipeline-like object it gets
        (`execute_command(*args)`, `eval(script, numkeys, *keys_and_args)`; keys of one
        slot); their replies. On a cluster `durable` puts it on a replica before this
        returns (cluster_pipe.py); elsewhere it changes nothing."""
        if isinstance(self._pipe, ClusterPipe):
            queued = _Queued()
            fill(queued)
            return await self._pipe.transaction(queued.commands, durable=durable)
        async with self.redis.pipeline(transaction=True) as p:
            fill(p)
            return list(await p.execute())

    @property
    def pipe(self) -> RedisPipe | ClusterPipe | None:
        return self._pipe

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()

    async def resolve_tags(self, ids: Iterable[str]) -> None:
        """Make keys.tag_of know the tags of these ids: computed for the ids that carry
        one (every id minted since layout 2), read from the migration's index for the
        ones that do not (layout 1: broker/layout.py), once per process."""
        todo = sorted({i for i in ids if keys.tag_of(i) is None})
        if not todo:
            return
        tags = await self._many([("GET", keys.legacy_index(i)) for i in todo])
        for id_, tag in zip(todo, tags, strict=True):
            if tag is not None:
                keys.remember_legacy(id_, tag.decode())

    def _event(self, event: events.Event) -> bytes:
        return events.encode(self.node, event)

    async def _published(self, event: events.Event) -> None:
        if self.on_event is not None:
            await self.on_event(event)

    # -- relying parties ---------------------------------------------------

    async def add_rp(self, name: str) -> tuple[RelyingParty, str]:
        rp = RelyingParty(id=new_id("rp", 9), name=name)
        api_key = "pak_" + secrets.token_urlsafe(32)
        key_hash = sha256_hex(api_key)  # the key has 256 bits of entropy: a fast hash suffices
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(keys.rp(rp.id), mapping={"name": name, "key_hash": key_hash, "created": now_ms()})
            p.set(keys.rp_key(key_hash), rp.id)
            p.sadd(keys.RPS, rp.id)
            await p.execute()
        return rp, api_key

    async def rotate_rp_key(self, rp_id: str, keep_old_s: int) -> str | None:
        """A new API key for the RP (None: no such RP). The key it replaces ends at once
        (every node stops taking it within RP_CACHE_S), or after `keep_old_s` so that the
        RP can switch without a refused request. One earlier key at most: a key kept from
        a rotation before ends now."""
        current, earlier = await self.redis.hmget(keys.rp(rp_id), ["key_hash", "old_key_hash"])
        if current is None:
            return None
        api_key = "pak_" + secrets.token_urlsafe(32)
        key_hash = sha256_hex(api_key)
        old = keys.rp_key(current.decode())
        async with self.redis.pipeline(transaction=True) as p:
            if earlier is not None:
                p.delete(keys.rp_key(earlier.decode()))
            p.set(keys.rp_key(key_hash), rp_id)
            p.hset(keys.rp(rp_id), "key_hash", key_hash)
            if keep_old_s:
                p.pexpire(old, keep_old_s * 1000)
                p.hset(keys.rp(rp_id), "old_key_hash", current)
            else:
                p.delete(old)
                p.hdel(keys.rp(rp_id), "old_key_hash")
            await p.execute()
        return api_key

    async def list_rps(self) -> list[RelyingParty]:
        ids = sorted(i.decode() for i in await self.redis.smembers(keys.RPS))
        async with self.redis.pipeline(transaction=False) as p:
            for i in ids:
                p.hget(keys.rp(i), "name")
            names = await p.execute()
        return [RelyingParty(i, (n or b"").decode()) for i, n in zip(ids, names, strict=True)]

    async def kept_keys(self, rp_ids: list[str]) -> dict[str, int]:
        """RP id -> milliseconds its previous API key still works, for the RPs that have
        one kept by `rp rotate-key --keep-old` (an expired one leaves its hash field
        behind: what counts is whether its key entry is still there)."""
        async with self.redis.pipeline(transaction=False) as p:
            for i in rp_ids:
                p.hget(keys.rp(i), "old_key_hash")
            hashes = await p.execute()
        kept = [(i, h.decode()) for i, h in zip(rp_ids, hashes, strict=True) if h is not None]
        if not kept:
            return {}
        async with self.redis.pipeline(transaction=False) as p:
            for _, h in kept:
                p.pttl(keys.rp_key(h))
            ttls = await p.execute()
        return {i: int(t) for (i, _), t in zip(kept, ttls, strict=True) if int(t) > 0}

    async def end_kept_key(self, rp_id: str) -> bool:
        """End now the previous key `rotate_rp_key` kept; False if none was working."""
        earlier = await self.redis.hget(keys.rp(rp_id), "old_key_hash")
        if earlier is None:
            return False
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.rp_key(earlier.decode()))
            p.hdel(keys.rp(rp_id), "old_key_hash")
            deleted, _ = await p.execute()
        return bool(deleted)

    async def get_rp(self, rp_id: str) -> RelyingParty | None:
        name = await self.redis.hget(keys.rp(rp_id), "name")
        return RelyingParty(rp_id, name.decode()) if name is not None else None

    async def remove_rp(self, rp_id: str) -> bool:
        key_hash, earlier = await self.redis.hmget(keys.rp(rp_id), ["key_hash", "old_key_hash"])
        if key_hash is None:
            return False
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.rp(rp_id), keys.rp_key(key_hash.decode()), keys.rp_policy(rp_id))
            if earlier is not None:  # kept for a while by `rp rotate-key --keep-old`
                p.delete(keys.rp_key(earlier.decode()))
            p.srem(keys.RPS, rp_id)
            await p.execute()
        # Its enrollment quota: in a slot of its own, so apart (no enrollment of it can
        # be made or completed any more).
        await self.redis.delete(keys.rp_pending_enrollments(rp_id), keys.rp_enrollment_bucket(rp_id))
        return True

    async def stored_policy(self, rp_id: str) -> dict[bytes, bytes]:
        """The settings of the RP's policy the operator set (policy.from_hash)."""
        (h,) = await self._hgetall_many([keys.rp_policy(rp_id)])
        return h

    async def set_policy(self, rp_id: str, settings: dict[str, str | int]) -> None:
        """Replace the settings the operator set (validated by the caller)."""
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(keys.rp_policy(rp_id))
            if settings:
                p.hset(keys.rp_policy(rp_id), mapping=settings)
            await p.execute()
        self.policies.forget(rp_id)

    async def rp_for_key(self, api_key: str) -> RelyingParty | None:
        key_hash = sha256_hex(api_key)
        hit = self._rp_cache.get(key_hash)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        # One lookup per key at a time: when the cached entry of a busy RP expires,
        # its concurrent requests wait for the same answer instead of all asking Redis.
        pending = self._rp_lookups.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[RelyingParty | None] = asyncio.get_running_loop().create_future()
        self._rp_lookups[key_hash] = fut
        try:
            rp_id = (await self._many([("GET", keys.rp_key(key_hash))]))[0]
            name = (await self._many([("HGET", keys.rp(rp_id.decode()), "name")]))[0] if rp_id else None
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else RedisConnectionError("lookup cancelled"))
            fut.exception()  # retrieved, whether or not anyone else was waiting
            raise
        finally:
            del self._rp_lookups[key_hash]
        rp = RelyingParty(rp_id.decode(), name.decode()) if rp_id is not None and name is not None else None
        if len(self._rp_cache) > 10_000:  # bounded: garbage keys must not grow memory
            self._rp_cache.clear()
        self._rp_cache[key_hash] = (now + RP_CACHE_S, rp)
        fut.set_result(rp)
        return rp

    # -- enrollments -------------------------------------------------------

    async def create_enrollment(
        self, rp: RelyingParty, user: str, account: str, recoverable: bool
    ) -> NewEnrollment:
        """A new pending enrollment, within the RP's enrollment quota: EnrollmentRefused
        (nothing stored) over it (broker/enrollment_quota.py)."""
        tag = keys.user_tag(rp.id, user)
        eid, token = keys.mint("en", tag), keys.mint_token(tag)
        now = now_ms()
        expires = now + self.enrollment_ttl_ms
        policy = await self.policies.get(rp.id)
        # Told now, before a QR code is shown; the device's `enroll` counts again,
        # atomically, since other enrollments of the user may complete meanwhile.
        if await self.redis.hlen(keys.user_credentials(rp.id, user)) >= policy.max_credentials:
            raise credential_cap.TooManyCredentials(policy.max_credentials)
        kind, wait_ms = await self._reserve_enrollment(
            keys=[keys.rp_pending_enrollments(rp.id), keys.rp_enrollment_bucket(rp.id)],
            args=[eid, expires, now, policy.max_pending_enrollments, policy.enrollments_per_minute],
        )
        if kind < 0:
            raise enrollment_quota.refusal(kind, wait_ms, policy)
        enrollment = Enrollment(eid, rp.id, user, account, recoverable, "pending", expires, None)
        fields = {
            "rp": rp.id,
            "user": user,
            "account": account,
            "recoverable": "1" if recoverable else "0",
            "status": "pending",
            "expires": expires,
        }

        token_key = keys.token(tag, sha256_hex(token))

        def fill(p: Any) -> None:
            p.execute_command("HSET", keys.enrollment(eid), *(x for kv in fields.items() for x in kv))
            p.execute_command("PEXPIREAT", keys.enrollment(eid), expires + RETENTION_MS)
            p.execute_command("SET", token_key, eid, "PXAT", expires)
            # Both in the user's index in the same step: an erasure finds them there.
            index = keys.user_index(rp.id, user)
            p.eval(lua.INDEX_KEYS, 1, index, now, expires + RETENTION_MS, keys.enrollment(eid), token_key)

        try:
            await self.atomic(fill, durable=True)
        except Exception:
            # Most likely not made: its place goes back. (A reply lost after the write
            # leaves the count one low until this enrollment expires; a request that
            # went away, cancelled, keeps its place until then: one high.)
            await self.free_enrollment_place(rp.id, eid)
            raise
        return NewEnrollment(enrollment, token)

    async def free_enrollment_place(self, rp_id: str, eid: str) -> None:
        """The enrollment is no longer pending (completed, withdrawn, never written): it
        leaves the RP's count. Best effort: a place not given back (Redis unreachable
        just now) frees itself at the enrollment's expiry."""
        try:
            await self._many([("ZREM", keys.rp_pending_enrollments(rp_id), eid)])
        except (RedisError, OSError) as exc:
            log.info("enrollment %s keeps its place in the quota until it expires: %s", eid, exc)

    async def get_enrollment(self, rp_id: str, eid: str) -> Enrollment | None:
        await self.resolve_tags([eid])
        h = await self.redis.hgetall(keys.enrollment(eid))
        if not h:
            return None
        enrollment = Enrollment.from_hash(eid, h)
        return enrollment if enrollment.rp == rp_id else None  # another RP's: not found

    async def cancel_enrollment(self, rp_id: str, eid: str) -> bool:
        """The RP withdraws a pending enrollment: its token is refused from now on.
        True also when it had ended before (idempotent); False for an unknown id or
        another RP's."""
        await self.resolve_tags([eid])
        channel = keys.id_channel(eid)
        if channel is None:
            return False  # not an id this broker made
        event = events.EnrollmentCancelled(eid, rp_id)
        result = await self._cancel_enrollment(
            keys=[keys.enrollment(eid)], args=[rp_id, now_ms(), channel, self._event(event)]
        )
        if result == b"cancelled":
            await self._published(event)  # other nodes get it from the channel
            await self.free_enrollment_place(rp_id, eid)
        return result in (b"cancelled", b"ok")

    async def complete_enrollment(
        self,
        token: str,
        public_key: bytes,
        device_name: str,
        recovery_pk: bytes | None = None,
        binding: bytes | None = None,
    ) -> Credential:
        """Create the credential for a valid token; the token is used up atomically.

        `binding` (for the RP to check; the broker cannot) and, for a recoverable
        enrollment, `recovery_pk` are kept with the credential. A retry with the same
        key after the token was used (its `enrolled` was lost) gets the credential that
        use made, while the enrollment has not expired; any other use is bad_token."""
        token_hash = sha256_hex(token)
        tag = keys.token_tag(token, token_hash)
        if tag is None:  # a token of layout 1 (made before the migration)?
            legacy = keys.legacy_token_id(token_hash)
            await self.resolve_tags([legacy])
            tag = keys.tag_of(legacy) or keys.NO_TAG
        token_key = keys.token(tag, token_hash)
        eid = await self.redis.get(token_key)
        if eid is not None and not keys.carries_tag(eid.decode()):
            # A layout-1 enrollment id has no tag: remembered for the process's life,
            # so only those (a tagged id names its own, and remembering every
            # enrollment would grow the node's memory with each one made).
            keys.remember_legacy(eid.decode(), tag)
        h = await self.redis.hgetall(keys.enrollment(eid.decode())) if eid is not None else {}
        if not h:
            raise ProtocolError(ErrorCode.BAD_TOKEN, "enrollment token is unknown, used or expired")
        enrollment = Enrollment.from_hash(eid.decode(), h)
        now = now_ms()
        if enrollment.status != "pending":
            return await self._enrolled_before(enrollment.id, h, public_key, now)
        cred = Credential(
            id=keys.mint("cr", keys.user_tag(enrollment.rp, enrollment.user)),
            rp=enrollment.rp,
            user=enrollment.user,
            account=enrollment.account,
            name=device_name,
            public_key=public_key,
            created=now,
            last_used=None,
            status="active",
            binding=binding,
            recovery_pk=recovery_pk if enrollment.recoverable else None,
            confirmed=False,
        )
        fields = [
            "rp", cred.rp, "user", cred.user, "account", cred.account, "name", cred.name,
            "pk", cred.public_key, "created", now, "status", "active", "enrollment", enrollment.id,
            "recoverable", "1" if enrollment.recoverable else "0", "unconfirmed", "1",
        ]  # fmt: skip
        if binding is not None:
            fields += ["binding", binding]
        if recovery_pk is not None and enrollment.recoverable:
            fields += ["recovery_pk", recovery_pk]
        event = events.EnrollmentCompleted(enrollment.id, enrollment.rp, cred.id)
        refusal = events.EnrollmentRefused(enrollment.id, enrollment.rp)
        policy = await self.policies.get(cred.rp)
        result = await self._enroll(
            keys=[
                token_key,
                keys.enrollment(enrollment.id),
                keys.credential(cred.id),
                keys.user_credentials(cred.rp, cred.user),
                keys.unconfirmed(cred.rp, cred.user),
            ],
            args=[
                enrollment.id, now, cred.id, cred.account, keys.user_channel(cred.rp, cred.user),
                self._event(event), policy.max_credentials, self._event(refusal), *fields,
            ],
        )  # fmt: skip
        if result == b"too_many_credentials":
            await self._published(refusal)  # the RP's long-poll here hears it at once
            raise credential_cap.TooManyCredentials(policy.max_credentials)
        if result != b"ok":  # used meanwhile: by a concurrent retry of this same key?
            h = await self.redis.hgetall(keys.enrollment(enrollment.id))
            return await self._enrolled_before(enrollment.id, h, public_key, now)
        # The RP's hash is in another slot than the script's keys, so its existence is
        # asked here, after: an RP removed before this read has its credentials revoked
        # here; one removed after it finds this credential in its SCAN (rp_removal.py).
        if not await self.redis.exists(keys.rp(cred.rp)):
            await self.revoke_credential(cred.rp, cred.id, RevokeReason.RP_REMOVED.value)
            raise ProtocolError(ErrorCode.BAD_TOKEN, "enrollment token is unknown, used or expired")
        await self._published(event)  # first: the RP's long-poll here is woken at once
        await self.free_enrollment_place(cred.rp, enrollment.id)
        return cred

    async def _enrolled_before(
        self, eid: str, h: dict[bytes, bytes], public_key: bytes, now: int
    ) -> Credential:
        """The credential an earlier use of this enrollment's token made for the same
        key, if the enrollment has not expired and the credential is active (the name,
        recovery key and binding it was made with stand); else bad_token."""
        done = Enrollment.from_hash(eid, h) if h else None
        if (
            done is not None
            and done.status == "completed"
            and done.credential_id is not None
            and now < done.expires
            and h.get(b"pk") == public_key
        ):
            cred = await self.get_credential(done.credential_id)
            if cred is not None and cred.active:
                return cred
        raise ProtocolError(ErrorCode.BAD_TOKEN, "enrollment token is unknown, used or expired")

    # -- credentials -------------------------------------------------------

    async def get_credentials(self, cids: list[str]) -> dict[str, Credential]:
        await self.resolve_tags(cids)
        hashes = await self._hgetall_many([keys.credential(cid) for cid in cids])
        return {cid: Credential.from_hash(cid, h) for cid, h in zip(cids, hashes, strict=True) if h}

    async def get_credential(self, cid: str) -> Credential | None:
        return (await self.get_credentials([cid])).get(cid)

    async def user_credentials(self, rp_id: str, user: str) -> list[Credential]:
        cids = [c.decode() for c in await self.redis.hkeys(keys.user_credentials(rp_id, user))]
        creds = await self.get_credentials(cids)
        return sorted((c for c in creds.values() if c.active), key=lambda c: (c.created, c.id))

    async def revoke_credential(self, rp_id: str, cid: str, reason: str) -> bool:
        cred = await self.get_credential(cid)
        if cred is None or cred.rp != rp_id:
            return False
        event = events.CredentialRevoked(cid, cred.rp, cred.user, reason)
        done = await self._revoke(
            keys=[
                keys.credential(cid),
                keys.user_credentials(cred.rp, cred.user),
                keys.unconfirmed(cred.rp, cred.user),
                keys.user_index(cred.rp, cred.user),
            ],
            args=[
                rp_id,
                cid,
                now_ms(),
                keys.user_channel(cred.rp, cred.user),
                self._event(event),
                REVOKED_RETENTION_MS,
            ],
        )
        if done:
            await self._published(event)
            await self.forget_push_subscription(cid)
        return bool(done)

    async def forget_push_subscription(self, cid: str) -> None:
        """A revoked credential is woken no more: its Web Push subscription (an endpoint
        URL at a push service, personal data) goes with it instead of staying for good.
        Not in the revoking script: the key is in another cluster slot."""
        await self.redis.delete(keys.push_subscription(cid))

    async def confirm_credential(self, rp_id: str, cid: str) -> str:
        """The RP confirms a newly enrolled credential (after its test push): from now
        on it gets the user's ordinary sign-in requests. 'ok' (now or before),
        'unknown' (none, or another RP's) or 'revoked'."""
        cred = await self.get_credential(cid)
        if cred is None or cred.rp != rp_id:
            return "unknown"
        event = events.CredentialConfirmed(cid)
        result = await self._confirm(
            keys=[keys.credential(cid), keys.unconfirmed(cred.rp, cred.user)],
            args=[rp_id, cid, keys.user_channel(cred.rp, cred.user), self._event(event)],
        )
        result = result.decode()
        if result == "ok" and not cred.confirmed:
            await self._published(event)
        return result

    # -- challenges --------------------------------------------------------

    async def create_challenge(
        self, record: ChallengeRecord, *, supersede: bool = True, idempotency_key: str | None = None
    ) -> NewChallenge:
        """Store and announce a challenge, to `record.targets` or else to the user's
        confirmed credentials; with `supersede`, the user's older pending challenges at
        this RP end (superseded) in the same step. Raises PushRefused when the fatigue
        policy holds it back (nothing stored; a block withdraws the pending ones), and
        UnknownTarget naming the targets that are not active credentials of the user
        (nothing stored). With an
        `idempotency_key` that made a challenge of this user already (and it has not
        expired), nothing is done: `made_before` names that challenge."""
        event = events.ChallengeCreated(record)
        policy = await self.policies.get(record.rp)
        tag = keys.user_tag(record.rp, record.user)

        async def announce(reply: list[Any]) -> None:
            # This node's devices hear of it as soon as it is stored: on a Redis Cluster
            # while the WAIT for a replica is under way (the RP hears of it only after).
            count, _value, *ended = reply
            if int(count) > 0:
                await self._ended(record.rp, record.user, Status.SUPERSEDED, tuple(i.decode() for i in ended))
                await self._published(event)

        extra = {"on_reply": announce} if self._pipe is not None else {}  # not on redis-py's Script
        count, value, *ended = await self._create(
            keys=[
                keys.user_credentials(record.rp, record.user),
                keys.challenge(record.id),
                keys.pending(record.rp, record.user),
                keys.push_guard(record.rp, record.user),
                keys.recent_pushes(record.rp, record.user),
                keys.unconfirmed(record.rp, record.user),
                keys.user_index(record.rp, record.user),
                *([keys.create_key(record.rp, record.user, idempotency_key)] if idempotency_key else []),
            ],
            args=[
                record.id, record.created, record.expires, RETENTION_MS, keys.channel(tag),
                self._event(event),
                policy.max_pushes, policy.max_pushes_per_minute, policy.window_s * 1000,
                TARGET_SEP.join(record.targets), "1" if supersede else "0", self.node, record.rp, record.user,
                keys.challenge_prefix(tag), policy.failure_limit or 0, *record.to_fields(),
            ],
            **extra,
        )  # fmt: skip
        count = int(count)
        if count == CREATED_BEFORE:
            made, _, devices = value.decode().partition(" ")
            return NewChallenge(int(devices), 0, (), made_before=made)
        ids = tuple(i.decode() for i in ended)
        if count == -4:
            raise UnknownTarget(ids)
        if count < 0:
            await self._ended(record.rp, record.user, Status.WITHDRAWN, ids)
            raise refusal(count, int(value), policy, record.created)
        if not extra:  # redis-py's script: announced here
            await announce([count, value, *ended])
        return NewChallenge(count, int(value) if count == 0 else 0, ids)

    async def _ended(self, rp_id: str, user: str, status: Status, ids: tuple[str, ...]) -> None:
        """Act here on the ChallengesEnded event a script published (if it ended any)."""
        if ids:
            await self._published(events.ChallengesEnded(rp_id, user, status, ids))

    async def cancel_challenge(
        self, record: ChallengeRecord, now: int, status: Status = Status.CANCELLED
    ) -> str:
        """The RP ends a pending challenge (`status`: withdrawn when the RP is being
        removed): 'ok'; else 'unknown', 'expired' or its final status (it ended already)."""
        result = await self._end(
            keys=[keys.challenge(record.id), keys.pending(record.rp, record.user)],
            args=[
                record.id, now, record.rp, status.value, keys.user_channel(record.rp, record.user),
                self.node, record.user,
            ],
        )  # fmt: skip
        result = result.decode()
        if result == "ok":
            await self._ended(record.rp, record.user, status, (record.id,))
        return result

    async def push_guard(self, rp_id: str, user: str) -> tuple[int, int | None, int]:
        """(pushes since the last successful sign-in, muted until ms or None; -1: no end,
        consecutive wrong numbers)."""
        since, muted, failures = await self.redis.hmget(
            keys.push_guard(rp_id, user), ["since", "muted_until", "failures"]
        )
        until = int(muted) if muted is not None else 0
        active = until < 0 or until > now_ms()
        return int(since or 0), (until if active else None), int(failures or 0)

    async def lift_push_block(self, rp_id: str, user: str) -> None:
        """The RP lifts a fraud mute, the count since the last sign-in and a lock after
        too many consecutive wrong numbers (a count below the limit stays)."""
        policy = await self.policies.get(rp_id)
        await self._lift(
            keys=[keys.push_guard(rp_id, user), keys.recent_pushes(rp_id, user)],
            args=[policy.failure_limit or 0],
        )

    async def get_challenge(self, ch: str) -> ChallengeRecord | None:
        await self.resolve_tags([ch])
        (h,) = await self._hgetall_many([keys.challenge(ch)])
        return ChallengeRecord.from_hash(ch, h) if h else None

    async def record_answer(self, record: ChallengeRecord, answer: Answer, status: Status, now: int) -> str:
        """Atomically make `answer` the challenge's answer if it is the first valid one
        ('ok'; else why not: see lua.RECORD_ANSWER). A fraud report withdraws the
        user's other pending challenges at this RP in the same step: their devices are
        told (here, before this returns) and they can no longer be answered."""
        event = events.ChallengeEnded(record.id, record.rp, record.user, status, answer)
        policy = await self.policies.get(record.rp)
        tag = keys.user_tag(record.rp, record.user)
        result, *withdrawn = await self._answer(
            keys=[
                keys.challenge(record.id),
                keys.pending(record.rp, record.user),
                keys.credential(answer.cid),
                keys.push_guard(record.rp, record.user),
                keys.recent_pushes(record.rp, record.user),
            ],
            args=[
                record.id, now, status.value, answer.cid, answer.decision, answer.number,
                answer.ts, answer.ctx_hash, answer.sig, keys.channel(tag), self._event(event),
                policy.muted_until(now), self.node, record.rp, record.user, keys.challenge_prefix(tag),
                policy.failure_limit or 0,
            ],
        )  # fmt: skip
        if result == b"ok":
            await self._published(event)
            await self._ended(record.rp, record.user, Status.WITHDRAWN, tuple(i.decode() for i in withdrawn))
        return result.decode()

    async def expire_challenge(self, record: ChallengeRecord, now: int) -> bool:
        event = events.ChallengeEnded(record.id, record.rp, record.user, Status.EXPIRED, None)
        done = await self._expire(
            keys=[keys.challenge(record.id), keys.pending(record.rp, record.user)],
            args=[record.id, now, keys.user_channel(record.rp, record.user), self._event(event)],
        )
        if done:
            await self._published(event)
        return bool(done)

    async def pending_challenges(self, users: set[tuple[str, str]], now: int) -> list[ChallengeRecord]:
        """The challenges still answerable for these (rp, user) pairs, oldest first
        (whom each goes to is the connection's business: Credential.receives)."""
        user_list = sorted(users)
        id_lists = await self._many(
            [("ZRANGEBYSCORE", keys.pending(rp_id, user), now + 1, "+inf") for rp_id, user in user_list]
        )
        # A user's pending challenges are in the user's slot, whatever their ids look
        # like (a layout-1 id was moved there by the migration).
        ids = [
            (i.decode(), keys.challenge_prefix(keys.user_tag(rp_id, user)) + i.decode())
            for (rp_id, user), lst in zip(user_list, id_lists, strict=True)
            for i in lst
        ]
        if not ids:
            return []
        hashes = await self._hgetall_many([key for _, key in ids])
        records = [ChallengeRecord.from_hash(ch, h) for (ch, _), h in zip(ids, hashes, strict=True) if h]
        return sorted(
            (r for r in records if r.status_at(now) is Status.PENDING), key=lambda r: (r.created, r.id)
        )
