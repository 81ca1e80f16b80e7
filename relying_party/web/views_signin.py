"""Sign-in pages: password, then the push request or a verification code; sign-out."""

from __future__ import annotations

from aiohttp import web

from . import auth, forms, passwords, push, signin_context, totp
from .keys import DB
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
    user = db.user_by_name(username)
    locked = auth.locked_message(user) if user else auth.unknown_name_locked_message(request, username)
    if locked:
        return again(locked, 429, username)
    if not await passwords.check(user.password_hash if user else None, password) or user is None:
        auth.record_failure(request, user, ip, username)
        return again("The user name or password is incorrect.", 401, username)

    session = get_session(request)
    if not db.devices(user.id, confirmed_only=True):
        auth.finish_signin(request, user, "Password")
        get_session(request).flash(
            "info", "Your account is protected by a password only. Add the authenticator app below."
        )
        raise web.HTTPSeeOther("/security")
    auth.begin_second_step(session, user)
    problem = await push.start(request, user, push.SIGNIN)
    if problem is not None:
        session.flash("error", problem)
        raise web.HTTPSeeOther("/signin/code")
    raise web.HTTPSeeOther("/signin/push")


@routes.get("/signin/push")
async def push_page(request: web.Request) -> web.StreamResponse:
    auth.pending_user(request)
    return push.page(request, push.SIGNIN)


@routes.get("/signin/code")
async def code_form(request: web.Request) -> web.StreamResponse:
    auth.pending_user(request)
    return render(request, "code.html", {"error": None})


@routes.post("/signin/code")
async def code_submit(request: web.Request) -> web.StreamResponse:
    user = auth.pending_user(request)
    form = await request.post()
    ip = signin_context.client_ip(request)

    def again(error: str, status: int) -> web.Response:
        return render(request, "code.html", {"error": error}, status=status)

    blocked = auth.ip_blocked_message(request, ip) or auth.locked_message(user)
    if blocked:
        return again(blocked, 429)
    try:
        code = forms.totp_code(forms.text(form, "code", max_len=32, label="The code"))
    except forms.FormError as exc:
        return again(exc.message, 400)
    db = request.app[DB]
    checked = totp.check(db, db.devices(user.id, confirmed_only=True), code)
    if checked.device is None:
        auth.record_failure(request, user, ip)
        if checked.replayed:
            return again("That code was already used. Wait for the next code in the app.", 401)
        return again("That code is not right. Check the code in the app and try again.", 401)
    await push.withdraw(request, push.SIGNIN)  # signed in another way: the prompt ends
    auth.finish_signin(request, user, f"Verification code ({checked.device.name})")
    raise web.HTTPSeeOther("/account")


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
routes.get("/push/events")(push.events)
