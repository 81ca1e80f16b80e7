"""Redis key names: the one place that knows the broker's state layout (version 3).

Layout 2 is built for Redis Cluster: every atomic step (a Lua script, a MULTI) touches
keys of ONE hash slot, and the shard channel a script publishes on is in that slot
too. The slot comes from the hash tag, the part of a key between braces:

- {T}, T = user_tag(rp, user): everything about one user at one RP. The ids the
  broker mints for that user's challenges, credentials, enrollments and recovery
  notices carry T (mint), so a key can be computed from the id alone (tag_of);
  enrollment tokens carry it too. Ids of layout 1 (before tags) have none: the
  migration (broker/layout.py) records their tag in pa:lid:{id}, which the store
  reads for such ids only (Store.resolve_tags).
- {rp}: the RPs and their API keys (few; one slot).
- {blob}: the encrypted backups and their quota index (one slot: the quota is global).
- {rq.RP}: one RP's enrollment quota (its own slot per RP: every enrollment the RP
  makes passes through it, so RPs do not share one hot slot).

    pa:{rp}:rp:{rp}            hash  RP: name, key_hash, created, old_key_hash (rotate-key)
    pa:{rp}:rpkey:{sha256(key)} str  API key hash -> RP id
    pa:{rp}:rps                set   RP ids
    pa:{rp}:rpp:{rp}           hash  the RP's policy: the settings the operator set
                                     (broker/policy.py; the others are the profile's)
    pa:{rq.RP}:enrp            zset  the RP's pending enrollment ids, score = expiry ms
                                     (broker/enrollment_quota.py; expires with the last)
    pa:{rq.RP}:enrb            hash  the RP's enrollment-rate bucket: tokens, at (ms)
                                     (TTL: a minute, the time it takes to fill)
    pa:{T}:enr:{id}            hash  enrollment: rp, user, account, recoverable, status,
                                     expires, cid and pk once completed, refused,
                                     refused_at, refused_max after a device was refused
                                     at the device cap (TTL: expiry + retention)
    pa:{T}:tok:{sha256(token)} str   enrollment token -> enrollment id (TTL: expiry; kept
                                     after completion, so a retried enroll finds it)
    pa:{T}:cred:{cid}          hash  credential: rp, user, account, name, pk, created,
                                     last_used, status (active|revoked); durable while
                                     active (TTL once revoked: store.REVOKED_RETENTION_MS)
    pa:{T}:uc:{rp}:{user}      hash  the user's active credentials: cid -> account label
    pa:{T}:ch:{id}             hash  challenge: rp, user, number, digits, nonce, ctx,
                                     ctx_hash, created, expires, status, answer fields
                                     (TTL: expiry + retention)
    pa:{T}:pend:{rp}:{user}    zset  the user's pending challenge ids, score = expiry ms
    pa:{T}:guard:{rp}:{user}   hash  fatigue guard: since (pushes since the last
                                     successful sign-in), muted_until (ms; -1: until
                                     the RP lifts it) after a fraud report, failures
                                     (consecutive wrong numbers, across challenges);
                                     no TTL, but an absent field reads as 0 and a
                                     successful sign-in removes the counts and a past
                                     mute, so it lasts only while it holds something
    pa:{T}:recent:{rp}:{user}  zset  push times in the rate window since the last
                                     successful sign-in
    pa:{T}:ucn:{rp}:{user}     set   the user's credentials the RP has not confirmed yet
                                     (enrolled, test push pending): they get only
                                     challenges aimed at them (credential hash field
                                     unconfirmed=1 too; challenge hash field target)
    pa:{T}:ev                  shard channel: the events about the users of tag T
                                     (docs/scaling.md, "Event routing")
    pa:{T}:own:{rp}:{user}     zset  the user's keys that no other record names: every
                                     enrollment, token, challenge and Idempotency-Key, and
                                     each credential once revoked (active ones are in uc,
                                     notices in rns); score = the key's expiry ms, pruned
                                     as those pass (TTL: the last one). Written in the same
                                     step as each key (broker/lua.py, index_keys): erasure
                                     and export read it instead of walking the keyspace
                                     (broker/user_data.py). Layout 3 (broker/layout.py
                                     built it for older data)
    pa:{T}:rn:{id}             hash  recovery notice ("was this you?"): old, new, name,
                                     rp, user, account, created (TTL: 30 days)
    pa:{T}:rns:{old cid}       zset  the open recovery notices of a credential, score =
                                     creation ms (TTL: 30 days after the newest)
    pa:{blob}:blob:{id}        str   an encrypted backup (ciphertext only; id: the base64url
                                     public key that signs its reads and writes), TTL 180 days
    pa:{blob}:blobs            zset  every backup id, score = its expiry ms (the quota's index)
    pa:{blob}:blobsz           hash  backup id -> its size in bytes
    pa:{blob}:blobbytes        str   the sum of those sizes
    pa:{blob}:blobq:{addr}:{day} str new backup ids made from a client address that UTC day
    pa:wp:sub:{cid}            str   the credential's Web Push subscription (JSON: endpoint URL,
                                     p256dh, auth; broker/webpush.py); deleted with the
                                     credential's revocation
    pa:wp:live:{cid}           hash  node -> ms: nodes holding a live connection of it (TTL 60 s)
    pa:seen:{sha256(sig)}      str   a signed device HTTP request already served (replay
                                     guard, TTL: the allowed clock skew, twice)
    pa:lid:{id}                str   the tag of a layout-1 id (credential, challenge,
                                     enrollment; "tok:" + token hash for a token)
    pa:layout                  str   "3": the layout version (broker/layout.py)
    credential hash, more fields: recovery_pk (the key that may register a new
                                     credential for it), recovered_from (old cid),
                                     notices ("1" while it may have open recovery
                                     notices: authenticate reads them only then)

RP ids and credential/challenge ids are URL-safe tokens minted by the broker; user
ids are the RP's own strings, so keys that embed one are length-prefixed to keep
"a:b" + "c" and "a" + "b:c" apart.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets

LAYOUT = "pa:layout"
LAYOUT_VERSION = "3"
HEALTH = "pa:health:{node}"  # /healthz writes it: a Redis that takes no writes is not healthy
RPS = "pa:{rp}:rps"
TAG_LEN = 8
# A tagged id: a two-letter kind, "_", the tag (lower-case base32), 22 random
# characters. Layout-1 ids ("ch_" + 22 random) are 25 characters long, these 33, so
# the two never look alike. protocol/fields.ID_RE allows both (up to 64).
_TAGGED_ID = re.compile(r"^[a-z]{2}_([a-z2-7]{8})[A-Za-z0-9_-]{22}$")
# A tagged enrollment token: the tag, then 43 random characters (layout 1: 43 only).
_TAGGED_TOKEN = re.compile(r"^([a-z2-7]{8})[A-Za-z0-9_-]{43}$")
# The tag of an id that has none and no recorded one (unknown, or made up): its keys
# exist nowhere, so a lookup finds nothing, as for any unknown id.
NO_TAG = "none"

# Tags of layout-1 ids, as read from pa:lid:{id} by Store.resolve_tags (an id's tag
# never changes, and only ids that exist are kept: the size is that of the old data).
_legacy: dict[str, str] = {}


@functools.lru_cache(maxsize=65536)
def user_tag(rp_id: str, user: str) -> str:
    """The hash tag of one user at one RP: 40 bits of SHA-256 over the length-prefixed
    pair, so users spread over every slot, and each user's keys share one."""
    digest = hashlib.sha256(f"{len(rp_id)}:{rp_id}{len(user)}:{user}".encode()).digest()
    return base64.b32encode(digest[:5]).decode().lower()


