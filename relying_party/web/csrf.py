"""CSRF protection: a per-session token in every form, checked on every POST.

Synchronizer tokens (OWASP) plus an Origin check when the browser sends one;
SameSite=Lax cookies are a third layer, not the only one.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from .sessions import Session, get_session

log = logging.getLogger(__name__)

FIELD = "csrf_token"
UNREADABLE = "This form could not be read (an unknown character set or compression). Nothing was changed."
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CsrfError(Exception):
    """A state-changing request without this site's token: refused, nothing changed."""


def token(session: Session) -> str:
    value = session.get("csrf")
    if value is None:
        value = secrets.token_urlsafe(32)
        session["csrf"] = value
    return value


def _utf8(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")  # a form field's lone surrogate too


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        # Host only, not scheme: behind a TLS-terminating proxy the app sees http while
        # the browser says https. "null" (a sandboxed or privacy-stripped origin) fails too.
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise CsrfError("cross-origin form post")
        session = get_session(request)
        expected = session.get("csrf")
        try:
            form = await request.post()  # parsed once; handlers read the cached copy
        except (LookupError, RequestPayloadError) as exc:
            # A charset Python does not know (`charset=bogus`, on the form or a part of
            # it) or a Content-Encoding that does not inflate: the client's, not a 500.
            log.info("unreadable form in %s %s: %s", request.method, request.path, exc)
            raise web.HTTPBadRequest(text=UNREADABLE) from None
        sent = form.get(FIELD)
        # Compared as bytes: compare_digest refuses str with non-ASCII characters
        # (TypeError, a 500), and a forged token may have any.
        if not expected or not isinstance(sent, str) or not hmac.compare_digest(_utf8(sent), _utf8(expected)):
            raise CsrfError("missing or wrong CSRF token")
    return await handler(request)
