"""The push request page shared by sign-in and by the setup's test notification.

The session holds the challenge as the SDK returned it (its nonce, number and the
context we sent are what the device's answer must be signed over). The page shows
the number and follows the result live through server-sent events; the step is
finished only by a POST that asks the broker again and verifies the answer with the
keys in our own database (the event stream never changes the session).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from aiohttp import web

from protocol.challenge import MAX_TARGETS, Status
from protocol.purpose import is_setup_test, setup_test_context, verify_context

from ..errors import (
    BadBrokerResponse,
    BrokerUnavailable,
    NoDevices,
    NotFound,
    PushAuthError,
    PushBlocked,
    RateLimited,
    VerificationFailed,
    VerificationReason,
)
from ..models import Challenge, SignInResult
from ..sdk import PushAuthClient
from . import activity, auth, credentials, push_pause, revocations, signin_context, sse
from .config import Settings
from .db import Database, User, now_ms
from .keys import CLIENT, DB, SETTINGS
from .render import render
from .sessions import get_session

log = logging.getLogger(__name__)

SIGNIN = "signin"
SETUP = "setup"
REAUTH = "reauth"  # "verify it's you" before a sensitive change (reauth.py)
PURPOSES = (SIGNIN, SETUP, REAUTH)
# The page that shows a purpose's request, and where to go when there is none.
PAGES = {SIGNIN: "/signin/push", SETUP: "/security/test-notification", REAUTH: "/reauth/push"}
HOMES = {SIGNIN: "/signin/code", SETUP: "/security", REAUTH: "/reauth"}
# After these the code path is the primary action: push is paused or the user
# said a request was not theirs (as Microsoft Authenticator and Duo do).
CODE_FIRST = frozenset({"reported", "withdrawn"})
# How long one long-poll of the event stream waits before it reports "still waiting"
# (keeps proxies from closing an idle stream).
POLL_S = 20
MAX_SENDS = 5  # push requests per sign-in (the first one and four "Send again")


@dataclass(frozen=True, slots=True)
class StatusView:
    status: str
    label: str
    message: str
    final: bool
    tone: str  # info | success | error


STATUS_VIEWS: dict[str, StatusView] = {
    Status.PENDING: StatusView(
        "pending", "Waiting", "Waiting for you to approve the request in the app.", False, "info"
    ),
    Status.APPROVED: StatusView("approved", "Approved", "Approved. Just a moment.", True, "success"),
    Status.DENIED: StatusView(
        "denied", "Denied", "The request was denied in the app. Nothing was signed in.", True, "error"
    ),
    Status.NUMBER_MISMATCH: StatusView(
        "number_mismatch",
        "Wrong number",
        "The number entered in the app did not match the number on this page, so the request "
        "was denied. Send a new request and enter the number shown here.",
        True,
        "error",
    ),
    Status.REPORTED: StatusView(
        "reported",
        "Reported",
        "The request was reported as not made by you. Nothing was signed in, and push requests "
        "to your devices are paused. If this was you, sign in with a verification code from the "
        "app: you will then be asked to change your password, which resumes push requests.",
        True,
        "error",
    ),
    Status.EXPIRED: StatusView(
        "expired", "Expired", "The request expired before it was answered. Send a new one.", True, "error"
    ),
    Status.CANCELLED: StatusView(
        "cancelled", "Cancelled", "This request was cancelled. Send a new one to continue.", True, "error"
    ),
    Status.SUPERSEDED: StatusView(
        "superseded",
        "Replaced",
        "A newer request was sent to your devices, so this one can no longer be answered.",
        True,
        "error",
    ),
    Status.WITHDRAWN: StatusView(
        "withdrawn",
        "Withdrawn",
        "This request was withdrawn: a request was reported as not made by you, or push requests "
        "to your devices are paused. Sign in with a verification code from the app instead.",
        True,
        "error",
    ),
}
UNVERIFIED = StatusView(
    "unverified",
    "Not accepted",
    "The answer could not be verified with the keys of your devices, so it was not accepted.",
    True,
    "error",
)
# An answer signed outside the request's lifetime by this server's clock (the SDK's
# stale_answer): the device signed this very request (its signature verifies), so a clock
# is off, this server's or the device's, not a forgery (credentials.clock_off logs which).
_CLOCK_OFF = (
    "Your approval could not be confirmed because a clock is off, on this service or on your "
    "device. Check that your phone's date and time are right (set automatically), then send a new request"
)
CLOCK_OFF = StatusView(
    "clock_off", "Not confirmed", _CLOCK_OFF + " or use a verification code instead.", True, "error"
)
CLOCK_OFF_SETUP = StatusView("clock_off", "Not confirmed", _CLOCK_OFF + ".", True, "error")
UNAVAILABLE = StatusView(
    "unavailable",
    "Connection problem",
    "The sign-in service cannot be reached right now. Still trying.",
    False,
    "error",
)


ENDED = StatusView(
    "ended", "Ended", "This request ended without an approval. Send a new one to continue.", True, "error"
)


# A setup's test notification signs nobody in: where the sign-in words would say so, what
# its page says instead.
SETUP_VIEWS: dict[str, StatusView] = {
    Status.DENIED: StatusView(
        "denied",
        "Denied",
        "The test notification was denied in the app, so the device was not added. Send it again "
        "to finish adding it, or remove the device on Security info.",
        True,
        "error",
    ),
    Status.REPORTED: StatusView(
        "reported",
        "Reported",
        "The test notification was reported as not made by you, so the device was not added, and "
        "push requests to your devices are paused. If you did not add this device, remove it on "
        "Security info and change your password.",
        True,
        "error",
    ),
}


def view_of(status: Status, purpose: str = SIGNIN) -> StatusView:
    """What the page of `purpose` shows for a verified status; one this demo does not know
    (from a newer SDK or broker) is ended and not approved."""
    if purpose == SETUP and status in SETUP_VIEWS:
        return SETUP_VIEWS[status]
    return STATUS_VIEWS.get(status, ENDED)


def refused_answer(
    request: web.Request, user: User, challenge: Challenge, exc: VerificationFailed
) -> StatusView:
    """An answer the SDK refused, logged: what the page says of it."""
    credentials.answer_refused(request.app[DB], user, exc, request.app[CLIENT].clock)
    if exc.reason is VerificationReason.STALE_ANSWER:
        return CLOCK_OFF_SETUP if is_setup_test(challenge.context) else CLOCK_OFF
    return UNVERIFIED


def public_keys(db: Database, user: User, challenge: Challenge) -> dict[str, bytes]:
    """The keys that may answer `challenge`: an answer signed by anything else is refused.
    A setup's test push (targeted) only the new device's; a request aimed at devices
    (removals pending) only theirs; any other request only the devices whose setup was
    finished: a device becomes active for sign-ins once its test push is approved,
    whatever a broker routes to it."""
    aimed = challenge.aimed_at
    if aimed is not None:  # its devices, as the RP chose them (relying_party.keys_for)
        return {d.credential_id: d.public_key for d in db.devices(user.id) if d.credential_id in aimed}
    return {d.credential_id: d.public_key for d in db.devices(user.id, confirmed_only=True)}


async def verified(
    request: web.Request,
    user: User,
    challenge: Challenge,
    read: Callable[[dict[str, bytes]], Awaitable[SignInResult]],
    again: Callable[[dict[str, bytes]], Awaitable[SignInResult]],
) -> SignInResult:
    """read(our keys), verified end to end by the SDK. An answer from a credential we do
    not hold may come from a device restored since we last looked: the devices are
    synced with the broker (which adds it only with a recovery proof our stored
    recovery key signed) and the result read once more with `again`."""
    db = request.app[DB]
    try:
        result = await read(public_keys(db, user, challenge))
    except VerificationFailed as exc:
        if exc.reason is not VerificationReason.UNKNOWN_CREDENTIAL:
            raise
        try:
            await credentials.sync(request.app[CLIENT], db, user)
        except PushAuthError:
            raise exc from None
        keys = public_keys(db, user, challenge)
        if exc.credential_id is None or exc.credential_id not in keys:
            raise
        result = await again(keys)
    note_setup_report(db, user, challenge, result)
    return result


def note_setup_report(db: Database, user: User, challenge: Challenge, result: SignInResult) -> None:
    """A setup's test notification reported "this wasn't me" by the device being added (its
    own verified signature): kept with the device, for Security info to say so wherever the
    result was read (its page, its event stream, a later visit: finish_from_test)."""
    cid = result.credential_id
    aimed = challenge.aimed_at
    if (
        result.status is Status.REPORTED
        and cid is not None
        and is_setup_test(challenge.context)
        and (aimed is None or cid in aimed)
    ):
        db.note_setup_report(user.id, cid)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why no push request was sent, for the person (`message`) and the page (`reason`)."""

    reason: str  # paused | blocked | rate_limited | no_devices | unavailable | too_many | failed
    message: str
    until: int | None = None  # ms: the end of a pause (None: until lifted, or not a pause)


