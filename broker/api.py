"""The RP API: JSON over HTTP, authenticated by each RP's Bearer API key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from dataclasses import replace
from typing import Any

from aiohttp import web

from protocol import b64, numbers, text
from protocol.challenge import MAX_TARGETS, MAX_TTL_S, MIN_TTL_S, Status
from protocol.errors import ProtocolError
from protocol.fields import ID_RE
from protocol.frames import CONTEXT, RevokeReason
from protocol.signing import context_hash
from protocol.uri import EnrollmentURI, insecure_transport

from . import jsonio, keys, metrics, user_data
from .connections import rp_authenticated
from .context import ApiRequest, node_of
from .credential_cap import TooManyCredentials
from .enrollment_quota import EnrollmentRefused
from .event_listener import LISTENER
from .events import ChallengeEnded
from .fatigue import PushRefused
from .health import HEALTH
from .http_guard import read_body, require_json
from .http_head import MAX_BODY
from .hub import Hub
from .jsonio import json_response
from .models import ChallengeRecord, Credential, Enrollment, RelyingParty
from .policy import PolicyError
from .problems import ApiError, problem
from .signed_requests import b64_field
from .store import Store, UnknownTarget, now_ms
from .versions import versions
from .webpush import WEBPUSH

log = logging.getLogger(__name__)

MAX_WAIT_S = 60


def _store(request: ApiRequest) -> Store:
    return node_of(request).store


def _hub(request: ApiRequest) -> Hub:
    return node_of(request).hub


def one_header(request: ApiRequest, name: str) -> str | None:
    """A header that must come at most once: two values (two Authorization headers,
    two Idempotency-Keys) are read differently by different servers, so neither is
    chosen (400)."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, "invalid_request", f"send one {name} header, not {len(values)}")
    return values[0] if values else None


async def authenticate(request: ApiRequest) -> RelyingParty:
    header = one_header(request, "Authorization") or ""
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <API key>'")
    # Keys are ASCII. A header's bytes that are not UTF-8 reach us as lone surrogates
    # (aiohttp decodes with surrogateescape), which hashing the key could not encode:
    # such a key was a 500 and a traceback, for anyone, before any key was checked.
    if len(key) > 256 or not key.isascii():
        raise ApiError(401, "unauthorized", "unknown API key")
    rp = await _store(request).rp_for_key(key.strip())
    if rp is None:
        raise ApiError(401, "unauthorized", "unknown API key")
    rp_authenticated(request)
    return rp


# -- input validation ---------------------------------------------------------


async def json_body(request: ApiRequest, allowed: set[str]) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY)  # within the body timeout
    require_json(request, raw)
    try:
        body = jsonio.loads_request(raw or b"null")
    except jsonio.DuplicateKey as dup:
        raise ApiError(400, "duplicate_key", f"the body names {dup.key!r} twice") from None
    except jsonio.TooDeep as deep:
        raise ApiError(400, "invalid_json", str(deep)) from None
    except ValueError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
    return body


