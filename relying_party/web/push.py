"""The push request page shared by sign-in and by the setup's test notification.

The session holds the challenge as the SDK returned it (its nonce, number and the
context we sent are what the device's answer must be signed over). The page shows
the number and follows the result live through server-sent events; the step is
finished only by a POST that asks the broker again and verifies the answer with the
keys in our own database (the event stream never changes the session).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from protocol.challenge import Status

from ..errors import (
    BadBrokerResponse,
    BrokerError,
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
from . import auth, credentials, signin_context, sse
from .db import Database, User, now_ms
from .keys import CLIENT, DB, SETTINGS
from .render import render
from .sessions import get_session

log = logging.getLogger(__name__)

SIGNIN = "signin"
SETUP = "setup"
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
        "for this account are paused. If this was you, use a verification code.",
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
        "This request was withdrawn after a report that a request was not made by you. "
        "Use a verification code instead.",
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


def view_of(status: Status) -> StatusView:
    """What the page shows for a verified status; one this demo does not know (from a
    newer SDK or broker) is ended and not approved."""
    return STATUS_VIEWS.get(status, ENDED)


def public_keys(db: Database, user: User) -> dict[str, bytes]:
    """Every key we stored for the user: an answer signed by anything else is refused."""
    return {d.credential_id: d.public_key for d in db.devices(user.id)}


async def verified(
    request: web.Request,
    user: User,
    read: Callable[[dict[str, bytes]], Awaitable[SignInResult]],
    again: Callable[[dict[str, bytes]], Awaitable[SignInResult]],
) -> SignInResult:
    """read(our keys), verified end to end by the SDK. An answer from a credential we do
    not hold may come from a device restored since we last looked: the devices are
    synced with the broker (which adds it only with a recovery proof our stored
    recovery key signed) and the result read once more with `again`."""
    db = request.app[DB]
    try:
        return await read(public_keys(db, user))
    except VerificationFailed as exc:
        if exc.reason is not VerificationReason.UNKNOWN_CREDENTIAL:
            raise
        try:
            await credentials.sync(request.app[CLIENT], db, user)
        except PushAuthError:
            raise exc from None
        keys = public_keys(db, user)
        if exc.credential_id is None or exc.credential_id not in keys:
            raise
        return await again(keys)


def start_problem(exc: PushAuthError) -> str:
    """What the person reads when a push request could not be sent."""
    if isinstance(exc, NoDevices):
        return "None of your devices can receive requests right now. Use a verification code instead."
    if isinstance(exc, PushBlocked):
        return (
            "Push requests to your devices are paused (after a report that a request was not you, "
            "or after too many unanswered requests). Use a verification code instead."
        )
    if isinstance(exc, RateLimited):
        return "Too many requests were sent to your devices. Wait a little, or use a verification code."
    if isinstance(exc, BrokerUnavailable):
        return "The sign-in service cannot be reached right now. Use a verification code, or try again later."
    if isinstance(exc, BrokerError) and exc.status == 409:
        return f"A request cannot be sent right now ({exc.detail or exc.code}). Use a verification code."
    log.warning("push request failed: %s", exc)
    return "The request could not be sent. Try again, or use a verification code."


async def start(
    request: web.Request,
    user: User,
    purpose: str,
    *,
    enrollment: str | None = None,
    credential: str | None = None,
) -> str | None:
    """Send a push request and remember it in the session; a message if it failed."""
    settings = request.app[SETTINGS]
    session = get_session(request)
    if purpose == SIGNIN:
        # However many the broker allows, one sign-in never sends more than a few:
        # a flood of requests is how push fatigue attacks work.
        pending = session["pending"]
        if pending.get("sends", 0) >= MAX_SENDS:
            return "That is enough requests for one sign-in. Use a verification code, or start again."
        pending["sends"] = pending.get("sends", 0) + 1
        session["pending"] = pending
    context = signin_context.build(request, settings.app_name)
    if purpose == SETUP:
        context["action"] = "Test notification: finish adding this device"
    try:
        challenge = await request.app[CLIENT].create_challenge(
            user.handle,
            context,
            ttl=settings.push_ttl,
            digits=settings.push_digits,
            # A setup's test push goes to the device being added only: it is the one
            # that must prove it works, and it gets no other requests until it did.
            credential_id=credential if purpose == SETUP else None,
        )
    except PushAuthError as exc:
        return start_problem(exc)
    session["push"] = {
        "purpose": purpose,
        "uid": user.id,
        "challenge": challenge.to_json(),
        "enrollment": enrollment,
        "credential": credential,
    }
    return None


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


async def withdraw(request: web.Request, purpose: str) -> None:
    """End the session's request for `purpose` at the broker, then forget it: the person
    cancelled, or signed in another way, so the phone must not keep asking (a prompt
    left live could still be approved, or confuse the next one)."""
    stored = _stored(request, purpose)
    get_session(request).pop("push")
    if stored is None:
        return
    try:
        await request.app[CLIENT].cancel_challenge(stored[1])
    except PushAuthError as exc:
        # It still ends at its expiry; nothing the person does depends on this.
        log.warning("could not cancel push request %s: %s", stored[1].id, exc)


def _owner(request: web.Request, purpose: str) -> User:
    return auth.pending_user(request) if purpose == SIGNIN else auth.require_user(request)


def page(
    request: web.Request,
    purpose: str,
    *,
    view: StatusView | None = None,
    problem: str | None = None,
    status: int = 200,
) -> web.Response:
    stored = _stored(request, purpose)
    if stored is None:
        raise web.HTTPSeeOther("/signin" if purpose == SIGNIN else "/security")
    push, challenge = stored
    remaining = max(0, math.ceil((challenge.expires_at - now_ms()) / 1000))
    if view is None:
        view = STATUS_VIEWS[Status.PENDING] if remaining > 0 else STATUS_VIEWS[Status.EXPIRED]
    return render(
        request,
        "push.html",
        {
            "purpose": purpose,
            "number": challenge.number,
            "context": challenge.context,
            "devices": challenge.devices,
            "remaining": remaining,
            "view": view,
            "problem": problem,
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
    }


async def events(request: web.Request) -> web.StreamResponse:
    """GET /push/events?purpose=...: the request's status as server-sent events."""
    purpose = request.query.get("purpose", SIGNIN)
    if purpose not in (SIGNIN, SETUP):
        raise web.HTTPBadRequest(text="unknown purpose")
    user = _owner(request, purpose)
    stored = _stored(request, purpose)
    if stored is None:
        raise web.HTTPNotFound(text="no push request in progress")
    _push, challenge = stored
    response = await sse.open_stream(request)
    client = request.app[CLIENT]
    if not await sse.send(response, "status", _payload(STATUS_VIEWS[Status.PENDING])):
        return response
    while True:
        try:
            result = await verified(
                request,
                user,
                lambda keys: client.wait_result(challenge, keys, timeout=POLL_S),
                lambda keys: client.get_result(challenge, keys),
            )
            view = view_of(result.status)
        except VerificationFailed as exc:
            credentials.security_event(user, "an answer failed end-to-end verification", exc)
            view = UNVERIFIED
        except NotFound:
            view = STATUS_VIEWS[Status.EXPIRED]  # the broker no longer knows it: it cannot be answered
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
            lambda keys: client.get_result(challenge, keys),
            lambda keys: client.get_result(challenge, keys),
        )
    except VerificationFailed as exc:
        credentials.security_event(user, "an answer failed end-to-end verification", exc)
        return UNVERIFIED
    except NotFound:
        return STATUS_VIEWS[Status.EXPIRED]
    except PushAuthError:
        return UNAVAILABLE


