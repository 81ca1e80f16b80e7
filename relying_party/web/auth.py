"""Who is signed in, and the two steps of signing in (password, then push or code)."""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiohttp import web

from .db import Database, User, now_ms
from .keys import ATTEMPTS, DB, IP_LIMITER, SETTINGS
from .ratelimit import address_key
from .sessions import Session, get_session

# How long the second step may take after the password was accepted.
PENDING_MAX_MS = 10 * 60 * 1000


# Where a user who must change the password is sent (fraud.py), and what stays open then.
PASSWORD_PAGE = "/security/password"


def current_user(request: web.Request) -> User | None:
    session = get_session(request)
    uid = session.get("uid")
    if uid is None:
        return None
    user = request.app[DB].user_by_id(uid)
    if user is None:  # deleted meanwhile: the session is worth nothing
        session.clear()
        return None
    if session.get("epoch", 0) != user.session_epoch:
        # "Sign out everywhere" or a password change since this session signed in.
        session.clear()
        session.flash("info", "You were signed out on this device. Sign in again to continue.")
        return None
    return user


def require_user(request: web.Request, *, password_change: bool = False) -> User:
    """The signed-in user, else to the sign-in page. While the user must change the
    password (after a fraud report) every page but that one leads there."""
    user = current_user(request)
    if user is None:
        session = get_session(request)
        if not session.get("flash"):  # current_user may have said why already
            session.flash("info", "Sign in to continue.")
        raise web.HTTPSeeOther("/signin")
    if user.must_change_password and not password_change:
        raise web.HTTPSeeOther(PASSWORD_PAGE)
    return user


def pending_user(request: web.Request) -> User:
    """The user whose password was accepted and who still owes the second step."""
    session = get_session(request)
    pending: dict[str, Any] | None = session.get("pending")
    if pending is None:
        if current_user(request) is not None:  # signed in already (Back, another tab)
            raise web.HTTPSeeOther("/account")
        session.flash("info", "Enter your user name and password to sign in.")
        raise web.HTTPSeeOther("/signin")
    if now_ms() - pending["since"] > PENDING_MAX_MS:
        session.pop("pending")
        session.pop("push")
        session.flash("error", "Your sign-in took too long. Enter your password again.")
        raise web.HTTPSeeOther("/signin")
    user = request.app[DB].user_by_id(pending["uid"])
    if user is None:
        session.pop("pending")
        raise web.HTTPSeeOther("/signin")
    return user


# What the second step says when the account needs one and has no device left.
NO_DEVICE_LEFT = (
    "No authenticator app of yours is registered with this account any more (it was removed "
    "in the app, or the sign-in service no longer lists it), so none can approve this sign-in "
    "or show a code. Sign in with one of your recovery codes, or with a temporary access pass "
    "from your administrator; if you have neither, ask your administrator. Then add your app "
    "again on Security info."
)


def second_factor_required(db: Database, user: User) -> bool:
    """Whether signing in (and "Verify it's you") needs more than the password: the one
    place for this rule. Decided by our own records, never by the broker's list: an
    account that once finished a device's setup keeps needing a second step when the
    broker stops listing its devices (they are dropped here on its word, credentials.sync);
    only the user's own removal of the last device on Security info ends it
    (Database.end_second_factor). Revoking credentials is denial for a compromised
    broker, never a way to password-only sign-in."""
    return user.second_factor or bool(db.devices(user.id, confirmed_only=True))


def begin_second_step(session: Session, user: User) -> None:
    # A new cookie once the password is accepted, as at sign-in (finish_signin): the
    # pending second step is privilege too. With the cookie from before, planted by
    # someone else (session fixation), that someone saw the push page's number and could
    # finish the sign-in as the user, by being first to ask once the phone approved.
    session.rotate()
    session["pending"] = {"uid": user.id, "since": now_ms()}


def finish_signin(request: web.Request, user: User, method: str) -> None:
    session = get_session(request)
    flashes = session.get("flash", [])
    session.clear()  # a new cookie: nothing from before sign-in carries over (fixation)
    session["uid"] = user.id
    session["user_name"] = user.name
    session["auth_at"] = now_ms()
    session["epoch"] = user.session_epoch
    # The sign-in itself is the freshest proof of who this is (reauth.py).
    session["verified_at"] = session["auth_at"]
    session["method"] = method
    if flashes:
        session["flash"] = flashes
    request.app[DB].record_success(user.id)


def _locked(wait_ms: float) -> str:
    minutes = max(1, math.ceil(wait_ms / 60000))
    unit = "minute" if minutes == 1 else "minutes"
    return f"This account is locked for {minutes} {unit} after too many failed attempts. Try again later."


def locked_message(user: User) -> str | None:
    wait_ms = user.locked_until - now_ms()
    return _locked(wait_ms) if wait_ms > 0 else None


def unknown_name_locked_message(request: web.Request, name: str) -> str | None:
    """The same lockout for names that do not exist, so that it tells nothing about which do."""
    wait_ms = request.app[DB].unknown_name_locked_until(name) - now_ms()
    return _locked(wait_ms) if wait_ms > 0 else None


def record_failure(request: web.Request, user: User | None, ip: str, name: str = "") -> None:
    settings = request.app[SETTINGS]
    request.app[IP_LIMITER].failed(address_key(ip))
    lockout = {
        "after": settings.lockout_after,
        "base_s": settings.lockout_base,
        "max_s": settings.lockout_max,
    }
    if user is None:
        request.app[DB].record_unknown_name_failure(name, **lockout)
    else:
        request.app[DB].record_failure(user.id, **lockout)


def attempt(request: web.Request, name: str, ip: str) -> AbstractAsyncContextManager[None]:
    """Held from the lockout check to the recorded outcome of one password or code
    attempt on account `name` from `ip` (attempts.py: otherwise attempts sent at once
    all pass the check before any has failed). Read the user's lockout inside it."""
    return request.app[ATTEMPTS].hold(f"account:{name.lower()}", f"ip:{address_key(ip)}")


def ip_blocked_message(request: web.Request, ip: str) -> str | None:
    wait = request.app[IP_LIMITER].retry_after(address_key(ip))
    if wait <= 0:
        return None
    minutes = max(1, math.ceil(wait / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed attempts from your network. Try again in {minutes} {unit}."
