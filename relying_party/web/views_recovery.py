"""Recovery methods at sign-in (a recovery code, a temporary access pass in place of
the push or a verification code) and on Security info (a new set of codes)."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy

from . import access_pass, activity, auth, forms, fraud, push, reauth, recovery_codes, signin_context
from .db import User
from .keys import DB, SETTINGS
from .render import render
from .sessions import get_session

routes = web.RouteTableDef()
MAX_TYPED = 64  # longer than any code or pass with spaces; refused before hashing


def _typed(form: MultiDictProxy[str | bytes | object], label: str) -> str:
    value = forms.text(form, "code", max_len=MAX_TYPED, label=label).strip()
    if not value:
        raise forms.FormError(f"Enter your {label.lower().removeprefix('the ')}.", "code")
    return value


def _blocked(request: web.Request, user: User) -> str | None:
    return auth.ip_blocked_message(request, signin_context.client_ip(request)) or auth.locked_message(user)


def _context(request: web.Request) -> dict[str, str]:
    return signin_context.build(request, request.app[SETTINGS].app_name)


async def _signed_in(request: web.Request, user: User) -> str:
    """Where a recovery sign-in goes: the password change if a report requires one
    (fraud.py), else Security info, where a lost device is removed and a new one added."""
    target = await fraud.after_signin(request, user)
    return "/security" if target == "/account" else target


# -- sign-in with a recovery code ------------------------------------------------------


@routes.get("/signin/recovery-code")
async def recovery_code_form(request: web.Request) -> web.StreamResponse:
    auth.pending_user(request)
    return render(request, "recovery_signin.html", {"kind": "code", "error": None})


@routes.post("/signin/recovery-code")
async def recovery_code_submit(request: web.Request) -> web.StreamResponse:
    user = auth.pending_user(request)
    form = await request.post()

    def again(error: str, status: int) -> web.Response:
        return render(request, "recovery_signin.html", {"kind": "code", "error": error}, status=status)

    try:
        typed = _typed(form, "The recovery code")
    except forms.FormError as exc:
        return again(exc.message, 400)
    db = request.app[DB]
    ip = signin_context.client_ip(request)
    async with auth.attempt(request, user.name, ip):
        user = db.user_by_id(user.id) or user  # its lockout as the attempts before left it
        blocked = _blocked(request, user)
        if blocked:
            return again(blocked, 429)
        outcome = await recovery_codes.use(db, user.id, typed)
        if outcome is not recovery_codes.Use.ACCEPTED:
            auth.record_failure(request, user, ip)
            detail = "used already" if outcome is recovery_codes.Use.USED else ""
            activity.record(db, user, "recovery", "wrong_code", _context(request), detail=detail)
            if outcome is recovery_codes.Use.USED:
                return again(
                    "That recovery code was used already. Each code works once: use another one.", 401
                )
            return again("That recovery code is not right. Check it and try again.", 401)
    await push.withdraw(request, push.SIGNIN)  # signed in another way: the prompt ends
    auth.finish_signin(request, user, "Recovery code")
    activity.record(db, user, "recovery", "code", _context(request))
    left = recovery_codes.summary(db, user.id)
    n = left.left if left else 0
    session = get_session(request)
    session.flash(
        "info" if n > recovery_codes.LOW else "warn",
        f"You signed in with a recovery code. {n} recovery code{'' if n == 1 else 's'} left."
        + (" Get a new set below." if n <= recovery_codes.LOW else ""),
    )
    raise web.HTTPSeeOther(await _signed_in(request, user))


# -- sign-in with a temporary access pass ------------------------------------------------


@routes.get("/signin/access-pass")
async def access_pass_form(request: web.Request) -> web.StreamResponse:
    auth.pending_user(request)
    return render(request, "recovery_signin.html", {"kind": "pass", "error": None})


@routes.post("/signin/access-pass")
async def access_pass_submit(request: web.Request) -> web.StreamResponse:
    user = auth.pending_user(request)
    form = await request.post()

    def again(error: str, status: int) -> web.Response:
        return render(request, "recovery_signin.html", {"kind": "pass", "error": error}, status=status)

    try:
        typed = _typed(form, "The temporary access pass")
    except forms.FormError as exc:
        return again(exc.message, 400)
    ip = signin_context.client_ip(request)
    db = request.app[DB]
    async with auth.attempt(request, user.name, ip):
        user = db.user_by_id(user.id) or user  # its lockout as the attempts before left it
        blocked = _blocked(request, user)
        if blocked:
            return again(blocked, 429)
        outcome = await access_pass.use(
            db,
            user.id,
            typed,
            ip=ip,
            browser=signin_context.browser(request.headers.get("User-Agent", "")),
        )
        if outcome is not access_pass.Use.ACCEPTED:
            auth.record_failure(request, user, ip)
            used = {access_pass.Use.USED: "used already", access_pass.Use.EXPIRED: "expired"}
            activity.record(
                db, user, "access_pass", "wrong_code", _context(request), detail=used.get(outcome, "")
            )
            messages = {
                access_pass.Use.USED: "That temporary access pass was used already. It works once: "
                "ask your administrator for a new one.",
                access_pass.Use.EXPIRED: "That temporary access pass has expired. "
                "Ask your administrator for a new one.",
            }
            return again(
                messages.get(outcome, "That temporary access pass is not right. Check it and try again."), 401
            )
    await push.withdraw(request, push.SIGNIN)
    auth.finish_signin(request, user, "Temporary access pass")
    activity.record(db, user, "access_pass", "code", _context(request))
    # finish_signin counts as a fresh second factor (reauth.py): adding the new device
    # needs nothing more for the next minutes.
    get_session(request).flash(
        "info",
        "You signed in with a temporary access pass. Add your new device now: the pass cannot be used again.",
    )
    raise web.HTTPSeeOther(await _signed_in(request, user))


# -- Security info: a new set of recovery codes ---------------------------------------------


@routes.get("/security/recovery-codes")
async def codes_confirm(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    reauth.require_fresh(request, "/security/recovery-codes")
    return render(
        request,
        "recovery_codes.html",
        {
            "codes": None,
            "summary": recovery_codes.summary(request.app[DB], user.id),
            "count": recovery_codes.COUNT,
        },
    )


@routes.post("/security/recovery-codes")
async def codes_generate(request: web.Request) -> web.StreamResponse:
    """Make a new set and show it, in this response only: nothing keeps the codes but
    their hashes, and the page is no-store (middleware), so a reload cannot bring them
    back; the old set stopped working."""
    user = auth.require_user(request)
    reauth.require_fresh(request, "/security/recovery-codes")
    replaced = recovery_codes.summary(request.app[DB], user.id) is not None  # an earlier set existed
    codes = await recovery_codes.replace_set(request.app[DB], user.id)
    return render(
        request,
        "recovery_codes.html",
        {"codes": codes, "summary": None, "count": len(codes), "replaced": replaced},
    )
