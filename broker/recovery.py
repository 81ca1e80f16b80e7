"""Recoverable credentials: a recovery key per credential, and recovery with it.

When the RP enrolls a user as recoverable, the device makes a second key pair, the
recovery key, registers its public key with the credential (in `enroll`, bound for
the RP by the enrollment binding), and keeps the private half in its encrypted
backup. After a restore on a new device, the backup's recovery key registers a new
credential for the same account by itself: signed by the recovery key, with proof of
possession of the new key. A recovery key works once: the recovery takes it off the
old credential, and the new credential names its own. The device names a new
recovery key for a credential (signed by the credential key) when the old one may be
known to someone else: after a passphrase change, a "no" to "was this you?", or a
recovery. The broker only keeps and relays the signatures: the RP checks them
against the keys it stored (relying_party.verify.reconcile), never the broker's word.
The old credential stays valid until removed; the new one lists `recovered_from`,
and the old device is asked "was this you?" (broker/notices.py): "no" revokes the
new credential.

    POST /v1/credentials/{id}/recovery-key  {"recovery_pk", "ts", "sig"}     -> 204
    POST /v1/recoveries  {"cid", "pk", "name", "recovery_pk", "ts", "recovery_sig", "sig"}
                         -> 201 {"id", "rp", "rp_name", "user", "account"}
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from protocol import signing
from protocol.errors import ProtocolError
from protocol.fields import NAME

from . import credential_cap, keys, lua, notices
from .api import json_body, text_field
from .context import node_of
from .events import NoticeCreated
from .jsonio import json_response
from .models import Credential, Notice
from .problems import ApiError, problem
from .signed_requests import b64_field, check_signed, parse_ts
from .store import now_ms

_REFUSALS = {
    # The credential vanished between the read and the script: as if it never was.
    "unknown": (
        403,
        "recovery_refused",
        "refused: the signature does not verify for this credential (or there is none)",
    ),
    "revoked": (409, "credential_revoked", "the credential was removed; it can no longer be recovered"),
    "not_recoverable": (409, "not_recoverable", "the service did not enroll this credential as recoverable"),
    "stale": (409, "conflict", "a newer recovery key is named already"),
    "before_recovery": (
        409,
        "conflict",
        "ts is not newer than the recovery made with this credential's recovery key (the service would"
        " refuse this rotation): sign a later ts (the recovery notice's recovery_ts + 1)",
    ),
    "used": (
        409,
        "recovery_key_used",
        "this recovery key works no more: it was used already (a recovery key works once), or it was"
        ' replaced (after a passphrase change or a "No, not me")',
    ),
    "wrong_key": (409, "recovery_key_used", "the recovery key was replaced or used meanwhile"),
}


# No state oracle (DESIGN invariant 13): a caller who proves no key of the credential
# learns nothing about it, not even whether it exists. One answer for all of that.
def _nothing_proven() -> ApiError:
    # A new exception each time: one module-level instance, raised again and again, grew
    # its __traceback__ by every raise, and with it kept every refused request's frames,
    # request and headers alive (about 20 KB a refusal; 8,000 refusals grew a node by
    # 156 MB, for good).
    return ApiError(
        403,
        "recovery_refused",
        "refused: the signature does not verify for this credential (or there is none)",
    )


def _refused(why: bytes | str) -> ApiError:
    status, code, detail = _REFUSALS[why.decode() if isinstance(why, bytes) else why]
    return ApiError(status, code, detail)


async def _credential(request: web.Request, cid: str) -> tuple[Credential, dict[bytes, bytes]]:
    """The credential `cid`, revoked or not; unknown ones are refused like a bad signature."""
    if not cid or len(cid) > 64:
        raise _nothing_proven()
    store = node_of(request).store
    await store.resolve_tags([cid])
    h = await store.redis.hgetall(keys.credential(cid))
    if not h:
        raise _nothing_proven()
    return Credential.from_hash(cid, h), h


def _prior_keys(h: dict[bytes, bytes]) -> list[bytes]:
    raw = h.get(b"recovery_prior", b"")
    return [raw[i : i + 32] for i in range(0, len(raw) - 31, 32)]


async def set_recovery_key(request: web.Request) -> web.Response:
    body = await json_body(request, {"recovery_pk", "ts", "sig"})
    recovery_pk = b64_field(body, "recovery_pk", 32)
    sig = b64_field(body, "sig", 64)
    ts = parse_ts(body.get("ts"))
    cred, _ = await _credential(request, request.match_info["id"])
    message = signing.recovery_key_bytes(cred.id, recovery_pk, ts)
    if not signing.is_valid(cred.public_key, message, sig):
        raise _nothing_proven()
    store = node_of(request).store
    await check_signed(store, cred.public_key, message, sig, ts)
    result = await store.redis.eval(lua.SET_RECOVERY_KEY, 1, keys.credential(cred.id), recovery_pk, ts, sig)
    if result in (b"stale", b"before_recovery"):
        # The device may sign again just after this (within signing.ROTATION_AHEAD_MAX_MS
        # of its own clock, as after a recovery notice): a clock behind the new device's,
        # or behind its own rotation signed ahead, costs no failed rotation. Only the
        # credential's holder learns it: the signature was checked above.
        named, recovered = await store.redis.hmget(keys.credential(cred.id), "recovery_pk_ts", "recovered_ts")
        status, code, detail = _REFUSALS[result.decode()]
        return problem(status, code, detail, extra={"newer_than": max(int(named or 0), int(recovered or 0))})
    if result != b"ok":
        raise _refused(result)
    return web.Response(status=204)


async def recover(request: web.Request) -> web.Response:
    body = await json_body(request, {"cid", "pk", "name", "recovery_pk", "ts", "recovery_sig", "sig"})
    old_cid = text_field(body, "cid", 64)
    pk = b64_field(body, "pk", 32)
    new_recovery_pk = b64_field(body, "recovery_pk", 32)
    recovery_sig = b64_field(body, "recovery_sig", 64)
    sig = b64_field(body, "sig", 64)
    name = text_field(body, "name", 64)
    try:
        NAME("name", name)
    except ProtocolError as exc:
        raise ApiError(400, "invalid_request", exc.message) from None
    ts = parse_ts(body.get("ts"))
    old, h = await _credential(request, old_cid)
    message = signing.recover_bytes(old.rp, old.id, pk, name, new_recovery_pk, ts)
    recovery_pk = h.get(b"recovery_pk")
    # What the caller may be told depends on which key it proves: none, nothing at all;
    # a used or replaced one, that it works no more; the current one, everything.
    if recovery_pk is None or not signing.is_valid(recovery_pk, message, recovery_sig):
        if not any(signing.is_valid(k, message, recovery_sig) for k in _prior_keys(h)):
            raise _nothing_proven()
        raise _refused("used" if old.active else "revoked")
    if not old.active:
        raise _refused("revoked")
    if not signing.is_valid(pk, message, sig):  # proof of possession of the new key
        raise ApiError(403, "bad_signature", "the new key's signature does not verify")
    store = node_of(request).store
    await check_signed(store, recovery_pk, message, recovery_sig, ts)
    policy = await store.policies.get(old.rp)
    # The new credential, its notice and the old credential: one user, one slot.
    tag = keys.user_tag(old.rp, old.user)
    cid, created = keys.mint("cr", tag), now_ms()
    fields = [
        "rp", old.rp, "user", old.user, "account", old.account, "name", name, "pk", pk,
        "created", created, "status", "active", "recoverable", "1", "recovery_pk", new_recovery_pk,
        "recovered_from", old.id, "rec_ts", ts, "rec_sig", recovery_sig, "rec_pop", sig,
        "rec_rpk", new_recovery_pk,
    ]  # fmt: skip
    notice = Notice(keys.mint("rn", tag), old.id, cid, name, old.rp, old.user, old.account, created, ts)

    # One transaction: the new credential never exists without its "was this you?"
    # notice to the old device (the notice script checks the recovery went through).
    def fill(p: Any) -> None:
        p.eval(
            lua.RECOVER_CREDENTIAL,
            3,
            keys.credential(old.id),
            keys.credential(cid),
            keys.user_credentials(old.rp, old.user),
            recovery_pk,
            cid,
            old.account,
            ts,
            policy.max_credentials,
            *fields,
        )
        notices.queue_create(p, store, notice)

    result, _made = await store.atomic(fill, durable=True)
    if result == b"too_many_credentials":  # the key is not used up: it works once one is removed
        raise credential_cap.TooManyCredentials(policy.max_credentials).api_error()
    if result != b"ok":
        raise _refused(result)
    await notices.announce(store, NoticeCreated(notice))
    rp = await store.get_rp(old.rp)
    rp_name = rp.name if rp else old.rp
    return json_response(
        {"id": cid, "rp": old.rp, "rp_name": rp_name, "user": old.user, "account": old.account}, status=201
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/credentials/{id}/recovery-key", set_recovery_key)
    app.router.add_post("/v1/recoveries", recover)
