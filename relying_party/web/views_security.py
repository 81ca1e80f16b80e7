"""Security info: the user's devices; add one (QR code, wait, test push), rename, remove."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import replace
from urllib.parse import quote

from aiohttp import web

from ..errors import (
    BadBrokerResponse,
    BrokerUnavailable,
    NotFound,
    PushAuthError,
    RateLimited,
    TooManyCredentials,
    VerificationFailed,
)
from ..models import Challenge, EnrollmentRefusal
from ..models import Enrollment as BrokerEnrollment
from ..totp import new_totp
from . import (
    access_pass,
    auth,
    credentials,
    forms,
    fraud,
    push,
    push_pause,
    qr,
    reauth,
    recovery_codes,
    revocations,
    sse,
)
from .db import Database, Device, Enrollment, User, now_ms
from .keys import CLIENT, DB, SETTINGS
from .render import render
from .sessions import get_session

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
POLL_S = 20
SETUP_ENDED = frozenset({"completed", "expired", "unverified"})
REFUSED = "This setup could not be verified, so the device was not added. Start again with a new QR code."
# A device used the setup's link while the account had as many devices as the broker's
# policy allows (RP API 1.11): nothing was added, the setup goes on and its QR code works
# again once one is removed.
AT_DEVICE_CAP = (
    "This account already has the most devices allowed ({limit}). Remove one under Security info, "
    "then scan this code again."
)
# A refusal of a later broker's that this demo does not know: the device says why.
DEVICE_REFUSED = "The sign-in service refused that device ({code}); the app on it says why."


def _refused_words(refused: EnrollmentRefusal) -> str:
    if refused.max_credentials is None:
        return DEVICE_REFUSED.format(code=refused.code)
    return AT_DEVICE_CAP.format(limit=refused.max_credentials)


SYNC_UNAVAILABLE = (
    "The sign-in service cannot be reached right now: devices restored or removed elsewhere "
    "show up here once it can."
)
DROPPED = (
    "{name} is no longer registered with the sign-in service (removed in the app, or a restore "
    "was disowned on the old device), so it was removed here too."
)
FINISHED = "{name} is set up: it can now approve sign-ins."
# While a removal is pending (revocations.py), on every visit; the removal's own message
# (UNTOLD) leaves the rest to it.
REMOVAL_PENDING = (
    "{name} was removed, but the sign-in service has not confirmed it yet, so that device may "
    "still show sign-in requests (they cannot approve anything). This site keeps asking the "
    "service to remove it; you can also remove the account in the app on that device."
)
REMOVAL_CONFIRMED = "The sign-in service has now removed {name} too: it gets no more requests."
UNTOLD = (
    "{name} was removed here and can no longer approve sign-ins. The sign-in service could not be told yet."
)
SYNC_REFUSED = (
    "The sign-in service listed a device for your account that could not be verified. "
    "It was not added and cannot approve sign-ins."
)


async def finish_from_test(request: web.Request, user: User, device: Device) -> bool:
    """Finish a device's setup whose test notification was approved after its page was
    closed (or in another session): the result is read from the broker and verified end
    to end with the device's own key, as the test notification page does, then the
    credential is confirmed. True if the setup was finished now."""
    if device.confirmed or device.setup_challenge is None:
        return False
    client, db = request.app[CLIENT], request.app[DB]
    cid = device.credential_id
    try:
        challenge = Challenge.from_stored(json.loads(device.setup_challenge))
        result = await client.get_result(challenge, {cid: device.public_key})
    except (BadBrokerResponse, KeyError, TypeError, ValueError, NotFound):
        db.set_setup_challenge(cid, None)  # unreadable, or forgotten by the broker: none to finish
        return False
    except VerificationFailed as exc:
        credentials.answer_refused(db, user, exc, client.clock, "a setup's test answer")
        db.set_setup_challenge(cid, None)
        return False
    except PushAuthError as exc:
        log.warning("cannot read the test notification of %s: %s", cid, exc)
        return False
    push.note_setup_report(db, user, challenge, result)
    if not result.final:
        return False  # still waiting for the phone: looked at again next time
    if not result.approved or result.credential_id != cid:
        db.set_setup_challenge(cid, None)  # denied, expired, replaced: "Finish setup" sends a new one
        return False
    try:
        await client.confirm_credential(cid)
    except NotFound:
        db.set_setup_challenge(cid, None)  # removed at the broker: the next sync drops it
        return False
    except PushAuthError as exc:
        log.warning("cannot confirm credential %s: %s", cid, exc)
        return False
    db.confirm_device(cid)
    return True


@routes.get("/security")
async def security(request: web.Request) -> web.StreamResponse:
    """The user's devices, first brought in step with the broker (restores, removals)."""
    user = auth.require_user(request)
    db = request.app[DB]
    notices: list[tuple[str, str]] = []
    # Removals the broker has not confirmed are asked again first (the user is looking),
    # so that the list read next no longer names one it revokes now.
    confirmed, pending = await revocations.retry_for_user(request.app[CLIENT], db, user)
    notices += [("success", REMOVAL_CONFIRMED.format(name=p.name)) for p in confirmed]
    notices += [("info", REMOVAL_PENDING.format(name=p.name)) for p in pending]
    try:
        report = await credentials.sync(request.app[CLIENT], db, user)
    except PushAuthError as exc:
        log.warning("cannot check the devices of %s with the broker: %s", user.handle, exc)
        notices.append(("info", SYNC_UNAVAILABLE))
    else:
        notices += [("success", f"{r.name} was restored from {r.source_name}.") for r in report.restored]
        notices += [("info", DROPPED.format(name=name)) for name in report.dropped]
        if report.refused:
            notices.append(("error", SYNC_REFUSED))
    for device in db.devices(user.id):
        if await finish_from_test(request, user, device):
            notices.append(("success", FINISHED.format(name=device.name)))
    devices = db.devices(user.id)
    names = {d.credential_id: d.name for d in devices}
    pause = None
    if devices:  # this RP's record of a report first: it pauses push whatever the broker says
        reported = db.unresolved_report(user.id)
        pause = (
            push_pause.REPORTED
            if reported
            else push_pause.pause_of(await fraud.push_state(request, user), now_ms())
        )
        if pause is not None and pause.kind == "paused" and not pause.reported_here:
            pause = _with_setup_reporter(pause, user, devices)
    return render(
        request,
        "security.html",
        {
            "devices": devices,
            "user": user,
            "notices": notices,
            "names": names,
            "pause": pause,  # push paused after a report, or blocked (fraud.py)
            "second_factor": auth.second_factor_required(db, user),
            # Recovery methods (recovery_methods.html).
            "recovery": recovery_codes.summary(db, user.id),
            "access_pass": access_pass.latest(db, user.id),
        },
    )


