"""Canonical signing bytes, with domain separation, for everything a key signs.

Encoding (docs/protocol.md, "Signing bytes"): the items are concatenated, each as
a 4-byte big-endian length followed by its bytes. Strings are UTF-8; integers are
8-byte big-endian unsigned; the first item is the domain string, so a signature
made for one purpose never verifies for another. This is trivial to reproduce in
any language, unlike "canonical" msgpack or JSON.
"""

from __future__ import annotations

import hashlib
import struct

import nacl.exceptions
import nacl.signing

from .errors import ErrorCode, ProtocolError

# Each domain carries its own version: it changes when the items it signs change
# (protocol version 2 changed enroll, answer and recover, and added binding).
DOMAIN_AUTH = "pushauth/auth/v1"
DOMAIN_ENROLL = "pushauth/enroll/v2"
DOMAIN_BINDING = "pushauth/enroll-binding/v1"
DOMAIN_ANSWER = "pushauth/answer/v2"
DOMAIN_CONTEXT = "pushauth/context/v1"
DOMAIN_BACKUP = "pushauth/backup/v1"
DOMAIN_RECOVERY_KEY = "pushauth/recovery-key/v1"
DOMAIN_RECOVER = "pushauth/recover/v2"
DOMAIN_RECOVERY_ANSWER = "pushauth/recovery-answer/v1"

Item = bytes | str | int


def canonical(domain: str, *items: Item) -> bytes:
    out = bytearray()
    for item in (domain, *items):
        if isinstance(item, bool):  # a bool is an int in Python; never meant here
            raise TypeError("booleans are not signing items")
        if isinstance(item, int):
            raw = struct.pack(">Q", item)
        elif isinstance(item, str):
            raw = item.encode()
        else:
            raw = bytes(item)
        out += struct.pack(">I", len(raw))
        out += raw
    return bytes(out)


def auth_bytes(hello_nonce: bytes, cid: str) -> bytes:
    """What a device signs to prove it holds credential `cid` on this connection."""
    return canonical(DOMAIN_AUTH, hello_nonce, cid)


def enroll_bytes(
    hello_nonce: bytes, token: str, public_key: bytes, device_name: str, recovery_pk: bytes | None
) -> bytes:
    """Proof of possession of a new key, bound to the token and this connection.
    A credential without a recovery key signs the empty item in its place."""
    return canonical(DOMAIN_ENROLL, hello_nonce, token, public_key, device_name, recovery_pk or b"")


def binding_bytes(
    rp: str, token: str, secret: bytes, public_key: bytes, device_name: str, recovery_pk: bytes | None
) -> bytes:
    """What the new key signs for the RP: the enrollment link's secret (`es`, which the
    broker never sees) with the key, name and recovery key registered. Only a device
    that read the link can make it, and the broker cannot make one for a key of its
    own; the RP checks it with the secret it made (relying_party.verify)."""
    return canonical(DOMAIN_BINDING, rp, token, secret, public_key, device_name, recovery_pk or b"")


def context_hash(ctx: dict[str, str]) -> bytes:
    """SHA-256 over the sign-in context, keys sorted by their UTF-8 bytes."""
    items: list[Item] = [len(ctx)]
    for key in sorted(ctx, key=str.encode):
        items += [key, ctx[key]]
    return hashlib.sha256(canonical(DOMAIN_CONTEXT, *items)).digest()


def answer_bytes(
    *,
    rp: str,
    ch: str,
    nonce: bytes,
    rp_nonce: bytes,
    cid: str,
    decision: str,
    number: str,
    ts: int,
    ctx_hash: bytes,
) -> bytes:
    """What a device signs to answer a challenge; the RP SDK checks the same bytes.
    `rp_nonce` is the RP's own fresh value for this challenge: its SDK accepts only
    an answer over the value it made (no replay of an older approval)."""
    return canonical(DOMAIN_ANSWER, rp, ch, nonce, rp_nonce, cid, decision, number, ts, ctx_hash)


def backup_bytes(op: str, blob_id: str, ts: int, body_hash: bytes) -> bytes:
    """A read ("get") or write ("put") of the encrypted-backup blob `blob_id` (the
    base64url public key of the blob's key), at time `ts` (ms), with the SHA-256 of
    the body written (of nothing, for a read)."""
    return canonical(DOMAIN_BACKUP, op, blob_id, ts, body_hash)


def recovery_key_bytes(cid: str, recovery_pk: bytes, ts: int) -> bytes:
    """Credential `cid` (its own key signs) names the public key that may recover it."""
    return canonical(DOMAIN_RECOVERY_KEY, cid, recovery_pk, ts)


