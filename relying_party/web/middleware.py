"""Error pages (never a traceback) and the security headers of every response."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .csrf import CsrfError
from .render import render

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Everything is served by us: no inline script, no third-party origin, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

_TITLES = {
    400: ("Something in the form was not right", "Go back, check what you entered and try again."),
    403: (
        "That did not work",
        "This page was open too long or was not sent by this site. Reload it and try again.",
    ),
    404: ("Page not found", "The page you asked for does not exist."),
    405: ("Not allowed", "That action is not available here."),
    413: ("Too much data", "What you sent is larger than this site accepts. Shorten it and try again."),
    500: ("Something went wrong on our side", "Try again in a moment. Nothing was changed."),
}


def error_page(request: web.Request, status: int, detail: str | None = None) -> web.Response:
    title, default = _TITLES.get(status, (f"Error {status}", "That request could not be handled."))
    return render(request, "error.html", {"title": title, "detail": detail or default}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CsrfError:
        return error_page(
            request,
            403,
            "This form was not accepted because it was open too long or did not come from this site. "
            "Nothing was changed. Reload the page and try again.",
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects
        # Our own 4xx carry a sentence for people in `text`; aiohttp's default bodies do not.
        own = exc.text and not exc.text.startswith(f"{exc.status}:") and exc.status != 413
        detail = exc.text if own else None
        return error_page(request, exc.status, detail)
    except ConnectionResetError:
        # The client left before its request's body had all come: nobody reads an answer,
        # and it is no error of ours (it was logged as one, with a traceback, for anyone
        # who opens a form post and hangs up).
        log.info("client went away during %s %s", request.method, request.path)
        return error_page(request, 400)
    except ValueError as exc:
        # Malformed request bodies (a broken multipart form, bad encodings) surface here.
        log.info("bad request %s %s: %s", request.method, request.path, exc)
        return error_page(request, 400)
    except Exception:
        log.exception("error while handling %s %s", request.method, request.path)
        return error_page(request, 500)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form posts,
    # which the CSRF check must refuse.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")  # pages show personal data and one-time numbers