def mint(kind: str, tag: str) -> str:
    """A new id of `kind` ("ch", "cr", "en", "rn") for the user of `tag`: people can tell
    ids apart, an id never starts with "-" (a command line would read an option), and
    the id names its slot. Opaque to devices and RPs all the same."""
    return f"{kind}_{tag}{secrets.token_urlsafe(16)}"


def mint_token(tag: str) -> str:
    """A new enrollment token (256 random bits) that names the slot of its enrollment."""
    return tag + secrets.token_urlsafe(32)


def tag_of(id_: str) -> str | None:
    """The tag an id carries, or the recorded one of a layout-1 id (None: not resolved)."""
    m = _TAGGED_ID.match(id_)
    return m.group(1) if m is not None else _legacy.get(id_)


def carries_tag(id_: str) -> bool:
    return _TAGGED_ID.match(id_) is not None


def token_tag(token: str, token_hash: str) -> str | None:
    m = _TAGGED_TOKEN.match(token)
    return m.group(1) if m is not None else _legacy.get(legacy_token_id(token_hash))


def legacy_token_id(token_hash: str) -> str:
    return f"tok:{token_hash}"


def remember_legacy(id_: str, tag: str) -> None:
    _legacy[id_] = tag


def legacy_index(id_: str) -> str:
    """str: the tag of layout-1 id `id_` (written by the migration)."""
    return f"pa:lid:{id_}"


def _tagged(id_: str) -> str:
    return tag_of(id_) or NO_TAG


def channel(tag: str) -> str:
    """The shard channel of the events about the users of `tag`."""
    return f"pa:{{{tag}}}:ev"


