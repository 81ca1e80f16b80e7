"""Redis key names: the one place that knows the broker's state layout.

    pa:rp:{rp}                 hash  RP: name, key_hash, created
    pa:rpkey:{sha256(key)}     str   API key hash -> RP id
    pa:rps                     set   RP ids
    pa:rpp:{rp}                hash  the RP's policy: the settings the operator set
                                     (broker/policy.py; the others are the profile's)
    pa:enr:{id}                hash  enrollment: rp, user, account, recoverable, status,
                                     expires, cid and pk once completed (TTL: expiry +
                                     retention)
    pa:tok:{sha256(token)}     str   enrollment token -> enrollment id (TTL: expiry; kept
                                     after completion, so a retried enroll finds it)
    pa:cred:{cid}              hash  credential: rp, user, account, name, pk, created,
                                     last_used, status (active|revoked); durable
    pa:uc:{rp}:{user}          hash  the user's active credentials: cid -> account label
    pa:ch:{id}                 hash  challenge: rp, user, number, digits, nonce, ctx,
                                     ctx_hash, created, expires, status, answer fields
                                     (TTL: expiry + retention)
    pa:pend:{rp}:{user}        zset  the user's pending challenge ids, score = expiry ms
    pa:guard:{rp}:{user}       hash  fatigue guard: since (pushes since the last
                                     successful sign-in), muted_until (ms; -1: until
                                     the RP lifts it) after a fraud report, failures
                                     (consecutive wrong numbers, across challenges)
    pa:recent:{rp}:{user}      zset  push times in the rate window since the last
                                     successful sign-in
    pa:ucn:{rp}:{user}         set   the user's credentials the RP has not confirmed yet
                                     (enrolled, test push pending): they get only
                                     challenges aimed at them (credential hash field
                                     unconfirmed=1 too; challenge hash field target)
    pa:events                  pub/sub channel shared by every broker node
    pa:blob:{id}               str   an encrypted backup (ciphertext only; id: the base64url
                                     public key that signs its reads and writes), TTL 180 days
    pa:blobs                   zset  every backup id, score = its expiry ms (the quota's index)
    pa:blobsz                  hash  backup id -> its size in bytes
    pa:blobbytes               str   the sum of those sizes
    pa:blobq:{addr}:{day}      str   new backup ids made from a client address that UTC day
    pa:seen:{sha256(sig)}      str   a signed device HTTP request already served (replay
                                     guard, TTL: the allowed clock skew, twice)
    credential hash, more fields: recovery_pk (the key that may register a new
                                     credential for it), recovered_from (old cid),
                                     notices ("1" while it may have open recovery
                                     notices: authenticate reads them only then)
    pa:rn:{id}                 hash  recovery notice ("was this you?"): old, new, name,
                                     rp, user, account, created (TTL: 30 days)
    pa:rns:{old cid}           zset  the open recovery notices of a credential, score =
                                     creation ms (TTL: 30 days after the newest)

RP ids and credential/challenge ids are URL-safe tokens minted by the broker; user
ids are the RP's own strings, so keys that embed one are length-prefixed to keep
"a:b" + "c" and "a" + "b:c" apart.
"""

from __future__ import annotations

EVENTS = "pa:events"
RPS = "pa:rps"


def rp(rp_id: str) -> str:
    return f"pa:rp:{rp_id}"


def rp_key(key_hash: str) -> str:
    return f"pa:rpkey:{key_hash}"


def rp_policy(rp_id: str) -> str:
    return f"pa:rpp:{rp_id}"


def rp_user_keys(kind: str, rp_id: str) -> str:
    """SCAN pattern of one RP's per-user keys of a kind ("uc", "pend"), for `rp remove`
    only (RP ids are URL-safe tokens: no glob characters)."""
    return f"pa:{kind}:{rp_id}:*"


def enrollment(enrollment_id: str) -> str:
    return f"pa:enr:{enrollment_id}"


def token(token_hash: str) -> str:
    return f"pa:tok:{token_hash}"


def credential(cid: str) -> str:
    return f"pa:cred:{cid}"


def _user(rp_id: str, user: str) -> str:
    return f"{rp_id}:{len(user)}:{user}"


def user_credentials(rp_id: str, user: str) -> str:
    return f"pa:uc:{_user(rp_id, user)}"


CHALLENGE_PREFIX = "pa:ch:"


def challenge(ch: str) -> str:
    return f"{CHALLENGE_PREFIX}{ch}"


def unconfirmed(rp_id: str, user: str) -> str:
    """set: the user's enrolled credentials that the RP has not confirmed yet."""
    return f"pa:ucn:{_user(rp_id, user)}"


def push_guard(rp_id: str, user: str) -> str:
    """hash: pushes since the user's last successful sign-in, fraud mute."""
    return f"pa:guard:{_user(rp_id, user)}"


def recent_pushes(rp_id: str, user: str) -> str:
    """zset: push times within the rate window since the last successful sign-in."""
    return f"pa:recent:{_user(rp_id, user)}"


def pending(rp_id: str, user: str) -> str:
    return f"pa:pend:{_user(rp_id, user)}"


def backup_blob(blob_id: str) -> str:
    return f"pa:blob:{blob_id}"


BACKUP_INDEX = "pa:blobs"
BACKUP_SIZES = "pa:blobsz"
BACKUP_BYTES = "pa:blobbytes"


def backup_quota(address: str, day: int) -> str:
    return f"pa:blobq:{address}:{day}"


def seen_signature(sig_hash: str) -> str:
    return f"pa:seen:{sig_hash}"


def recovery_notice(notice_id: str) -> str:
    return f"pa:rn:{notice_id}"


def recovery_notices(old_cid: str) -> str:
    """zset: the open recovery notices of credential `old_cid`."""
    return f"pa:rns:{old_cid}"
