"""Sign-in pages: password, then the push request or a verification code; sign-out."""

from __future__ import annotations

from aiohttp import web

from ..models import SignInResult
from . import activity, auth, credentials, forms, fraud, passwords, push, signin_context, totp
from .db import User
from .keys import CLIENT, DB, SETTINGS
from .render import render
from .sessions import get_session

routes = web.RouteTableDef()


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/account" if auth.current_user(request) else "/signin")


@routes.get("/signin")
async def signin_form(request: web.Request) -> web.StreamResponse:
    if auth.current_user(request) is not None:
        raise web.HTTPSeeOther("/account")
    return render(request, "signin.html", {"username": "", "error": None})


@routes.post("/signin")
async def signin_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    db = request.app[DB]
    ip = signin_context.client_ip(request)

    def again(error: str, status: int, username: str = "") -> web.Response:
        return render(request, "signin.html", {"username": username, "error": error}, status=status)

    blocked = auth.ip_blocked_message(request, ip)
    if blocked:
        return again(blocked, 429)
    try:
        username = forms.user_name(forms.text(form, "username", max_len=64, label="The user name"))
        password = forms.text(form, "password", max_len=passwords.MAX_LENGTH, label="The password")
    except forms.FormError as exc:
        return again(exc.message, 400)
    if not password:
        return again("Enter your password.", 400, username)
    async with auth.attempt(request, username, ip):
        blocked = auth.ip_blocked_message(request, ip)  # again: attempts that went before may have failed
        if blocked:
            return again(blocked, 429)
        user = db.user_by_name(username)
        locked = auth.locked_message(user) if user else auth.unknown_name_locked_message(request, username)
        if locked:
            return again(locked, 429, username)
        if not await passwords.check(user.password_hash if user else None, password) or user is None:
            auth.record_failure(request, user, ip, username)
            if user is not None:
                activity.record(db, user, "password", "wrong_password", _context(request))
            return again("The user name or password is incorrect.", 401, username)

    session = get_session(request)
    if not auth.second_factor_required(db, user):
        auth.finish_signin(request, user, "Password")
        activity.record(db, user, "password", "password", _context(request))
        get_session(request).flash(
            "info", "Your account is protected by a password only. Add the authenticator app below."
        )
        target = await fraud.after_signin(request, user)
        raise web.HTTPSeeOther("/security" if target == "/account" else target)
    auth.begin_second_step(session, user)
    if not db.devices(user.id, confirmed_only=True):
        # A second step is owed and no device is left to take it: the code page says
        # so, and offers a recovery code or an access pass.
        raise web.HTTPSeeOther("/signin/code")
    refused = await push.start(request, user, push.SIGNIN)
    if refused is not None:
        # The code is the way on: its page says why no request was sent.
        push.remember_refusal(request, push.SIGNIN, refused)
        raise web.HTTPSeeOther("/signin/code")
    raise web.HTTPSeeOther("/signin/push")


def _context(request: web.Request) -> dict[str, str]:
    return signin_context.build(request, request.app[SETTINGS].app_name)


async def _push_approved(request: web.Request, user: User, outcome: SignInResult) -> web.StreamResponse:
    """The sign-in's push request was approved and verified: signed in."""
    db = request.app[DB]
    cid = outcome.credential_id
    device = db.device(user.id, cid) if cid else None
    auth.finish_signin(request, user, f"Push notification ({device.name if device else 'a device'})")
    raise web.HTTPSeeOther(await fraud.after_signin(request, user))


push.FINISHERS[push.SIGNIN] = _push_approved


@routes.get("/signin/push")
async def push_page(request: web.Request) -> web.StreamResponse:
    auth.pending_user(request)
    return await push.page(request, push.SIGNIN)


def _code_page(
    request: web.Request, user: User, *, error: str | None = None, status: int = 200
) -> web.Response:
    # Only a user who owes a second step gets here: with no device left (dropped on the
    # broker's word), the page says so and offers the ways that remain.
    no_device = not request.app[DB].devices(user.id, confirmed_only=True)
    refusal = push.take_refusal(request, push.SIGNIN) if error is None else None
    return render(
        request,
        "code.html",
        {
            "error": error,
            "refusal": refusal,
            "no_device": no_device,
            "no_device_message": auth.NO_DEVICE_LEFT,
        },
        status=status,
    )


@routes.get("/signin/code")
async def code_form(request: web.Request) -> web.StreamResponse:
    return _code_page(request, auth.pending_user(request))


@routes.post("/signin/code")
async def code_submit(request: web.Request) -> web.StreamResponse:
    user = auth.pending_user(request)
    form = await request.post()
    ip = signin_context.client_ip(request)

    def again(error: str, status: int) -> web.Response:
        return _code_page(request, user, error=error, status=status)

    try:
        code = forms.totp_code(forms.text(form, "code", max_len=32, label="The code"))
    except forms.FormError as exc:
        return again(exc.message, 400)
    db = request.app[DB]
    async with auth.attempt(request, user.name, ip):
        user = db.user_by_id(user.id) or user  # its lockout as the attempts before left it
        blocked = auth.ip_blocked_message(request, ip) or auth.locked_message(user)
        if blocked:
            return again(blocked, 429)
        # A device removed on the phone itself must not sign in by code: follow the broker's
        # list first (best effort, bounded; the second step stays owed whatever it drops).
        await credentials.follow(request.app[CLIENT], db, user)
        devices = db.devices(user.id, confirmed_only=True)
        checked = totp.check(db, devices, code)
        if checked.device is None:
            auth.record_failure(request, user, ip)
            result = "used_code" if checked.replayed else "wrong_code"
            # Shown after the password step only: naming one of the account's devices
            # tells no more than its Security info page does. Not accepted all the same.
            unfinished = None
            if not checked.replayed:
                unfinished = totp.unfinished_hint(
                    db.devices(user.id), code, purpose="sign you in", or_else=", or a recovery code"
                )
            detail = "" if unfinished is None else f"{unfinished[1].name}, setup not finished"
            activity.record(db, user, "code", result, _context(request), detail=detail)
            if unfinished is not None:
                return again(unfinished[0], 401)
            if not devices:
                return _code_page(request, user, status=401)  # it says there is none left
            if checked.replayed:
                return again("That code was already used. Wait for the next code in the app.", 401)
            return again("That code is not right. Check the code in the app and try again.", 401)
    await push.withdraw(request, push.SIGNIN)  # signed in another way: the prompt ends
    auth.finish_signin(request, user, f"Verification code ({checked.device.name})")
    activity.record(db, user, "code", "code", _context(request), detail=checked.device.name)
    raise web.HTTPSeeOther(await fraud.after_signin(request, user))


@routes.post("/signin/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    await push.withdraw(request, push.SIGNIN)
    get_session(request).pop("pending")
    raise web.HTTPSeeOther("/signin")


@routes.post("/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    session = get_session(request)
    session.clear()
    session.flash("success", "You are signed out.")
    raise web.HTTPSeeOther("/signin")


routes.post("/push/complete")(push.complete)
routes.post("/push/resend")(push.resend)
routes.post("/push/use-code")(push.use_code)
routes.get("/push/events")(push.events)