PAUSED_HERE = Refusal("paused", push_pause.paused_message(push_pause.REPORTED.until, reported_here=True))
NO_DEVICES = Refusal(
    "no_devices", "None of your devices can receive requests right now. Use a verification code instead."
)


async def refusal(request: web.Request, user: User, exc: PushAuthError) -> Refusal:
    """What the person reads when a push request could not be sent. A block is looked up
    at the broker (GET push-block): a pause after a report says until when; a block after
    too many requests says how it ends."""
    if isinstance(exc, NoDevices):
        return NO_DEVICES
    if isinstance(exc, PushBlocked):
        try:
            state = await request.app[CLIENT].push_block(user.handle)
        except PushAuthError:
            state = None
        pause = push_pause.pause_of(state, now_ms())
        if pause is not None and pause.kind == "paused":
            message = push_pause.paused_message(pause.until, reported_here=False)
            return Refusal("paused", message, pause.until)
        return Refusal("blocked", push_pause.BLOCKED_MESSAGE)
    if isinstance(exc, RateLimited):
        wait = exc.retry_after or 60
        unit = "second" if wait == 1 else "seconds"
        return Refusal(
            "rate_limited",
            f"Too many requests were sent to your devices in the last minute. Wait {wait} {unit} "
            "before sending another, or use a verification code now.",
            now_ms() + wait * 1000,
        )
    if isinstance(exc, BrokerUnavailable):
        return Refusal(
            "unavailable",
            "The sign-in service cannot be reached right now. Use a verification code, or try again later.",
        )
    log.warning("push request failed: %s", exc)
    return Refusal("failed", "The request could not be sent. Try again, or use a verification code.")


