"""Server-side sessions: a random cookie names a row in SQLite.

Server-side rather than signed cookies so that signing out (or a session rotated on
sign-in) really ends the old session, and so that nothing in the cookie can be read
or replayed after the fact.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .config import Settings
from .db import Database, now_ms

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Session:
    def __init__(self, cookie: str | None, data: dict[str, Any]) -> None:
        self.cookie = cookie
        self.data = data
        self.modified = cookie is None
        self.dropped: list[str] = []  # old cookies whose rows must go

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.modified = True

    def pop(self, key: str, default: Any = None) -> Any:
        if key in self.data:
            self.modified = True
        return self.data.pop(key, default)

    def rotate(self) -> None:
        """New cookie for the same data: called when the privilege changes (sign-in),
        so a cookie planted before sign-in (session fixation) is worth nothing after."""
        if self.cookie is not None:
            self.dropped.append(self.cookie)
        self.cookie = None
        self.modified = True

    def clear(self) -> None:
        self.rotate()
        self.data = {}

    def flash(self, kind: str, text: str) -> None:
        self["flash"] = [*self.data.get("flash", []), [kind, text]]

    def take_flashes(self) -> list[tuple[str, str]]:
        return [(k, t) for k, t in self.pop("flash", [])]


# A typed request key where aiohttp has them (3.12+), else a plain string key.
SESSION_KEY: Any = web.RequestKey("session", Session) if hasattr(web, "RequestKey") else "session"


_COOKIE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


def _hash(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


def get_session(request: web.Request) -> Session:
    return request[SESSION_KEY]


def middleware(db: Database, settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        cookie = request.cookies.get(settings.cookie_name)
        data = None
        # Cookies are ours only if they look like ours (secrets.token_urlsafe); anything
        # else is ignored: bytes that are not UTF-8 reach us as lone surrogates, which
        # hashing the cookie could not encode (a 500 and a traceback, for anyone).
        if cookie and _COOKIE.fullmatch(cookie):
            raw = db.session_get(_hash(cookie))
            data = json.loads(raw) if raw is not None else None
        session = Session(cookie, data) if data is not None else Session(None, {"created": now_ms()})
        request[SESSION_KEY] = session
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _save(db, settings, session, exc)
            raise
        _save(db, settings, session, response)
        return response

    return session_middleware


def _save(db: Database, settings: Settings, session: Session, response: web.StreamResponse) -> None:
    for old in session.dropped:
        db.session_delete(_hash(old))
    session.dropped.clear()
    if not session.modified or response.prepared:
        return  # a streamed response (server-sent events) never writes the session
    if session.cookie is None:
        session.cookie = secrets.token_urlsafe(32)
    now = now_ms()
    # Idle timeout, capped by an absolute lifetime counted from the sign-in.
    expires = now + settings.session_idle * 1000
    started = session.data.get("auth_at") or session.data.get("created", now)
    expires = min(expires, started + settings.session_max * 1000)
    db.session_put(_hash(session.cookie), json.dumps(session.data), expires)
    response.set_cookie(
        settings.cookie_name,
        session.cookie,
        path="/",
        httponly=True,
        secure=settings.secure_cookies,
        samesite="Lax",
    )


def touch(session: Session) -> None:
    """Mark the session as used, so the idle timeout starts over."""
    session.modified = True
