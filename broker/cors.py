"""Cross-origin access to the device HTTP requests, for the web authenticator.

The web authenticator may be served from an origin of its own (deploy/webapp.md), and a
restored account recovers with `POST /v1/recoveries` from the phone's browser. Those
requests (recoveries, recovery-key rotations, backup blobs) are open to anyone and
proven by device-held signatures, never by cookies or an API key, so any origin may
send them: what a page of another site could do with them, anyone can do with curl.
The RP API keeps no CORS headers: an API key never belongs in a browser.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .limits import device_request_path

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADERS = {
    "Access-Control-Allow-Origin": "*",
    # The problem body's code is what the app shows; Retry-After says when to try again.
    "Access-Control-Expose-Headers": "Retry-After",
}
PREFLIGHT = {
    **HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE",
    # The backup store's requests are signed in these two headers (broker/backups.py).
    "Access-Control-Allow-Headers": "Content-Type, X-Pushauth-Time, X-Pushauth-Signature",
    "Access-Control-Max-Age": "600",
}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if device_request_path(request.path) is None:
        return await handler(request)
    if request.method == "OPTIONS":
        # Answered here, before the rate limits: a preflight asks, it changes nothing.
        return web.Response(status=204, headers=PREFLIGHT)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(HEADERS)
        raise
    response.headers.update(HEADERS)
    return response