def remember_refusal(request: web.Request, purpose: str, why: Refusal) -> None:
    """Shown once by the page the person lands on (the code form), like a flash."""
    get_session(request)["push_refusal"] = {"purpose": purpose, **asdict(why)}


def take_refusal(request: web.Request, purpose: str) -> Refusal | None:
    kept = get_session(request).pop("push_refusal")
    if not isinstance(kept, dict) or kept.pop("purpose", None) != purpose:
        return None
    return Refusal(**kept)


def _setup_refusal(why: Refusal, name: str) -> Refusal:
    """A setup's test notification kept back by a pause of push, in the words of a person
    signed in on Security info (whose banner says why and until when), where it is shown
    (Add sign-in method's last step, Finish setup, Send again). The sign-in pages' words
    ("sign in with a verification code ... you will then be asked to change your
    password") told someone signed in already to sign in."""
    if why.reason == "paused":
        message = (
            f"The test notification to {name} was not sent: push requests to your devices are "
            "paused. Change your password to resume them, then choose Finish setup next to it."
        )
    elif why.reason == "blocked":
        message = (
            f"The test notification to {name} was not sent: push requests to your devices are "
            "paused after too many without a successful sign-in. They resume the next time you "
            "sign in; then choose Finish setup next to it."
        )
    else:
        return why
    return replace(why, message=message)