def text_field(body: dict[str, Any], name: str, max_len: int, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise ApiError(400, "invalid_request", f"'{name}' must be a string of 1 to {max_len} characters")
    if (bad := text.first_unsafe(value)) is not None:
        raise ApiError(400, "invalid_request", _unsafe(name, bad))
    return value


def _unsafe(name: str, ch: str) -> str:
    return f"'{name}' {text.refusal(ch)}"


def context_field(body: dict[str, Any]) -> dict[str, str]:
    """The sign-in context: data the device shows as plain text (DESIGN invariant 12),
    so no control, format, line-separator or invisible character in a key or a value."""
    try:
        ctx = CONTEXT("context", body.get("context", {}))
    except ProtocolError as err:
        raise ApiError(400, "invalid_request", err.message) from None
    for key, value in ctx.items():
        if (bad := text.first_unsafe(key)) is not None:
            raise ApiError(400, "invalid_request", _unsafe(f"context key {key!r}", bad))
        if (bad := text.first_unsafe(value)) is not None:
            raise ApiError(400, "invalid_request", _unsafe(f"context.{key}", bad))
    return ctx


def targets_field(body: dict[str, Any]) -> tuple[str, ...]:
    """Whom a challenge is aimed at: `credential_id` (one) or `credential_ids` (1 to
    MAX_TARGETS, each once), or neither (empty: the user's confirmed credentials).
    Each must be an id (protocol.fields.ID_RE), which also keeps the space that joins
    them in the store (models.TARGET_SEP) out of any one."""
    one, many = body.get("credential_id"), body.get("credential_ids")
    if one is not None and many is not None:
        raise ApiError(400, "invalid_request", "send 'credential_id' or 'credential_ids', not both")
    if one is not None:
        if not isinstance(one, str) or not ID_RE.match(one):
            raise ApiError(400, "invalid_request", f"'credential_id' must be a credential id ({_ID_RULE})")
        return (one,)
    if many is None:
        return ()
    if not isinstance(many, list) or not 1 <= len(many) <= MAX_TARGETS:
        raise ApiError(
            400, "invalid_request", f"'credential_ids' must be a list of 1 to {MAX_TARGETS} credential ids"
        )
    for i, cid in enumerate(many):
        if not isinstance(cid, str) or not ID_RE.match(cid):
            raise ApiError(
                400, "invalid_request", f"'credential_ids' item {i} is not a credential id ({_ID_RULE})"
            )
    if len(set(many)) != len(many):
        twice = sorted({cid for cid in many if many.count(cid) > 1})
        raise ApiError(400, "invalid_request", f"'credential_ids' names {', '.join(twice)} more than once")
    return tuple(many)


_ID_RULE = "1 to 64 characters of A-Z a-z 0-9 - _"


def user_id(value: str) -> str:
    return text_field({"user": value}, "user", 128)


def int_field(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = jsonio.as_int(body.get(name, default))
    if value is None or not lo <= value <= hi:
        raise ApiError(400, "invalid_request", f"'{name}' must be an integer from {lo} to {hi}")
    return value


def bool_field(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if type(value) is not bool:
        raise ApiError(400, "invalid_request", f"'{name}' must be true or false")
    return value


def wait_param(request: ApiRequest, default: float = 0) -> float:
    raw = request.query.get("wait", str(default))
    try:
        wait = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", "'wait' must be a number of seconds") from None
    if not 0 <= wait <= MAX_WAIT_S:
        raise ApiError(400, "invalid_request", f"'wait' must be 0 to {MAX_WAIT_S} seconds")
    return wait


# -- JSON views ----------------------------------------------------------------


def _b64_or_none(value: bytes | None) -> str | None:
    return None if value is None else b64.encode(value)


def credential_json(cred: Credential) -> dict[str, Any]:
    """A credential with the proofs the RP checks itself (docs/http-api.md)."""
    recovery_key = None
    if cred.recovery_pk is not None:
        recovery_key = {
            "public_key": b64.encode(cred.recovery_pk),
            "ts": cred.recovery_pk_ts,
            "signature": _b64_or_none(cred.recovery_pk_sig),
        }
    recovery = None
    if cred.recovered_from is not None:
        recovery = {
            "from": cred.recovered_from,
            "ts": cred.recovery_ts,
            "recovery_signature": _b64_or_none(cred.recovery_sig),
            "signature": _b64_or_none(cred.recovery_pop),
            "recovery_public_key": _b64_or_none(cred.recovery_rpk),
        }
    return {
        "id": cred.id,
        "user": cred.user,
        "account": cred.account,
        "name": cred.name,
        "public_key": b64.encode(cred.public_key),
        "created_at": cred.created,
        "last_used_at": cred.last_used,
        "recovered_from": cred.recovered_from,
        "binding": _b64_or_none(cred.binding),
        "recovery_key": recovery_key,
        "recovery": recovery,
        # False until the RP confirms it (POST /v1/credentials/{id}/confirm): until then
        # it gets only challenges aimed at it (its setup test push).
        "confirmed": cred.confirmed,
    }


def enrollment_json(enr: Enrollment, cred: Credential | None, now: int) -> dict[str, Any]:
    return {
        "id": enr.id,
        "user": enr.user,
        "account": enr.account,
        "recoverable": enr.recoverable,
        "status": enr.status_at(now),
        "expires_at": enr.expires,
        "credential": credential_json(cred) if cred else None,
        # API 1.11: the latest refusal of a device at the user's device cap (still pending).
        "refused": enr.refused.to_json() if enr.refused else None,
    }


def challenge_json(rec: ChallengeRecord, status: Status) -> dict[str, Any]:
    a = rec.answer
    return {
        "id": rec.id,
        "user": rec.user,
        "status": status.value,
        "nonce": b64.encode(rec.nonce),
        "rp_nonce": b64.encode(rec.rp_nonce),
        "context": rec.ctx,
        "digits": rec.digits,
        "created_at": rec.created,
        "expires_at": rec.expires,
        # One target is named in both (a create may have used either field); several only
        # in credential_ids (docs/http-api.md, "Whom a challenge goes to").
        "credential_id": rec.targets[0] if len(rec.targets) == 1 else None,
        "credential_ids": list(rec.targets) or None,
        "number_matching": rec.number_matching,
        "answer": None
        if a is None
        else {
            "credential_id": a.cid,
            "decision": a.decision,
            "number": a.number,
            "ts": a.ts,
            "ctx_hash": b64.encode(a.ctx_hash),
            "signature": b64.encode(a.sig),
        },
    }


# -- handlers -------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz. Its 503s are answers to a load balancer's checks (twice a second per
    node), not refusals of RPs or devices: they stay out of pushauth_http_rejected_total,
    which would otherwise count mostly checks while Redis is away."""
    # Checked at most once per health.FRESH_S however many ask (broker/health.py): the
    # check writes to Redis, and anyone may ask.
    why = await request.app[HEALTH].problem()
    if why is not None:
        return problem(503, "unavailable", why, counted=False)
    # A node deaf to the event channel would leave its devices and long-polls waiting.
    listening, events = request.app[LISTENER].health()
    if not listening:
        why = f"not subscribed to the event channel: {events}"
        return problem(503, "events_unavailable", why, counted=False)
    body = {
        "status": "ok",
        "node": node_of(request).name,
        "redis": "ok",
        "versions": versions(),
        "events": events,
    }
    return json_response(body)


async def get_rp(request: web.Request) -> web.Response:
    rp = await authenticate(request)
    return json_response({"id": rp.id, "name": rp.name})


async def get_rp_policy(request: web.Request) -> web.Response:
    """GET /v1/rp/policy: the calling RP's push policy, read-only (the operator sets it
    with `pushauth-broker rp set`; broker/policy.py)."""
    rp = await authenticate(request)
    policy = await _store(request).policies.get(rp.id)
    return json_response(policy.to_json())


# What an enrollment link may name from a request's Host header (without --public-url):
# a host name or IPv4 address of RFC 3986 unreserved characters, or an IPv6 literal, and
# an optional port.
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?", re.ASCII)


def device_url(request: web.Request) -> str:
    public = node_of(request).public_url
    if public:
        return (
            public.replace("https://", "wss://", 1).replace("http://", "ws://", 1).rstrip("/") + "/v1/device"
        )
    scheme = "wss" if request.secure else "ws"
    host = request.host
    if _HOST.fullmatch(host) is None:
        # Refused before anything is stored: a Host with bytes that are not UTF-8 was a
        # 500 and a traceback after the enrollment was made (building the link failed),
        # and a host with spaces or slashes made a link no device can use.
        raise ApiError(
            400,
            "invalid_request",
            "the Host header is not a host name and port, from which devices could be sent to "
            "this broker (start the node with --public-url to name it)",
        )
    url = f"{scheme}://{host}/v1/device"
    _tell_if_refused(url)
    return url


_told_refused_links = False


def _tell_if_refused(url: str) -> None:
    """Once per process: links every device refuses (ws:// to a host other than loopback,
    docs/protocol.md 2.1), as a node behind a TLS balancer makes from the Host header when
    started without --public-url. The RP gets its 201 and shows the QR code regardless."""
    global _told_refused_links
    if _told_refused_links or insecure_transport(url) is None:
        return
    _told_refused_links = True
    log.warning(
        "enrollment links name %s, which devices refuse (no TLS to a host other than loopback): "
        "start the node with --public-url https://... (the URL devices reach the balancer at)",
        url,
    )


async def create_enrollment(request: web.Request) -> web.Response:
    rp = await authenticate(request)
    body = await json_body(request, {"user", "account", "recoverable"})
    user = text_field(body, "user", 128)
    account = text_field(body, "account", 256)
    recoverable = bool_field(body, "recoverable")
    broker_url = device_url(request)
    try:
        new = await _store(request).create_enrollment(rp, user, account, recoverable)
    except EnrollmentRefused as refused:  # over the RP's enrollment quota: nothing stored
        raise ApiError(
            429, refused.code, refused.detail, {"Retry-After": str(refused.retry_after_s)}
        ) from None
    except TooManyCredentials as refused:  # the user has as many devices as allowed
        raise refused.api_error() from None
    uri = EnrollmentURI(broker_url, new.token, rp.id, rp.name, account, recoverable=recoverable).build()
    out = enrollment_json(new.enrollment, None, now_ms())
    out.update(token=new.token, broker_url=broker_url, uri=uri)
    return json_response(out, status=201)


async def get_enrollment(request: web.Request) -> web.Response:
    rp = await authenticate(request)
    wait = wait_param(request)
    eid = request.match_info["id"]
    store, hub = _store(request), _hub(request)
    fut = hub.wait_enrollment(eid) if wait else None
    channel = None
    try:
        if fut is not None:
            channel = await _listen(store, hub, eid)
        enr = await store.get_enrollment(rp.id, eid)
        if enr is None:
            raise ApiError(404, "not_found", "no such enrollment")
        remaining = min(wait, (enr.expires - now_ms()) / 1000)
        if fut is not None and enr.status_at(now_ms()) == "pending" and remaining > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), remaining)
            enr = await store.get_enrollment(rp.id, eid) or enr
    finally:
        if fut is not None:
            hub.forget_waiter(eid, fut)
            fut.cancel()
        if channel is not None:
            hub.channels.release(channel)
    cred = await store.get_credential(enr.credential_id) if enr.credential_id else None
    return json_response(enrollment_json(enr, cred, now_ms()))


async def cancel_enrollment(request: web.Request) -> web.Response:
    """DELETE /v1/enrollments/{id}: withdraw a pending enrollment (the RP's "cancel" on
    its setup page, or a newer setup of the same user): a device that uses its link
    afterwards is refused (bad_token). Idempotent: 204 also when it had ended before; a
    completed one keeps its credential (DELETE /v1/credentials/{id} revokes that)."""
    rp = await authenticate(request)
    if not await _store(request).cancel_enrollment(rp.id, request.match_info["id"]):
        raise ApiError(404, "not_found", "no such enrollment")
    return web.Response(status=204)


async def start_challenge(request: ApiRequest, rp: RelyingParty) -> dict[str, Any]:
    """POST /v1/challenges (its handler is broker/api_stream.py, plain or streamed):
    validate the body, create the challenge and push it; the 201 body, with the
    number. Every refusal is an ApiError, raised before anything is answered."""
    body = await json_body(
        request,
        {
            "user",
            "context",
            "ttl",
            "digits",
            "rp_nonce",
            "supersede",
            "credential_id",
            "credential_ids",
            "number_matching",
        },
    )
    user = text_field(body, "user", 128)
    # One live prompt per user per RP by default (DESIGN invariant 12): the older
    # pending ones end as superseded, so "send again" never leaves a stale number
    # answerable. An RP that runs parallel sign-ins on purpose opts out.
    supersede = bool_field(body, "supersede", True)
    targets = targets_field(body)
    # The RP's own fresh value, signed by the device (docs/protocol.md, "Freshness"): an
    # RP that sends none gets one made here, and with it no protection from a broker
    # that replays old answers.
    rp_nonce = (
        b64_field(body, "rp_nonce", 32) if body.get("rp_nonce") is not None else secrets.token_bytes(32)
    )
    ctx = context_field(body)
    # Digits and TTL are the RP's policy (its defaults, its minimum digits, its
    # longest lifetime: the NIST SP 800-63B-4 profile's 6 digits and 10 minutes).
    policy = await _store(request).policies.get(rp.id)
    ttl = int_field(body, "ttl", policy.ttl, MIN_TTL_S, MAX_TTL_S)
    digits = int_field(body, "digits", policy.digits, numbers.MIN_DIGITS, numbers.MAX_DIGITS)
    # Off only where the operator allows it for this RP (never under the NIST profile):
    # a plain approve/deny prompt for clients that cannot show a number (RP API 1.9).
    number_matching = bool_field(body, "number_matching", True)
    try:
        policy.check_challenge(digits=digits, ttl=ttl, number_matching=number_matching)
    except PolicyError as err:
        raise ApiError(400, "invalid_request", err.message) from None
    now = now_ms()
    record = ChallengeRecord(
        id=keys.mint("ch", keys.user_tag(rp.id, user)),
        rp=rp.id,
        rp_name=rp.name,
        user=user,
        number=numbers.generate(digits),
        digits=digits,
        nonce=secrets.token_bytes(32),
        rp_nonce=rp_nonce,
        ctx=ctx,
        ctx_hash=context_hash(ctx),
        created=now,
        expires=now + ttl * 1000,
        targets=targets,
        number_matching=number_matching,
        created_at=metrics.perf(),
    )
    store, hub = _store(request), _hub(request)
    # Whether this node listens on the user's channel already (a device of the user is
    # here): then the challenge's end is sure to reach it (see Hub.schedule_expiry).
    listening = hub.listening(rp.id, user)
    idempotency_key = idempotency_key_header(request)
    try:
        new = await store.create_challenge(record, supersede=supersede, idempotency_key=idempotency_key)
    except UnknownTarget as unknown:
        # Which ones, in words and as a member the RP can act on (leave them out).
        raise ApiError(
            404,
            "not_found",
            f"no active credential {', '.join(unknown.cids)} for this user (removed, or another user's)",
            extra={"credential_ids": list(unknown.cids)},
        ) from None
    except PushRefused as refused:
        metrics.signin_refused(refused.code)
        status = 429 if refused.code == "rate_limited" else 409
        headers = None if refused.retry_after_s is None else {"Retry-After": str(refused.retry_after_s)}
        raise ApiError(status, refused.code, refused.detail, headers) from None
    if not new.devices:
        if new.unconfirmed:
            raise ApiError(
                409,
                "no_devices",
                f"the user has no confirmed authenticator ({new.unconfirmed} enrolled but not confirmed: "
                "send it a test push with credential_id, then POST /v1/credentials/{id}/confirm)",
            )
        raise ApiError(409, "no_devices", "the user has no active authenticator")
    if new.made_before is not None:
        sent_nonce = body.get("rp_nonce") is not None
        return await _made_before(store, new.made_before, new.devices, record, rp_nonce_sent=sent_nonce)
    hub.schedule_expiry(record, record.expires, node_of(request).expire, listening)
    push = request.app.get(WEBPUSH)
    if push is not None:  # wake the devices that are not connected (docs/protocol.md, appendix A)
        push.wake_for(store.redis, record)
    out = challenge_json(record, Status.PENDING)
    del out["answer"], out["status"]
    out.update(number=shown_number(record), devices=new.devices, superseded=list(new.superseded))
    return out


def shown_number(record: ChallengeRecord) -> str | None:
    """The number the RP shows; none (null) for a challenge without number matching,
    whose number is drawn only so that nothing else differs, and is shown nowhere."""
    return record.number if record.number_matching else None


def idempotency_key_header(request: ApiRequest) -> str | None:
    """The create's Idempotency-Key (draft-ietf-httpapi-idempotency-key-header), if any:
    1 to 64 characters of A-Z a-z 0-9 - _ (400 otherwise)."""
    value = one_header(request, "Idempotency-Key")
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ApiError(
            400, "invalid_request", "Idempotency-Key must be 1 to 64 characters of A-Z a-z 0-9 - _"
        )
    return value


_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def _made_before(
    store: Store, made_id: str, devices: int, asked: ChallengeRecord, *, rp_nonce_sent: bool
) -> dict[str, Any]:
    """The 201 body of the challenge an earlier create with the same Idempotency-Key made
    (a create sent again: nothing new pushed, nothing superseded), whatever its state now.
    A key used for another request (other context, digits, targets or rp_nonce) is 409."""
    made = await store.get_challenge(made_id)
    if made is None or made.rp != asked.rp:  # expired with its key: a race of milliseconds
        raise ApiError(404, "not_found", "the challenge this Idempotency-Key made has expired")
    same = (made.ctx_hash, made.digits, made.targets, made.number_matching) == (
        asked.ctx_hash,
        asked.digits,
        asked.targets,
        asked.number_matching,
    )
    if not same or (rp_nonce_sent and made.rp_nonce != asked.rp_nonce):
        raise ApiError(
            409, "idempotency_key_reused", "this Idempotency-Key made a challenge for another request"
        )
    out = challenge_json(made, Status.PENDING)
    del out["answer"], out["status"]
    out.update(number=shown_number(made), devices=devices, superseded=[])
    return out


async def challenge_view(request: ApiRequest) -> dict[str, Any]:
    """GET /v1/challenges/{id}: the challenge, held up to `wait` while it is pending (the
    long-poll). Served through aiohttp (get_challenge) or the RP lane (broker/rp_lane.py)."""
    rp = await authenticate(request)
    wait = wait_param(request)
    return await challenge_result(request, rp, request.match_info["id"], wait)


async def get_challenge(request: web.Request) -> web.Response:
    return json_response(await challenge_view(request))


async def challenge_result(request: ApiRequest, rp: RelyingParty, ch: str, wait: float) -> dict[str, Any]:
    """The challenge's result body, held up to `wait` seconds while it is pending: the
    long-poll's answer, and the streamed create's second line (broker/api_stream.py).
    404 (ApiError) for a challenge of another RP or none."""
    store, hub = _store(request), _hub(request)
    # Register before reading, so an answer between the read and the wait is not missed.
    fut = hub.wait_result(ch) if wait else None
    woken = None  # the live record, when an event ended the wait (broker/metrics.py)
    channel = None
    try:
        if fut is not None:
            channel = await _listen(store, hub, ch)
        live = hub.live.get(ch)
        # A copy: the hub's record is shared with the device connections.
        rec = replace(live) if live is not None else await store.get_challenge(ch)
        if rec is None or rec.rp != rp.id:
            raise ApiError(404, "not_found", "no such challenge")
        status = rec.status_at(now_ms())
        remaining = min(wait, (rec.expires - now_ms()) / 1000)
        if fut is not None and status is Status.PENDING and remaining > 0:
            # Awaited directly, with a timer of our own: wait_for(shield(fut)) passed the
            # result on through two more event-loop iterations, on every sign-in's path.
            timer = asyncio.get_running_loop().call_later(remaining, _give_up, fut)
            try:
                ended: ChallengeEnded = await fut
                rec.status, rec.answer = ended.status, ended.answer
                woken = live
            except TimeoutError:
                # No event seen (maybe missed while pub/sub reconnected): ask Redis.
                rec = await store.get_challenge(ch) or rec
            finally:
                timer.cancel()
            status = rec.status_at(now_ms())
        # An expired pending challenge is made final in Redis; if an answer got
        # there first, that answer is reported instead.
        if (
            status is Status.EXPIRED
            and rec.status is Status.PENDING
            and not await store.expire_challenge(rec, max(now_ms(), rec.expires))
        ):
            rec = await store.get_challenge(ch) or rec
            status = rec.status_at(now_ms())
    finally:
        if fut is not None:
            hub.forget_waiter(ch, fut)
            fut.cancel()
        if channel is not None:
            hub.channels.release(channel)
    metrics.result_sent(woken)
    return challenge_json(rec, status)


async def cancel_challenge(request: web.Request) -> web.Response:
    """DELETE /v1/challenges/{id}: end a pending challenge (its devices drop the prompt).
    Answers with the challenge as it is now: cancelled, or the outcome it reached
    before (an answer the RP may still verify), so a retried DELETE is harmless."""
    rp = await authenticate(request)
    ch = request.match_info["id"]
    store = _store(request)
    rec = await store.get_challenge(ch)
    if rec is None or rec.rp != rp.id:
        raise ApiError(404, "not_found", "no such challenge")
    now = now_ms()
    result = await store.cancel_challenge(rec, now)
    if result == "unknown":  # removed by its retention time meanwhile
        raise ApiError(404, "not_found", "no such challenge")
    if result == "expired":
        await store.expire_challenge(rec, max(now, rec.expires))
    rec = await store.get_challenge(ch) or rec
    return json_response(challenge_json(rec, rec.status_at(now_ms())))


async def _listen(store: Store, hub: Hub, id_: str) -> str | None:
    """Hold the channel of the user that challenge or enrollment `id_` belongs to, and
    wait until the subscription holds: the caller reads the state after this, so no
    event is missed in between. No round trip when this node listens already (a device
    of the user is here, or the challenge was created here). None for an unknown id."""
    await store.resolve_tags([id_])
    channel = keys.id_channel(id_)
    if channel is not None and not hub.channels.hold(channel):
        try:
            await hub.channels.ready([channel])
        except BaseException:
            hub.channels.release(channel)
            raise
    return channel


def _give_up(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def list_credentials(request: web.Request) -> web.Response:
    rp = await authenticate(request)
    user = user_id(request.match_info["user"])
    creds = await _store(request).user_credentials(rp.id, user)
    return json_response({"credentials": [credential_json(c) for c in creds]})


async def get_push_block(request: web.Request) -> web.Response:
    rp = await authenticate(request)
    return json_response(await push_block_json(_store(request), rp.id, user_id(request.match_info["user"])))


async def push_block_json(store: Store, rp_id: str, user: str) -> dict[str, Any]:
    since, muted_until, failures = await store.push_guard(rp_id, user)
    policy = await store.policies.get(rp_id)
    limit = policy.failure_limit
    return {
        "user": user,
        "muted_until": muted_until,
        "pushes_since_sign_in": since,
        "blocked": muted_until is not None
        or since >= policy.max_pushes
        or (limit is not None and failures >= limit),
        "max_pushes_since_sign_in": policy.max_pushes,
        # NIST SP 800-63B-4 profile: wrong numbers in a row, across challenges
        # (counted under every profile; a lock only where failure_limit is set)
        "consecutive_failures": failures,
        "failure_limit": limit,
    }


async def lift_push_block(request: web.Request) -> web.Response:
    rp = await authenticate(request)
    await _store(request).lift_push_block(rp.id, user_id(request.match_info["user"]))
    return web.Response(status=204)


async def confirm_credential(request: web.Request) -> web.Response:
    """POST /v1/credentials/{id}/confirm: the RP finished the device's setup (its test
    push verified), so it gets the user's ordinary sign-in requests from now on.

    An explicit call, not a side effect of the test approval: the broker judges an
    approval only by its number, while the RP alone decides to trust the key (its SDK
    verified the signature and the enrollment binding, and it stored the key); a
    broker confirming by itself would put its word where the RP's belongs."""
    rp = await authenticate(request)
    cid = request.match_info["id"]
    result = await _store(request).confirm_credential(rp.id, cid)
    if result == "unknown":
        raise ApiError(404, "not_found", "no such credential")
    if result == "revoked":
        raise ApiError(409, "credential_revoked", "the credential was removed")
    return web.Response(status=204)


