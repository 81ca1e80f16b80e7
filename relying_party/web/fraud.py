"""After "this wasn't me": the push pause, and what the next sign-in shows and requires.

As in Microsoft's and Duo's fraud flows: a report pauses push for the user at the
broker (its fraud mute) and here: while this RP's own record holds a report that no
password change answered (Database.unresolved_report), no push is sent, whatever the
broker says (its mute may have ended, or been lost with a restore of its data from an
older copy). The next successful sign-in (a verification code) shows what was reported
(time, place, browser) and must change the password, since whoever sent the request
knew it. The password change ends the pause here and lifts it at the broker (DELETE
/v1/users/{user}/push-block), which also resets the count of pushes since the last
sign-in.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..errors import PushAuthError
from . import auth, push
from .db import User, now_ms
from .keys import CLIENT, DB
from .push_pause import pause_of

log = logging.getLogger(__name__)


async def push_state(request: web.Request, user: User) -> dict[str, Any] | None:
    """The user's PushBlock at the broker, or None when it cannot be asked now."""
    try:
        return await request.app[CLIENT].push_block(user.handle)
    except PushAuthError as exc:
        log.warning("cannot read the push block of %s: %s", user.handle, exc)
        return None


async def after_signin(request: web.Request, user: User) -> str:
    """Where a sign-in that just succeeded goes: the password change when a request was
    reported (or push is paused after one), else the account page. A sign-in ends a
    block for too many requests (the broker's rule: the user signed in another way)."""
    db = request.app[DB]
    await push.settle_pending(request, user)
    state = await push_state(request, user)
    pause = pause_of(state, now_ms())
    if db.unseen_reports(user.id) or (pause is not None and pause.kind == "paused"):
        db.require_password_change(user.id)
    fresh = db.user_by_id(user.id)
    if fresh is not None and fresh.must_change_password:
        return auth.PASSWORD_PAGE
    if state and (pause is not None or state.get("pushes_since_sign_in", 0)):
        await lift(request, user)
    return "/account"


async def lift(request: web.Request, user: User) -> bool:
    """Resume push for the user at the broker; False if it could not be reached."""
    try:
        await request.app[CLIENT].lift_push_block(user.handle)
    except PushAuthError as exc:
        log.warning("cannot lift the push block of %s: %s", user.handle, exc)
        return False
    return True