def _tracked(purpose: str) -> bool:
    return purpose in (SIGNIN, REAUTH)  # sign-in activity; a setup's test push is not a sign-in


async def start(
    request: web.Request,
    user: User,
    purpose: str,
    *,
    enrollment: str | None = None,
    credential: str | None = None,
) -> Refusal | None:
    """Send a push request and remember it in the session; why not, if it was not sent.

    A request of the same purpose still in the session is cancelled first: exactly one
    is live, the one whose number the page shows."""
    settings = request.app[SETTINGS]
    session = get_session(request)
    db = request.app[DB]
    context = signin_context.build(request, settings.app_name)
    await retire(request, purpose, "replaced")
    if purpose == SETUP:
        # The agreed marker (docs/protocol.md 15.1): the device asks "finish adding this
        # device?" and points at the setup page's number, not a sign-in screen.
        context = setup_test_context(context)
    elif purpose == REAUTH:
        # The agreed marker for a re-authentication (docs/protocol.md 15.1): the device
        # asks whether this is you verifying your identity, not whether you are signing in.
        context["action"] = "Verify it's you before changing your security info"
        context = verify_context(context)

    def refused(why: Refusal) -> Refusal:
        if _tracked(purpose):
            activity.record(db, user, "push", "refused", context, purpose=purpose, detail=why.reason)
        if purpose == SETUP:
            device = db.device(user.id, credential) if credential is not None else None
            return _setup_refusal(why, device.name if device is not None else "your new device")
        return why

    if db.unresolved_report(user.id):
        # Reported as "not me" here and the password not changed since: no push, whatever
        # the broker says (push_pause.py), as when the broker refuses with its pause.
        return refused(PAUSED_HERE)
    # Checked after the pause, which is the reason to give: "That is enough requests for one
    # sign-in ... or start again" after a report promised a push that starting again would
    # not bring.
    if purpose == SIGNIN:
        # However many the broker allows, one sign-in never sends more than a few:
        # a flood of requests is how push fatigue attacks work.
        pending = session["pending"]
        if pending.get("sends", 0) >= MAX_SENDS:
            return Refusal(
                "too_many",
                "That is enough requests for one sign-in. Use a verification code, or start again.",
            )
        pending["sends"] = pending.get("sends", 0) + 1
        session["pending"] = pending
    client = request.app[CLIENT]
    # A setup's test push goes to the device being added only: it is the one that must
    # prove it works, and it gets no other requests until it did.
    targets = (credential,) if purpose == SETUP and credential is not None else None
    if purpose != SETUP:
        targets = await _avoid_removed(client, db, user)

    if targets == ():
        # No device here, and the broker still has removed ones: only they would be asked.
        return refused(NO_DEVICES)

    async def create(aimed: tuple[str, ...] | None) -> Challenge:
        return await client.create_challenge(
            user.handle,
            context,
            ttl=await setup_ttl(client, settings) if purpose == SETUP else settings.push_ttl,
            digits=settings.push_digits,
            credential_ids=aimed,
        )

    try:
        try:
            challenge = await create(targets)
        except NotFound as exc:
            if purpose == SETUP or targets is None:
                raise
            # Some of our devices are not active at the broker (removed on the phone):
            # the request goes to the others (the next sync drops those on the broker's
            # word). None left: only removed phones could be asked, so none is.
            gone = set(exc.credential_ids) or set(targets)
            targets = tuple(cid for cid in targets if cid not in gone)
            if not targets:
                return refused(NO_DEVICES)
            challenge = await create(targets)
    except PushAuthError as exc:
        return refused(await refusal(request, user, exc))
    session.pop("push_refusal")
    if purpose == SETUP and credential is not None:
        # Kept with the device too: approved after this session or page is gone, it
        # still finishes the setup (views_security.finish_from_test).
        db.set_setup_challenge(credential, json.dumps(challenge.to_json()))
    session["push"] = {
        "purpose": purpose,
        "uid": user.id,
        "challenge": challenge.to_json(),
        "enrollment": enrollment,
        "credential": credential,
        # With removals pending, the devices it was aimed at, whatever the broker counts.
        "devices": challenge.devices if targets is None else min(challenge.devices, len(targets)),
    }
    if _tracked(purpose):
        db.add_activity(
            user.id,
            "push",
            "pending",
            context,
            purpose=purpose,
            challenge_id=challenge.id,
            challenge=json.dumps(challenge.to_json()),
        )
    return None


