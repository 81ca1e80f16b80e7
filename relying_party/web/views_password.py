"""Change password (also the way out of a fraud report) and "sign out everywhere"."""

from __future__ import annotations

import asyncio

from aiohttp import web

from . import auth, forms, fraud, passwords, push_pause, reauth, signin_context
from .db import User
from .keys import DB, SETTINGS
from .render import render
from .sessions import get_session

routes = web.RouteTableDef()


async def _page(
    request: web.Request, user: User, *, error: str | None = None, status: int = 200
) -> web.Response:
    db = request.app[DB]
    reports = db.unseen_reports(user.id)  # also when the user came from Security info's pause
    return render(
        request,
        "password.html",
        {
            "user": user,
            "error": error,
            "required": user.must_change_password,
            "reports": reports,
            # A report kept here pauses push until this change, whatever the broker says.
            "pause": push_pause.REPORTED if user.must_change_password or reports else None,
        },
        status=status,
    )


@routes.get(auth.PASSWORD_PAGE)
async def password_form(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request, password_change=True)
    reauth.require_fresh(request, auth.PASSWORD_PAGE)
    return await _page(request, user)


@routes.post(auth.PASSWORD_PAGE)
async def password_submit(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request, password_change=True)
    reauth.require_fresh(request, auth.PASSWORD_PAGE)
    form = await request.post()
    settings = request.app[SETTINGS]
    db = request.app[DB]
    try:
        current = forms.text(form, "current", max_len=passwords.MAX_LENGTH, label="The current password")
        new = forms.text(form, "new", max_len=passwords.MAX_LENGTH, label="The new password")
        repeat = forms.text(form, "repeat", max_len=passwords.MAX_LENGTH, label="The repeated password")
    except forms.FormError as exc:
        return await _page(request, user, error=exc.message, status=400)
    # Guesses at the current password count as at sign-in: without it a session with a
    # fresh second factor (a stolen cookie, minutes after the owner signed in) could try
    # passwords here without end, the account's lockout never coming.
    ip = signin_context.client_ip(request)
    async with auth.attempt(request, user.name, ip):
        user = db.user_by_id(user.id) or user  # its lockout as the attempts before left it
        blocked = auth.ip_blocked_message(request, ip) or auth.locked_message(user)
        if blocked:
            return await _page(request, user, error=blocked, status=429)
        if not await passwords.check(user.password_hash, current):
            auth.record_failure(request, user, ip)
            return await _page(request, user, error="The current password is incorrect.", status=401)
    problem = passwords.password_problem(new)
    if problem is None and new == current:
        problem = "The new password must differ from the current one."
    if problem is None and new != repeat:
        problem = "The two new passwords do not match."
    if problem is not None:
        return await _page(request, user, error=problem, status=400)
    hashed = await asyncio.to_thread(
        passwords.hash_password, new, opslimit=settings.argon2_opslimit, memlimit=settings.argon2_memlimit
    )
    # Push was paused by a report (which the new password answers): then say whether it is
    # on again. Otherwise there is nothing to say about push.
    paused = db.unresolved_report(user.id)
    db.set_password(user.id, hashed)  # also ends "must change" (fraud.py)
    db.mark_reports_seen(user.id)
    # Whoever knew the old password may hold a session: all others end now.
    session = get_session(request)
    session["epoch"] = db.bump_session_epoch(user.id)
    resumed = await fraud.lift(request, user)
    changed = "Your password was changed and you were signed out everywhere else."
    if not paused:
        session.flash("success", changed)
    elif resumed:
        session.flash("success", f"{changed} Push requests to your devices are on again.")
    else:
        session.flash(
            "error",
            f"{changed} Push requests could not be resumed now (the sign-in service cannot be reached): "
            "they resume when the pause ends.",
        )
    raise web.HTTPSeeOther("/security")


@routes.post("/security/signout-everywhere")
async def signout_everywhere(request: web.Request) -> web.StreamResponse:
    """Every session of the user ends, this one too (as Microsoft's "Sign out everywhere")."""
    user = auth.require_user(request)
    request.app[DB].bump_session_epoch(user.id)
    session = get_session(request)
    session.clear()
    session.flash("success", "You were signed out everywhere, on this device too. Sign in again to continue.")
    raise web.HTTPSeeOther("/signin")
