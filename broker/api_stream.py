"""The one-request sign-in: `POST /v1/challenges` answered as a stream (docs/http-api.md,
"One request: the streamed create").

An RP that sends `Accept: application/x-ndjson` gets, in one HTTP exchange, the
challenge (its number, at once) and then its result when it ends: two JSON lines of
a chunked 201 response. The lines are exactly the bodies of the two requests it
replaces, made by the same code (api.start_challenge, api.challenge_result), so
there is one place for validation, creation and the wait, and the SDK verifies the
second line as it verifies a long-poll's answer.

Why content negotiation on the existing path, not a new path or a query flag: a
broker that does not stream ignores the Accept header and answers the ordinary
201 JSON body, so the SDK falls back to the long-poll without creating a second
challenge, and tells the two apart by the response's Content-Type, never by a
guess. A new path would cost an older broker's RP a 404 and a second create.

What a stream cannot do is turn into an error once its first line is out: every
refusal (auth, body, policy, no devices) is an ordinary problem document, before the
201. After it, the challenge exists whatever happens to this response: a client that
goes away does not cancel it (it stays answerable and readable by long-poll), and a
result this node cannot read (Redis failing) ends the stream after the first line,
which tells the RP to read the result by long-poll.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from . import api
from .jsonio import json_response
from .problems import ApiError

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def wants_stream(request: web.Request) -> bool:
    """True when the Accept header lists application/x-ndjson with a quality above 0.

    An RP that streams lists application/json too (at a lower quality), so an older
    broker, which looks at no Accept header, still answers it in JSON."""
    for item in request.headers.getall("Accept", ()):
        for media_range in item.split(","):
            kind, *params = media_range.split(";")
            if kind.strip().lower() != NDJSON:
                continue
            for param in params:
                name, _, value = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        return float(value) > 0
                    except ValueError:
                        return False
            return True
    return False


async def create_challenge(request: web.Request) -> web.StreamResponse:
    """POST /v1/challenges: one JSON body, or streamed, by the Accept header."""
    rp = await api.authenticate(request)
    # How long the result line may take: the long-poll's `wait`, here defaulting to its
    # longest; the challenge's expiry bounds it too. Checked in both forms (the plain one
    # does not wait), so what the OpenAPI document refuses is refused.
    wait = api.wait_param(request, default=api.MAX_WAIT_S)
    created = await api.start_challenge(request, rp)  # refusals: 4xx problems, nothing streamed
    if not wants_stream(request):
        return json_response(created, status=201)
    response = web.StreamResponse(
        status=201,
        headers={
            "Content-Type": NDJSON,
            "Cache-Control": "no-store",
            # nginx buffers a proxied response unless told not to; the number must not wait.
            "X-Accel-Buffering": "no",
        },
    )
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        await response.write(_line(created))  # sent now: the page shows the number
    except ConnectionError:
        log.debug("stream of %s: the RP went away before the number", created["id"])
        return response
    try:
        # Registered, read, awaited and expired exactly as a long-poll (hub.release_waiters
        # at shutdown ends it with the current state, as it does a long-poll).
        result = await api.challenge_result(request, rp, created["id"], wait)
    except (ApiError, RedisError, OSError) as exc:
        # The challenge stands; the RP reads its result by long-poll (no second line).
        log.warning("stream of %s ends without a result: %s", created["id"], exc)
        result = None
    try:
        # The last line and the end of the stream in one write (one send, one read).
        await response.write_eof(_line(result) if result is not None else b"")
    except ConnectionError:
        # The RP gave up (its own timeout, a closed page): the challenge is unaffected.
        log.debug("stream of %s: the RP went away before the result", created["id"])
    return response


def _line(body: dict[str, object]) -> bytes:
    return orjson.dumps(body) + b"\n"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/challenges", create_challenge)