async def _avoid_removed(client: PushAuthClient, db: Database, user: User) -> tuple[str, ...] | None:
    """Before a sign-in request: the revocations of devices the user removed that the
    broker has not confirmed are asked again (revocations.py). If some are still pending,
    the broker routes by user and would send the request to those phones too (whose
    answers count nowhere: public_keys, but whose holder, perhaps a thief, would see the
    sign-in's context and its person be asked). So the request is aimed at the devices
    that can approve (the RP API's credential_ids): the removed phones get none. Returns
    them (empty: none is left, so no request may go), or None when no removal is pending
    (the user's devices as the broker has them)."""
    _confirmed, pending = await revocations.retry_for_user(client, db, user)
    if not pending:
        return None
    # The RP API takes at most MAX_TARGETS; a person with more devices than that keeps
    # the ones set up last out of such a request (db.devices: oldest first).
    return tuple(d.credential_id for d in db.devices(user.id, confirmed_only=True))[:MAX_TARGETS]


async def setup_ttl(client: PushAuthClient, settings: Settings) -> int | None:
    """A setup test push's lifetime: settings.setup_push_ttl, or a sign-in's when that is
    longer, but never above what the RP's policy at the broker allows (its max_ttl),
    which would be refused. The policy is read for it (GET /v1/rp/policy: one request,
    and setups are rare); when the broker answers without it, a sign-in's lifetime
    (push_ttl, or None: the policy's own ttl), which the broker accepts whenever it
    accepts sign-ins. A broker that cannot be reached raises BrokerUnavailable: the push
    would wait for it once more (a hung broker cost the page two request timeouts)."""
    try:
        policy = await client.policy()
    except BrokerUnavailable:
        raise
    except PushAuthError as exc:
        log.warning("the RP's policy could not be read (%s): the setup push gets a sign-in's lifetime", exc)
        return settings.push_ttl
    ttl, max_ttl = policy.get("ttl"), policy.get("max_ttl")
    if not (type(ttl) is int and type(max_ttl) is int):
        log.warning("the broker's policy lacks ttl or max_ttl: the setup push gets a sign-in's lifetime")
        return settings.push_ttl
    signin = ttl if settings.push_ttl is None else settings.push_ttl
    return min(max_ttl, max(signin, settings.setup_push_ttl))


def settle(db: Database, challenge_id: str, status: Status | str, device: str | None = None) -> None:
    """Record a push attempt's final result in the activity (once; later calls change nothing).
    A `Status` is mapped (a StrEnum is a str too, so it is tested first): stored raw, a
    pending one would end the row's wait and drop the challenge that settle_pending reads."""
    result = activity.result_of(status) if isinstance(status, Status) else status
    if result is not None:
        db.settle_activity(challenge_id, result, device)


def _stored(request: web.Request, purpose: str) -> tuple[dict[str, Any], Challenge] | None:
    session = get_session(request)
    push = session.get("push")
    if not push or push.get("purpose") != purpose:
        return None
    try:
        return push, Challenge.from_stored(push["challenge"])
    except (BadBrokerResponse, KeyError, TypeError, ValueError):
        # Kept by an older version of this demo (e.g. without the SDK's rp_nonce): it
        # cannot be verified any more, so it is dropped and the step starts again.
        log.info("dropping a push request kept in an older form")
        session.pop("push")
        return None