async def revoke_credential(request: web.Request) -> web.Response:
    rp = await authenticate(request)
    cid = request.match_info["id"]
    if not await _store(request).revoke_credential(rp.id, cid, RevokeReason.BY_RP.value):
        raise ApiError(404, "not_found", "no such credential")
    return web.Response(status=204)


async def export_user(request: web.Request) -> web.Response:
    """GET /v1/users/{user}/data: everything the broker holds about the user at this RP
    (the right of access; broker/user_data.py), revoked credentials and ended
    challenges included, as long as they are kept."""
    rp = await authenticate(request)
    user = user_id(request.match_info["user"])
    store = _store(request)
    data = await user_data.export_user(store, rp.id, user)
    now = now_ms()
    creds = {c.id: c for c in data.credentials}
    return json_response(
        {
            "user": user,
            "credentials": [credential_json(c) for c in data.credentials if c.active],
            "revoked_credentials": [credential_json(c) for c in data.credentials if not c.active],
            "enrollments": [
                enrollment_json(e, creds.get(e.credential_id or ""), now) for e in data.enrollments
            ],
            "challenges": [challenge_json(c, c.status_at(now)) for c in data.challenges],
            "recovery_notices": [
                {
                    "id": n.id,
                    "credential_id": n.old_cid,
                    "new_credential_id": n.new_cid,
                    "new_device_name": n.new_name,
                    "account": n.account,
                    "created_at": n.created,
                }
                for n in data.notices
            ],
            "push_subscriptions": [
                {"credential_id": cid, "endpoint": endpoint} for cid, endpoint in data.push_endpoints.items()
            ],
            "push_block": await push_block_json(store, rp.id, user),
        }
    )