def _with_setup_reporter(
    pause: push_pause.PushPause, user: User, devices: list[Device]
) -> push_pause.PushPause:
    """The broker's fraud pause, naming the device being added that reported its own setup's
    test notification since the password last changed (which lifts a pause): the likely
    cause, which the broker's word alone does not tell."""
    since = user.password_changed_at or 0
    reporters = [d for d in devices if d.setup_reported_at is not None and d.setup_reported_at > since]
    if not reporters:
        return pause
    latest = max(reporters, key=lambda d: d.setup_reported_at or 0)
    return replace(pause, setup_reported_by=latest.name)


@routes.get("/security/add")
async def add_method(request: web.Request) -> web.StreamResponse:
    auth.require_user(request)
    reauth.require_fresh(request, "/security/add")
    return render(request, "add_method.html", {"error": None})


@routes.post("/security/add")
async def add_authenticator(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    reauth.require_fresh(request, "/security/add")
    form = await request.post()
    if form.get("method") != "authenticator":
        return render(request, "add_method.html", {"error": "Choose a method to add."}, status=400)
    params = new_totp()
    db = request.app[DB]
    earlier = db.open_enrollments(user.id)
    try:
        # Recoverable: the app registers a recovery key, so a restore of its backup on a
        # new phone brings the account back without a new QR code (credentials.sync).
        created = await request.app[CLIENT].create_enrollment(
            user.handle, user.name, totp=params, recoverable=True
        )
    except TooManyCredentials as exc:
        # Said before a QR code is shown: the device's setup would be refused anyway.
        limit = f" ({exc.max_credentials})" if exc.max_credentials else ""
        message = (
            f"You have as many authenticators as this site allows{limit}. Remove one you no longer "
            "use on your Security info page, then add the new one."
        )
        return render(request, "add_method.html", {"error": message}, status=409)
    except RateLimited as exc:
        # The broker's enrollment quota is this site's, not this person's: many setups
        # started at once across the site (or one person starting setup after setup).
        minutes = max(1, math.ceil((exc.retry_after or 60) / 60))
        unit = "minute" if minutes == 1 else "minutes"
        message = (
            "Too many authenticator setups were started on this site just now. "
            f"Try again in {minutes} {unit}."
        )
        return render(request, "add_method.html", {"error": message}, status=429)
    except PushAuthError as exc:
        log.warning("enrollment failed: %s", exc)
        message = (
            "The sign-in service cannot be reached right now. Try again later."
            if isinstance(exc, BrokerUnavailable)
            else "The setup could not be started. Try again later."
        )
        return render(request, "add_method.html", {"error": message}, status=503)
    db.add_enrollment(Enrollment.started(created, user.id, params))
    # One live link per user: an earlier setup not used yet is withdrawn ("Add" twice, or
    # a setup page left open), so the link on the new page is the only one. After the new
    # one exists: a refused or failed start leaves the earlier setup working.
    for setup in earlier:
        try:
            await _withdraw(request, user, setup, keep_registered=True)
        except PushAuthError as exc:  # kept, and withdrawn at the next start
            log.warning("an earlier setup (%s) could not be withdrawn: %s", setup.id, exc)
    raise web.HTTPSeeOther(f"/security/setup/{created.id}")


def _own_enrollment(request: web.Request, user: User) -> Enrollment:
    """The user's own setup named in the URL; anything else is "not found", nothing else."""
    try:
        enrollment_id = forms.identifier(request.match_info["enrollment"])
    except forms.FormError:
        enrollment_id = None
    enrollment = request.app[DB].enrollment(user.id, enrollment_id) if enrollment_id else None
    if enrollment is None:
        raise web.HTTPNotFound(
            text="This setup was not found. It may have expired, or it belongs to another account."
        )
    return enrollment


def _sdk_enrollment(enrollment: Enrollment) -> BrokerEnrollment | None:
    """The SDK's Enrollment kept at creation; None for a setup an older demo started
    (without the link's secret it cannot be verified: it reads as expired)."""
    if enrollment.sdk_enrollment is None:
        return None
    try:
        return BrokerEnrollment.from_stored(json.loads(enrollment.sdk_enrollment))
    except (ValueError, BadBrokerResponse):
        log.error("enrollment %s: the stored setup cannot be read", enrollment.id)
        return None


def _refuse(db: Database, user: User, enrollment: Enrollment, exc: VerificationFailed) -> None:
    """The broker reported a key the device did not bind to our link: end the setup."""
    credentials.security_event(user, f"enrollment {enrollment.id} refused (nothing stored)", exc)
    db.refuse_enrollment(enrollment.id)


def _store(db: Database, enrollment: Enrollment, broker: BrokerEnrollment, handle: str) -> str | None:
    """Keep the new credential's public key and recovery key (and our TOTP secret); its id.

    `broker` comes from wait_enrollment / get_enrollment with our stored Enrollment:
    the SDK checked the device's binding to our link before returning it."""
    if not broker.completed or broker.credential is None:
        return None
    cred = broker.credential
    if cred.user != handle or broker.user != handle:
        raise PushAuthError(f"enrollment {broker.id}: credential of another user")
    recovery = None if cred.recovery_key is None else cred.recovery_key.public_key
    db.add_device(enrollment, cred.id, cred.name, cred.public_key, recovery_public_key=recovery)
    return cred.id


@routes.get("/security/setup/{enrollment}")
async def setup_page(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    enrollment = _own_enrollment(request, user)
    if enrollment.credential_id is not None:
        raise web.HTTPSeeOther("/security")
    remaining = max(0, math.ceil((enrollment.expires_at - now_ms()) / 1000))
    if _sdk_enrollment(enrollment) is None:
        remaining = 0
    return render(
        request,
        "setup.html",
        {
            "enrollment": enrollment,
            "qr": qr.svg(enrollment.uri, title="QR code to scan with the authenticator app"),
            "remaining": remaining,
            "expired": remaining == 0,
            "refused": enrollment.refused,
            "refused_message": REFUSED,
            "app_url": (app_url := request.app[SETTINGS].app_url),
            # The phone app's own address with the link in its fragment: on the phone that
            # shows this page, which cannot scan its own screen, one tap opens the app with
            # the link filled in (the fragment reaches no server; the app asks before it adds).
            "app_link": None if app_url is None else f"{app_url}#enroll={quote(enrollment.uri, safe='')}",
        },
    )


async def _withdraw(
    request: web.Request, user: User, enrollment: Enrollment, *, keep_registered: bool
) -> None:
    """Withdraw a setup's link at the broker (a device that uses it afterwards is refused),
    then forget the setup. A device that registered with it before is kept as an
    unfinished setup (`keep_registered`: a newer setup started) or removed (the person
    cancelled this one). Raises PushAuthError if the broker cannot be asked: nothing
    changed then, and the link may still work."""
    client, db = request.app[CLIENT], request.app[DB]
    sdk = _sdk_enrollment(enrollment)
    credential_id = enrollment.credential_id
    if credential_id is None and sdk is not None and not enrollment.refused:
        try:
            await client.cancel_enrollment(sdk)
            # Used before it was withdrawn? Then a device registered: the broker says so now.
            broker = await client.get_enrollment(sdk)
        except NotFound:
            broker = None  # the broker forgot it: its link cannot work any more
        except VerificationFailed as exc:
            _refuse(db, user, enrollment, exc)  # not the device's own key: nothing stored
            broker = None
        if broker is not None and broker.completed and broker.credential is not None:
            if keep_registered:
                _store(db, enrollment, broker, user.handle)
                return  # listed as "Setup not finished", with its own setup kept
            credential_id = broker.credential.id
    if credential_id is not None and not keep_registered:
        device = db.device(user.id, credential_id)
        if device is None or not device.confirmed:
            await credentials.remove(client, db, user, credential_id)
    db.remove_enrollment(user.id, enrollment.id)


@routes.post("/security/setup/{enrollment}/cancel")
async def setup_cancel(request: web.Request) -> web.StreamResponse:
    """Cancel on the setup page: the link stops working, and a device that registered with
    it meanwhile (its test notification not approved) is removed."""
    user = auth.require_user(request)
    enrollment = _own_enrollment(request, user)
    device = request.app[DB].device(user.id, enrollment.credential_id) if enrollment.credential_id else None
    if device is not None and device.confirmed:
        raise web.HTTPSeeOther("/security")  # finished before the click: nothing to cancel
    try:
        await _withdraw(request, user, enrollment, keep_registered=False)
    except PushAuthError as exc:
        log.warning("cannot cancel setup %s: %s", enrollment.id, exc)
        get_session(request).flash(
            "error",
            "The setup could not be cancelled: the sign-in service cannot be reached. "
            "Its link may still work. Try again.",
        )
        raise web.HTTPSeeOther(f"/security/setup/{enrollment.id}") from None
    get_session(request).flash(
        "success",
        "The setup was cancelled: its link no longer works."
        + (f" {device.name} was removed." if device else ""),
    )
    raise web.HTTPSeeOther("/security")


@routes.get("/security/setup/{enrollment}/events")
async def setup_events(request: web.Request) -> web.StreamResponse:
    """The setup's progress as server-sent events: waiting, then completed, expired or
    unverified (the SDK refused the key the broker reported)."""
    user = auth.require_user(request)
    enrollment = _own_enrollment(request, user)
    response = await sse.open_stream(request)
    client, db = request.app[CLIENT], request.app[DB]
    sdk = _sdk_enrollment(enrollment)
    while True:
        if enrollment.refused:
            state = "unverified"
        elif enrollment.credential_id is not None:
            state = "completed"
        elif sdk is None:
            state = "expired"
        else:
            try:
                broker = await client.wait_enrollment(sdk, timeout=POLL_S)
                state = broker.status.value
                if _store(db, enrollment, broker, user.handle) is not None:
                    state = "completed"
                elif state == "pending" and broker.refused is not None and broker.refused != sdk.refused:
                    # Said once per refusal: the wait goes on with it known.
                    sdk = broker
                    message = _refused_words(broker.refused)
                    if not await sse.send(response, "setup", {"status": "at_device_cap", "message": message}):
                        break
                    continue
            except VerificationFailed as exc:
                _refuse(db, user, enrollment, exc)
                state = "unverified"
            except NotFound:
                state = "expired"
            except PushAuthError:
                state = "unavailable"
        if not await sse.send(response, "setup", {"status": state}) or state in SETUP_ENDED:
            break
        if state == "unavailable":
            await asyncio.sleep(2)
    return response


@routes.post("/security/setup/{enrollment}/continue")
async def setup_continue(request: web.Request) -> web.StreamResponse:
    """The device has registered (or the person says so): store it and send the test push."""
    user = auth.require_user(request)
    enrollment = _own_enrollment(request, user)
    db = request.app[DB]
    credential_id = enrollment.credential_id
    here = f"/security/setup/{enrollment.id}"
    if enrollment.refused:
        raise web.HTTPSeeOther(here)  # it says so
    sdk = _sdk_enrollment(enrollment)
    if credential_id is None:
        try:
            broker = await request.app[CLIENT].get_enrollment(sdk) if sdk is not None else None
        except VerificationFailed as exc:
            _refuse(db, user, enrollment, exc)
            raise web.HTTPSeeOther(here) from None
        except NotFound:
            broker = None
        except PushAuthError:
            get_session(request).flash("error", "The sign-in service cannot be reached right now.")
            raise web.HTTPSeeOther(here) from None
        credential_id = _store(db, enrollment, broker, user.handle) if broker else None
        if (
            credential_id is None
            and broker is not None
            and broker.status.value == "pending"
            and broker.refused
        ):
            get_session(request).flash("error", _refused_words(broker.refused))
            raise web.HTTPSeeOther(here)
        if credential_id is None:
            expired = broker is None or broker.status.value == "expired" or now_ms() >= enrollment.expires_at
            get_session(request).flash(
                "error",
                "This setup expired. Start again with a new QR code."
                if expired
                else "Your device has not connected yet. Scan the QR code with the app first.",
            )
            raise web.HTTPSeeOther("/security" if expired else here)
    device = db.device(user.id, credential_id)
    if device is None:
        get_session(request).flash("error", "That device was removed. Start again to add it.")
        raise web.HTTPSeeOther("/security")
    problem = await push.start(
        request, user, push.SETUP, enrollment=enrollment.id, credential=device.credential_id
    )
    if problem is not None:
        get_session(request).flash("error", problem.message)
        raise web.HTTPSeeOther("/security")
    raise web.HTTPSeeOther("/security/test-notification")


@routes.get("/security/test-notification")
async def setup_test(request: web.Request) -> web.StreamResponse:
    auth.require_user(request)
    return await push.page(request, push.SETUP)


@routes.post("/security/test-notification/later")
async def setup_test_later(request: web.Request) -> web.StreamResponse:
    """Finish later: the page with the number goes, so the phone's "finish adding this
    device?" could no longer be answered; it is withdrawn. If it was approved meanwhile,
    "Finish setup" in the device list finishes without a new one (finish_from_test)."""
    auth.require_user(request)
    await push.withdraw(request, push.SETUP)
    raise web.HTTPSeeOther("/security")


@routes.post("/security/devices/{credential}/test")
async def device_test(request: web.Request) -> web.StreamResponse:
    """Finish a setup that was left before its test push (from the device list)."""
    user = auth.require_user(request)
    device = _own_device(request, user)
    if await finish_from_test(request, user, device):
        # Its last test notification was approved meanwhile: no second one needed.
        get_session(request).flash("success", FINISHED.format(name=device.name))
        raise web.HTTPSeeOther("/security")
    problem = await push.start(request, user, push.SETUP, credential=device.credential_id)
    if problem is not None:
        get_session(request).flash("error", problem.message)
        raise web.HTTPSeeOther("/security")
    raise web.HTTPSeeOther("/security/test-notification")


def _own_device(request: web.Request, user: User) -> Device:
    try:
        credential_id = forms.identifier(request.match_info["credential"])
    except forms.FormError:
        credential_id = None
    device = request.app[DB].device(user.id, credential_id) if credential_id else None
    if device is None:
        get_session(request).flash(
            "error", "That device is not on your account. It may have been removed already."
        )
        raise web.HTTPSeeOther("/security")
    return device


@routes.get("/security/devices/{credential}/remove")
async def remove_confirm(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    device = _own_device(request, user)
    reauth.require_fresh(request, f"/security/devices/{device.credential_id}/remove")
    others = [
        d
        for d in request.app[DB].devices(user.id, confirmed_only=True)
        if d.credential_id != device.credential_id
    ]
    # A device restored from this one's backup shows the same codes (its account's TOTP
    # secret came with the backup): those keep working there.
    shares_codes = [d.name for d in others if d.totp_secret and d.totp_secret == device.totp_secret]
    # Removing the last confirmed device makes the account password-only (remove below);
    # an unfinished setup never counted.
    last = device.confirmed and not others
    return render(request, "remove.html", {"device": device, "last": last, "shares_codes": shares_codes})


@routes.post("/security/devices/{credential}/remove")
async def remove(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    device = _own_device(request, user)
    reauth.require_fresh(request, f"/security/devices/{device.credential_id}/remove")
    # Already gone at the broker (the device removed itself) counts as revoked; a broker
    # that refuses or cannot be reached does not keep the device trusted here, and is
    # asked again until it confirms (revocations.py).
    untold = await revocations.remove_at_users_word(
        request.app[CLIENT], request.app[DB], request.app[SETTINGS], user, device.credential_id
    )
    if device.confirmed:
        # The user's own removal of their last device, after a fresh second factor, is
        # the one way back to password-only sign-in (auth.second_factor_required): never
        # a device dropped because the broker stopped listing it.
        request.app[DB].end_second_factor(user.id)
    if untold is not None:
        log.warning(
            "revoke failed, %s removed here, its revocation pending: %s", device.credential_id, untold
        )
        get_session(request).flash("error", UNTOLD.format(name=device.name))
        raise web.HTTPSeeOther("/security")
    get_session(request).flash("success", f"{device.name} was removed. It can no longer approve sign-ins.")
    raise web.HTTPSeeOther("/security")


@routes.post("/security/devices/{credential}/rename")
async def rename(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    device = _own_device(request, user)
    form = await request.post()
    try:
        raw = forms.text(
            form, "name", max_len=256, label="The device name", too_long=forms.DEVICE_NAME_TOO_LONG
        )
        name = forms.device_name(raw)
    except forms.FormError as exc:
        get_session(request).flash("error", exc.message)
        raise web.HTTPSeeOther("/security") from None
    other = request.app[DB].device_named(user.id, name, other_than=device.credential_id)
    if other is not None:
        # Two devices of one name could not be told apart here (which one to remove?).
        get_session(request).flash(
            "error", f"Another of your devices is already called {other.name}. Choose a different name."
        )
        raise web.HTTPSeeOther("/security")
    request.app[DB].rename_device(user.id, device.credential_id, name)
    get_session(request).flash("success", f"Renamed to {name}.")
    raise web.HTTPSeeOther("/security")