async def retire(request: web.Request, purpose: str, why: str = "cancelled") -> SignInResult | None:
    """End the session's request for `purpose` at the broker, then forget it: the person
    sent a new one (`why` "replaced"), cancelled, or signed in another way, so the phone
    must not keep asking (a prompt left live could still be approved, or confuse the
    next one). If it had ended before (answered, expired), its verified result is
    returned, so an approval that came in meanwhile is not thrown away."""
    stored = _stored(request, purpose)
    get_session(request).pop("push")
    if stored is None:
        return None
    push, challenge = stored
    db = request.app[DB]
    try:
        cancelled = await request.app[CLIENT].cancel_challenge(challenge)
    except PushAuthError as exc:
        # It still ends at its expiry; nothing the person does depends on this.
        log.warning("could not cancel push request %s: %s", challenge.id, exc)
        return None
    if cancelled:
        settle(db, challenge.id, why)
        return None
    user = db.user_by_id(push["uid"])
    if user is None:
        return None
    outcome = await _result(request, user, challenge)
    if isinstance(outcome, StatusView):
        return None
    settle(db, challenge.id, outcome.status, _device_name(db, user, outcome))
    return outcome


async def withdraw(request: web.Request, purpose: str) -> None:
    """Cancel the session's request: the person cancelled or signed in another way."""
    await retire(request, purpose, "cancelled")


def _device_name(db: Database, user: User, outcome: SignInResult) -> str | None:
    cid = outcome.credential_id
    device = db.device(user.id, cid) if cid else None
    return device.name if device else None


async def settle_pending(request: web.Request, user: User) -> None:
    """Read and verify the result of the user's push attempts still marked pending
    (their page was closed: an attacker's, after a report), so the activity and the
    fraud check see what really happened."""
    db = request.app[DB]
    for row in db.pending_activity(user.id):
        try:
            challenge = Challenge.from_stored(json.loads(row.challenge or "null"))
        except (BadBrokerResponse, KeyError, TypeError, ValueError):
            settle(db, row.challenge_id or "", "expired")
            continue
        outcome = await _result(request, user, challenge)
        if outcome in (UNVERIFIED, CLOCK_OFF, CLOCK_OFF_SETUP):
            settle(db, challenge.id, outcome.status)
        elif isinstance(outcome, SignInResult) and outcome.final:
            settle(db, challenge.id, outcome.status, _device_name(db, user, outcome))
        elif outcome is STATUS_VIEWS[Status.EXPIRED] or challenge.expires_at < now_ms() - 60_000:
            settle(db, challenge.id, "expired")  # the broker forgot it: it cannot be answered


def _owner(request: web.Request, purpose: str) -> User:
    if purpose == SIGNIN:
        return auth.pending_user(request)
    # "Verify it's you" is also the way to the password change that a report requires.
    return auth.require_user(request, password_change=purpose == REAUTH)


def _purpose(value: object) -> str:
    if value not in PURPOSES:
        raise web.HTTPBadRequest(text="unknown purpose")
    return str(value)


async def page(
    request: web.Request, purpose: str, *, view: StatusView | None = None, status: int = 200
) -> web.Response:
    """The request page. Without a `view` it asks the broker (without waiting) how the
    request stands, so a reload never shows an ended request as live or a live one as
    ended; the event stream keeps it current from there."""
    stored = _stored(request, purpose)
    if stored is None:
        raise web.HTTPSeeOther(HOMES[purpose])
    push, challenge = stored
    remaining = max(0, math.ceil((challenge.expires_at - now_ms()) / 1000))
    if view is None:
        owner = _owner(request, purpose)
        outcome = await _result(request, owner, challenge)
        if isinstance(outcome, SignInResult):
            view = view_of(outcome.status, purpose)
            # The device that answered is named, as settle_pending and retire name it.
            db = request.app[DB]
            settle(db, challenge.id, outcome.status, _device_name(db, owner, outcome))
        else:
            view = outcome
        if view.status == "pending" and remaining == 0:
            view = STATUS_VIEWS[Status.EXPIRED]  # by our clock, whatever the broker still says
    return render(
        request,
        "push.html",
        {
            "purpose": purpose,
            "number": challenge.number,
            "context": challenge.context,
            "devices": push.get("devices", challenge.devices),
            "remaining": remaining,
            "view": view,
            "code_first": view.status in CODE_FIRST,
            "code_url": HOMES[purpose] if purpose != SETUP else None,
            "enrollment": push.get("enrollment"),
        },
        status=status,
    )