def user_channel(rp_id: str, user: str) -> str:
    return channel(user_tag(rp_id, user))


def id_channel(id_: str) -> str | None:
    """The channel of the user an id (challenge, enrollment, credential) belongs to."""
    tag = tag_of(id_)
    return channel(tag) if tag is not None else None


def rp(rp_id: str) -> str:
    return f"pa:{{rp}}:rp:{rp_id}"


def rp_key(key_hash: str) -> str:
    return f"pa:{{rp}}:rpkey:{key_hash}"


def rp_policy(rp_id: str) -> str:
    return f"pa:{{rp}}:rpp:{rp_id}"


def rp_user_keys(kind: str, rp_id: str) -> str:
    """SCAN pattern of one RP's per-user keys of a kind ("uc", "pend", "guard", "recent"), for `rp remove`
    only (RP ids are URL-safe tokens: no glob characters; braces are no glob either)."""
    return f"pa:{{*}}:{kind}:{rp_id}:*"


def rp_pending_enrollments(rp_id: str) -> str:
    """zset: the RP's pending enrollment ids, score = expiry ms (its quota's count)."""
    return f"pa:{{rq.{rp_id}}}:enrp"


def rp_enrollment_bucket(rp_id: str) -> str:
    """hash: the RP's enrollment-rate token bucket (same slot as its pending zset)."""
    return f"pa:{{rq.{rp_id}}}:enrb"


def enrollment(enrollment_id: str) -> str:
    return f"pa:{{{_tagged(enrollment_id)}}}:enr:{enrollment_id}"


def token(tag: str, token_hash: str) -> str:
    return f"pa:{{{tag}}}:tok:{token_hash}"


def credential(cid: str) -> str:
    return f"pa:{{{_tagged(cid)}}}:cred:{cid}"


def user_key(kind: str, rp_id: str, user: str) -> str:
    return f"pa:{{{user_tag(rp_id, user)}}}:{kind}:{rp_id}:{len(user)}:{user}"


def user_index(rp_id: str, user: str) -> str:
    """zset: the user's keys that no other record names, score = their expiry ms."""
    return user_key("own", rp_id, user)


def user_credentials(rp_id: str, user: str) -> str:
    return user_key("uc", rp_id, user)


def challenge_prefix(tag: str) -> str:
    """What a challenge's key is made of with its id (the Lua scripts that end a user's
    pending challenges build the keys from the ids in the pending zset)."""
    return f"pa:{{{tag}}}:ch:"


def challenge(ch: str) -> str:
    return f"{challenge_prefix(_tagged(ch))}{ch}"


def unconfirmed(rp_id: str, user: str) -> str:
    """set: the user's enrolled credentials that the RP has not confirmed yet."""
    return user_key("ucn", rp_id, user)


def push_guard(rp_id: str, user: str) -> str:
    """hash: pushes since the user's last successful sign-in, fraud mute."""
    return user_key("guard", rp_id, user)


def recent_pushes(rp_id: str, user: str) -> str:
    """zset: push times within the rate window since the last successful sign-in."""
    return user_key("recent", rp_id, user)


def create_key(rp_id: str, user: str, idempotency_key: str) -> str:
    """The challenge a create with this Idempotency-Key made (docs/http-api.md)."""
    return f"{user_key('idem', rp_id, user)}:{idempotency_key}"


def pending(rp_id: str, user: str) -> str:
    return user_key("pend", rp_id, user)


def backup_blob(blob_id: str) -> str:
    return f"pa:{{blob}}:blob:{blob_id}"


BACKUP_INDEX = "pa:{blob}:blobs"
BACKUP_SIZES = "pa:{blob}:blobsz"
BACKUP_BYTES = "pa:{blob}:blobbytes"


def backup_quota(address: str, day: int) -> str:
    return f"pa:{{blob}}:blobq:{address}:{day}"


def push_subscription(cid: str) -> str:
    """str: the Web Push subscription of credential `cid` (no hash tag: a subscription
    names several credentials, of any users, and is written for each one)."""
    return f"pa:wp:sub:{cid}"


def push_presence(cid: str) -> str:
    """hash: node -> until (ms), the nodes that hold a live connection of `cid`."""
    return f"pa:wp:live:{cid}"


def seen_signature(sig_hash: str) -> str:
    return f"pa:seen:{sig_hash}"


def recovery_notice(notice_id: str) -> str:
    return f"pa:{{{_tagged(notice_id)}}}:rn:{notice_id}"


def recovery_notices(old_cid: str) -> str:
    """zset: the open recovery notices of credential `old_cid`."""
    return f"pa:{{{_tagged(old_cid)}}}:rns:{old_cid}"
