"""Re-authentication: a fresh second factor before a sensitive change.

Adding or removing a sign-in method and changing the password need proof within the
last `Settings.reauth_window` seconds (10 minutes by default) that the person at the
keyboard holds a second factor: a sign-in, or "Verify it's you" here (a push request
or a verification code; the password for an account that needs no second step, since
that is all it has). A stolen session cookie alone then cannot lock the owner out.
An account that needs one and has no device left (auth.second_factor_required) signs
in again with a recovery code or an access pass: a sign-in is fresh.
"""

from __future__ import annotations

from aiohttp import web

from ..models import SignInResult
from . import activity, auth, credentials, forms, passwords, push, signin_context, totp
from .db import User, now_ms
from .keys import CLIENT, DB, SETTINGS
from .render import render
from .sessions import Session, get_session

routes = web.RouteTableDef()
NEXT_KEY = "reauth_next"
NO_DEVICE_LEFT = (
    "No authenticator app of yours is registered with this account any more (it was removed "
    "in the app, or the sign-in service no longer lists it), so none can verify it's you, and "
    "your password alone is not enough. Sign out, then sign in again with a recovery code or a "
    "temporary access pass from your administrator (or ask your administrator): you can then add "
    "your app again."
)


def fresh(request: web.Request) -> bool:
    verified = get_session(request).get("verified_at") or 0
    return now_ms() - verified <= request.app[SETTINGS].reauth_window * 1000


def require_fresh(request: web.Request, back: str) -> None:
    """Go on if the second factor is fresh; else to "Verify it's you", then back to
    `back` (a page of this site: a GET, so a form posted too late is shown again)."""
    if fresh(request):
        return
    session = get_session(request)
    session[NEXT_KEY] = back if back.startswith("/") and not back.startswith("//") else "/security"
    raise web.HTTPSeeOther("/reauth")


def _verified(session: Session) -> str:
    session["verified_at"] = now_ms()
    return session.pop(NEXT_KEY) or "/security"


@routes.get("/reauth")
async def reauth_page(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request, password_change=True)
    return _page(request, user)


def _page(request: web.Request, user: User, *, error: str | None = None, status: int = 200) -> web.Response:
    db = request.app[DB]
    has_app = bool(db.devices(user.id, confirmed_only=True))
    return render(
        request,
        "reauth.html",
        {
            "has_app": has_app,
            # The password verifies only an account that needs no second step; one that
            # does and has no device left (dropped on the broker's word) is told so.
            "password_only": not auth.second_factor_required(db, user),
            "no_device_message": NO_DEVICE_LEFT,
            "error": error,
            "refusal": push.take_refusal(request, push.REAUTH),
        },
        status=status,
    )


@routes.post("/reauth/push")
async def reauth_push(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request, password_change=True)
    refused = await push.start(request, user, push.REAUTH)
    if refused is not None:
        push.remember_refusal(request, push.REAUTH, refused)
        raise web.HTTPSeeOther("/reauth")
    raise web.HTTPSeeOther(push.PAGES[push.REAUTH])


@routes.get("/reauth/push")
async def reauth_push_page(request: web.Request) -> web.StreamResponse:
    auth.require_user(request, password_change=True)
    return await push.page(request, push.REAUTH)


async def _push_approved(request: web.Request, user: User, outcome: SignInResult) -> web.StreamResponse:
    raise web.HTTPSeeOther(_verified(get_session(request)))


push.FINISHERS[push.REAUTH] = _push_approved


@routes.post("/reauth/code")
async def reauth_code(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request, password_change=True)
    form = await request.post()
    db = request.app[DB]
    ip = signin_context.client_ip(request)
    try:
        code = forms.totp_code(forms.text(form, "code", max_len=32, label="The code"))
    except forms.FormError as exc:
        return _page(request, user, error=exc.message, status=400)
    async with auth.attempt(request, user.name, ip):
        user = db.user_by_id(user.id) or user  # its lockout as the attempts before left it
        blocked = auth.ip_blocked_message(request, ip) or auth.locked_message(user)
        if blocked:
            return _page(request, user, error=blocked, status=429)
        # As at sign-in: a device removed on the phone itself no longer verifies by code.
        await credentials.follow(request.app[CLIENT], db, user)
        devices = db.devices(user.id, confirmed_only=True)
        checked = totp.check(db, devices, code)
        context = signin_context.build(request, request.app[SETTINGS].app_name)
        if checked.device is None:
            auth.record_failure(request, user, ip)
            result = "used_code" if checked.replayed else "wrong_code"
            unfinished = None
            if not checked.replayed:
                unfinished = totp.unfinished_hint(db.devices(user.id), code, purpose="verify it's you")
            detail = "" if unfinished is None else f"{unfinished[1].name}, setup not finished"
            activity.record(db, user, "code", result, context, purpose=push.REAUTH, detail=detail)
            if unfinished is not None:
                return _page(request, user, error=unfinished[0], status=401)
            if not devices:
                return _page(request, user, status=401)  # it says there is none left
            why = "That code was already used." if checked.replayed else "That code is not right."
            return _page(request, user, error=why + " Check the code in the app and try again.", status=401)
    await push.withdraw(request, push.REAUTH)
    activity.record(db, user, "code", "code", context, purpose=push.REAUTH, detail=checked.device.name)
    raise web.HTTPSeeOther(_verified(get_session(request)))


@routes.post("/reauth/password")
async def reauth_password(request: web.Request) -> web.StreamResponse:
    """Only for an account that needs no second step: otherwise the password is not one."""
    user = auth.require_user(request, password_change=True)
    db = request.app[DB]
    if auth.second_factor_required(db, user):
        raise web.HTTPSeeOther("/reauth")
    form = await request.post()
    ip = signin_context.client_ip(request)
    try:
        password = forms.text(form, "password", max_len=passwords.MAX_LENGTH, label="The password")
    except forms.FormError as exc:
        return _page(request, user, error=exc.message, status=400)
    async with auth.attempt(request, user.name, ip):
        user = db.user_by_id(user.id) or user  # its lockout as the attempts before left it
        blocked = auth.ip_blocked_message(request, ip) or auth.locked_message(user)
        if blocked:
            return _page(request, user, error=blocked, status=429)
        if not await passwords.check(user.password_hash, password):
            auth.record_failure(request, user, ip)
            return _page(request, user, error="The password is incorrect.", status=401)
    raise web.HTTPSeeOther(_verified(get_session(request)))


@routes.post("/reauth/cancel")
async def reauth_cancel(request: web.Request) -> web.StreamResponse:
    auth.require_user(request, password_change=True)
    await push.withdraw(request, push.REAUTH)
    get_session(request).pop(NEXT_KEY)
    raise web.HTTPSeeOther("/security")