def _payload(view: StatusView) -> dict[str, Any]:
    return {
        "status": view.status,
        "label": view.label,
        "message": view.message,
        "final": view.final,
        "tone": view.tone,
        # Which action the page makes primary and focuses once the request ended.
        "next": "code" if view.status in CODE_FIRST else "again",
    }


async def events(request: web.Request) -> web.StreamResponse:
    """GET /push/events?purpose=...: the request's status as server-sent events."""
    purpose = _purpose(request.query.get("purpose", SIGNIN))
    user = _owner(request, purpose)
    stored = _stored(request, purpose)
    if stored is None:
        raise web.HTTPNotFound(text="no push request in progress")
    _push, challenge = stored
    response = await sse.open_stream(request)
    client = request.app[CLIENT]
    db = request.app[DB]
    if not await sse.send(response, "status", _payload(STATUS_VIEWS[Status.PENDING])):
        return response
    while True:
        try:
            result = await verified(
                request,
                user,
                challenge,
                lambda keys: client.wait_result(challenge, keys, timeout=POLL_S),
                lambda keys: client.get_result(challenge, keys),
            )
            view = view_of(result.status, purpose)
            # An approval is recorded by the POST that finishes the step, and a request we
            # ended ourselves by retire(), which knows why (replaced or cancelled).
            if result.status not in (Status.APPROVED, Status.CANCELLED, Status.SUPERSEDED):
                settle(db, challenge.id, result.status, _device_name(db, user, result))
        except VerificationFailed as exc:
            view = refused_answer(request, user, challenge, exc)
            settle(db, challenge.id, view.status)
        except NotFound:
            view = STATUS_VIEWS[Status.EXPIRED]  # the broker no longer knows it: it cannot be answered
            settle(db, challenge.id, "expired")
        except BrokerUnavailable:
            view = UNAVAILABLE
        except PushAuthError as exc:
            log.warning("cannot read the push result: %s", exc)
            view = UNAVAILABLE
        if not await sse.send(response, "status", _payload(view)) or view.final:
            break
        if view is UNAVAILABLE:
            await asyncio.sleep(2)
    return response


async def _result(request: web.Request, user: User, challenge: Challenge) -> SignInResult | StatusView:
    client = request.app[CLIENT]
    try:
        return await verified(
            request,
            user,
            challenge,
            lambda keys: client.get_result(challenge, keys),
            lambda keys: client.get_result(challenge, keys),
        )
    except VerificationFailed as exc:
        return refused_answer(request, user, challenge, exc)
    except NotFound:
        return STATUS_VIEWS[Status.EXPIRED]
    except PushAuthError:
        return UNAVAILABLE


# What finishes each purpose once its request is approved and verified: set by the
# modules that own the step (views_signin, reauth), so this one needs none of them.
Finisher = Callable[[web.Request, User, SignInResult], Awaitable[web.StreamResponse]]
FINISHERS: dict[str, Finisher] = {}


async def complete(request: web.Request) -> web.StreamResponse:
    """POST /push/complete: finish the step if (and only if) the answer verifies as approved."""
    form = await request.post()
    purpose = _purpose(form.get("purpose"))
    user = _owner(request, purpose)
    stored = _stored(request, purpose)
    if stored is None:
        raise web.HTTPSeeOther(HOMES[purpose])
    _push, challenge = stored
    outcome = await _result(request, user, challenge)
    if isinstance(outcome, StatusView):
        return await page(request, purpose, view=outcome, status=409)
    settle(request.app[DB], challenge.id, outcome.status, _device_name(request.app[DB], user, outcome))
    if not outcome.approved or outcome.answer is None:
        return await page(request, purpose, view=view_of(outcome.status, purpose))
    return await _finish(request, purpose, user, outcome)