# How far ahead of its own clock a device signs a rotation's ts to order it after a
# recovery (section 16, "Renewal"). The recovery's ts comes from the broker (the
# `recovery_notice`), which is trusted to deliver, not to decide: a rotation ts far in
# the future would make the RP refuse every later rotation of the user's until then
# (each must be newer), so the device follows it only this far, which covers clocks
# off by minutes, as phones' are.
ROTATION_AHEAD_MAX_MS = 10 * 60 * 1000


def rotation_ts(now_ms: int, recovery_ts: int | None) -> int | None:
    """The ts a device signs a recovery-key rotation with: its own clock, or, when a
    recovery from the credential (its `recovery_ts`) is not older, just after that,
    since the RP takes a rotation only if it is newer than every recovery from the
    credential. None when that is more than ROTATION_AHEAD_MAX_MS ahead of `now_ms`:
    one of the two devices' clocks is wrong, and no ts works that the device may sign."""
    if recovery_ts is None or recovery_ts < now_ms:
        return now_ms
    return recovery_ts + 1 if recovery_ts + 1 - now_ms <= ROTATION_AHEAD_MAX_MS else None


def recover_bytes(rp: str, old_cid: str, pk: bytes, name: str, recovery_pk: bytes, ts: int) -> bytes:
    """A new credential `pk` for the account of `old_cid` at RP `rp`; signed by the
    recovery key of `old_cid` and, as proof of possession, by the new key. The RP checks
    both against the recovery key it stored. `recovery_pk` is the new credential's own
    recovery key (the old one works once)."""
    return canonical(DOMAIN_RECOVER, rp, old_cid, pk, name, recovery_pk, ts)


def recovery_answer_bytes(notice: str, cid: str, new_cid: str, decision: str, ts: int) -> bytes:
    """The old credential `cid` answers recovery notice `notice` about the new credential
    `new_cid`: "confirm" (it was me) or "disown" (it was not: revoke it). The notice id
    is single-use, so a replayed answer finds nothing to act on."""
    return canonical(DOMAIN_RECOVERY_ANSWER, notice, cid, new_cid, decision, ts)


# docs/protocol.md section 9: what every verifier MUST reject before the equation, as
# libsodium's crypto_sign_verify_detached does. Checked here too, so that the rule does
# not rest on how PyNaCl's libsodium was built (ED25519_COMPAT drops these checks).
ED25519_P = 2**255 - 19
ED25519_L = 2**252 + 27742317777372353535851937790883648493
# The y (sign bit ignored) of every encoding of a point of order 1, 2, 4 or 8, canonical
# or not: 0, 1, p - 1, p (= 0), p + 1 (= 1) and the two y of the order-8 points.
SMALL_ORDER_Y = frozenset(
    {0, 1, ED25519_P - 1, ED25519_P, ED25519_P + 1}
    | {
        int.from_bytes(bytes.fromhex(h), "little")
        for h in (
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        )
    }
)


def refusal(public_key: bytes, signature: bytes) -> str | None:
    """Why a key and signature are rejected before any equation, or None: `length`,
    `non_canonical_s` (S >= L), `small_order_r`, `small_order_a` (any encoding of a point
    of order 1, 2, 4 or 8: a key for which signatures can be made without a private key),
    `non_canonical_a` (y >= p). In this order (vectors signing.ed25519)."""
    if len(public_key) != 32 or len(signature) != 64:
        return "length"
    mask = (1 << 255) - 1
    if int.from_bytes(signature[32:], "little") >= ED25519_L:
        return "non_canonical_s"
    if int.from_bytes(signature[:32], "little") & mask in SMALL_ORDER_Y:
        return "small_order_r"
    y = int.from_bytes(public_key, "little") & mask
    if y in SMALL_ORDER_Y:
        return "small_order_a"
    if y >= ED25519_P:
        return "non_canonical_a"
    return None


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise ProtocolError(BAD_SIGNATURE) unless `signature` is valid."""
    try:
        if refusal(bytes(public_key), bytes(signature)) is not None:
            raise ValueError("a key or signature every verifier must reject (section 9)")
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (
        nacl.exceptions.BadSignatureError,
        nacl.exceptions.ValueError,
        ValueError,
        TypeError,
    ):
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "signature does not verify") from None


def is_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        verify(public_key, message, signature)
    except ProtocolError:
        return False
    return True


# A private key: its 32-byte seed, or the key made from it. Making the key from the
# seed costs about as much as a signature, so whoever signs often keeps the key.
Signer = bytes | nacl.signing.SigningKey


def sign(key: Signer, message: bytes) -> bytes:
    """Ed25519 signature with `key` (a SigningKey or a 32-byte seed)."""
    signer = key if isinstance(key, nacl.signing.SigningKey) else nacl.signing.SigningKey(key)
    return signer.sign(message).signature


def public_key(seed: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def new_seed() -> bytes:
    return bytes(nacl.signing.SigningKey.generate())