async def erase_user(request: web.Request) -> web.Response:
    """DELETE /v1/users/{user}: erase everything the broker holds about the user at
    this RP (broker/user_data.py). 204 also when there was nothing (idempotent)."""
    rp = await authenticate(request)
    await user_data.erase_user(_store(request), rp.id, user_id(request.match_info["user"]))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/rp", get_rp)
    app.router.add_get("/v1/rp/policy", get_rp_policy)
    app.router.add_post("/v1/enrollments", create_enrollment)
    app.router.add_get("/v1/enrollments/{id}", get_enrollment)
    app.router.add_delete("/v1/enrollments/{id}", cancel_enrollment)
    # POST /v1/challenges: api_stream.create_challenge (start_challenge, then one JSON
    # body, or the streamed form when the RP asks for it).
    app.router.add_get("/v1/challenges/{id}", get_challenge)
    app.router.add_delete("/v1/challenges/{id}", cancel_challenge)
    app.router.add_delete("/v1/users/{user}", erase_user)
    app.router.add_get("/v1/users/{user}/data", export_user)
    app.router.add_get("/v1/users/{user}/credentials", list_credentials)
    app.router.add_get("/v1/users/{user}/push-block", get_push_block)
    app.router.add_delete("/v1/users/{user}/push-block", lift_push_block)
    app.router.add_delete("/v1/credentials/{id}", revoke_credential)
    app.router.add_post("/v1/credentials/{id}/confirm", confirm_credential)