async def _finish(
    request: web.Request, purpose: str, user: User, outcome: SignInResult
) -> web.StreamResponse:
    if purpose in FINISHERS:
        request.app[DB].touch_device(outcome.answer.credential_id if outcome.answer else "")
        return await FINISHERS[purpose](request, user, outcome)
    return await _finish_setup(request, user, outcome)


async def _finish_setup(request: web.Request, user: User, outcome: SignInResult) -> web.StreamResponse:
    db = request.app[DB]
    session = get_session(request)
    stored = _stored(request, SETUP)
    push = stored[0] if stored else {}
    cid = outcome.credential_id
    if cid != push.get("credential"):
        return await page(
            request,
            SETUP,
            view=StatusView(
                "other_device",
                "Approved elsewhere",
                "That request was approved on another of your devices. Send a new one and approve it "
                "on the device you are adding.",
                True,
                "error",
            ),
            status=409,
        )
    # The broker sends the device ordinary sign-in requests only from now on.
    try:
        await request.app[CLIENT].confirm_credential(cid)
    except NotFound:
        session.pop("push")
        session.flash("error", "That device was removed meanwhile. Start again to add it.")
        raise web.HTTPSeeOther("/security") from None
    except PushAuthError as exc:
        log.warning("cannot confirm credential %s: %s", cid, exc)
        return await page(request, SETUP, view=UNAVAILABLE, status=409)
    db.confirm_device(cid)
    session.pop("push")
    device = db.device(user.id, cid)
    session.flash(
        "success", f"{device.name if device else 'The device'} is set up: it can now approve sign-ins."
    )
    raise web.HTTPSeeOther("/security")


async def use_code(request: web.Request) -> web.StreamResponse:
    """POST /push/use-code ("Use a verification code instead"): the request on the phone
    is withdrawn first, since it covers the phone's codes until it is answered or
    expires; then the code page (which offers "Send a request to my app instead"). An
    approval that came in meanwhile still finishes the step."""
    form = await request.post()
    purpose = _purpose(form.get("purpose"))
    if purpose == SETUP:  # a device being added has no code step
        raise web.HTTPSeeOther("/security")
    user = _owner(request, purpose)
    earlier = await retire(request, purpose, "cancelled")
    if earlier is not None and earlier.approved:
        return await _finish(request, purpose, user, earlier)
    raise web.HTTPSeeOther(HOMES[purpose])


async def resend(request: web.Request) -> web.StreamResponse:
    """POST /push/resend: a new request (a new number) for the same step. The earlier one
    is cancelled first; if it was approved meanwhile, that approval finishes the step."""
    form = await request.post()
    purpose = _purpose(form.get("purpose"))
    user = _owner(request, purpose)
    stored = _stored(request, purpose)
    if stored is None and purpose == SETUP:
        raise web.HTTPSeeOther("/security")
    # There may be none yet: the first request could not be sent, and the person asks
    # for one from the code page.
    push = stored[0] if stored else {}
    earlier = await retire(request, purpose, "replaced")
    if earlier is not None and earlier.approved:
        if purpose == SETUP:
            get_session(request)["push"] = push  # _finish_setup checks it was the new device
        return await _finish(request, purpose, user, earlier)
    why = await start(
        request, user, purpose, enrollment=push.get("enrollment"), credential=push.get("credential")
    )
    if why is not None:
        # Nothing is live now (the earlier request was cancelled): the page says why
        # none was sent, and offers the code.
        if purpose == SETUP:
            get_session(request).flash("error", why.message)
        else:
            remember_refusal(request, purpose, why)
        raise web.HTTPSeeOther(HOMES[purpose])
    raise web.HTTPSeeOther(PAGES[purpose])