async def complete(request: web.Request) -> web.StreamResponse:
    """POST /push/complete: finish the step if (and only if) the answer verifies as approved."""
    form = await request.post()
    purpose = form.get("purpose")
    if purpose not in (SIGNIN, SETUP):
        raise web.HTTPBadRequest(text="unknown purpose")
    user = _owner(request, purpose)
    stored = _stored(request, purpose)
    if stored is None:
        raise web.HTTPSeeOther("/signin" if purpose == SIGNIN else "/security")
    push, challenge = stored
    outcome = await _result(request, user, challenge)
    if isinstance(outcome, StatusView):
        return page(request, purpose, view=outcome, status=409)
    if not outcome.approved or outcome.answer is None:
        return page(request, purpose, view=view_of(outcome.status))
    db = request.app[DB]
    cid = outcome.answer.credential_id
    session = get_session(request)
    if purpose == SIGNIN:
        db.touch_device(cid)
        device = db.device(user.id, cid)
        auth.finish_signin(request, user, f"Push notification ({device.name if device else 'a device'})")
        raise web.HTTPSeeOther("/account")
    if cid != push.get("credential"):
        return page(
            request,
            purpose,
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
        return page(request, purpose, view=UNAVAILABLE, status=409)
    db.confirm_device(cid)
    session.pop("push")
    device = db.device(user.id, cid)
    session.flash(
        "success", f"{device.name if device else 'The device'} is set up: it can now approve sign-ins."
    )
    raise web.HTTPSeeOther("/security")


async def resend(request: web.Request) -> web.StreamResponse:
    """POST /push/resend: a new request (a new number) for the same step."""
    form = await request.post()
    purpose = form.get("purpose")
    if purpose not in (SIGNIN, SETUP):
        raise web.HTTPBadRequest(text="unknown purpose")
    user = _owner(request, purpose)
    stored = _stored(request, purpose)
    if stored is None and purpose == SETUP:
        raise web.HTTPSeeOther("/security")
    # For sign-in there may be none yet: the first request could not be sent, and the
    # person asks for one from the code page.
    push = stored[0] if stored else {}
    problem = await start(
        request, user, purpose, enrollment=push.get("enrollment"), credential=push.get("credential")
    )
    if problem is not None and stored is None:
        get_session(request).flash("error", problem)
        raise web.HTTPSeeOther("/signin/code")
    if problem is not None:
        return page(request, purpose, view=STATUS_VIEWS[Status.EXPIRED], problem=problem, status=409)
    raise web.HTTPSeeOther("/signin/push" if purpose == SIGNIN else "/security/test-notification")
