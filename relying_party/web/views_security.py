"""Security info: the user's devices; add one (QR code, wait, test push), rename, remove."""

from __future__ import annotations

import asyncio
import logging
import math

from aiohttp import web

from ..errors import BrokerUnavailable, NotFound, PushAuthError
from ..models import Enrollment as BrokerEnrollment
from ..totp import new_totp
from . import auth, forms, push, qr, sse
from .db import Database, Device, Enrollment, User, now_ms
from .keys import CLIENT, DB
from .render import render
from .sessions import get_session

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
POLL_S = 20


@routes.get("/security")
async def security(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    devices = request.app[DB].devices(user.id)
    return render(request, "security.html", {"devices": devices, "user": user})


@routes.get("/security/add")
async def add_method(request: web.Request) -> web.StreamResponse:
    auth.require_user(request)
    return render(request, "add_method.html", {"error": None})


@routes.post("/security/add")
async def add_authenticator(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    form = await request.post()
    if form.get("method") != "authenticator":
        return render(request, "add_method.html", {"error": "Choose a method to add."}, status=400)
    params = new_totp()
    try:
        created = await request.app[CLIENT].create_enrollment(user.handle, user.name, totp=params)
    except PushAuthError as exc:
        log.warning("enrollment failed: %s", exc)
        message = (
            "The sign-in service cannot be reached right now. Try again later."
            if isinstance(exc, BrokerUnavailable)
            else "The setup could not be started. Try again later."
        )
        return render(request, "add_method.html", {"error": message}, status=503)
    assert created.uri is not None  # the SDK guarantees it on creation
    request.app[DB].add_enrollment(
        Enrollment(
            id=created.id,
            user_id=user.id,
            uri=created.uri,
            totp_secret=params.secret,
            totp_algorithm=params.algorithm,
            totp_digits=params.digits,
            totp_period=params.period,
            expires_at=created.expires_at,
            credential_id=None,
        )
    )
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


def _store(db: Database, enrollment: Enrollment, broker: BrokerEnrollment, handle: str) -> str | None:
    """Keep the new credential's public key (and our TOTP secret); its id."""
    if not broker.completed or broker.credential is None:
        return None
    cred = broker.credential
    if cred.user != handle or broker.user != handle:
        raise PushAuthError(f"enrollment {broker.id}: credential of another user")
    db.add_device(enrollment, cred.id, cred.name, cred.public_key)
    return cred.id


@routes.get("/security/setup/{enrollment}")
async def setup_page(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    enrollment = _own_enrollment(request, user)
    if enrollment.credential_id is not None:
        raise web.HTTPSeeOther("/security")
    remaining = max(0, math.ceil((enrollment.expires_at - now_ms()) / 1000))
    return render(
        request,
        "setup.html",
        {
            "enrollment": enrollment,
            "qr": qr.svg(enrollment.uri, title="QR code to scan with the authenticator app"),
            "remaining": remaining,
            "expired": remaining == 0,
        },
    )


@routes.get("/security/setup/{enrollment}/events")
async def setup_events(request: web.Request) -> web.StreamResponse:
    """The setup's progress as server-sent events: waiting, then completed or expired."""
    user = auth.require_user(request)
    enrollment = _own_enrollment(request, user)
    response = await sse.open_stream(request)
    client, db = request.app[CLIENT], request.app[DB]
    while True:
        try:
            broker = await client.wait_enrollment(enrollment.id, timeout=POLL_S)
            state = broker.status.value
            if _store(db, enrollment, broker, user.handle) is not None:
                state = "completed"
        except NotFound:
            state = "expired"
        except PushAuthError:
            state = "unavailable"
        if not await sse.send(response, "setup", {"status": state}) or state in ("completed", "expired"):
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
    if credential_id is None:
        try:
            broker = await request.app[CLIENT].get_enrollment(enrollment.id)
        except NotFound:
            broker = None
        except PushAuthError:
            get_session(request).flash("error", "The sign-in service cannot be reached right now.")
            raise web.HTTPSeeOther(f"/security/setup/{enrollment.id}") from None
        credential_id = _store(db, enrollment, broker, user.handle) if broker else None
        if credential_id is None:
            expired = broker is None or broker.status.value == "expired" or now_ms() >= enrollment.expires_at
            get_session(request).flash(
                "error",
                "This setup expired. Start again with a new QR code."
                if expired
                else "Your device has not connected yet. Scan the QR code with the app first.",
            )
            raise web.HTTPSeeOther("/security" if expired else f"/security/setup/{enrollment.id}")
    device = db.device(user.id, credential_id)
    if device is None:
        get_session(request).flash("error", "That device was removed. Start again to add it.")
        raise web.HTTPSeeOther("/security")
    if device.confirmed:
        raise web.HTTPSeeOther("/security")
    problem = await push.start(
        request, user, push.SETUP, enrollment=enrollment.id, credential=device.credential_id
    )
    if problem is not None:
        get_session(request).flash("error", problem)
        raise web.HTTPSeeOther("/security")
    raise web.HTTPSeeOther("/security/test-notification")


@routes.get("/security/test-notification")
async def setup_test(request: web.Request) -> web.StreamResponse:
    auth.require_user(request)
    return push.page(request, push.SETUP)


@routes.post("/security/devices/{credential}/test")
async def device_test(request: web.Request) -> web.StreamResponse:
    """Finish a setup that was left before its test push (from the device list)."""
    user = auth.require_user(request)
    device = _own_device(request, user)
    problem = await push.start(request, user, push.SETUP, credential=device.credential_id)
    if problem is not None:
        get_session(request).flash("error", problem)
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
    others = [
        d
        for d in request.app[DB].devices(user.id, confirmed_only=True)
        if d.credential_id != device.credential_id
    ]
    return render(request, "remove.html", {"device": device, "last": not others})


@routes.post("/security/devices/{credential}/remove")
async def remove(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    device = _own_device(request, user)
    try:
        await request.app[CLIENT].revoke_credential(device.credential_id)
    except NotFound:
        pass  # already gone at the broker (the device removed itself): remove our copy too
    except PushAuthError as exc:
        log.warning("revoke failed: %s", exc)
        get_session(request).flash(
            "error",
            f"{device.name} could not be removed: the sign-in service cannot be reached. Try again later.",
        )
        raise web.HTTPSeeOther("/security") from None
    request.app[DB].remove_device(user.id, device.credential_id)
    get_session(request).flash("success", f"{device.name} was removed. It can no longer approve sign-ins.")
    raise web.HTTPSeeOther("/security")


@routes.post("/security/devices/{credential}/rename")
async def rename(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    device = _own_device(request, user)
    form = await request.post()
    try:
        name = forms.device_name(forms.text(form, "name", max_len=256, label="The device name"))
    except forms.FormError as exc:
        get_session(request).flash("error", exc.message)
        raise web.HTTPSeeOther("/security") from None
    request.app[DB].rename_device(user.id, device.credential_id, name)
    get_session(request).flash("success", f"Renamed to {name}.")
    raise web.HTTPSeeOther("/security")
